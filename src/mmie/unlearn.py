"""Unlearning training on one copy of the base model: LoRA (peft) and ReFT adapters.

Both arms train a small set of adapter parameters on top of the frozen base model, with the
objectives of :mod:`mmie.objectives`, and both take their *reference* (for NPO and the
KL retain term) from the same weights: a LoRA arm runs the reference under peft's
``disable_adapter()``, a ReFT arm with its hooks detached. No function here loads or copies
the base model (the original script held four copies of it at its peak).

Training (shared by both arms), one optimizer step at a time:

* a forget batch and a retain batch are drawn (``batch_size`` texts each, right-padded,
  reshuffled every pass over the data from a generator seeded with ``config.seed``);
* the **forget term** is ``−NLL(forget)`` for ``ga`` and ``graddiff``, the NPO loss for
  ``npo``; the **retain term** is ``retain_weight · NLL(retain) + kl_weight · KL(p_ref ‖
  p_θ)`` (``retain_weight`` defaults to 1 for ``graddiff`` and 0 otherwise);
* ``schedule="joint"`` adds both terms every step; ``"alternating"`` uses the forget term on
  odd steps (1, 3, …) and the retain term on even steps;
* gradients are clipped to ``grad_clip`` (global norm), then AdamW steps with a constant or
  cosine learning rate after a linear warm-up.

The trained forward passes run in train mode (the model's own dropout and LoRA dropout
apply; gradient checkpointing needs it); reference and validation passes run in eval mode.
With ``val_fraction > 0`` a held-out split of both text sets is scored every
``eval_every`` steps: the forget NLL margin over the reference minus ``val_kl_weight`` times
the retain KL. Training stops early after ``patience`` scores without improvement, or as soon
as the retain KL exceeds ``max_retain_kl``; the best-scoring adapter weights are restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from mmie.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    IncompatibleModelError,
    TrainingError,
    TruncationWarning,
)
from mmie.models import input_device, unwrap_model
from mmie.objectives import kl_retain_loss, npo_loss, sequence_logprobs, token_logprobs
from mmie.seeding import seed_context

if TYPE_CHECKING:
    from mmie.reft import LoReFTConfig, ReFTAdapter

__all__ = [
    "ReFTUnlearnResult",
    "StepRecord",
    "UnlearnConfig",
    "UnlearnResult",
    "ValidationRecord",
    "default_lora_targets",
    "load_lora",
    "save_lora",
    "unlearn_lora",
    "unlearn_reft",
]

logger = logging.getLogger(__name__)

Objective = Literal["ga", "npo", "graddiff"]
Schedule = Literal["joint", "alternating"]
LRSchedule = Literal["constant", "cosine"]

# Default LoRA targets per ``config.model_type``: the attention projections.
_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gpt2": ("c_attn", "c_proj"),  # transformers Conv1D: needs fan_in_fan_out=True
    "gpt_neox": ("query_key_value", "dense"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense"),
}

_ADAPTER_CONFIG = "adapter_config.json"
_ADAPTER_WEIGHTS = "adapter_model.safetensors"


# --------------------------------------------------------------------------- configuration


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class UnlearnConfig:
    """How an unlearning arm is trained (shared by LoRA and ReFT).

    Every field is keyword-only; :meth:`to_dict`/:meth:`from_dict` round-trip through JSON.

    Raises:
        ConfigError: a field has a wrong type or value, or two fields contradict each other;
            the message names the field.
    """

    objective: Objective = "npo"  # forget term: gradient ascent, NPO or gradient difference
    steps: int = 100  # optimizer steps
    lr: float = 1e-4  # peak learning rate of AdamW
    batch_size: int = 8  # texts per forget batch and per retain batch
    max_length: int = 256  # tokens per text; longer texts are truncated (TruncationWarning)
    retain_weight: float | None = None  # weight of NLL(retain); None: 1 for graddiff, else 0
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

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        for name, options in (
            ("objective", get_args(Objective)),
            ("schedule", get_args(Schedule)),
            ("lr_schedule", get_args(LRSchedule)),
        ):
            if getattr(self, name) not in options:
                raise bad(name, "one of " + ", ".join(repr(o) for o in options))
        for name, low in (("steps", 1), ("batch_size", 1), ("max_length", 2), ("eval_every", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise bad(name, f"an int >= {low}")
        if not _is_int(self.warmup_steps) or not 0 <= self.warmup_steps <= self.steps:
            raise bad("warmup_steps", f"an int in [0, steps={self.steps}]")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise bad("seed", "an int in [0, 2**32)")
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 1):
            raise bad("patience", "None or an int >= 1")
        if not _is_real(self.lr) or not (math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", "a finite float > 0")
        if not _is_real(self.beta) or not (math.isfinite(self.beta) and self.beta > 0):
            raise bad("beta", "a finite float > 0")
        for name in ("kl_weight", "weight_decay", "min_delta", "val_kl_weight"):
            value = getattr(self, name)
            if not _is_real(value) or not (math.isfinite(value) and value >= 0):
                raise bad(name, "a finite float >= 0")
        for name in ("grad_clip", "max_retain_kl"):
            value = getattr(self, name)
            if value is not None and (
                not _is_real(value) or not (math.isfinite(value) and value > 0)
            ):
                raise bad(name, "None or a finite float > 0")
        if self.retain_weight is not None and (
            not _is_real(self.retain_weight)
            or not (math.isfinite(self.retain_weight) and self.retain_weight >= 0)
        ):
            raise bad("retain_weight", "None or a finite float >= 0")
        if not _is_real(self.val_fraction) or not 0 <= self.val_fraction < 1:
            raise bad("val_fraction", "a float in [0, 1)")
        for name in ("restore_best", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "a bool")
        # Cross-field rules.
        if self.objective == "graddiff" and self.retain_weight == 0:
            raise ConfigError(
                "retain_weight must be > 0 for objective='graddiff' (with retain_weight=0 it is "
                "objective='ga')"
            )
        if self.schedule == "alternating" and not self.has_retain_term:
            raise ConfigError(
                "schedule='alternating' needs a retain term: set kl_weight > 0 or retain_weight > 0"
            )
        if (self.patience is not None or self.max_retain_kl is not None) and not (
            self.val_fraction > 0
        ):
            raise ConfigError(
                "patience and max_retain_kl need a validation split: set val_fraction > 0"
            )

    @property
    def effective_retain_weight(self) -> float:
        """The weight of ``NLL(retain)`` actually used (``retain_weight`` with its default)."""
        if self.retain_weight is not None:
            return float(self.retain_weight)
        return 1.0 if self.objective == "graddiff" else 0.0

    @property
    def has_retain_term(self) -> bool:
        """Whether any retain loss is trained (``NLL`` or ``KL`` weight above zero)."""
        return self.effective_retain_weight > 0 or self.kl_weight > 0

    @property
    def validates(self) -> bool:
        """Whether a validation split is held out and scored."""
        return self.val_fraction > 0

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnlearnConfig:
        """Build a config from :meth:`to_dict` output (missing keys take their defaults).

        Raises:
            ConfigError: ``data`` has unknown keys or invalid values.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"UnlearnConfig data must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown UnlearnConfig field(s) {unknown}; known fields: {sorted(known)}"
            )
        return cls(**dict(data))


