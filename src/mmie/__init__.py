"""mmie: multilingual machine-unlearning interventions and their evaluation.

The public API is re-exported here lazily: ``import mmie`` is cheap and imports neither
torch, transformers nor peft until a name that needs them is first used.

Example:
    >>> import mmie
    >>> ci = mmie.bootstrap_ci([0.1, 0.4, 0.35, 0.2, 0.3], method="t")
    >>> ci.low <= ci.estimate <= ci.high
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmie._version import __version__

# Public name -> module that defines it, grouped by layer; ``__all__`` is derived.
_EXPORTS: dict[str, str] = {
    # core: errors
    "CheckpointError": "mmie.errors",
    "ConfigError": "mmie.errors",
    "DataError": "mmie.errors",
    "IncompatibleModelError": "mmie.errors",
    "InterventionError": "mmie.errors",
    "MmieError": "mmie.errors",
    "MmieWarning": "mmie.errors",
    "ReconstructionError": "mmie.errors",
    "SmallSampleWarning": "mmie.errors",
    "TrainingError": "mmie.errors",
    "TruncationWarning": "mmie.errors",
    # core: statistics
    "ConfidenceInterval": "mmie.stats",
    "PermutationTestResult": "mmie.stats",
    "bootstrap_ci": "mmie.stats",
    "holm_bonferroni": "mmie.stats",
    "paired_permutation_test": "mmie.stats",
    "permutation_test": "mmie.stats",
    # core: gate statistics (tests valid for bounded, paired and AUC data)
    "AUCDifferenceTest": "mmie.gate_stats",
    "AUCTestResult": "mmie.gate_stats",
    "BoundedMeanTest": "mmie.gate_stats",
    "DeLongAUC": "mmie.gate_stats",
    "Evidence": "mmie.gate_stats",
    "LogRatioTest": "mmie.gate_stats",
    "MeanBound": "mmie.gate_stats",
    "PairedProportionsTest": "mmie.gate_stats",
    "auc_difference_test": "mmie.gate_stats",
    "auc_equivalence_test": "mmie.gate_stats",
    "auc_test": "mmie.gate_stats",
    "check_evidence": "mmie.gate_stats",
    "delong_auc": "mmie.gate_stats",
    "log_ratio_test": "mmie.gate_stats",
    "mean_bound": "mmie.gate_stats",
    "noninferiority_test": "mmie.gate_stats",
    "paired_proportions_test": "mmie.gate_stats",
    "relative_reduction_test": "mmie.gate_stats",
    # core: seeding
    "seed_context": "mmie.seeding",
    "set_seed": "mmie.seeding",
    # core: testing helpers
    "count_live_models": "mmie.testing",
    # language: scripts and detectors
    "Cld3Detector": "mmie.language.detectors",
    "Detection": "mmie.language.detectors",
    "Detector": "mmie.language.detectors",
    "EnsembleDetector": "mmie.language.detectors",
    "FastLangDetectDetector": "mmie.language.detectors",
    "RomanizedHindiDetector": "mmie.language.detectors",
    "ScriptDetector": "mmie.language.detectors",
    "script_counts": "mmie.language.unicode",
    "script_of_char": "mmie.language.unicode",
    "script_token_mask": "mmie.language.unicode",
    "token_bytes": "mmie.language.unicode",
    # models: loading, blocks, hooks, activations, log-probs, generation
    "Activations": "mmie.models.activations",
    "collect_activations": "mmie.models.activations",
    "block_device": "mmie.models.blocks",
    "block_dtype": "mmie.models.blocks",
    "get_block": "mmie.models.blocks",
    "get_blocks": "mmie.models.blocks",
    "hidden_size": "mmie.models.blocks",
    "input_device": "mmie.models.blocks",
    "num_layers": "mmie.models.blocks",
    "unwrap_model": "mmie.models.blocks",
    "generate": "mmie.models.generation",
    "BlockIntervention": "mmie.models.hooks",
    "HookSet": "mmie.models.hooks",
    "assert_no_mmie_hooks": "mmie.models.hooks",
    "detached": "mmie.models.hooks",
    "interventions": "mmie.models.hooks",
    "mmie_hooks": "mmie.models.hooks",
    "remove_mmie_hooks": "mmie.models.hooks",
    "free_memory": "mmie.models.loading",
    "load_causal_lm": "mmie.models.loading",
    "loaded_model": "mmie.models.loading",
    "prepare_tokenizer": "mmie.models.loading",
    "predicted_token_mask": "mmie.models.logprobs",
    "token_logprobs": "mmie.models.logprobs",
    "tokenize": "mmie.models.tokenization",
    # sae: sparse autoencoders and feature pickers
    "SAEConfig": "mmie.sae.config",
    "FeatureSelection": "mmie.sae.features",
    "FeatureStats": "mmie.sae.features",
    "contrast_features": "mmie.sae.features",
    "feature_stats": "mmie.sae.features",
    "script_invariant_features": "mmie.sae.features",
    "threshold_features": "mmie.sae.features",
    "SparseAutoencoder": "mmie.sae.model",
    "ReconstructionReport": "mmie.sae.quality",
    "SAEQuality": "mmie.sae.quality",
    "check_reconstruction": "mmie.sae.quality",
    "sae_quality": "mmie.sae.quality",
    "SAETrainingStats": "mmie.sae.training",
    "train_sae": "mmie.sae.training",
    "train_sae_on_model": "mmie.sae.training",
    # edits: gate, LEACE scrubber, LoReFT, dynamic gating, controls
    "ForcedEOSProcessor": "mmie.edits.controls",
    "NoiseIntervention": "mmie.edits.controls",
    "ScriptBanProcessor": "mmie.edits.controls",
    "DynamicGatingProcessor": "mmie.edits.dynamic_gating",
    "SequenceGate": "mmie.edits.dynamic_gating",
    "LeaceEraser": "mmie.edits.leace",
    "LeaceFitter": "mmie.edits.leace",
    "LoReFTConfig": "mmie.edits.reft",
    "LoReFTIntervention": "mmie.edits.reft",
    "ReFTAdapter": "mmie.edits.reft",
    "SAEGate": "mmie.edits.sae_gate",
    "Scrubber": "mmie.edits.scrubber",
    "fit_scrubber": "mmie.edits.scrubber",
    # evaluation: scoring, language and output metrics, MIA, probes, leakage, layer selection
    "ExtractionStrength": "mmie.evaluation.language_metrics",
    "ScriptMassResult": "mmie.evaluation.language_metrics",
    "extraction_strength": "mmie.evaluation.language_metrics",
    "script_mass": "mmie.evaluation.language_metrics",
    "ActivationCache": "mmie.evaluation.layer_selection",
    "LayerSelection": "mmie.evaluation.layer_selection",
    "linear_cka": "mmie.evaluation.layer_selection",
    "mean_difference_cosine": "mmie.evaluation.layer_selection",
    "procrustes_distance": "mmie.evaluation.layer_selection",
    "select_layers": "mmie.evaluation.layer_selection",
    "LanguageLeakage": "mmie.evaluation.leakage",
    "cross_lingual_leakage": "mmie.evaluation.leakage",
    "LogitLens": "mmie.evaluation.logit_lens",
    "logit_lens": "mmie.evaluation.logit_lens",
    "MIAResult": "mmie.evaluation.mia",
    "membership_inference": "mmie.evaluation.mia",
    "mia_auc": "mmie.evaluation.mia",
    "mia_scores": "mmie.evaluation.mia",
    "Degeneracy": "mmie.evaluation.output_metrics",
    "SampledLeakage": "mmie.evaluation.output_metrics",
    "ScriptDistribution": "mmie.evaluation.output_metrics",
    "TargetShare": "mmie.evaluation.output_metrics",
    "degeneracy": "mmie.evaluation.output_metrics",
    "sampled_leakage": "mmie.evaluation.output_metrics",
    "script_distribution": "mmie.evaluation.output_metrics",
    "target_share": "mmie.evaluation.output_metrics",
    "ProbeResult": "mmie.evaluation.probes",
    "probe_auc": "mmie.evaluation.probes",
    "KLResult": "mmie.evaluation.scoring",
    "PerplexityResult": "mmie.evaluation.scoring",
    "continuation_nll": "mmie.evaluation.scoring",
    "perplexity": "mmie.evaluation.scoring",
    "token_kl": "mmie.evaluation.scoring",
    # unlearning: objectives, configs, training, arm lifecycle
    "ReFTUnlearnResult": "mmie.unlearning.config",
    "StepRecord": "mmie.unlearning.config",
    "UnlearnConfig": "mmie.unlearning.config",
    "UnlearnResult": "mmie.unlearning.config",
    "ValidationRecord": "mmie.unlearning.config",
    "lora_arm": "mmie.unlearning.lifecycle",
    "reft_arm": "mmie.unlearning.lifecycle",
    "restored_lora_arm": "mmie.unlearning.lifecycle",
    "default_lora_targets": "mmie.unlearning.lora_checkpoint",
    "load_lora": "mmie.unlearning.lora_checkpoint",
    "save_lora": "mmie.unlearning.lora_checkpoint",
    "ga_loss": "mmie.unlearning.objectives",
    "graddiff_loss": "mmie.unlearning.objectives",
    "kl_retain_loss": "mmie.unlearning.objectives",
    "npo_loss": "mmie.unlearning.objectives",
    "sequence_logprobs": "mmie.unlearning.objectives",
    "token_nll": "mmie.unlearning.objectives",
    "InContextRecovery": "mmie.unlearning.recovery",
    "QuantisationAttack": "mmie.unlearning.recovery",
    "RelearningCurve": "mmie.unlearning.recovery",
    "SteeringRecovery": "mmie.unlearning.recovery",
    "in_context_recovery": "mmie.unlearning.recovery",
    "quantisation_attack": "mmie.unlearning.recovery",
    "relearning_attack": "mmie.unlearning.recovery",
    "rtn_quantise": "mmie.unlearning.recovery",
    "steering_directions": "mmie.unlearning.recovery",
    "steering_recovery": "mmie.unlearning.recovery",
    "unlearn_lora": "mmie.unlearning.train",
    "unlearn_reft": "mmie.unlearning.train",
    # study: config, data, demo, records, runner, decisions, reports
    "ArmConfig": "mmie.study.config",
    "DataConfig": "mmie.study.config",
    "ExperimentConfig": "mmie.study.config",
    "GateConfig": "mmie.study.config",
    "GenerationConfig": "mmie.study.config",
    "ReferenceConfig": "mmie.study.config",
    "RobustnessConfig": "mmie.study.config",
    "SAETrainingConfig": "mmie.study.config",
    "SamplingConfig": "mmie.study.config",
    "SelectionConfig": "mmie.study.config",
    "SplitConfig": "mmie.study.config",
    "demo_config": "mmie.study.config",
    "load_config": "mmie.study.config",
    "BUNDLED_SETS": "mmie.study.datasets",
    "load_texts": "mmie.study.datasets",
    "split_texts": "mmie.study.datasets",
    "ArmDecision": "mmie.study.decisions",
    "GateResult": "mmie.study.decisions",
    "DEMO_MODELS": "mmie.study.demo",
    "demo_model_path": "mmie.study.demo",
    "demo_relearn_texts": "mmie.study.demo",
    "demo_training_info": "mmie.study.demo",
    "demo_training_texts": "mmie.study.demo",
    "load_demo_model": "mmie.study.demo",
    "plot_report": "mmie.study.plots",
    "MetricRecord": "mmie.study.records",
    "Report": "mmie.study.report",
    "attack_model": "mmie.study.robustness",
    "recoverability": "mmie.study.robustness",
    "ExperimentResult": "mmie.study.runner",
    "UnitFailure": "mmie.study.runner",
    "aggregate": "mmie.study.runner",
    "run_experiment": "mmie.study.runner",
    "report_schema": "mmie.study.schema",
    "validate_report": "mmie.study.schema",
    "EvalSets": "mmie.study.suite",
    "load_eval_sets": "mmie.study.suite",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmie' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from mmie.edits.controls import ForcedEOSProcessor, NoiseIntervention, ScriptBanProcessor
    from mmie.edits.dynamic_gating import DynamicGatingProcessor, SequenceGate
    from mmie.edits.leace import LeaceEraser, LeaceFitter
    from mmie.edits.reft import LoReFTConfig, LoReFTIntervention, ReFTAdapter
    from mmie.edits.sae_gate import SAEGate
    from mmie.edits.scrubber import Scrubber, fit_scrubber
    from mmie.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        IncompatibleModelError,
        InterventionError,
        MmieError,
        MmieWarning,
        ReconstructionError,
        SmallSampleWarning,
        TrainingError,
        TruncationWarning,
    )
    from mmie.evaluation.language_metrics import (
        ExtractionStrength,
        ScriptMassResult,
        extraction_strength,
        script_mass,
    )
    from mmie.evaluation.layer_selection import (
        ActivationCache,
        LayerSelection,
        linear_cka,
        mean_difference_cosine,
        procrustes_distance,
        select_layers,
    )
    from mmie.evaluation.leakage import LanguageLeakage, cross_lingual_leakage
    from mmie.evaluation.logit_lens import LogitLens, logit_lens
    from mmie.evaluation.mia import MIAResult, membership_inference, mia_auc, mia_scores
    from mmie.evaluation.output_metrics import (
        Degeneracy,
        SampledLeakage,
        ScriptDistribution,
        TargetShare,
        degeneracy,
        sampled_leakage,
        script_distribution,
        target_share,
    )
    from mmie.evaluation.probes import ProbeResult, probe_auc
    from mmie.evaluation.scoring import (
        KLResult,
        PerplexityResult,
        continuation_nll,
        perplexity,
        token_kl,
    )
    from mmie.gate_stats import (
        AUCDifferenceTest,
        AUCTestResult,
        BoundedMeanTest,
        DeLongAUC,
        Evidence,
        LogRatioTest,
        MeanBound,
        PairedProportionsTest,
        auc_difference_test,
        auc_equivalence_test,
        auc_test,
        check_evidence,
        delong_auc,
        log_ratio_test,
        mean_bound,
        noninferiority_test,
        paired_proportions_test,
        relative_reduction_test,
    )
    from mmie.language.detectors import (
        Cld3Detector,
        Detection,
        Detector,
        EnsembleDetector,
        FastLangDetectDetector,
        RomanizedHindiDetector,
        ScriptDetector,
    )
    from mmie.language.unicode import script_counts, script_of_char, script_token_mask, token_bytes
    from mmie.models.activations import Activations, collect_activations
    from mmie.models.blocks import (
        block_device,
        block_dtype,
        get_block,
        get_blocks,
        hidden_size,
        input_device,
        num_layers,
        unwrap_model,
    )
    from mmie.models.generation import generate
    from mmie.models.hooks import (
        BlockIntervention,
        HookSet,
        assert_no_mmie_hooks,
        detached,
        interventions,
        mmie_hooks,
        remove_mmie_hooks,
    )
    from mmie.models.loading import free_memory, load_causal_lm, loaded_model, prepare_tokenizer
    from mmie.models.logprobs import predicted_token_mask, token_logprobs
    from mmie.models.tokenization import tokenize
    from mmie.sae.config import SAEConfig
    from mmie.sae.features import (
        FeatureSelection,
        FeatureStats,
        contrast_features,
        feature_stats,
        script_invariant_features,
        threshold_features,
    )
    from mmie.sae.model import SparseAutoencoder
    from mmie.sae.quality import ReconstructionReport, SAEQuality, check_reconstruction, sae_quality
    from mmie.sae.training import SAETrainingStats, train_sae, train_sae_on_model
    from mmie.seeding import seed_context, set_seed
    from mmie.stats import (
        ConfidenceInterval,
        PermutationTestResult,
        bootstrap_ci,
        holm_bonferroni,
        paired_permutation_test,
        permutation_test,
    )
    from mmie.study.config import (
        ArmConfig,
        DataConfig,
        ExperimentConfig,
        GateConfig,
        GenerationConfig,
        ReferenceConfig,
        RobustnessConfig,
        SAETrainingConfig,
        SamplingConfig,
        SelectionConfig,
        SplitConfig,
        demo_config,
        load_config,
    )
    from mmie.study.datasets import BUNDLED_SETS, load_texts, split_texts
    from mmie.study.decisions import ArmDecision, GateResult
    from mmie.study.demo import (
        DEMO_MODELS,
        demo_model_path,
        demo_relearn_texts,
        demo_training_info,
        demo_training_texts,
        load_demo_model,
    )
    from mmie.study.plots import plot_report
    from mmie.study.records import MetricRecord
    from mmie.study.report import Report
    from mmie.study.robustness import attack_model, recoverability
    from mmie.study.runner import ExperimentResult, UnitFailure, aggregate, run_experiment
    from mmie.study.schema import report_schema, validate_report
    from mmie.study.suite import EvalSets, load_eval_sets
    from mmie.testing import count_live_models
    from mmie.unlearning.config import (
        ReFTUnlearnResult,
        StepRecord,
        UnlearnConfig,
        UnlearnResult,
        ValidationRecord,
    )
    from mmie.unlearning.lifecycle import lora_arm, reft_arm, restored_lora_arm
    from mmie.unlearning.lora_checkpoint import default_lora_targets, load_lora, save_lora
    from mmie.unlearning.objectives import (
        ga_loss,
        graddiff_loss,
        kl_retain_loss,
        npo_loss,
        sequence_logprobs,
        token_nll,
    )
    from mmie.unlearning.recovery import (
        InContextRecovery,
        QuantisationAttack,
        RelearningCurve,
        SteeringRecovery,
        in_context_recovery,
        quantisation_attack,
        relearning_attack,
        rtn_quantise,
        steering_directions,
        steering_recovery,
    )
    from mmie.unlearning.train import unlearn_lora, unlearn_reft
