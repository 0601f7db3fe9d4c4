"""Generation-time gating: raise an SAE gate's alpha per sequence once it drifts.

:class:`DynamicGatingProcessor` is a :class:`transformers.LogitsProcessor` that schedules an
:class:`~mmie.SAEGate` per generated sequence: a sequence starts at ``base_alpha`` and is
switched to ``high_alpha`` once its continuation drifts into the target language. It
replaces the original research script's processor, which decoded the whole vocabulary for
every batch, decoded every continuation at every step and kept the per-row alpha in a dict
keyed by row index that leaked into later forward passes and broke under beam search.

How it works, per decoding step ``t`` (one ``__call__``):

1. the token each row just generated is looked up in a precomputed boolean table (target
   script or not, on the scores' device) and added to per-prompt counters -- no decoding;
2. every ``detect_every`` steps an optional text :class:`~mmie.Detector` reads only the
   tokens generated since its previous call;
3. the resulting decision is written into the gate as one alpha per row
   (:meth:`~mmie.SAEGate.set_sequence_alpha`), and optionally a penalty is subtracted from
   the target-script logits of the rows that drifted (an infinite penalty bans the
   byte-aware set of ``mmie.edits.controls.ScriptBanMasks`` instead).

**One-step lag.** A logits processor runs *after* the forward pass that produced step
``t``'s logits, so the alpha written at step ``t`` first acts on the forward pass of step
``t + 1``: the token chosen at the step where the drift is detected was already computed
under the old alpha (the penalty, in contrast, acts on step ``t``'s own logits).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mmie._validation import is_real, positive_int, unit_interval
from mmie.edits.controls import ScriptBanMasks
from mmie.errors import InterventionError
from mmie.language.unicode import SCRIPT_LANGUAGE, script_code, script_token_mask

if TYPE_CHECKING:
    from mmie.language.detectors import Detector

__all__ = ["DynamicGatingProcessor", "SequenceGate"]

logger = logging.getLogger(__name__)


@runtime_checkable
class SequenceGate(Protocol):
    """What :class:`DynamicGatingProcessor` needs from a gate (:class:`~mmie.SAEGate` has it).

    ``alpha`` is the scalar attenuation used while no per-sequence alpha is set;
    ``set_sequence_alpha(alpha[batch])`` overrides it row by row until
    ``clear_sequence_alpha()``.
    """

    alpha: float

    @property
    def attached(self) -> bool:  # pragma: no cover - protocol
        """Whether the gate's hooks are registered."""
        ...

    def attach(self) -> Any:  # pragma: no cover - protocol
        """Register the hooks."""
        ...

    def remove(self) -> None:  # pragma: no cover - protocol
        """Remove the hooks."""
        ...

    def set_sequence_alpha(self, alpha: Tensor, *, check: bool = True) -> None:  # pragma: no cover
        """Use ``alpha[b]`` for batch row ``b``."""
        ...

    def clear_sequence_alpha(self) -> None:  # pragma: no cover - protocol
        """Drop the per-sequence alpha."""
        ...


# ---------------------------------------------------------------------------- validation


# ---------------------------------------------------------------------------- the processor


@dataclass
class _GenerationState:
    """Per-generation state, created on the first call of a generation."""

    rows: int  # batch × rows_per_prompt
    group: int  # rows per prompt (num_beams or num_return_sequences)
    prompt_len: int  # padded prompt length at the first call
    device: torch.device
    target_ids: Tensor  # (n_target_tokens,) long: ids of the target-script tokens
    step_table: Tensor  # (vocab, 2) long: what a token adds to `acc`
    limits: Tensor  # (2,) long: [min_tokens, 0]; a group drifts when acc >= limits
    base: Tensor  # () fp32 base_alpha on the device
    high_value: Tensor  # () fp32 high_alpha on the device
    neg_penalty: Tensor  # () -penalty in the scores' dtype
    zero: Tensor  # () 0 in the scores' dtype
    acc: Tensor  # (groups, 2) long: [n_target, q·n_target - p·n_counted], threshold = p/q
    high: Tensor  # (groups,) bool: the group's gate is at high_alpha
    detected: Tensor  # (groups,) bool: last verdict of the text detector
    steps: int = 0  # calls so far in this generation
    last_detect: int = 0  # generated length at the detector's previous call
    history: list[Tensor] = field(default_factory=list)  # (rows,) alpha written per step