def _resolve_config(config: UnlearnConfig | None, **overrides: Any) -> UnlearnConfig:
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


# ------------------------------------------------------------------------------- data


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, name: str
) -> list[list[int]]:
    """Token ids of every text (special tokens added), truncated to ``max_length``."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} must contain at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(text).__name__}")
    ids: list[list[int]] = [list(x) for x in tokenizer(list(texts))["input_ids"]]
    too_short = [i for i, seq in enumerate(ids) if len(seq) < 2]
    if too_short:
        raise DataError(
            f"{name} texts {too_short[:5]} have fewer than 2 tokens: nothing to predict"
        )
    n_cut = sum(1 for seq in ids if len(seq) > max_length)
    if n_cut:
        warnings.warn(
            f"{n_cut} of {len(ids)} {name} texts were longer than max_length={max_length} "
            "tokens and were truncated",
            TruncationWarning,
            stacklevel=3,
        )
    return [seq[:max_length] for seq in ids]


def _collate(
    seqs: Sequence[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into ``input_ids`` and ``attention_mask`` ``[batch, seq]``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


class _Batches:
    """Endless batches of indices: a fresh permutation per pass over the data."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n = n
        self.batch_size = min(batch_size, n)
        self.generator = generator
        self._order: list[int] = []

    def next(self) -> list[int]:
        if len(self._order) < self.batch_size:
            self._order += torch.randperm(self.n, generator=self.generator).tolist()
        batch, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        return batch


