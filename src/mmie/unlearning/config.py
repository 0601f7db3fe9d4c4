"""Configuration and result records of the unlearning arms (LoRA and ReFT).

:class:`UnlearnConfig` says how an arm is trained (objective, schedule, optimiser, validation
and early stopping); it validates every field and the cross-field rules when it is built and
round-trips through JSON. :class:`StepRecord` and :class:`ValidationRecord` log one optimizer
step and one validation; :class:`UnlearnResult` and :class:`ReFTUnlearnResult` are what
:func:`~mmie.unlearn_lora` and :func:`~mmie.unlearn_reft` return.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from mmie._config import ConfigBase, require, validate_fields

__all__ = [
    "ReFTUnlearnResult",
    "StepRecord",
    "UnlearnConfig",
    "UnlearnResult",
    "ValidationRecord",
]

Objective = Literal["ga", "npo", "graddiff"]
Schedule = Literal["joint", "alternating"]
LRSchedule = Literal["constant", "cosine"]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, kw_only=True)
class UnlearnConfig(ConfigBase):
    """How an unlearning arm is trained (shared by LoRA and ReFT).

    Every field is keyword-only; ``to_dict``/``from_dict`` round-trip through JSON.

    Raises:
        ConfigError: a field has a wrong type or value, or two fields contradict each other;
            the message names the field.
    """

    objective: Objective = "npo"  # forget term: gradient ascent, NPO or gradient difference
    steps: int = 100  # optimizer steps
    lr: float = 1e-4  # peak learning rate of AdamW
    batch_size: int = 8  # texts per forget batch and per retain batch
    max_length: int = 256  # tokens per text; longer texts are truncated (TruncationWarning)
    retain_nll_weight: float | None = None  # weight of NLL(retain); None: 1 for graddiff, else 0
    kl_weight: float = 1.0  # weight of the token-mean KL(p_ref || p_θ) on retain texts
    beta: float = 0.1  # NPO inverse temperature
    schedule: Schedule = "joint"  # both terms every step, or forget/retain on odd/even steps
    grad_clip: float | None = 1.0  # max global gradient norm; None disables clipping
    lr_schedule: LRSchedule = "constant"  # after warm-up: constant or cosine decay to 0
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    weight_decay: float = 0.0  # AdamW weight decay of the adapter parameters
    val_fraction: float = 0.0  # held-out share of each text set for validation; 0 disables it
    eval_every: int = 10  # validate every this many steps (and after the last step)
    val_kl_weight: float = 1.0  # validation score = forget NLL margin − this · retain KL
    patience: int | None = None  # stop after this many validations without improvement
    min_delta: float = 0.0  # an improvement must beat the best score by more than this
    max_retain_kl: float | None = None  # stop as soon as the validation retain KL exceeds it
    restore_best: bool = True  # end with the best-scoring adapter weights (when validating)
    gradient_checkpointing: bool = False  # trade compute for activation memory
    seed: int = 0  # data order, adapter initialisation, dropout

    _RENAMED: ClassVar[Mapping[str, str]] = {"retain_weight": "retain_nll_weight"}

    def __post_init__(self) -> None:
        validate_fields(self)
        for name, low in (("steps", 1), ("batch_size", 1), ("max_length", 2), ("eval_every", 1)):
            value = getattr(self, name)
            require(value >= low, name, f"must be >= {low}, got {value}")
        require(
            0 <= self.warmup_steps <= self.steps,
            "warmup_steps",
            f"must be in [0, steps={self.steps}], got {self.warmup_steps}",
        )
        require(0 <= self.seed < 2**32, "seed", f"must be in [0, 2**32), got {self.seed}")
        require(
            self.patience is None or self.patience >= 1,
            "patience",
            f"must be None or >= 1, got {self.patience}",
        )
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        for name in ("kl_weight", "weight_decay", "min_delta", "val_kl_weight"):
            value = getattr(self, name)
            require(value >= 0, name, f"must be >= 0, got {value}")
        for name in ("grad_clip", "max_retain_kl"):
            value = getattr(self, name)
            require(value is None or value > 0, name, f"must be None or > 0, got {value}")
        require(
            self.retain_nll_weight is None or self.retain_nll_weight >= 0,
            "retain_nll_weight",
            f"must be None or >= 0, got {self.retain_nll_weight}",
        )
        require(
            0 <= self.val_fraction < 1,
            "val_fraction",
            f"must be in [0, 1), got {self.val_fraction}",
        )
        # Cross-field rules.
        require(
            not (self.objective == "graddiff" and self.retain_nll_weight == 0),
            "retain_nll_weight",
            "must be > 0 for objective='graddiff' (with retain_nll_weight=0 it is objective='ga')",
        )
        require(
            not (self.schedule == "alternating" and not self.has_retain_term),
            "schedule",
            "'alternating' needs a retain term: set kl_weight > 0 or retain_nll_weight > 0",
        )
        require(
            (self.patience is None and self.max_retain_kl is None) or self.val_fraction > 0,
            "val_fraction",
            "patience and max_retain_kl need a validation split: set val_fraction > 0",
        )

    @property
    def effective_retain_nll_weight(self) -> float:
        """The weight of ``NLL(retain)`` actually used (``retain_nll_weight`` or its default)."""
        if self.retain_nll_weight is not None:
            return float(self.retain_nll_weight)
        return 1.0 if self.objective == "graddiff" else 0.0

    @property
    def has_retain_term(self) -> bool:
        """Whether any retain loss is trained (``NLL`` or ``KL`` weight above zero)."""
        return self.effective_retain_nll_weight > 0 or self.kl_weight > 0

    @property
    def validates(self) -> bool:
        """Whether a validation split is held out and scored."""
        return self.val_fraction > 0


def resolve_config(config: UnlearnConfig | None, **overrides: Any) -> UnlearnConfig:
    if config is not None and not isinstance(config, UnlearnConfig):
        raise TypeError(f"config must be an UnlearnConfig or None, got {type(config).__name__}")
    base = config if config is not None else UnlearnConfig()
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **changes) if changes else base


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step.

    Attributes:
        step: 1-based step number.
        loss: the loss that was back-propagated (forget term + retain term of this step).
        forget_loss: the forget term, or None on an alternating retain step.
        retain_loss: the retain term, or None when this step had none.
        lr: the learning rate used by this step.
        grad_norm: global gradient norm before clipping.
    """

    step: int
    loss: float
    forget_loss: float | None
    retain_loss: float | None
    lr: float
    grad_norm: float