class DynamicGatingProcessor(LogitsProcessor):
    """Raise a gate's alpha per sequence once its continuation drifts into a target language.

    Each generated sequence (row) starts at ``base_alpha``. A *prompt group* -- the rows
    ``generate`` makes from one prompt with ``repeat_interleave`` (``num_beams`` beams or
    ``num_return_sequences`` samples) -- switches to ``high_alpha`` when its generated tokens
    contain at least ``min_tokens`` target-script tokens and target-script tokens make up at
    least ``threshold`` of its generated non-special tokens (counts summed over the group's
    rows). Keeping the decision per group means beam search, which reorders rows only within
    a group, cannot move one hypothesis' state to another prompt; greedy and single-sample
    generation have one row per group, i.e. a decision per sequence. With ``sticky`` (the
    default) a group stays high for the rest of the generation.

    Detection is incremental: the target-script tokens come from
    :func:`mmie.script_token_mask` (computed once per tokenizer and cached) and live as a
    small per-token table on the scores' device; each step looks up the token each row just
    generated and updates integer counters with a few tiny kernels, without a host-device
    synchronisation. No text is decoded unless a ``detector`` is given, in which case every
    ``detect_every`` steps it reads only the tokens generated since its previous call, and a
    group whose tail is labelled ``target_language`` switches too (this catches e.g.
    romanised Hindi, which has no target-script tokens). The tail of a byte-level tokenizer
    may start or end inside a character; such partial bytes decode to U+FFFD, which
    detectors treat as neutral.

    The row alphas are written into the gate with ``set_sequence_alpha`` at every step and
    act from the **next** step on (the one-step lag: a processor runs after the forward pass
    that produced the current logits). With ``penalty``, the rows whose group is high also
    get ``penalty`` subtracted from the target-script logits of the current step; the
    caller's ``scores`` tensor is never modified (a new tensor is returned). An infinite
    penalty (``math.inf``) without ``target_mask`` bans, in the drifted rows, exactly what
    ``ScriptBanProcessor`` (``mmie.edits.controls``) bans: every token that would start or
    continue a target-script character given the bytes the row has pending, so partial
    characters of byte-level tokenizers are banned too (this reads the rows' last tokens
    back to the host at every step).

    Use it through :func:`mmie.generate` (pass it in ``logits_processors``) or inside
    :meth:`session` around ``model.generate``: the session groups rows by prompt, runs the
    prompt's forward pass at ``base_alpha``, attaches the gate if needed, and clears the
    gate's per-sequence alpha when generation ends or raises, so it never leaks into later
    forward passes. A new generation is recognised on the first call after :meth:`reset`
    or when ``input_ids`` no longer continue the previous call (another batch size or
    length), and starts from fresh state.

    Args:
        gate: the gate to schedule, e.g. an :class:`~mmie.SAEGate` (anything following
            :class:`SequenceGate`).
        tokenizer: the tokenizer of the generating model (builds the target-script table).
        target_script: script of the target language: ``"devanagari"`` (Hindi),
            ``"arabic"``, ``"gurmukhi"``, ``"bengali"``, ``"latin"``, an ISO 15924 code
            (``"Deva"``) or a language label (``"hi"``); see :func:`mmie.script_token_mask`.
        base_alpha: alpha of a sequence that has not drifted, in ``[0, 1]``.
        high_alpha: alpha once it drifted, in ``[base_alpha, 1]``.
        threshold: minimum fraction of a group's generated non-special tokens that must be
            target-script tokens, in ``[0, 1]``. Compared exactly in integers as the nearest
            fraction ``p/q`` with ``q <= 10000`` (``0.3`` is ``3/10``).
        min_tokens: minimum number of target-script tokens a group must have generated.
        penalty: logit penalty subtracted from target-script tokens of drifted rows (``None``
            or ``0`` for none). ``math.inf`` bans them: the byte-aware set of
            ``mmie.edits.controls.ScriptBanMasks``, or the tokens of ``target_mask``
            when one is given.
        detector: optional text detector (:class:`mmie.Detector`) refining the decision.
        target_language: label the detector gives the target language (default:
            ``SCRIPT_LANGUAGE`` of ``target_script``, ``"hi"`` for Devanagari).
        detect_every: steps between detector calls.
        script_blind: schedule alpha without penalising tokens (requires no penalty); for
            evaluations where banning the script would make the comparison trivial.
        sticky: keep a group at ``high_alpha`` once it switched; with ``False`` the decision
            is re-evaluated every step from the cumulative counts.
        target_mask: a precomputed ``[vocab]`` boolean mask of target tokens, used instead of
            :func:`mmie.script_token_mask` (for custom vocabularies or definitions).

    Raises:
        TypeError: arguments of the wrong type.
        ValueError: out-of-range values, ``base_alpha > high_alpha``, or a penalty together
            with ``script_blind=True``.

    Example:
        >>> proc = DynamicGatingProcessor(gate, tok, base_alpha=0.0, high_alpha=1.0)  # doctest: +SKIP
        >>> texts = mmie.generate(model, tok, prompts, logits_processors=[proc])  # doctest: +SKIP
        >>> proc.alpha_history.shape  # doctest: +SKIP
        torch.Size([8, 64])
    """

    def __init__(
        self,
        gate: SequenceGate,
        tokenizer: PreTrainedTokenizerBase,
        *,
        target_script: str = "devanagari",
        base_alpha: float = 0.0,
        high_alpha: float = 1.0,
        threshold: float = 0.3,
        min_tokens: int = 3,
        penalty: float | None = None,
        detector: Detector | None = None,
        target_language: str | None = None,
        detect_every: int = 16,
        script_blind: bool = False,
        sticky: bool = True,
        target_mask: Tensor | None = None,
    ) -> None:
        if not isinstance(gate, SequenceGate):
            raise TypeError(
                "gate must offer alpha, attached, attach(), remove(), set_sequence_alpha() and "
                f"clear_sequence_alpha() (e.g. an mmie.SAEGate), got {type(gate).__name__}"
            )
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(
                f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}"
            )
        code = script_code(target_script, "target_script")
        self.base_alpha = unit_interval(base_alpha, "base_alpha")
        self.high_alpha = unit_interval(high_alpha, "high_alpha")
        if self.base_alpha > self.high_alpha:
            raise ValueError(
                f"base_alpha ({base_alpha}) must be <= high_alpha ({high_alpha}): the gate is "
                "raised when the continuation drifts; swap the two values"
            )
        self.threshold = unit_interval(threshold, "threshold")
        frac = Fraction(self.threshold).limit_denominator(10_000)  # 0.3 -> 3/10, exactly
        self._threshold_fraction = (frac.numerator, frac.denominator)
        self.min_tokens = positive_int(min_tokens, "min_tokens")
        self.detect_every = positive_int(detect_every, "detect_every")
        if penalty is not None:
            if not is_real(penalty):
                raise TypeError(f"penalty must be a float >= 0 or None, got {penalty!r}")
            if math.isnan(float(penalty)) or float(penalty) < 0:
                raise ValueError(
                    f"penalty must be >= 0 (it is subtracted from target-script logits), "
                    f"got {penalty}"
                )
            penalty = float(penalty) if penalty > 0 else None
        if script_blind and penalty is not None:
            raise ValueError(
                "script_blind=True schedules alpha without penalising tokens; drop penalty "
                f"(got {penalty}) or set script_blind=False"
            )
        if detector is not None and not callable(getattr(detector, "detect", None)):
            raise TypeError(
                f"detector must have a detect(text) method, got {type(detector).__name__}"
            )
        if target_language is None:
            target_language = SCRIPT_LANGUAGE[code]
        elif not isinstance(target_language, str) or not target_language:
            raise TypeError(f"target_language must be a detector label, got {target_language!r}")
        if target_mask is not None:
            if not isinstance(target_mask, Tensor) or target_mask.dtype != torch.bool:
                raise TypeError("target_mask must be a boolean torch.Tensor of shape [vocab]")
            if target_mask.ndim != 1:
                raise ValueError(
                    f"target_mask must have shape [vocab], got {tuple(target_mask.shape)}"
                )
        self.gate = gate
        self.tokenizer = tokenizer
        self.target_script = code
        self.penalty = penalty
        self.detector = detector
        self.target_language = target_language
        self.script_blind = bool(script_blind)
        self.sticky = bool(sticky)
        self._target_mask = target_mask.detach().cpu() if target_mask is not None else None
        self._ban_masks = (
            ScriptBanMasks(tokenizer, code) if penalty == math.inf and target_mask is None else None
        )
        self._tables: dict[tuple[torch.device, int], tuple[Tensor, Tensor]] = {}
        self._state: _GenerationState | None = None
        self._rows_per_prompt = 1
        self._in_session = False

    def __repr__(self) -> str:
        return (
            f"DynamicGatingProcessor(target_script={self.target_script!r}, "
            f"base_alpha={self.base_alpha}, high_alpha={self.high_alpha}, "
            f"threshold={self.threshold}, min_tokens={self.min_tokens}, "
            f"penalty={self.penalty}, detector={type(self.detector).__name__ if self.detector else None}, "
            f"script_blind={self.script_blind}, sticky={self.sticky})"
        )

    # ------------------------------------------------------------------ session / state
    @contextlib.contextmanager
    def session(self, *, rows_per_prompt: int = 1) -> Iterator[DynamicGatingProcessor]:
        """Context manager around one or more ``model.generate`` calls using this processor.

        On entry it resets the processor, attaches the gate if it is not attached, and sets
        the gate's scalar alpha to ``base_alpha`` (so the prompt's forward pass, which runs
        before the processor is first called, is gated like a sequence that has not
        drifted). On exit -- also when generation raises -- it clears the gate's
        per-sequence alpha, restores the scalar alpha and removes the gate if the session
        attached it. :attr:`alpha_history` stays readable.

        Args:
            rows_per_prompt: rows ``generate`` makes from each prompt: ``num_beams`` for beam
                search, else ``num_return_sequences``.

        Raises:
            InterventionError: a session of this processor is already open.
        """
        rows_per_prompt = positive_int(rows_per_prompt, "rows_per_prompt")
        if self._in_session:
            raise InterventionError("this DynamicGatingProcessor already has an open session")
        gate = self.gate
        attached_here = not gate.attached
        old_alpha = gate.alpha
        self.reset()
        self._rows_per_prompt = rows_per_prompt
        self._in_session = True
        try:
            if attached_here:
                gate.attach()
            gate.clear_sequence_alpha()
            gate.alpha = self.base_alpha
            yield self
        finally:
            self._in_session = False
            try:
                gate.clear_sequence_alpha()
                gate.alpha = old_alpha
            finally:
                if attached_here:
                    gate.remove()

    def reset(self) -> None:
        """Forget the current generation's state; the next call starts a new generation."""
        self._state = None

    @property
    def alpha_history(self) -> Tensor:
        """``[rows, steps]`` fp32 (CPU): the alpha written for each row at each step.

        Column ``t`` is the alpha set after step ``t``'s logits were computed, which acts on
        the forward pass of step ``t + 1`` (the prompt's forward pass ran at ``base_alpha``).
        Rows are in ``generate``'s order (prompt-major, ``rows_per_prompt`` rows per prompt).
        Empty (``[0, 0]``) before the first call.
        """
        state = self._state
        if state is None or not state.history:
            return torch.zeros(0, 0)
        return torch.stack(state.history, dim=1).cpu()  # (rows, steps)

    @property
    def drifted(self) -> Tensor:
        """``[prompts]`` bool (CPU): whether each prompt group is at ``high_alpha`` now."""
        state = self._state
        if state is None:
            return torch.zeros(0, dtype=torch.bool)
        return state.high.cpu()

    def _tables_for(self, device: torch.device, vocab: int) -> tuple[Tensor, Tensor]:
        """``(target [vocab] bool, step [vocab, 2] long)`` on ``device``, cached."""
        key = (device, vocab)
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        if self._target_mask is not None:
            mask = self._target_mask
        else:
            mask = script_token_mask(self.tokenizer, self.target_script)
        target = torch.zeros(vocab, dtype=torch.bool)
        n = min(vocab, mask.numel())
        target[:n] = mask[:n]
        counted = torch.zeros(vocab, dtype=torch.bool)
        counted[: min(vocab, len(self.tokenizer))] = True  # ids beyond it are padding rows
        special = [i for i in self.tokenizer.all_special_ids if 0 <= i < vocab]
        counted[special] = False
        target &= counted
        p, q = self._threshold_fraction
        step = torch.stack([target.long(), q * target.long() - p * counted.long()], dim=1)
        tables = (target.to(device), step.to(device))  # (vocab,), (vocab, 2)
        self._tables[key] = tables
        return tables

    def _start(self, input_ids: Tensor, scores: Tensor) -> _GenerationState:
        rows, prompt_len = input_ids.shape
        group = self._rows_per_prompt
        if rows % group:
            raise ValueError(
                f"input_ids has {rows} rows, not a multiple of rows_per_prompt={group}; pass "
                "session(rows_per_prompt=num_beams or num_return_sequences)"
            )
        device = scores.device
        target, step = self._tables_for(device, scores.shape[-1])
        groups = rows // group
        state = _GenerationState(
            rows=rows,
            group=group,
            prompt_len=prompt_len,
            device=device,
            target_ids=target.nonzero().view(-1),
            step_table=step,
            limits=torch.tensor([self.min_tokens, 0], dtype=torch.long, device=device),
            base=torch.tensor(self.base_alpha, dtype=torch.float32, device=device),
            high_value=torch.tensor(self.high_alpha, dtype=torch.float32, device=device),
            neg_penalty=torch.tensor(-(self.penalty or 0.0), dtype=scores.dtype, device=device),
            zero=torch.zeros((), dtype=scores.dtype, device=device),
            acc=torch.zeros(groups, 2, dtype=torch.long, device=device),
            high=torch.zeros(groups, dtype=torch.bool, device=device),
            detected=torch.zeros(groups, dtype=torch.bool, device=device),
            last_detect=prompt_len,
        )
        self._state = state
        logger.debug("dynamic gating: new generation, %d rows x %d per prompt", rows, group)
        return state

    # ------------------------------------------------------------------ the step
    def __call__(self, input_ids: torch.LongTensor, scores: Tensor) -> Tensor:
        """Update the per-row state with the newest tokens, set the gate, return new scores.

        Args:
            input_ids: ``[rows, seq]`` prompt plus the tokens generated so far.
            scores: ``[rows, vocab]`` logits (or log-probabilities) of the next token.

        Returns:
            ``scores`` itself when nothing is penalised, else a new ``[rows, vocab]`` tensor.

        Raises:
            InterventionError: called outside :meth:`session` / :func:`mmie.generate`.
        """
        if not self._in_session:
            raise InterventionError(
                "DynamicGatingProcessor must run inside `with processor.session(...)` or "
                "through mmie.generate(..., logits_processors=[processor]); otherwise the "
                "gate's per-sequence alpha would outlive the generation"
            )
        state = self._state
        rows, length = input_ids.shape
        if state is None or rows != state.rows or length != state.prompt_len + state.steps:
            state = self._start(input_ids, scores)
        # A handful of tiny kernels and no host sync per step: decoding is launch-bound.
        group = state.group
        if state.steps > 0:
            delta = state.step_table[input_ids[:, -1]]  # (rows, 2)
            if group > 1:
                delta = delta.view(-1, group, 2).sum(dim=1)  # (groups, 2)
            state.acc += delta
        flag = (state.acc >= state.limits).all(dim=1)  # (groups,)
        if self.detector is not None:
            if length - state.last_detect >= self.detect_every:
                state.detected = self._detect(state, input_ids)
                state.last_detect = length
            flag = flag | state.detected
        if self.sticky:
            state.high.logical_or_(flag)
        else:
            state.high = flag
        row_high = state.high
        if group > 1:
            row_high = row_high[:, None].expand(-1, group).reshape(-1)  # (rows,)
        alpha = torch.where(row_high, state.high_value, state.base)  # (rows,)
        self.gate.set_sequence_alpha(alpha, check=False)
        state.history.append(alpha)
        state.steps += 1
        if self.penalty is None:
            return scores
        if self._ban_masks is None and state.target_ids.numel() == 0:
            return scores
        if scores.device.type == "cpu" and not bool(row_high.any()):  # free on CPU only
            return scores
        if self._ban_masks is not None:  # byte-aware ban, per row's pending bytes
            ban = self._ban_masks.for_rows(
                input_ids, state.prompt_len, scores.shape[-1], scores.device
            )
            ban = ban.view(-1, scores.shape[-1]) & row_high[:, None]  # (rows, vocab)
            return scores.masked_fill(ban, -math.inf)
        shift = torch.where(row_high, state.neg_penalty, state.zero)  # (rows,) -penalty or 0
        shift = shift[:, None].expand(-1, state.target_ids.numel())  # (rows, n_target_tokens)
        return scores.index_add(1, state.target_ids, shift)  # a new tensor

    def _detect(self, state: _GenerationState, input_ids: Tensor) -> Tensor:
        assert self.detector is not None
        tail = input_ids[:, state.last_detect :].tolist()  # only the new tokens
        texts = self.tokenizer.batch_decode(tail, skip_special_tokens=True)
        todo = [i for i, text in enumerate(texts) if text.strip()]  # finished rows: only pads
        hits = [False] * len(texts)
        if todo:
            batch = getattr(self.detector, "detect_batch", None)
            found = (
                batch([texts[i] for i in todo])
                if callable(batch)
                else [self.detector.detect(texts[i]) for i in todo]
            )
            for i, detection in zip(todo, found):
                hits[i] = detection.label == self.target_language
        row_hit = torch.tensor(hits, dtype=torch.bool, device=state.device)
        return row_hit.view(-1, state.group).any(dim=1)  # (groups,)


# ---------------------------------------------------------------------------- generate