def _split(
    seqs: list[list[int]], fraction: float, generator: torch.Generator, name: str
) -> tuple[list[list[int]], list[list[int]]]:
    """``(train, validation)`` with ``round(fraction · n)`` (at least 1) held out."""
    if fraction <= 0:
        return seqs, []
    n_val = max(1, round(fraction * len(seqs)))
    if n_val >= len(seqs):
        raise DataError(
            f"{name} has {len(seqs)} texts: too few to hold out val_fraction={fraction} and "
            "still train"
        )
    perm = torch.randperm(len(seqs), generator=generator).tolist()
    return [seqs[i] for i in perm[n_val:]], [seqs[i] for i in perm[:n_val]]


# --------------------------------------------------------------------------- training


def _lr_factor(step: int, config: UnlearnConfig) -> float:
    """Multiplier of ``lr`` for 0-based ``step``: linear warm-up, then constant or cosine."""
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    if config.lr_schedule == "constant":
        return 1.0
    span = max(1, config.steps - config.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * (step - config.warmup_steps) / span))


@contextlib.contextmanager
def _gradient_checkpointing(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Enable activation checkpointing plus input gradients for the block; undo afterwards.

    Without ``enable_input_require_grads()`` a checkpointed segment whose inputs do not need
    gradients (frozen embeddings) passes no gradient to the adapters inside it: a known
    trap that leaves LoRA's ``lora_B`` at zero.
    """
    if not enabled:
        yield
        return
    base: Any = unwrap_model(model)
    enable = getattr(base, "activation_checkpointing_enable", None) or getattr(
        base, "gradient_checkpointing_enable", None
    )
    disable = getattr(base, "activation_checkpointing_disable", None) or getattr(
        base, "gradient_checkpointing_disable", None
    )
    if (
        enable is None
        or disable is None
        or not getattr(base, "supports_gradient_checkpointing", False)
    ):
        raise IncompatibleModelError(
            f"{type(base).__name__} does not support gradient checkpointing; set "
            "gradient_checkpointing=False"
        )

    def has_input_grads() -> bool:
        return bool(getattr(base, "_require_grads_hooks", None)) or (
            getattr(base, "_require_grads_hook", None) is not None
        )

    had_input_grads = has_input_grads()
    enable({"use_reentrant": False})  # transformers 5 also enables input gradients here
    if not has_input_grads():
        base.enable_input_require_grads()
    try:
        yield
    finally:
        disable()
        if not had_input_grads:
            base.disable_input_require_grads()


@contextlib.contextmanager
def _frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Set ``requires_grad=False`` on ``params`` for the block; restore the flags afterwards."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class _Trainer:
    """The optimisation loop shared by the LoRA and ReFT arms."""

    def __init__(
        self,
        model: nn.Module,
        params: list[nn.Parameter],
        reference: Callable[[], contextlib.AbstractContextManager[Any]],
        tokenizer: PreTrainedTokenizerBase,
        forget: list[list[int]],
        retain: list[list[int]],
        config: UnlearnConfig,
        *,
        set_mode: Callable[[bool], None] | None = None,
        before_forward: Callable[[torch.Tensor], None] | None = None,
    ) -> None:
        self.model = model
        self.params = params
        self.reference = reference
        self.config = config
        self.set_mode: Callable[[bool], Any] = set_mode if set_mode is not None else model.train
        self.before_forward = before_forward
        pad = tokenizer.pad_token_id
        if pad is None:
            raise ValueError("tokenizer has no pad token; call mmie.prepare_tokenizer(tokenizer)")
        self.pad_id = int(pad)
        self.device = input_device(model)
        gen = torch.Generator().manual_seed(config.seed)
        self.forget, self.forget_val = _split(forget, config.val_fraction, gen, "forget")
        self.retain, self.retain_val = _split(retain, config.val_fraction, gen, "retain")
        self.forget_batches = _Batches(len(self.forget), config.batch_size, gen)
        self.retain_batches = _Batches(len(self.retain), config.batch_size, gen)

    # -- forward passes
    def _logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.before_forward is not None:
            self.before_forward(mask)
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=False)
        return out.logits  # (batch, seq, vocab)

    @torch.no_grad()
    def _ref_logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.set_mode(False)
        try:
            with self.reference():
                return self._logits(ids, mask)
        finally:
            self.set_mode(was_training)

    # -- loss terms
    def _forget_term(self) -> torch.Tensor:
        ids, mask = _collate(
            [self.forget[i] for i in self.forget_batches.next()], self.pad_id, self.device
        )
        if self.config.objective == "npo":
            ref = sequence_logprobs(self._ref_logits(ids, mask), ids, mask)
            logp = sequence_logprobs(self._logits(ids, mask), ids, mask)
            return npo_loss(logp, ref, beta=self.config.beta)
        logp, pred_mask = token_logprobs(self._logits(ids, mask), ids, mask)
        return logp.sum() / pred_mask.sum()  # −NLL(forget), token mean

    def _retain_term(self) -> torch.Tensor:
        ids, mask = _collate(
            [self.retain[i] for i in self.retain_batches.next()], self.pad_id, self.device
        )
        ref = self._ref_logits(ids, mask) if self.config.kl_weight > 0 else None
        logits = self._logits(ids, mask)
        loss = logits.new_zeros((), dtype=torch.float32)
        weight = self.config.effective_retain_weight
        if weight > 0:
            logp, pred_mask = token_logprobs(logits, ids, mask)
            loss = loss + weight * (-logp.sum() / pred_mask.sum())
        if ref is not None:
            loss = loss + self.config.kl_weight * kl_retain_loss(logits, ref, mask)
        return loss

    # -- validation
    @torch.no_grad()
    def _validate(self, step: int) -> ValidationRecord:
        was_training = self.model.training
        self.set_mode(False)
        try:
            nll, nll_ref, n_tok = 0.0, 0.0, 0
            for chunk in _chunks(self.forget_val, self.config.batch_size):
                ids, mask = _collate(chunk, self.pad_id, self.device)
                logp, pred = token_logprobs(self._logits(ids, mask), ids, mask)
                with self.reference():
                    logp_ref, _ = token_logprobs(self._logits(ids, mask), ids, mask)
                nll -= float(logp.sum())
                nll_ref -= float(logp_ref.sum())
                n_tok += int(pred.sum())
            kl_sum, n_pos = 0.0, 0
            for chunk in _chunks(self.retain_val, self.config.batch_size):
                ids, mask = _collate(chunk, self.pad_id, self.device)
                logits = self._logits(ids, mask)
                with self.reference():
                    ref = self._logits(ids, mask)
                n = int(mask.sum())
                kl_sum += float(kl_retain_loss(logits, ref, mask)) * n
                n_pos += n
        finally:
            self.set_mode(was_training)
        forget_nll, forget_nll_ref = nll / max(n_tok, 1), nll_ref / max(n_tok, 1)
        retain_kl = kl_sum / max(n_pos, 1)
        margin = forget_nll - forget_nll_ref
        return ValidationRecord(
            step=step,
            forget_nll=forget_nll,
            forget_nll_ref=forget_nll_ref,
            forget_margin=margin,
            retain_kl=retain_kl,
            score=margin - self.config.val_kl_weight * retain_kl,
        )

    # -- the loop
    def run(self, *, show_progress: bool, desc: str) -> dict[str, Any]:
        cfg = self.config
        if not cfg.has_retain_term:
            logger.warning(
                "training %s with no retain term (kl_weight=0, retain_weight=0): nothing keeps "
                "the model's behaviour on retain text",
                cfg.objective,
            )
        optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        history: list[StepRecord] = []
        validation: list[ValidationRecord] = []
        best_score, best_step, best_state = -math.inf, None, None
        bad, early_stopped = 0, False
        was_training = self.model.training
        self.set_mode(True)
        bar = tqdm(total=cfg.steps, desc=desc, disable=not show_progress, leave=False)
        try:
            for step in range(cfg.steps):
                lr = cfg.lr * _lr_factor(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                forget_loss = retain_loss = None
                do_forget = cfg.schedule == "joint" or step % 2 == 0
                do_retain = cfg.has_retain_term and (cfg.schedule == "joint" or step % 2 == 1)
                # Each term is back-propagated on its own: only one graph is alive at a time.
                if do_forget:
                    loss_f = self._forget_term()
                    _check_finite(loss_f, step + 1, "forget")
                    loss_f.backward()
                    forget_loss = float(loss_f.detach())
                if do_retain:
                    loss_r = self._retain_term()
                    _check_finite(loss_r, step + 1, "retain")
                    loss_r.backward()
                    retain_loss = float(loss_r.detach())
                max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                history.append(
                    StepRecord(
                        step=step + 1,
                        loss=(forget_loss or 0.0) + (retain_loss or 0.0),
                        forget_loss=forget_loss,
                        retain_loss=retain_loss,
                        lr=lr,
                        grad_norm=grad_norm,
                    )
                )
                bar.update(1)
                if cfg.validates and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
                    record = self._validate(step + 1)
                    validation.append(record)
                    logger.debug("validation %s", record)
                    over_budget = (
                        cfg.max_retain_kl is not None and record.retain_kl > cfg.max_retain_kl
                    )
                    if not over_budget and record.score > best_score + cfg.min_delta:
                        best_score, best_step, bad = record.score, step + 1, 0
                        best_state = [p.detach().clone() for p in self.params]
                    else:
                        bad += 1
                    if over_budget or (cfg.patience is not None and bad >= cfg.patience):
                        early_stopped = step + 1 < cfg.steps
                        logger.info(
                            "early stop after step %d (%s)",
                            step + 1,
                            "retain KL over budget" if over_budget else "no improvement",
                        )
                        break
        finally:
            bar.close()
            self.set_mode(was_training)
            for p in self.params:
                p.grad = None
            del optimizer
        if cfg.validates and cfg.restore_best:
            if best_state is None:
                logger.warning(
                    "no validation stayed within max_retain_kl=%s; keeping the last weights",
                    cfg.max_retain_kl,
                )
            else:
                with torch.no_grad():
                    for p, saved in zip(self.params, best_state):
                        p.copy_(saved)
        return {
            "history": tuple(history),
            "validation": tuple(validation),
            "early_stopped": early_stopped,
            "best_step": best_step if cfg.validates and cfg.restore_best else None,
        }


def _chunks(seqs: list[list[int]], size: int) -> Iterator[list[list[int]]]:
    for start in range(0, len(seqs), size):
        yield seqs[start : start + size]


def _check_finite(loss: torch.Tensor, step: int, term: str) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(
            f"the {term} loss is {float(loss)} at step {step}; lower lr, enable grad_clip or "
            "add a retain term"
        )


def _check_changed(
    params: Sequence[nn.Parameter], initial: Sequence[torch.Tensor], what: str
) -> None:
    if not any(not torch.equal(p.detach(), p0) for p, p0 in zip(params, initial)):
        raise TrainingError(
            f"the {what} weights did not change during training: no gradient reached them "
            "(lr too small, every loss term zero, or gradient checkpointing without input "
            "gradients)"
        )


# --------------------------------------------------------------------------- LoRA


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """Silence the FutureWarning peft triggers on transformers 5 (a version skew, not ours)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def _remove_lora(peft_model: Any, requires_grad: Sequence[bool]) -> None:
    """Take a failed adapter off the base model and restore its ``requires_grad`` flags."""
    with _quiet_peft():
        base = peft_model.unload()
    for p, flag in zip(base.parameters(), requires_grad):
        p.requires_grad_(flag)


def _is_peft(model: nn.Module) -> bool:
    return type(model).__module__.startswith("peft") or hasattr(model, "peft_config")


def _linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``nn.Linear`` and transformers ``Conv1D`` of ``model`` by qualified name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    }


