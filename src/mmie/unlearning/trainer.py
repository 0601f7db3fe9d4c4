"""The optimisation loop shared by the LoRA and ReFT unlearning arms.

Training, one optimizer step at a time:

* a forget batch and a retain batch are drawn (``batch_size`` texts each, right-padded,
  reshuffled every pass over the data from a generator seeded with ``config.seed``);
* the **forget term** is ``−NLL(forget)`` for ``ga`` and ``graddiff``, the NPO loss for
  ``npo``; the **retain term** is ``retain_nll_weight · NLL(retain) + kl_weight · KL(p_ref ‖
  p_θ)`` (``retain_nll_weight`` defaults to 1 for ``graddiff`` and 0 otherwise);
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

The reference is computed once where it is a fixed function of the data. Its forward passes
run in eval mode with the adapter off, so they depend on neither the adapter weights nor the
RNG (no dropout, no random draws): caching them changes no training step's batches, dropout
masks or random stream, also with ``dropout > 0``.

* NPO's forget reference is one number per text (its sequence log-probability): all of them
  are computed before the first step, ``batch_size`` texts at a time in index order.
* The KL term's reference logits of every retain text (real positions only, in the model's
  dtype) are cached when they fit in ``reference_cache_mb`` MiB (``Σ tokens × vocab ×
  element size``); above that budget they are recomputed every step, as before.
* Validation always sees the same chunks, so their reference values are cached per chunk
  (the retain chunks' logits within the same budget).

A cached value comes from a forward pass over another batch than the training step's (other
rows and padding), so it can differ from the per-step value in the last bits of fp32: the
row results of a matrix product depend on the number of rows on some BLAS backends.
Training from the cache therefore matches training without it to within that rounding
(tests: losses and adapter weights after training agree to 1e-6), not bit for bit.
``reference_cache_mb=0`` computes every reference in its step (mmie 0.1's loop).

Everything here is internal to :mod:`mmie.unlearning.train`; the loop only sees the trainable
parameters and a context manager that turns the model into its reference.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from mmie.errors import DataError, IncompatibleModelError, TrainingError, TruncationWarning
from mmie.models.blocks import input_device, unwrap_model
from mmie.models.logprobs import token_logprobs
from mmie.models.tokenization import collate_ids
from mmie.unlearning.config import StepRecord, UnlearnConfig, ValidationRecord
from mmie.unlearning.objectives import kl_retain_loss, npo_loss, sequence_logprobs

__all__: list[str] = []  # internal: the loop behind mmie.unlearn_lora and mmie.unlearn_reft

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- data


def encode_texts(
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


class Batches:
    """Endless batches of indices: a fresh permutation per pass over the data (also used by
    the relearning attack of :mod:`mmie.unlearning.recovery`)."""

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
def gradient_checkpointing(model: nn.Module, enabled: bool) -> Iterator[None]:
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
        with warnings.catch_warnings():
            # torch 2.4's own checkpoint recomputation calls its deprecated CPU autocast
            warnings.filterwarnings(
                "ignore",
                message=r"`torch\.cpu\.amp\.autocast\(args\.\.\.\)` is deprecated",
                category=FutureWarning,
            )
            yield
    finally:
        disable()
        if not had_input_grads:
            base.disable_input_require_grads()


@contextlib.contextmanager
def frozen_parameters(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Set ``requires_grad=False`` on ``params`` for the block; restore the flags afterwards."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class Trainer:
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
        reference_cache_mb: float = 256.0,
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
        self.forget_batches = Batches(len(self.forget), config.batch_size, gen)
        self.retain_batches = Batches(len(self.retain), config.batch_size, gen)
        self.cache_bytes = int(reference_cache_mb * 2**20)
        # Filled by _cache_references() when run() starts (None: computed per step).
        self._forget_ref: torch.Tensor | None = None  # (n_forget,) fp32 sequence log-probs
        self._retain_ref: list[torch.Tensor] | None = None  # per text (len, vocab) logits
        self._val_forget_ref: list[float] | None = None  # per chunk: Σ reference log-probs
        self._val_retain_ref: list[torch.Tensor] | None = None  # per chunk: logits
        self.cache_info: dict[str, Any] = {}

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

    # -- the cached reference
    @torch.no_grad()
    def _cache_references(self) -> None:
        """Compute the fixed reference values once (see the module docstring)."""
        if self.cache_bytes <= 0:
            self.cache_info = {"forget": False, "retain": False, "validation": False}
            return
        cfg = self.config
        size = cfg.batch_size
        if cfg.objective == "npo" and self._forget_ref is None:
            values = []
            for chunk in _chunks(self.forget, size):
                ids, mask = collate_ids(chunk, self.pad_id, self.device)
                values.append(sequence_logprobs(self._ref_logits(ids, mask), ids, mask))
            self._forget_ref = torch.cat(values)
        budget = self.cache_bytes
        if cfg.kl_weight > 0 and cfg.has_retain_term and self._retain_ref is None:
            self._retain_ref = self._cache_logits(self.retain, budget, per_text=True)
            if self._retain_ref is not None:
                budget -= sum(t.numel() * t.element_size() for t in self._retain_ref)
        if cfg.validates and self._val_forget_ref is None:
            totals = []
            for chunk in _chunks(self.forget_val, size):
                ids, mask = collate_ids(chunk, self.pad_id, self.device)
                logp_ref, _ = token_logprobs(self._ref_logits(ids, mask), ids, mask)
                totals.append(float(logp_ref.sum()))
            self._val_forget_ref = totals
            # whole chunks, exactly the tensors _validate would compute
            self._val_retain_ref = self._cache_logits(self.retain_val, budget, per_text=False)
        self.cache_info = {
            "forget": self._forget_ref is not None,
            "retain": self._retain_ref is not None,
            "validation": self._val_retain_ref is not None,
        }
        logger.debug("reference cache: %s", self.cache_info)

    def _cache_logits(
        self, seqs: list[list[int]], budget: int, *, per_text: bool
    ) -> list[torch.Tensor] | None:
        """Reference logits of ``seqs``, computed ``batch_size`` texts at a time: per text
        (its real positions, ``[len, vocab]``) or per chunk (the padded ``[batch, width,
        vocab]`` tensor, exactly what a later pass over the same chunk computes). ``None``
        (nothing kept) when the texts' tokens would take more than ``budget`` bytes."""
        if not seqs:
            return None
        n_tokens = sum(len(s) for s in seqs) if per_text else 0
        out: list[torch.Tensor] = []
        for chunk in _chunks(seqs, self.config.batch_size):
            ids, mask = collate_ids(chunk, self.pad_id, self.device)
            logits = self._ref_logits(ids, mask)
            if not per_text:
                n_tokens += logits.shape[0] * logits.shape[1]
            if n_tokens * logits.shape[-1] * logits.element_size() > budget:
                return None
            if per_text:
                out.extend(logits[row, : len(seq)].clone() for row, seq in enumerate(chunk))
            else:
                out.append(logits)
        return out

    @staticmethod
    def _padded(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
        """Cached per-text logits as a right-padded ``[batch, width, vocab]`` batch (zeros at
        padding, which every loss masks out)."""
        first = rows[0]
        out = first.new_zeros((len(rows), width, first.shape[-1]))
        for i, row in enumerate(rows):
            out[i, : row.shape[0]] = row
        return out

    # -- loss terms
    def _forget_term(self) -> torch.Tensor:
        batch = self.forget_batches.next()
        ids, mask = collate_ids([self.forget[i] for i in batch], self.pad_id, self.device)
        if self.config.objective == "npo":
            if self._forget_ref is not None:
                ref = self._forget_ref[batch]
            else:
                ref = sequence_logprobs(self._ref_logits(ids, mask), ids, mask)
            logp = sequence_logprobs(self._logits(ids, mask), ids, mask)
            return npo_loss(logp, ref, beta=self.config.beta)
        logp, pred_mask = token_logprobs(self._logits(ids, mask), ids, mask)
        return logp.sum() / pred_mask.sum()  # −NLL(forget), token mean

    def _retain_term(self) -> torch.Tensor:
        batch = self.retain_batches.next()
        ids, mask = collate_ids([self.retain[i] for i in batch], self.pad_id, self.device)
        ref: torch.Tensor | None = None
        if self.config.kl_weight > 0:
            if self._retain_ref is not None:
                ref = self._padded([self._retain_ref[i] for i in batch], ids.shape[1])
            else:
                ref = self._ref_logits(ids, mask)
        logits = self._logits(ids, mask)
        loss = logits.new_zeros((), dtype=torch.float32)
        weight = self.config.effective_retain_nll_weight
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
            for j, chunk in enumerate(_chunks(self.forget_val, self.config.batch_size)):
                ids, mask = collate_ids(chunk, self.pad_id, self.device)
                logp, pred = token_logprobs(self._logits(ids, mask), ids, mask)
                if self._val_forget_ref is not None:
                    nll_ref -= self._val_forget_ref[j]
                else:
                    with self.reference():
                        logp_ref, _ = token_logprobs(self._logits(ids, mask), ids, mask)
                    nll_ref -= float(logp_ref.sum())
                nll -= float(logp.sum())
                n_tok += int(pred.sum())
            kl_sum, n_pos = 0.0, 0
            for j, chunk in enumerate(_chunks(self.retain_val, self.config.batch_size)):
                ids, mask = collate_ids(chunk, self.pad_id, self.device)
                logits = self._logits(ids, mask)
                if self._val_retain_ref is not None:
                    ref = self._val_retain_ref[j]
                else:
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
                "training %s with no retain term (kl_weight=0, retain_nll_weight=0): nothing keeps "
                "the model's behaviour on retain text",
                cfg.objective,
            )
        self._cache_references()
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


def check_changed(
    params: Sequence[nn.Parameter], initial: Sequence[torch.Tensor], what: str
) -> None:
    if not any(not torch.equal(p.detach(), p0) for p, p0 in zip(params, initial)):
        raise TrainingError(
            f"the {what} weights did not change during training: no gradient reached them "
            "(lr too small, every loss term zero, or gradient checkpointing without input "
            "gradients)"
        )
