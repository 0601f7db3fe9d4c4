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

# Public name -> module that defines it. Kept sorted by module; ``__all__`` is derived.
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
    # core: stats
    "ConfidenceInterval": "mmie.stats",
    "PermutationTestResult": "mmie.stats",
    "bootstrap_ci": "mmie.stats",
    "holm_bonferroni": "mmie.stats",
    "paired_permutation_test": "mmie.stats",
    "permutation_test": "mmie.stats",
    # core: seeding
    "seed_context": "mmie.seeding",
    "set_seed": "mmie.seeding",
    # model plumbing: models, hooks, activations
    "block_device": "mmie.models",
    "block_dtype": "mmie.models",
    "count_live_models": "mmie.models",
    "free_memory": "mmie.models",
    "get_block": "mmie.models",
    "get_blocks": "mmie.models",
    "hidden_size": "mmie.models",
    "input_device": "mmie.models",
    "load_causal_lm": "mmie.models",
    "loaded_model": "mmie.models",
    "num_layers": "mmie.models",
    "prepare_tokenizer": "mmie.models",
    "tokenize": "mmie.models",
    "unwrap_model": "mmie.models",
    "BlockIntervention": "mmie.hooks",
    "HookSet": "mmie.hooks",
    "assert_no_mmie_hooks": "mmie.hooks",
    "interventions": "mmie.hooks",
    "mmie_hooks": "mmie.hooks",
    "remove_mmie_hooks": "mmie.hooks",
    "Activations": "mmie.activations",
    "collect_activations": "mmie.activations",
    # interventions: sae, gate, scrub, reft, generation
    "SAEConfig": "mmie.sae",
    "SparseAutoencoder": "mmie.sae",
    "ReconstructionReport": "mmie.sae_check",
    "SAEQuality": "mmie.sae_check",
    "check_reconstruction": "mmie.sae_check",
    "sae_quality": "mmie.sae_check",
    "SAETrainingStats": "mmie.sae_train",
    "train_sae": "mmie.sae_train",
    "train_sae_on_model": "mmie.sae_train",
    "SAEGate": "mmie.gate",
    "LeaceEraser": "mmie.leace",
    "LeaceFitter": "mmie.leace",
    "Scrubber": "mmie.scrub",
    "fit_scrubber": "mmie.scrub",
    "LoReFTConfig": "mmie.reft",
    "LoReFTIntervention": "mmie.reft",
    "ReFTAdapter": "mmie.reft",
    "DynamicGatingProcessor": "mmie.generation",
    "SequenceGate": "mmie.generation",
    "generate": "mmie.generation",
    # evaluation: lid, metrics, scoring, mia, probes, leakage, selection
    "Cld3Detector": "mmie.lid",
    "Detection": "mmie.lid",
    "Detector": "mmie.lid",
    "EnsembleDetector": "mmie.lid",
    "FastLangDetectDetector": "mmie.lid",
    "RomanizedHindiDetector": "mmie.lid",
    "ScriptDetector": "mmie.lid",
    "script_counts": "mmie.scripts",
    "script_of_char": "mmie.scripts",
    "script_token_mask": "mmie.scripts",
    "token_bytes": "mmie.scripts",
    "ExtractionStrength": "mmie.metrics",
    "ScriptMassResult": "mmie.metrics",
    "extraction_strength": "mmie.metrics",
    "script_mass": "mmie.metrics",
    "KLResult": "mmie.scoring",
    "PerplexityResult": "mmie.scoring",
    "detached": "mmie.scoring",
    "perplexity": "mmie.scoring",
    "token_kl": "mmie.scoring",
    "MIAResult": "mmie.mia",
    "membership_inference": "mmie.mia",
    "mia_auc": "mmie.mia",
    "mia_scores": "mmie.mia",
    "ProbeResult": "mmie.probes",
    "probe_auc": "mmie.probes",
    "LanguageLeakage": "mmie.leakage",
    "cross_lingual_leakage": "mmie.leakage",
    "ActivationCache": "mmie.selection",
    "LayerSelection": "mmie.selection",
    "linear_cka": "mmie.selection",
    "mean_difference_cosine": "mmie.selection",
    "procrustes_distance": "mmie.selection",
    "select_layers": "mmie.selection",
    "FeatureSelection": "mmie.features",
    "FeatureStats": "mmie.features",
    "contrast_features": "mmie.features",
    "feature_stats": "mmie.features",
    "script_invariant_features": "mmie.features",
    "threshold_features": "mmie.features",
    # experiment: unlearn, data, experiment
    "ga_loss": "mmie.objectives",
    "graddiff_loss": "mmie.objectives",
    "kl_retain_loss": "mmie.objectives",
    "npo_loss": "mmie.objectives",
    "predicted_token_mask": "mmie.objectives",
    "sequence_logprobs": "mmie.objectives",
    "token_logprobs": "mmie.objectives",
    "token_nll": "mmie.objectives",
    "ReFTUnlearnResult": "mmie.unlearn_config",
    "StepRecord": "mmie.unlearn_config",
    "UnlearnConfig": "mmie.unlearn_config",
    "UnlearnResult": "mmie.unlearn_config",
    "ValidationRecord": "mmie.unlearn_config",
    "default_lora_targets": "mmie.lora_io",
    "load_lora": "mmie.lora_io",
    "save_lora": "mmie.lora_io",
    "unlearn_lora": "mmie.unlearn",
    "unlearn_reft": "mmie.unlearn",
    "lora_arm": "mmie.lifecycle",
    "reft_arm": "mmie.lifecycle",
    "BUNDLED_SETS": "mmie.datasets",
    "load_texts": "mmie.datasets",
    "split_texts": "mmie.datasets",
    "demo_model_path": "mmie.demo",
    "load_demo_model": "mmie.demo",
    "ArmConfig": "mmie.config",
    "DataConfig": "mmie.config",
    "ExperimentConfig": "mmie.config",
    "GateConfig": "mmie.config",
    "GenerationConfig": "mmie.config",
    "SAETrainingConfig": "mmie.config",
    "SelectionConfig": "mmie.config",
    "demo_config": "mmie.config",
    "load_config": "mmie.config",
    "ExperimentResult": "mmie.experiment",
    "UnitFailure": "mmie.experiment",
    "aggregate": "mmie.experiment",
    "run_experiment": "mmie.experiment",
    "ArmDecision": "mmie.gates",
    "GateResult": "mmie.gates",
    "Report": "mmie.report",
    "plot_report": "mmie.report",
    "report_schema": "mmie.report",
    "validate_report": "mmie.report",
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
    from mmie.activations import Activations, collect_activations
    from mmie.config import (
        ArmConfig,
        DataConfig,
        ExperimentConfig,
        GateConfig,
        GenerationConfig,
        SAETrainingConfig,
        SelectionConfig,
        demo_config,
        load_config,
    )
    from mmie.datasets import BUNDLED_SETS, load_texts, split_texts
    from mmie.demo import demo_model_path, load_demo_model
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
    from mmie.experiment import ExperimentResult, UnitFailure, aggregate, run_experiment
    from mmie.features import (
        FeatureSelection,
        FeatureStats,
        contrast_features,
        feature_stats,
        script_invariant_features,
        threshold_features,
    )
    from mmie.gate import SAEGate
    from mmie.gates import ArmDecision, GateResult
    from mmie.generation import DynamicGatingProcessor, SequenceGate, generate
    from mmie.hooks import (
        BlockIntervention,
        HookSet,
        assert_no_mmie_hooks,
        interventions,
        mmie_hooks,
        remove_mmie_hooks,
    )
    from mmie.leace import LeaceEraser, LeaceFitter
    from mmie.leakage import LanguageLeakage, cross_lingual_leakage
    from mmie.lid import (
        Cld3Detector,
        Detection,
        Detector,
        EnsembleDetector,
        FastLangDetectDetector,
        RomanizedHindiDetector,
        ScriptDetector,
    )
    from mmie.lifecycle import lora_arm, reft_arm
    from mmie.lora_io import default_lora_targets, load_lora, save_lora
    from mmie.metrics import ExtractionStrength, ScriptMassResult, extraction_strength, script_mass
    from mmie.mia import MIAResult, membership_inference, mia_auc, mia_scores
    from mmie.models import (
        block_device,
        block_dtype,
        count_live_models,
        free_memory,
        get_block,
        get_blocks,
        hidden_size,
        input_device,
        load_causal_lm,
        loaded_model,
        num_layers,
        prepare_tokenizer,
        tokenize,
        unwrap_model,
    )
    from mmie.objectives import (
        ga_loss,
        graddiff_loss,
        kl_retain_loss,
        npo_loss,
        predicted_token_mask,
        sequence_logprobs,
        token_logprobs,
        token_nll,
    )
    from mmie.probes import ProbeResult, probe_auc
    from mmie.reft import LoReFTConfig, LoReFTIntervention, ReFTAdapter
    from mmie.report import Report, plot_report, report_schema, validate_report
    from mmie.sae import SAEConfig, SparseAutoencoder
    from mmie.sae_check import ReconstructionReport, SAEQuality, check_reconstruction, sae_quality
    from mmie.sae_train import SAETrainingStats, train_sae, train_sae_on_model
    from mmie.scoring import KLResult, PerplexityResult, detached, perplexity, token_kl
    from mmie.scripts import script_counts, script_of_char, script_token_mask, token_bytes
    from mmie.scrub import Scrubber, fit_scrubber
    from mmie.seeding import seed_context, set_seed
    from mmie.selection import (
        ActivationCache,
        LayerSelection,
        linear_cka,
        mean_difference_cosine,
        procrustes_distance,
        select_layers,
    )
    from mmie.stats import (
        ConfidenceInterval,
        PermutationTestResult,
        bootstrap_ci,
        holm_bonferroni,
        paired_permutation_test,
        permutation_test,
    )
    from mmie.unlearn import unlearn_lora, unlearn_reft
    from mmie.unlearn_config import (
        ReFTUnlearnResult,
        StepRecord,
        UnlearnConfig,
        UnlearnResult,
        ValidationRecord,
    )