def default_lora_targets(model: nn.Module) -> tuple[str, ...]:
    """The default LoRA target modules for ``model``'s architecture (the attention projections).

    ============================================  =====================================
    ``config.model_type``                          targets
    ============================================  =====================================
    llama, qwen2, qwen3, mistral, gemma, gemma2    ``q_proj k_proj v_proj o_proj``
    gpt2                                           ``c_attn c_proj`` (``fan_in_fan_out``)
    gpt_neox                                       ``query_key_value dense``
    phi                                            ``q_proj k_proj v_proj dense``
    ============================================  =====================================

    Args:
        model: a Hugging Face causal LM.

    Returns:
        Module names as peft's ``target_modules`` expects them.

    Raises:
        IncompatibleModelError: no default for this architecture; the message lists the
            model's Linear layer names to choose ``target_modules`` from.
    """
    base = unwrap_model(model)
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    targets = _LORA_TARGETS.get(str(model_type))
    if targets is None:
        names = sorted({n.rsplit(".", 1)[-1] for n in _linear_layers(base)})
        raise IncompatibleModelError(
            f"no default LoRA target modules for model_type={model_type!r} "
            f"({type(base).__name__}); pass target_modules=[...] chosen from its Linear "
            f"layers: {', '.join(names)}"
        )
    return targets


