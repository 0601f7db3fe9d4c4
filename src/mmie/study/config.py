"""Experiment configuration: frozen, validated, TOML/JSON round-trippable dataclasses.

An :class:`ExperimentConfig` describes a whole study: the model, the text sets, layer
selection, the SAE, the unlearning *arms* to compare, the seeds, the metrics, the gate
thresholds and where results go. Every field has a default (documented next to it), so a
config file only needs what differs from :func:`demo_config`'s embedded default study.

Validation happens when an object is built; a bad value raises
:class:`~mmie.errors.ConfigError` with the *path* of the field (``arms[1].alpha``), what was
expected and what was received. Unknown keys in a file are rejected with the closest known
key as a suggestion, so a typo never silently falls back to a default.

Example:
    >>> cfg = demo_config(seeds=(0, 1))
    >>> cfg.seeds, [a.name for a in cfg.arms][:3]
    ((0, 1), ['lora', 'reft', 'sae_gate@0.5'])
    >>> ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    True

A TOML file (``mmie run study.toml``)::

    model = "Qwen/Qwen2-0.5B"
    dtype = "bfloat16"
    seeds = [0, 1, 2, 3, 4]

    [data]
    n_forget = 200

    [[arms]]
    kind = "lora"
    objective = "npo"

    [[arms]]
    kind = "lora+sae_gate"
    alpha = 0.8
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from mmie._config import ConfigBase, FieldError, require, validate_fields
from mmie.errors import ConfigError
from mmie.sae.layouts import LAYOUTS

__all__ = [
    "ARM_PARTS",
    "ATTACKS",
    "CONTROLS",
    "DEMO_OVERRIDES",
    "METRICS",
    "OPTIONAL_METRICS",
    "QUICK_OVERRIDES",
    "ArmConfig",
    "DataConfig",
    "ExperimentConfig",
    "GateConfig",
    "GenerationConfig",
    "ReferenceConfig",
    "RobustnessConfig",
    "SAETrainingConfig",
    "SamplingConfig",
    "SelectionConfig",
    "SplitConfig",
    "demo_config",
    "load_config",
]

#: The building blocks of an arm's ``kind``; combine them with ``+`` (``"lora+sae_gate"``).
ARM_PARTS: tuple[str, ...] = ("lora", "reft", "scrub", "sae_gate", "dynamic_gate")

#: Control arms: they cannot have unlearnt anything, so every gate set must reject them.
#: ``identity`` (the base model), ``script_ban`` (a byte-aware ban of every token that starts
#: or continues a target-script character), ``eos`` (an empty answer to every prompt) and
#: ``noise`` (Gaussian noise at one block, a destructive edit).
CONTROLS: tuple[str, ...] = ("identity", "script_ban", "eos", "noise")
CONTROL_PREFIX = "control."  # a control arm is named "control.<kind>"
_TRAINED_PARTS = ("lora", "reft")  # change weights or add trained adapters
_GATE_PARTS = ("sae_gate", "dynamic_gate")  # SAE feature gates

#: Metric groups a study can compute (``ExperimentConfig.metrics``); see docs/methods.md.
METRICS: tuple[str, ...] = (
    "forget_es",
    "mixed_es",
    "retain_ppl",
    "forget_ppl",
    "leakage",
    "redistribution",
    "mia",
    "script_mass",
    "probe",
    "english",
    "sampled",
)
#: Metric groups computed only when listed in ``metrics`` (the demo lists them).
OPTIONAL_METRICS: tuple[str, ...] = ("robustness",)
#: Recoverability attacks of the ``robustness`` group (see :class:`RobustnessConfig`).
ATTACKS: tuple[str, ...] = ("relearning", "steering", "in_context", "logit_lens", "quantisation")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+@-]*$")

Dtype = Literal["float32", "bfloat16", "float16"]
CIMethodName = Literal["auto", "t", "percentile", "basic", "bca"]


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True, kw_only=True)
class DataConfig(ConfigBase):
    """Which text sets a study uses and how many texts of each.

    Each set is a bundled set name (see :data:`mmie.BUNDLED_SETS`) or a path to a
    JSONL file of ``{"text": ...}`` records. Training sets are the first ``n_forget`` /
    ``n_retain`` texts (fixed across seeds, so per-item results pair up); evaluation sets are
    the first ``n_eval`` texts of each evaluation set. Teacher-forced metrics are cheap next
    to generation, so the held-out forget and retain sets can give them more texts
    (``n_eval_texts``: perplexity, MIA non-members, probes) while their prompts stay the
    first ``n_eval``.
    """

    forget: str = "hindi_train"  # texts to unlearn (Hindi, Devanagari); also MIA members
    retain: str = "english_train"  # texts whose behaviour must be kept (English)
    forget_eval: str = "hindi_eval"  # held-out Hindi: forget prompts, MIA non-members
    retain_eval: str = "english_eval"  # held-out English: retain perplexity
    mixed: tuple[str, ...] = ("hinglish", "adversarial")  # mixed-language/adversarial prompts
    romanized: tuple[str, ...] = ("hindi_romanized",)  # prompts where romanised Hindi may appear
    related: tuple[str, ...] = ("urdu", "punjabi", "bengali")  # related languages (leakage)
    whole_prompt_sets: tuple[str, ...] = ("adversarial",)  # sets whose lines are whole prompts
    n_forget: int = 64  # forget texts used for training (and as MIA members)
    n_retain: int = 64  # retain texts used for training
    n_eval: int = 32  # texts taken from each evaluation set
    n_eval_texts: int | None = None  # forget_eval/retain_eval texts scored teacher-forced
    max_length: int = 128  # tokens per text when scoring or training (longer ones truncated)
    batch_size: int = 16  # texts per forward pass when scoring

    def __post_init__(self) -> None:
        validate_fields(self)
        for name in ("forget", "retain", "forget_eval", "retain_eval"):
            require(bool(getattr(self, name).strip()), name, "must not be empty")
        for name in ("n_forget", "n_retain", "max_length", "batch_size"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.n_eval >= 2, "n_eval", f"must be >= 2, got {self.n_eval}")
        require(
            self.n_eval_texts is None or self.n_eval_texts >= self.n_eval,
            "n_eval_texts",
            f"must be >= n_eval ({self.n_eval}) or unset, got {self.n_eval_texts}",
        )
        require(self.forget != self.forget_eval, "forget_eval", "must differ from forget")
        require(self.retain != self.retain_eval, "retain_eval", "must differ from retain")

    @property
    def n_scored(self) -> int:
        """Held-out forget/retain texts scored teacher-forced (``n_eval_texts`` or ``n_eval``)."""
        return self.n_eval if self.n_eval_texts is None else self.n_eval_texts


@dataclass(frozen=True, kw_only=True)
class SelectionConfig(ConfigBase):
    """How the layers that SAE gates, scrubbers and ReFT adapters act on are chosen."""

    mode: Literal["contrast", "similarity", "semantic", "fixed"] = "contrast"  # see select_layers
    n_layers: int = 1  # layers to select
    stability_seeds: int = 3  # stability-selection resamples (reuse one activation cache)
    layers: tuple[int, ...] = ()  # the layers when mode = "fixed" (ignored otherwise)
    n_texts: int = 32  # texts per language fed to selection

    def __post_init__(self) -> None:
        validate_fields(self)
        require(self.n_layers >= 1, "n_layers", f"must be >= 1, got {self.n_layers}")
        require(
            self.stability_seeds >= 1,
            "stability_seeds",
            f"must be >= 1, got {self.stability_seeds}",
        )
        require(self.n_texts >= 2, "n_texts", f"must be >= 2, got {self.n_texts}")
        if self.mode == "fixed":
            require(bool(self.layers), "layers", 'must list the layers when mode = "fixed"')
        for i, layer in enumerate(self.layers):
            require(layer >= 0, f"layers[{i}]", f"must be >= 0, got {layer}")
        require(len(set(self.layers)) == len(self.layers), "layers", "has duplicates")


@dataclass(frozen=True, kw_only=True)
class SAETrainingConfig(ConfigBase):
    """The sparse autoencoders of the SAE gates: trained (one per selected layer and seed), or
    pretrained ones read from disk.

    ``paths`` maps layers to pretrained SAE directories, as ``"LAYER=DIR"`` strings or, in a
    TOML/JSON file, a table (``paths = {12 = "saes/layer_12"}``). A selected layer with a
    path uses that SAE for every seed (read with :meth:`mmie.SparseAutoencoder.load` in
    ``layout``, checked with :func:`mmie.check_reconstruction` on the training texts) instead
    of training one; the other layers are trained as usual.
    """

    architecture: Literal["topk", "relu"] = "topk"  # SAE activation (see SparseAutoencoder)
    d_sae_multiple: int = 4  # d_sae = d_sae_multiple * d_model
    k: int = 16  # active latents per token (topk only)
    steps: int = 300  # optimizer steps
    lr: float = 1e-3  # Adam learning rate
    batch_size: int = 256  # tokens per step
    l1_coefficient: float = 0.1  # sparsity penalty (relu only)
    n_features: int = 64  # features gated per layer (at most)
    picker: Literal["contrast", "script_invariant", "threshold"] = "contrast"  # feature picker
    max_retain_frequency: float = 0.05  # skip latents firing on more retain tokens than this
    paths: tuple[str, ...] = ()  # pretrained SAEs, "LAYER=DIR" (a {LAYER = DIR} table in files)
    layout: str = "auto"  # layout of the pretrained SAEs ("auto": detect each; see load)

    def __post_init__(self) -> None:
        if isinstance(self.paths, Mapping):  # a TOML/JSON table {layer: dir}
            object.__setattr__(self, "paths", tuple(f"{k}={v}" for k, v in self.paths.items()))
        validate_fields(self)
        for name in ("d_sae_multiple", "k", "steps", "batch_size", "n_features"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(
            self.l1_coefficient >= 0, "l1_coefficient", f"must be >= 0, got {self.l1_coefficient}"
        )
        require(
            0 <= self.max_retain_frequency <= 1,
            "max_retain_frequency",
            f"must be in [0, 1], got {self.max_retain_frequency}",
        )
        require(
            self.layout == "auto" or self.layout in LAYOUTS,
            "layout",
            f"must be one of {['auto', *LAYOUTS]}, got {self.layout!r}",
        )
        seen: dict[int, int] = {}
        for i, entry in enumerate(self.paths):
            layer_text, sep, directory = entry.partition("=")
            require(
                bool(sep) and re.fullmatch(r"[0-9]+", layer_text.strip()) is not None,
                f"paths[{i}]",
                f'expected "LAYER=DIR" with LAYER an int >= 0, got {entry!r}',
            )
            require(bool(directory.strip()), f"paths[{i}]", f"the directory is empty in {entry!r}")
            layer = int(layer_text)
            require(
                layer not in seen,
                f"paths[{i}]",
                f"layer {layer} already has a path (paths[{seen.get(layer)}])",
            )
            seen[layer] = i

    def pretrained(self) -> dict[int, str]:
        """``layer -> directory`` of the pretrained SAEs in ``paths``."""
        out = {}
        for entry in self.paths:
            layer, _, directory = entry.partition("=")
            out[int(layer)] = directory.strip()
        return out


@dataclass(frozen=True, kw_only=True)
class ArmConfig(ConfigBase):
    """One unlearning arm: a method (or a combination) and its options.

    ``kind`` combines ``ARM_PARTS`` (``lora``, ``reft``, ``scrub``, ``sae_gate``, ``dynamic_gate``) with ``+``: at most one trained part (``lora`` or
    ``reft``), at most one gate (``sae_gate`` or ``dynamic_gate``) and optionally ``scrub``,
    e.g. ``"lora+sae_gate"`` or ``"reft+scrub"``. At inference the parts apply in the order
    trained part, scrubber, gate. Options that a part does not use are ignored.
    """

    kind: str  # the method, e.g. "lora", "sae_gate", "lora+sae_gate"
    name: str = ""  # label in shards and reports (default: kind); must be unique
    alpha: float = 1.0  # gate attenuation in [0, 1] (sae_gate; dynamic_gate's high alpha)
    base_alpha: float = 0.0  # dynamic_gate: alpha before the continuation drifts into the target
    penalty: float = 0.0  # dynamic_gate: logit penalty on target-script tokens (0 = script-blind)
    objective: Literal["npo", "ga", "graddiff"] = "npo"  # lora/reft unlearning objective
    steps: int = 100  # lora/reft optimizer steps
    lr: float = 1e-4  # lora/reft learning rate (the tiny demo model uses 5e-3)
    rank: int = 8  # LoRA rank / LoReFT rank
    batch_size: int = 8  # lora/reft texts per step (forget and retain each)
    kl_weight: float = 1.0  # weight of the KL-to-reference retain term (UnlearnConfig.kl_weight)
    beta: float = 0.1  # NPO temperature
    scrub_method: Literal["leace", "orth"] = "leace"  # scrub eraser
    scrub_center: Literal["retain", "mean"] = "retain"  # erase toward the retain tokens' mean
    layers: tuple[int, ...] = ()  # layers to act on (default: the selected layers)
    noise_scale: float = 1.0  # noise control: noise RMS as a multiple of the hidden state's RMS

    _RENAMED: ClassVar[Mapping[str, str]] = {"retain_weight": "kl_weight"}

    def __post_init__(self) -> None:
        validate_fields(self)
        object.__setattr__(self, "kind", "+".join(self.parts))
        parts = self.parts
        if any(p in CONTROLS for p in parts):
            require(
                len(parts) == 1,
                "kind",
                f"a control ({', '.join(CONTROLS)}) cannot be combined with other parts: "
                f"{self.kind!r}",
            )
        else:
            for part in parts:
                require(
                    part in ARM_PARTS,
                    "kind",
                    f"unknown part {part!r} in {self.kind!r}; parts are {list(ARM_PARTS)} "
                    f"joined with '+' (or one control of {list(CONTROLS)})",
                )
        require(len(set(parts)) == len(parts), "kind", f"repeats a part: {self.kind!r}")
        require(
            sum(p in _TRAINED_PARTS for p in parts) <= 1,
            "kind",
            f"combines lora and reft: {self.kind!r}; use one trained part per arm",
        )
        require(
            sum(p in _GATE_PARTS for p in parts) <= 1,
            "kind",
            f"combines sae_gate and dynamic_gate: {self.kind!r}; dynamic_gate already gates",
        )
        if not self.name:
            object.__setattr__(self, "name", self.kind)
        require(
            bool(_NAME_RE.match(self.name)),
            "name",
            f"must be letters, digits and _.+@- (it names shard files), got {self.name!r}",
        )
        require(0.0 <= self.alpha <= 1.0, "alpha", f"must be in [0, 1], got {self.alpha}")
        require(
            0.0 <= self.base_alpha <= self.alpha,
            "base_alpha",
            f"must be in [0, alpha={self.alpha}], got {self.base_alpha}",
        )
        require(self.penalty >= 0, "penalty", f"must be >= 0, got {self.penalty}")
        for name in ("steps", "rank", "batch_size"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        require(self.kl_weight >= 0, "kl_weight", f"must be >= 0, got {self.kl_weight}")
        require(self.noise_scale >= 0, "noise_scale", f"must be >= 0, got {self.noise_scale}")
        for i, layer in enumerate(self.layers):
            require(layer >= 0, f"layers[{i}]", f"must be >= 0, got {layer}")

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts of ``kind`` (``"lora+sae_gate"`` → ``("lora", "sae_gate")``)."""
        return tuple(p.strip() for p in self.kind.split("+"))

    @property
    def trained_part(self) -> str | None:
        """``"lora"``, ``"reft"`` or ``None``."""
        return next((p for p in self.parts if p in _TRAINED_PARTS), None)

    @property
    def gate_part(self) -> str | None:
        """``"sae_gate"``, ``"dynamic_gate"`` or ``None``."""
        return next((p for p in self.parts if p in _GATE_PARTS), None)

    @property
    def control(self) -> str | None:
        """The control kind (``"identity"``, ``"script_ban"``, ...) or ``None``."""
        return self.kind if self.kind in CONTROLS else None

    @property
    def seed_invariant(self) -> bool:
        """Whether nothing random goes into building the arm (no training, no SAE, no noise):
        its result is the same for every seed, so a study runs it once."""
        if self.control is not None:
            return self.control != "noise"
        return self.trained_part is None and self.gate_part is None

    @property
    def scrubs(self) -> bool:
        """Whether the arm applies a LEACE scrubber."""
        return "scrub" in self.parts