@dataclass(frozen=True)
class ValidationRecord:
    """One validation on the held-out split.

    Attributes:
        step: the step after which it ran.
        forget_nll: token-mean NLL of the held-out forget texts under the trained arm.
        forget_nll_ref: the same under the reference.
        forget_margin: ``forget_nll − forget_nll_ref`` (grows as the arm unlearns).
        retain_kl: token-mean ``KL(p_ref ‖ p_θ)`` on the held-out retain texts.
        score: ``forget_margin − val_kl_weight · retain_kl`` (higher is better).
    """

    step: int
    forget_nll: float
    forget_nll_ref: float
    forget_margin: float
    retain_kl: float
    score: float


@dataclass(frozen=True, kw_only=True)
class _TrainingOutcome:
    config: UnlearnConfig
    history: tuple[StepRecord, ...]
    validation: tuple[ValidationRecord, ...] = ()
    early_stopped: bool = False
    best_step: int | None = None

    @property
    def steps_run(self) -> int:
        """Number of optimizer steps taken (below ``config.steps`` after early stopping)."""
        return len(self.history)


@dataclass(frozen=True, kw_only=True)
class UnlearnResult(_TrainingOutcome):
    """A trained LoRA arm.

    Attributes:
        model: the ``peft.PeftModel`` wrapping the (unchanged, frozen) base model; run the
            reference with ``with model.disable_adapter():``.
        config: the training configuration used.
        history: one :class:`StepRecord` per optimizer step.
        validation: one :class:`ValidationRecord` per validation (empty without a split).
        early_stopped: whether training stopped before ``config.steps``.
        best_step: the step whose weights were kept by ``restore_best`` (None without
            validation).
    """

    model: Any = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class ReFTUnlearnResult(_TrainingOutcome):
    """A trained ReFT arm.

    Attributes:
        adapter: the :class:`~mmie.ReFTAdapter`, attached to the base model; the reference
            is the model with it removed.
        config: the training configuration used.
        history: one :class:`StepRecord` per optimizer step.
        validation: one :class:`ValidationRecord` per validation (empty without a split).
        early_stopped: whether training stopped before ``config.steps``.
        best_step: the step whose weights were kept by ``restore_best`` (None without
            validation).
    """

    adapter: Any = field(repr=False)