def _check_targets(model: nn.Module, targets: Sequence[str]) -> bool:
    """Check every target names a Linear/Conv1D layer; returns whether they are Conv1D."""
    layers = _linear_layers(unwrap_model(model))
    missing: list[str] = []
    kinds: set[bool] = set()
    for target in targets:
        hits = [m for n, m in layers.items() if n == target or n.endswith("." + target)]
        if not hits:
            missing.append(target)
        kinds.update(type(m).__name__ == "Conv1D" for m in hits)
    if missing:
        names = sorted({n.rsplit(".", 1)[-1] for n in layers})
        raise IncompatibleModelError(
            f"LoRA target module(s) {missing} not found among the Linear layers of "
            f"{type(unwrap_model(model)).__name__}; available: {', '.join(names)}"
        )
    if len(kinds) > 1:
        raise ConfigError(
            "target_modules mixes nn.Linear and transformers Conv1D layers, which need "
            "different fan_in_fan_out settings; target one kind per call"
        )
    return kinds == {True}


def unlearn_lora(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    forget: Sequence[str],
    retain: Sequence[str],
    *,
    config: UnlearnConfig | None = None,
    objective: Objective | None = None,
    steps: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    rank: int = 8,
    alpha: int | None = None,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
    show_progress: bool = False,
) -> UnlearnResult:
    """Train a LoRA adapter that unlearns ``forget`` while keeping ``retain``.

    The adapter is injected into ``model`` itself (peft's ``get_peft_model``); the base
    weights are frozen and never change, and the reference for NPO and the KL term is the
    same model under ``disable_adapter()``, so exactly one copy of the base weights exists.
    Training runs inside :func:`~mmie.seed_context` ``(config.seed)``: the adapter
    initialisation, dropout and data order follow the seed, and the global generators are
    restored afterwards. peft sets ``requires_grad=False`` on the base parameters while the
    adapter is attached; :func:`~mmie.lora_arm` removes the adapter again and restores them.

    Args:
        model: a Hugging Face causal LM without a PEFT adapter.
        tokenizer: its tokenizer (with a pad token).
        forget: texts to unlearn.
        retain: texts whose behaviour must be kept.
        config: the training configuration (defaults: :class:`UnlearnConfig`).
        objective: overrides ``config.objective``.
        steps: overrides ``config.steps``.
        lr: overrides ``config.lr``.
        seed: overrides ``config.seed``.
        rank: LoRA rank ``r``.
        alpha: LoRA scaling numerator (``lora_alpha``); defaults to ``2 · rank``.
        dropout: LoRA dropout on the adapter input (train mode only).
        target_modules: module names to adapt; defaults to :func:`default_lora_targets`.
        show_progress: show a tqdm bar.

    Returns:
        An :class:`UnlearnResult` whose ``model`` is the ``PeftModel`` in eval mode.

    Raises:
        TypeError: ``model`` already carries a PEFT adapter, or wrong argument types.
        ValueError: empty text sets or invalid LoRA settings.
        ConfigError: invalid configuration values.
        IncompatibleModelError: a target module does not exist (the message lists the
            available ones) or no default exists for the architecture.
        TrainingError: a loss became non-finite, or the adapter weights did not change
            (``lora_B`` stayed zero).

    Example:
        >>> result = mmie.unlearn_lora(model, tok, hindi, english, steps=50)  # doctest: +SKIP
        >>> with result.model.disable_adapter():  # the reference, same weights
        ...     ref_logits = result.model(**batch).logits
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if _is_peft(model):
        raise TypeError(
            "model already carries a PEFT adapter; pass the base model (unload the adapter "
            "with model.unload() first)"
        )
    if not _is_int(rank) or rank < 1:
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    if alpha is not None and not (_is_int(alpha) and alpha > 0):
        raise ValueError(f"alpha must be None or an int > 0, got {alpha!r}")
    if not _is_real(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
    cfg = _resolve_config(config, objective=objective, steps=steps, lr=lr, seed=seed)
    forget_ids = _encode(tokenizer, forget, cfg.max_length, "forget")
    retain_ids = _encode(tokenizer, retain, cfg.max_length, "retain")
    targets = tuple(target_modules) if target_modules is not None else default_lora_targets(model)
    if isinstance(target_modules, str) or not targets:
        raise TypeError("target_modules must be a non-empty sequence of module names")
    fan_in_fan_out = _check_targets(model, targets)

    from peft import LoraConfig, get_peft_model

    lora_config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=list(targets),
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
        task_type="CAUSAL_LM",
    )
    flags = [p.requires_grad for p in model.parameters()]
    with seed_context(cfg.seed):
        with _quiet_peft():
            peft_model: Any = get_peft_model(model, lora_config)
        try:
            params = [p for p in peft_model.parameters() if p.requires_grad]
            initial = [p.detach().clone() for p in params]
            trainer = _Trainer(
                peft_model,
                params,
                peft_model.disable_adapter,
                tokenizer,
                forget_ids,
                retain_ids,
                cfg,
            )
            with _gradient_checkpointing(peft_model, cfg.gradient_checkpointing):
                outcome = trainer.run(show_progress=show_progress, desc=f"LoRA {cfg.objective}")
            _check_changed(params, initial, "LoRA adapter")
            lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
            if not any(bool(p.detach().abs().sum() > 0) for p in lora_b):
                raise TrainingError(
                    "every lora_B weight is still zero after training: the adapter is a no-op"
                )
        except BaseException:
            _remove_lora(peft_model, flags)
            raise
    peft_model.eval()
    logger.info(
        "LoRA %s: %d steps%s",
        cfg.objective,
        len(outcome["history"]),
        " (early stop)" if outcome["early_stopped"] else "",
    )
    return UnlearnResult(model=peft_model, config=cfg, **outcome)


def save_lora(peft_model: Any, directory: str | Path) -> Path:
    """Save a LoRA adapter: ``adapter_model.safetensors`` plus ``adapter_config.json``.

    Only the adapter weights are written (peft's ``save_pretrained`` with
    ``safe_serialization=True``), never the base model.

    Args:
        peft_model: a ``peft.PeftModel`` (e.g. :attr:`UnlearnResult.model`).
        directory: target directory (created if needed).

    Returns:
        The directory.

    Raises:
        TypeError: ``peft_model`` is not a PEFT model.
    """
    if not _is_peft(peft_model) or not hasattr(peft_model, "save_pretrained"):
        raise TypeError(f"peft_model must be a peft.PeftModel, got {type(peft_model).__name__}")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with _quiet_peft():
        peft_model.save_pretrained(str(path), safe_serialization=True)
    return path


def load_lora(model: nn.Module, directory: str | Path, *, is_trainable: bool = False) -> Any:
    """Attach a LoRA adapter saved by :func:`save_lora` to ``model``, checking every key.

    Unlike a ``strict=False`` load (which silently loaded nothing in the original script when
    the key names did not match), every adapter tensor of the freshly injected adapter must
    be present in the file and every tensor of the file must be used; otherwise the adapter
    is removed again and an error lists the mismatches.

    Args:
        model: the base model the adapter was trained on (no adapter attached).
        directory: a directory with ``adapter_config.json`` and
            ``adapter_model.safetensors``.
        is_trainable: keep the adapter parameters trainable (to resume training).

    Returns:
        The ``peft.PeftModel`` in eval mode.

    Raises:
        CheckpointError: files are missing, the config is not a LoRA config, a target module
            does not exist, or the tensors do not match the adapter (missing, unexpected or
            wrongly shaped keys).
        TypeError: ``model`` already carries a PEFT adapter.
    """
    if _is_peft(model):
        raise TypeError("model already carries a PEFT adapter; pass the base model")
    path = Path(directory)
    for name in (_ADAPTER_CONFIG, _ADAPTER_WEIGHTS):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} has no {name}: not a LoRA adapter saved by save_lora")

    from peft import LoraConfig, get_peft_model
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        lora_config = LoraConfig.from_pretrained(str(path))
    except (ValueError, TypeError, OSError) as exc:
        raise CheckpointError(f"cannot read the LoRA config in {path}: {exc}") from exc
    try:
        _check_targets(model, list(lora_config.target_modules or ()))
    except IncompatibleModelError as exc:
        raise CheckpointError(f"adapter in {path} does not fit this model: {exc}") from exc
    lora_config.inference_mode = not is_trainable
    state = load_file(str(path / _ADAPTER_WEIGHTS))
    flags = [p.requires_grad for p in model.parameters()]
    with seed_context(0), _quiet_peft():  # the random init is overwritten below
        peft_model: Any = get_peft_model(model, lora_config)
    try:
        expected = {n for n in peft_model.state_dict() if "lora_" in n}
        try:
            result: Any = set_peft_model_state_dict(peft_model, state)
        except RuntimeError as exc:  # shape mismatches raise even with strict=False
            raise CheckpointError(f"adapter tensors in {path} do not fit: {exc}") from exc
        missing = sorted(k for k in result.missing_keys if k in expected)
        unexpected = sorted(result.unexpected_keys)
        if missing or unexpected or len(state) != len(expected):
            raise CheckpointError(
                f"adapter in {path} does not match the model: {len(missing)} adapter "
                f"tensor(s) missing from the file {missing[:5]}, {len(unexpected)} unexpected "
                f"tensor(s) {unexpected[:5]} ({len(state)} in the file, {len(expected)} "
                "expected)"
            )
    except BaseException:
        _remove_lora(peft_model, flags)
        raise
    peft_model.eval()
    logger.info("loaded LoRA adapter from %s (%d tensors)", path, len(state))
    return peft_model


# --------------------------------------------------------------------------- ReFT


@contextlib.contextmanager
def _detached(adapter: ReFTAdapter) -> Iterator[None]:
    """The reference of a ReFT arm: the model with the adapter's hooks removed."""
    was_attached = adapter.attached
    adapter.remove()
    try:
        yield
    finally:
        if was_attached:
            adapter.attach()