@dataclass(frozen=True, kw_only=True)
class GateConfig(ConfigBase):
    """Thresholds of the decision gates (see docs/methods.md, "Gates", for each margin's reason).

    Forget-side gates need the arm to *show* an effect; retain-side gates need it to *show*
    that a change stays within a margin (non-inferiority), so too few items make a gate fail
    rather than pass. Every bounded metric (extraction strength, shares, script mass,
    rates) is tested with a one-sided bound that is valid for any distribution on its range.
    """

    alpha: float = 0.05  # significance level of every gate's test (per seed, see seed_rule)
    correction: Literal["holm", "none"] = "holm"  # multiple-comparison correction across arms
    bound: Literal["betting", "bernstein", "hoeffding"] = "betting"  # bounded-mean test
    n_permutations: int = 10_000  # sign flips of the log-perplexity tests (exact if 2**n below)
    min_forget_reduction: float = 0.25  # forget ES (greedy and sampled) must drop >= this share
    es_floor: float = 0.05  # base value at or below this: nothing to remove ("not evaluated")
    min_script_mass_reduction: float = 0.25  # knowledge: P(next letter target) must drop this
    min_forget_ppl_ratio: float = 2.0  # knowledge: forget perplexity must grow >= this factor
    retain_ppl_ratio: float = 1.25  # retain perplexity may grow at most by this factor
    english_degenerate_margin: float = 0.1  # empty/repetitive English outputs may rise by this
    english_leak_margin: float = 0.05  # target-script share of English outputs may rise by this
    related_ppl_ratio: float = 1.5  # related-language perplexity may grow at most by this factor
    leakage_es_margin: float = 0.05  # target ES on related-language prompts may rise by this
    redistribution_margin: float = 0.05  # romanised/other-script target output may rise by this
    mia_margin: float = 0.15  # no reference: MIA AUC must lie in 0.5 +- this
    mia_reference_margin: float = 0.1  # with a retrained reference: |AUC - AUC_retrain| < this

    def __post_init__(self) -> None:
        validate_fields(self)
        require(0 < self.alpha < 0.5, "alpha", f"must be in (0, 0.5), got {self.alpha}")
        require(
            self.n_permutations >= 1, "n_permutations", f"must be >= 1, got {self.n_permutations}"
        )
        for name in ("min_forget_reduction", "min_script_mass_reduction"):
            value = getattr(self, name)
            require(0 < value <= 1, name, f"must be in (0, 1], got {value}")
        require(0 <= self.es_floor < 1, "es_floor", f"must be in [0, 1), got {self.es_floor}")
        for name in ("retain_ppl_ratio", "related_ppl_ratio", "min_forget_ppl_ratio"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        for name in (
            "english_degenerate_margin",
            "english_leak_margin",
            "leakage_es_margin",
            "redistribution_margin",
        ):
            value = getattr(self, name)
            require(0 <= value < 1, name, f"must be in [0, 1), got {value}")
        for name in ("mia_margin", "mia_reference_margin"):
            value = getattr(self, name)
            require(0 < value < 0.5, name, f"must be in (0, 0.5), got {value}")


@dataclass(frozen=True, kw_only=True)
class GenerationConfig(ConfigBase):
    """Greedy continuation of prompts, for the output metrics (extraction strength, shares).

    Every prompt set is checked before the model loads: it must keep at least
    ``min_prompts`` *distinct* prompts after truncation to ``prompt_words`` words (sets whose
    lines share an opening collapse otherwise); duplicates are a :class:`~mmie.MmieWarning`
    (each would count as an item) unless ``dedupe_prompts`` drops them.
    """

    max_new_tokens: int = 32  # tokens generated per prompt
    prompt_words: int = 4  # a prompt is the first words of an evaluation text
    batch_size: int = 16  # prompts per generate() call
    min_prompts: int = 4  # fewest distinct prompts a prompt set may have
    dedupe_prompts: bool = False  # drop duplicate prompts instead of refusing them

    def __post_init__(self) -> None:
        validate_fields(self)
        for name in ("max_new_tokens", "prompt_words", "batch_size", "min_prompts"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class SamplingConfig(ConfigBase):
    """Sampling-based leakage (metric group ``sampled``): N samples per forget prompt.

    Greedy decoding underestimates leakage: a prompt can give an English greedy
    continuation and a Hindi one in one sample of eight. Per prompt the study records the
    share of samples whose letters are mostly target-script (at least ``dominated``) and
    the worst sample's target share.
    """

    n_samples: int = 8  # samples per prompt
    temperature: float = 1.0  # sampling temperature
    dominated: float = 0.5  # a sample is target-dominated at this target-script letter share
    seed: int = 0  # seed of the samples (the same for the base model and every arm)

    def __post_init__(self) -> None:
        validate_fields(self)
        require(self.n_samples >= 1, "n_samples", f"must be >= 1, got {self.n_samples}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        require(0 < self.dominated <= 1, "dominated", f"must be in (0, 1], got {self.dominated}")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")


@dataclass(frozen=True, kw_only=True)
class RobustnessConfig(ConfigBase):
    """Recoverability attacks (metric group ``robustness``): is the language removed or hidden?

    Each attack runs on the base model, the references and the arms under identical settings
    (seeded, the same texts) and the report judges every arm against the oracle under the
    same attack (docs/methods.md, "Recoverability"). The relearning and in-context attacks
    need held-out target texts (``relearn``) that are disjoint from every other set of the
    study (checked with the others before any model loads).
    """

    attacks: tuple[str, ...] = ATTACKS  # which attacks to run (see ATTACKS)
    relearn: str = ""  # held-out target texts: a set name, a JSONL path or "demo:relearn"
    n_relearn: int = 16  # relearning / in-context / steering texts taken from ``relearn``
    relearn_method: Literal["lora", "full"] = "lora"  # fine-tune a fresh LoRA or every weight
    relearn_steps: tuple[int, ...] = (0, 2, 5, 10, 25)  # optimizer steps evaluated
    relearn_lr: float | None = None  # None: 1e-3 for LoRA, 1e-4 for full fine-tuning
    relearn_rank: int = 8  # LoRA rank of the attack
    steering_scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)  # multiples of the direction
    in_context_k: int = 3  # held-out target sentences prepended to each forget prompt
    quantisation_bits: tuple[int, ...] = (8, 4)  # round-to-nearest bit widths
    n_texts: int = 48  # held-out forget texts (test part) scored under each attack
    n_prompts: int = 16  # forget prompts (test part) generated from and read
    batch_size: int = 8  # texts per step and per scoring pass
    margin: float = 0.25  # removed: at least 1 - margin of the way from base to reference
    seeds: Literal["first", "all"] = "first"  # attack each arm's first seed, or every seed
    controls: bool = False  # attack the control arms too
    seed: int = 0  # seed of every attack (the same for every model)

    def __post_init__(self) -> None:
        validate_fields(self)
        require(bool(self.attacks), "attacks", "must list at least one attack")
        for i, attack in enumerate(self.attacks):
            require(
                attack in ATTACKS, f"attacks[{i}]", f"unknown attack {attack!r}; known: {ATTACKS}"
            )
        require(len(set(self.attacks)) == len(self.attacks), "attacks", "has duplicates")
        for name in ("n_relearn", "relearn_rank", "n_texts", "n_prompts", "batch_size"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        steps = self.relearn_steps
        require(
            bool(steps) and all(b > a for a, b in itertools.pairwise(steps)) and steps[0] >= 0,
            "relearn_steps",
            f"must be strictly increasing step counts >= 0, got {list(steps)}",
        )
        require(
            self.relearn_lr is None or self.relearn_lr > 0,
            "relearn_lr",
            f"must be > 0, got {self.relearn_lr}",
        )
        require(
            bool(self.steering_scales) and all(x > 0 for x in self.steering_scales),
            "steering_scales",
            f"must be positive, got {list(self.steering_scales)}",
        )
        require(
            0 <= self.in_context_k <= self.n_relearn,
            "in_context_k",
            f"must be in [0, n_relearn={self.n_relearn}], got {self.in_context_k}",
        )
        require(
            bool(self.quantisation_bits) and all(2 <= b <= 16 for b in self.quantisation_bits),
            "quantisation_bits",
            f"must be bit widths in [2, 16], got {list(self.quantisation_bits)}",
        )
        require(0 < self.margin < 1, "margin", f"must be in (0, 1), got {self.margin}")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")

    @property
    def needs_texts(self) -> bool:
        """Whether an attack needs the held-out target texts (all but logit lens and
        quantisation)."""
        return bool({"relearning", "steering", "in_context"} & set(self.attacks))


@dataclass(frozen=True, kw_only=True)
class SplitConfig(ConfigBase):
    """Items split into a *selection* part and a *test* part.

    Anything chosen from results (the report's best arm) is chosen on the selection part;
    gates run on the test part only, so the choice cannot inflate the test.
    """

    selection_fraction: float = 0.25  # share of each item list used for selection only
    seed: int = 0  # seed of the split (fixed across arms and seeds, so items pair up)

    def __post_init__(self) -> None:
        validate_fields(self)
        require(
            0 <= self.selection_fraction < 1,
            "selection_fraction",
            f"must be in [0, 1), got {self.selection_fraction}",
        )
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")


@dataclass(frozen=True, kw_only=True)
class ReferenceConfig(ConfigBase):
    """Reference models evaluated like the base model (one extra evaluation each).

    ``oracle`` never saw the target language; ``retrain`` is the base recipe retrained
    without the forget texts (TOFU/MUSE). Each is a local path, a hub id, ``"demo:oracle"``
    or ``"demo:retrain"`` (the bundled demo references), or ``""`` for none. With them the
    report places every arm between the base and the oracle, the MIA gate compares with the
    retrained model (PrivLeak), and recoverability can be judged against the oracle.
    """

    oracle: str = ""  # a model that never saw the target language
    retrain: str = ""  # the base recipe without the forget texts

    def named(self) -> dict[str, str]:
        """``{"oracle": ..., "retrain": ...}`` for the references that are set."""
        return {k: v for k, v in (("oracle", self.oracle), ("retrain", self.retrain)) if v}


def _default_arms() -> tuple[ArmConfig, ...]:
    return (
        ArmConfig(kind="lora"),
        ArmConfig(kind="reft"),
        ArmConfig(kind="sae_gate"),
        ArmConfig(kind="scrub"),
        ArmConfig(kind="dynamic_gate", base_alpha=0.0, alpha=1.0),
    )


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig(ConfigBase):
    """A whole study: model, data, arms, seeds, metrics, gates and outputs.

    Nested sections are :class:`DataConfig`, :class:`SelectionConfig`,
    :class:`SAETrainingConfig`, a tuple of :class:`ArmConfig`, :class:`ReferenceConfig`,
    :class:`GateConfig`, :class:`GenerationConfig`, :class:`SamplingConfig`,
    :class:`SplitConfig` and :class:`RobustnessConfig`. Build one in Python (mappings and lists are accepted for the
    sections and converted), with ``from_dict``, or from a file with :func:`load_config`.

    Raises:
        ConfigError: a bad value; the message names the field path (``arms[1].alpha``).
    """

    name: str = "mmie-study"  # label shown in reports
    model: str = "demo"  # local path or hub id of a causal LM, or "demo" (bundled tiny model)
    dtype: Dtype = "float32"  # parameter dtype of the model
    device: str = "auto"  # "auto" (CUDA or CPU), "cpu", "cuda:N", "sharded" (device_map="auto")
    target: str = "hi"  # language label of the forget language (detector label)
    data: DataConfig = field(default_factory=DataConfig)  # text sets and sizes
    selection: SelectionConfig = field(default_factory=SelectionConfig)  # layer selection
    sae: SAETrainingConfig = field(default_factory=SAETrainingConfig)  # SAEs for the gates
    arms: tuple[ArmConfig, ...] = field(default_factory=_default_arms)  # arms to compare
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # one training run per seed and arm (>= 5 advised)
    controls: tuple[str, ...] = CONTROLS  # control arms run with every study (see CONTROLS)
    references: ReferenceConfig = field(default_factory=ReferenceConfig)  # oracle / retrain
    metrics: tuple[str, ...] = METRICS  # metric groups to compute (see METRICS)
    gates: GateConfig = field(default_factory=GateConfig)  # decision thresholds
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # prompt settings
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # sampled leakage
    split: SplitConfig = field(default_factory=SplitConfig)  # selection / test items
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)  # attacks
    ci_method: CIMethodName = "auto"  # interval method; auto = "t" below 10 values, else "bca"
    ci_alpha: float = 0.05  # 1 - confidence level of the reported intervals
    n_boot: int = 10_000  # bootstrap resamples (unused by "t")
    output_dir: str = "mmie-results"  # shards, artifacts and reports go here
    plots: bool | None = None  # None: plot if matplotlib is installed; True: required

    def __post_init__(self) -> None:
        validate_fields(self)
        require(bool(self.model.strip()), "model", "must not be empty")
        require(
            self.device in ("auto", "sharded")
            or bool(re.match(r"^(cpu|cuda|mps)(:\d+)?$", self.device)),
            "device",
            f'must be "auto", "sharded", "cpu", "cuda", "cuda:N" or "mps", got {self.device!r}',
        )
        require(bool(self.target.strip()), "target", "must not be empty")
        require(bool(self.arms), "arms", "must list at least one arm")
        seen: dict[str, int] = {}
        for i, arm in enumerate(self.arms):
            if arm.name in seen:
                raise FieldError(
                    f"arms[{i}].name",
                    f"duplicate arm name {arm.name!r} (also arms[{seen[arm.name]}]); give one "
                    "of them a distinct name",
                )
            seen[arm.name] = i
            require(arm.name != "base", f"arms[{i}].name", '"base" is reserved')
            require(
                not arm.name.startswith(CONTROL_PREFIX) and arm.control is None,
                f"arms[{i}]",
                f"controls are configured with `controls = [...]`, not as arms ({arm.name!r})",
            )
        for i, control in enumerate(self.controls):
            require(
                control in CONTROLS,
                f"controls[{i}]",
                f"unknown control {control!r}; controls are {list(CONTROLS)}",
            )
        require(len(set(self.controls)) == len(self.controls), "controls", "has duplicates")
        for name, source in self.references.named().items():
            require(
                not source.startswith("demo:") or self.model == "demo",
                f"references.{name}",
                f"{source!r} is a reference of the bundled demo model and cannot serve "
                f"model {self.model!r} (they must share a tokenizer and a recipe)",
            )
        require(bool(self.seeds), "seeds", "must list at least one seed")
        for i, seed in enumerate(self.seeds):
            require(seed >= 0, f"seeds[{i}]", f"must be >= 0, got {seed}")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", "has duplicates")
        require(bool(self.metrics), "metrics", "must list at least one metric")
        known = METRICS + OPTIONAL_METRICS
        for i, metric in enumerate(self.metrics):
            if metric not in known:
                close = difflib.get_close_matches(metric, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {list(known)}"
                raise FieldError(f"metrics[{i}]", f"unknown metric {metric!r}{hint}")
        require(len(set(self.metrics)) == len(self.metrics), "metrics", "has duplicates")
        if "robustness" in self.metrics and self.robustness.needs_texts:
            require(
                bool(self.robustness.relearn.strip()),
                "robustness.relearn",
                "the relearning, steering and in-context attacks need held-out target texts: "
                "name a set or JSONL file (or drop those attacks from robustness.attacks)",
            )
        require(
            self.robustness.relearn != "demo:relearn" or self.model == "demo",
            "robustness.relearn",
            "'demo:relearn' holds lines of the bundled demo data that only the demo model "
            f"was kept from; name held-out texts for model {self.model!r}",
        )
        require(0 < self.ci_alpha < 1, "ci_alpha", f"must be in (0, 1), got {self.ci_alpha}")
        require(self.n_boot >= 1, "n_boot", f"must be >= 1, got {self.n_boot}")
        require(bool(self.output_dir.strip()), "output_dir", "must not be empty")

    @property
    def all_arms(self) -> tuple[ArmConfig, ...]:
        """The configured arms followed by the control arms (named ``control.<kind>``)."""
        controls = tuple(ArmConfig(kind=c, name=CONTROL_PREFIX + c) for c in self.controls)
        return self.arms + controls

    def arm(self, name: str) -> ArmConfig:
        """The arm (or control arm) called ``name``.

        Raises:
            KeyError: no such arm (the message lists the arms).
        """
        for arm in self.all_arms:
            if arm.name == name:
                return arm
        raise KeyError(f"no arm named {name!r}; arms are {[a.name for a in self.all_arms]}")


# ----------------------------------------------------------------------------- files
def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def load_config(path: str | Path) -> ExperimentConfig:
    """Read an :class:`ExperimentConfig` from a ``.toml`` or ``.json`` file.

    Keys are the field names of :class:`ExperimentConfig`; sections are tables
    (``[data]``, ``[gates]``), arms an array of tables (``[[arms]]``). Missing keys keep their
    defaults (those of :func:`demo_config` for the embedded study are the same).

    Args:
        path: the file; the suffix decides the format.

    Returns:
        The validated config.

    Raises:
        ConfigError: the file is missing, not TOML/JSON, malformed (the message gives the
            parser's line), or a value is invalid (the message names the field path).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".toml":
        data = _read_toml(p)
    elif suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{p}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
    else:
        raise ConfigError(f"{p}: unknown config format {suffix!r}; use .toml or .json")
    try:
        config: ExperimentConfig = ExperimentConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    return config


def _demo_arms() -> tuple[ArmConfig, ...]:
    # Tuned on the bundled demo model (d_model 64, 4 blocks): a high learning rate and a
    # strong KL retain term, and an alpha dose-response pair for the SAE gate.
    def trained(kind: str, rank: int) -> ArmConfig:
        return ArmConfig(kind=kind, rank=rank, steps=100, lr=5e-3, kl_weight=3.0)

    return (
        trained("lora", 8),
        trained("reft", 4),
        ArmConfig(kind="sae_gate", name="sae_gate@0.5", alpha=0.5),
        ArmConfig(kind="sae_gate", alpha=1.0),
        ArmConfig(kind="scrub"),
        ArmConfig(kind="dynamic_gate", base_alpha=0.0, alpha=1.0, penalty=5.0),
        trained("lora+sae_gate", 8),
    )


#: What :func:`demo_config` changes in the :class:`ExperimentConfig` defaults.
DEMO_OVERRIDES: dict[str, Any] = {
    "name": "mmie demo",
    "model": "demo",
    "arms": _demo_arms(),
    "seeds": (0, 1, 2),
    "references": {"oracle": "demo:oracle", "retrain": "demo:retrain"},
    "selection": {"n_layers": 3},
    "generation": {"dedupe_prompts": True},  # Hinglish lines often share their first words
    # 48 evaluation texts per set (the bundled sets' evaluation region), 10% of them for
    # selection: 43 test items per set. Perplexity, MIA and probes score all 124 lines of
    # hindi_eval / english_eval (none is in any demo model's training data): 111 test texts.
    "data": {"n_eval": 48, "n_eval_texts": 124},
    "split": {"selection_fraction": 0.1},
    "metrics": (*METRICS, "robustness"),
    "robustness": {
        "relearn": "demo:relearn",  # the 32 hindi_train lines no demo model was trained on
        "relearn_steps": (0, 5, 25),
        "steering_scales": (1.0, 4.0),
        "in_context_k": 1,  # the demo model has 128 positions
        "n_prompts": 8,
    },
    "gates": {
        # Two retrains of the tiny demo recipe differ by x0.91-x1.20 in retain perplexity,
        # so a x1.25 margin sits inside run-to-run noise; x1.5 is outside it.
        "retain_ppl_ratio": 1.5,
        # A bounded non-inferiority test needs ~70 items to show a 0.05 margin even when
        # nothing changed; 43 test items show 0.15 after Holm's correction over the demo's
        # 7 arms (0.1 only for a single arm) (docs/methods.md, "Gates").
        "english_degenerate_margin": 0.15,
        "english_leak_margin": 0.15,
        "leakage_es_margin": 0.15,
        "redistribution_margin": 0.15,
    },
    "output_dir": "mmie-demo",
}

#: Overrides applied on top by ``mmie demo --quick`` and :func:`demo_config` ``(quick=True)``.
QUICK_OVERRIDES: dict[str, Any] = {
    "seeds": (0, 1),
    "data": {"n_forget": 32, "n_retain": 32, "n_eval": 16, "n_eval_texts": 64},
    "selection": {"stability_seeds": 2, "n_texts": 16},
    "sae": {"steps": 150},
    "generation": {"max_new_tokens": 24},
}


def demo_config(*, quick: bool = False, **overrides: Any) -> ExperimentConfig:
    """The embedded default study: bundled demo model and data, every arm, three seeds.

    It is :class:`ExperimentConfig` with ``DEMO_OVERRIDES``: the demo model, three
    selected layers, and arms tuned for the tiny demo model (LoRA, ReFT, the SAE gate at
    alpha 0.5 and 1, the LEACE scrubber, the dynamic gate with a token penalty, and LoRA
    combined with the SAE gate). ``mmie demo`` runs it.

    Args:
        quick: also apply ``QUICK_OVERRIDES`` (fewer texts, two seeds).
        **overrides: field values to change; sections may be given as mappings, which are
            merged into the defaults (``data={"n_eval": 8}`` keeps the other data fields).
            Another ``model`` drops the demo's reference models unless ``references`` is
            given too, and the ``robustness`` group (its relearning texts are demo data)
            unless ``metrics`` or ``robustness`` is given.

    Returns:
        The validated config.

    Raises:
        ConfigError: an override is invalid.
    """
    demo = dict(DEMO_OVERRIDES)
    if overrides.get("model", "demo") != "demo" and "references" not in overrides:
        demo.pop("references")  # the demo's references only fit the demo model
    if overrides.get("model", "demo") != "demo":
        demo.pop("robustness")  # "demo:relearn" is held out only from the demo models
        metrics = demo.pop("metrics")  # ... so the group stays only when asked for
        if "robustness" in overrides:
            overrides = {"metrics": metrics, **overrides}
    config = ExperimentConfig().replace(**demo)
    if quick:
        config = config.replace(**QUICK_OVERRIDES)
    if overrides:
        config = config.replace(**overrides)
    return config