def unlearn_reft(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    forget: Sequence[str],
    retain: Sequence[str],
    *,
    reft_config: LoReFTConfig,
    config: UnlearnConfig | None = None,
    objective: Objective | None = None,
    steps: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    block_path: str | None = None,
    show_progress: bool = False,
) -> ReFTUnlearnResult:
    """Train LoReFT adapters that unlearn ``forget`` while keeping ``retain``.

    Same objectives and schedule as :func:`unlearn_lora`; only the adapter's parameters are
    trained (the base model's parameters are frozen for the duration and never change), and
    the reference is the same model with the adapter's hooks detached. The adapter's
    initialisation follows ``reft_config.seed``; data order and dropout follow
    ``config.seed`` (:func:`~mmie.reft_arm` sets both from one seed). With
    ``positions="prompt"`` every real token of a training text counts as a prompt position.

    Args:
        model: a Hugging Face causal LM (no hooks of another trained adapter attached).
        tokenizer: its tokenizer (with a pad token).
        forget: texts to unlearn.
        retain: texts whose behaviour must be kept.
        reft_config: layers, rank and positions of the adapters (:class:`~mmie.LoReFTConfig`).
        config: the training configuration (defaults: :class:`UnlearnConfig`).
        objective: overrides ``config.objective``.
        steps: overrides ``config.steps``.
        lr: overrides ``config.lr``.
        seed: overrides ``config.seed``.
        block_path: dotted path of the block list for unknown architectures.
        show_progress: show a tqdm bar.

    Returns:
        A :class:`ReFTUnlearnResult` whose ``adapter`` is attached to ``model``; remove it
        with ``adapter.remove()`` (or use :func:`~mmie.reft_arm`).

    Raises:
        ConfigError: invalid configuration values.
        TrainingError: a loss became non-finite or the adapter did not change.
    """
    from mmie.reft import ReFTAdapter

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    cfg = _resolve_config(config, objective=objective, steps=steps, lr=lr, seed=seed)
    forget_ids = _encode(tokenizer, forget, cfg.max_length, "forget")
    retain_ids = _encode(tokenizer, retain, cfg.max_length, "retain")
    base_params = list(model.parameters())
    with seed_context(cfg.seed), _frozen(base_params):
        adapter = ReFTAdapter(model, reft_config, block_path=block_path)
        adapter.attach()
        try:
            params = [p for p in adapter.parameters() if p.requires_grad]
            initial = [p.detach().clone() for p in params]

            def set_mode(mode: bool) -> None:
                model.train(mode)
                adapter.train(mode)

            def before_forward(mask: torch.Tensor) -> None:
                # Unlearning texts have no prompt/continuation split: edit every real token.
                if reft_config.positions == "prompt":
                    adapter.set_position_mask(mask.bool())

            trainer = _Trainer(
                model,
                params,
                lambda: _detached(adapter),
                tokenizer,
                forget_ids,
                retain_ids,
                cfg,
                set_mode=set_mode,
                before_forward=before_forward,
            )
            with _gradient_checkpointing(model, cfg.gradient_checkpointing):
                outcome = trainer.run(show_progress=show_progress, desc=f"ReFT {cfg.objective}")
            _check_changed(params, initial, "ReFT adapter")
        except BaseException:
            adapter.remove()
            raise
        finally:
            adapter.eval()
            adapter.clear_position_mask()
    logger.info(
        "ReFT %s: %d steps%s",
        cfg.objective,
        len(outcome["history"]),
        " (early stop)" if outcome["early_stopped"] else "",
    )
    return ReFTUnlearnResult(adapter=adapter, config=cfg, **outcome)
