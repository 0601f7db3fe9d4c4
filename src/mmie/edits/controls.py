"""Control arms: cheap interventions that cannot be unlearning, to calibrate the study's gates.

A gate that is meant to certify unlearning must *reject* each of these; one that passes any
of them is not calibrated:

* :class:`ScriptBanProcessor` forbids the target script at decoding time. The model still
  knows the language (its representations, probabilities and romanised outputs are
  untouched), yet its continuations contain no target-script character: a gate that reads
  only the script of generated text would call that "forgotten".
* :class:`ForcedEOSProcessor` ends every continuation at once. Empty outputs have no target
  language and no extraction strength; a gate must tell silence from forgetting (see
  :func:`mmie.degeneracy`).
* :class:`NoiseIntervention` adds Gaussian noise to one block's hidden state. A destroyed
  model forgets everything; a gate must check that what should be kept is kept.
* The identity control needs no class: the study runs the base model as it is.

The ban is byte-aware: ``ScriptBanMasks`` keeps, per generated row, the incomplete
UTF-8 character at the end of its text and bans the tokens that would complete a
target-script character from it or leave a prefix that can only complete into one
(``mmie.language.unicode.script_ban_mask``), so it also works with byte-level
tokenizers whose tokens hold single bytes of a character. :class:`~mmie.DynamicGatingProcessor`
uses the same masks when its ``penalty`` is infinite.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mmie._validation import integer, integer_sequence, is_integer, nonnegative_float, positive_int
from mmie.errors import InterventionError
from mmie.language.unicode import script_ban_mask, script_code, token_bytes, utf8_tail
from mmie.models.blocks import block_device, num_layers
from mmie.models.hooks import BlockIntervention, Edit

__all__ = ["ForcedEOSProcessor", "NoiseIntervention", "ScriptBanMasks", "ScriptBanProcessor"]

logger = logging.getLogger(__name__)

_WINDOW = 8  # generated tokens read back per row and step (more only after special tokens)


def _check_tokenizer(tokenizer: object) -> None:
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(
            f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}"
        )


class ScriptBanMasks:
    """Per-row byte-aware ban masks of one tokenizer and script, cached on the scores' device.

    The bans come from ``mmie.language.unicode.script_ban_mask``, one mask per distinct
    *pending prefix* (the incomplete UTF-8 character a row's text ends with). A row's
    pending prefix is read back from its last generated tokens (at most three bytes
    matter; special tokens, which decoding skips, are skipped), so it needs no per-row
    state and stays right when beam search reorders rows. Each mask is built on the CPU
    the first time its prefix occurs and kept in a table on the device; a step then costs
    one small device-to-host copy of the rows' last tokens and an index into that table --
    the vocabulary is never decoded again.

    Args:
        tokenizer: the tokenizer of the generating model.
        script: the banned script: a code (``"Deva"``), a name (``"devanagari"``) or a
            language label (``"hi"``).

    Raises:
        TypeError: ``tokenizer`` is not a transformers tokenizer.
        ValueError: unknown ``script``.

    Example:
        >>> from mmie.testing import byte_tokenizer
        >>> masks = ScriptBanMasks(byte_tokenizer(), "Deva")
        >>> masks.pending([0x41, 0xE0]), bool(masks.mask(b"\\xe0")[0xA4])
        (b'\\xe0', True)
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, script: str) -> None:
        _check_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.script = script_code(script)
        self._raw = token_bytes(tokenizer)
        self._special = frozenset(int(i) for i in tokenizer.all_special_ids)
        # (device, width) -> (stacked masks [k, width], pending prefix -> row of the stack)
        self._tables: dict[tuple[torch.device, int], tuple[Tensor, dict[bytes, int]]] = {}

    def __repr__(self) -> str:
        return f"ScriptBanMasks(script={self.script!r}, vocab={len(self._raw)})"

    def mask(self, pending: bytes = b"") -> Tensor:
        """``[len(tokenizer)]`` bool (CPU, a fresh tensor): the tokens banned after ``pending``."""
        return script_ban_mask(self.tokenizer, self.script, pending).clone()

    def _is_text(self, tid: int) -> bool:
        return tid not in self._special and 0 <= tid < len(self._raw)

    def pending(self, token_ids: Sequence[int]) -> bytes:
        """The incomplete character at the end of the text of ``token_ids`` (decoded alone).

        Special tokens and ids outside the tokenizer are skipped (decoding skips them); a
        token whose bytes are unknown (:func:`mmie.token_bytes` gives ``None``) ends any
        pending character.
        """
        buf = b""
        for tid in reversed(token_ids):
            if not self._is_text(tid):
                continue
            data = self._raw[tid]
            if data is None:
                break
            buf = data + buf
            if len(buf) >= 3:
                break
        return utf8_tail(buf)

    def _table(
        self, device: torch.device, width: int, pendings: set[bytes]
    ) -> tuple[Tensor, dict[bytes, int]]:
        key = (device, width)
        table, index = self._tables.get(key, (None, {}))
        new = [p for p in sorted(pendings | {b""}) if p not in index]
        if new:
            rows = []
            for p in new:
                ban = script_ban_mask(self.tokenizer, self.script, p)
                row = torch.zeros(width, dtype=torch.bool)
                n = min(width, ban.numel())  # ids beyond the tokenizer: embedding padding
                row[:n] = ban[:n]
                rows.append(row)
            added = torch.stack(rows).to(device)
            table = added if table is None else torch.cat([table, added])
            index = {**index, **{p: len(index) + i for i, p in enumerate(new)}}
            self._tables[key] = (table, index)
        assert table is not None
        return table, index

    def for_rows(self, input_ids: Tensor, start: int, width: int, device: torch.device) -> Tensor:
        """The ban of every row: ``[width]`` when no row has a pending character, else
        ``[rows, width]`` (bool, on ``device``).

        Args:
            input_ids: ``[rows, seq]`` prompts and the tokens generated so far.
            start: position of the first generated token (the padded prompt length).
            width: the logits' width (ids beyond ``len(tokenizer)`` are never banned).
            device: the scores' device.
        """
        length = input_ids.shape[1]
        if length <= start:
            table, index = self._table(device, width, set())
            return table[index[b""]]
        lo = max(start, length - _WINDOW)
        tails = input_ids[:, lo:].tolist()  # one small device-to-host copy per step
        pendings = []
        for r, ids in enumerate(tails):
            if lo > start and sum(1 for t in ids if self._is_text(t)) < 3:
                ids = input_ids[r, start:].tolist()  # rare: a run of special tokens
            pendings.append(self.pending(ids))
        table, index = self._table(device, width, set(pendings))
        if not any(pendings):
            return table[index[b""]]
        rows = torch.tensor([index[p] for p in pendings], dtype=torch.long).to(device)
        return table[rows]


@dataclass
class _Generation:
    rows: int
    start: int  # padded prompt length at the first call
    steps: int = 0


class ScriptBanProcessor(LogitsProcessor):
    """Control arm: decoding never writes a character of the target script.

    Sets to ``-inf`` the logits of every token that would start or continue a character of
    ``script`` (``ScriptBanMasks``): whole-character tokens containing the script,
    tokens that complete a target character from the bytes a row has pending, and tokens
    that leave an incomplete character that can only complete into the script (for
    Devanagari ``E0 A4``/``E0 A5``; a bare ``E0``, shared with Bengali and Gurmukhi, stays
    allowed, and so do tokens that complete it into those scripts). Special tokens, EOS
    included, are never banned, so a row can always end.

    It is a **control**: the model still knows the language, only the script of its
    output is suppressed (romanised Hindi, for one, passes through). A gate that accepts
    this arm as unlearning reads nothing but the script of generated text and is not
    calibrated.

    With a pure byte-level tokenizer the Devanagari digits and the danda (U+0964, U+0965)
    cannot be written either: they share their two-byte prefix ``E0 A5`` with Devanagari
    vowel signs. Tokenizers that hold them as whole tokens keep them (they are
    script-neutral).

    Use it through :func:`mmie.generate` (``logits_processors=[ban]``), which opens
    :meth:`session` around every batch, or directly with ``model.generate``: a new
    generation is then recognised when ``input_ids`` no longer continue the previous call.
    The caller's ``scores`` are never modified (a new tensor is returned).

    Args:
        tokenizer: the tokenizer of the generating model.
        script: the banned script: a code (``"Deva"``), a name (``"devanagari"``) or a
            language label (``"hi"``).
        vocab_size: the logits' width, when known; the scores must then have exactly that
            width (``None``: any width, ids beyond ``len(tokenizer)`` are never banned).

    Raises:
        TypeError: ``tokenizer`` is not a transformers tokenizer or ``vocab_size`` not an
            int.
        ValueError: unknown ``script`` or ``vocab_size < len(tokenizer)``.

    Example:
        >>> ban = ScriptBanProcessor(tok, "hi")  # doctest: +SKIP
        >>> mmie.generate(model, tok, ["नमस्ते"], logits_processors=[ban])  # doctest: +SKIP
        [' hello ...']
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, script: str, *, vocab_size: int | None = None
    ) -> None:
        _check_tokenizer(tokenizer)
        if vocab_size is not None:
            vocab_size = positive_int(vocab_size, "vocab_size")
            if vocab_size < len(tokenizer):
                raise ValueError(
                    f"vocab_size={vocab_size} is smaller than the tokenizer's {len(tokenizer)} ids"
                )
        self.masks = ScriptBanMasks(tokenizer, script)
        self.script = self.masks.script
        self.vocab_size = vocab_size
        self._state: _Generation | None = None
        self._rows_per_prompt = 1
        self._in_session = False

    def __repr__(self) -> str:
        return f"ScriptBanProcessor(script={self.script!r}, vocab_size={self.vocab_size})"

    @contextlib.contextmanager
    def session(self, *, rows_per_prompt: int = 1) -> Iterator[ScriptBanProcessor]:
        """Scope one or more ``model.generate`` calls: the state is reset on entry and exit.

        Args:
            rows_per_prompt: rows ``generate`` makes from each prompt (``num_beams`` or
                ``num_return_sequences``); the ban is per row, so it only has to divide
                the rows.

        Raises:
            InterventionError: a session of this processor is already open.
        """
        rows_per_prompt = positive_int(rows_per_prompt, "rows_per_prompt")
        if self._in_session:
            raise InterventionError("this ScriptBanProcessor already has an open session")
        self._state = None
        self._rows_per_prompt = rows_per_prompt
        self._in_session = True
        try:
            yield self
        finally:
            self._in_session = False
            self._state = None

    def reset(self) -> None:
        """Forget the current generation; the next call starts a new one."""
        self._state = None

    def __call__(self, input_ids: torch.LongTensor, scores: Tensor) -> Tensor:
        """Return ``scores`` with the banned tokens of each row at ``-inf`` (a new tensor).

        Args:
            input_ids: ``[rows, seq]`` prompts plus the tokens generated so far.
            scores: ``[rows, vocab]`` logits of the next token.

        Raises:
            ValueError: ``scores`` is not ``[rows, vocab_size]``, or (in a session) the
                rows are not a multiple of ``rows_per_prompt``.
        """
        rows, length = input_ids.shape
        if scores.ndim != 2 or scores.shape[0] != rows:
            raise ValueError(f"scores must be [rows={rows}, vocab], got {tuple(scores.shape)}")
        if self.vocab_size is not None and scores.shape[1] != self.vocab_size:
            raise ValueError(
                f"scores have {scores.shape[1]} columns, but vocab_size={self.vocab_size}"
            )
        state = self._state
        if state is None or rows != state.rows or length != state.start + state.steps:
            if self._in_session and rows % self._rows_per_prompt:
                raise ValueError(
                    f"input_ids has {rows} rows, not a multiple of rows_per_prompt="
                    f"{self._rows_per_prompt}"
                )
            state = self._state = _Generation(rows=rows, start=length)
        ban = self.masks.for_rows(input_ids, state.start, scores.shape[1], scores.device)
        state.steps += 1
        return scores.masked_fill(ban, -math.inf)


class ForcedEOSProcessor(LogitsProcessor):
    """Control arm: every continuation is empty (EOS is forced at the first step).

    All logits are set to ``-inf`` except those of the EOS token(s), set to 0, so greedy
    decoding, sampling and beam search all end every row at the first generated token (it
    is stateless: later steps, if any, are forced the same way). Decoded with
    ``skip_special_tokens``, as :func:`mmie.generate` does, every output is ``""``.

    It is a **control**: an empty output has no target language, so leakage and
    extraction-strength metrics read zero, but nothing was forgotten. A gate that accepts
    it does not check that the model still produces text
    (:func:`mmie.degeneracy` flags these outputs ``empty``).
    Do not combine it with ``min_new_tokens`` (which bans EOS: every token would be
    ``-inf``).

    Args:
        eos_token_id: the EOS id, or several (any of them ends a row), e.g.
            ``tokenizer.eos_token_id``.

    Raises:
        TypeError: not an int or a sequence of ints.
        ValueError: a negative id or an empty sequence.

    Example:
        >>> import torch
        >>> ForcedEOSProcessor(2)(torch.zeros(1, 3, dtype=torch.long), torch.randn(1, 4))
        tensor([[-inf, -inf, 0., -inf]])
    """

    def __init__(self, eos_token_id: int | Sequence[int]) -> None:
        if is_integer(eos_token_id):
            ids: tuple[int, ...] = (integer(eos_token_id, "eos_token_id", minimum=0),)
        else:
            ids = integer_sequence(eos_token_id, "eos_token_id", minimum=0)
            if not ids:
                raise ValueError("eos_token_id must hold at least one id")
        self.eos_token_ids = ids

    def __repr__(self) -> str:
        return f"ForcedEOSProcessor(eos_token_ids={list(self.eos_token_ids)})"

    def __call__(self, input_ids: torch.LongTensor, scores: Tensor) -> Tensor:
        """A new ``[rows, vocab]`` tensor: 0 at the EOS id(s), ``-inf`` elsewhere.

        Raises:
            ValueError: an EOS id is not below the logits' width.
        """
        width = scores.shape[-1]
        if max(self.eos_token_ids) >= width:
            raise ValueError(
                f"eos_token_id {max(self.eos_token_ids)} is outside the logits' {width} columns"
            )
        out = torch.full_like(scores, -math.inf)
        out[..., list(self.eos_token_ids)] = 0.0
        return out


class NoiseIntervention(BlockIntervention):
    """Control arm: seeded Gaussian noise on one block's output hidden state.

    At block ``layer`` every token's hidden state ``h`` (``[d_model]``) becomes
    ``h + scale * rms(h) * z`` with ``rms(h) = sqrt(mean(h**2))`` over ``d_model`` and
    ``z ~ N(0, I)`` drawn from a local :class:`torch.Generator` on the block's device,
    seeded with ``seed`` at every :meth:`~mmie.BlockIntervention.attach` (the global RNG
    is never touched). So the noise is proportional to each token's own scale,
    ``scale=0`` is the identity, and the same seed, inputs and sequence of forward passes
    give the same outputs. The noise is computed in fp32 and cast back to the block's
    dtype.

    It is a **destructive control**: large noise makes the model forget the target
    language along with everything else. A gate that accepts it does not check what
    should be retained (perplexity on other languages, KL to the base model).

    Args:
        model: the model to perturb (PEFT-wrapped models work).
        layer: index of the block whose output is perturbed.
        scale: noise standard deviation relative to each token's RMS, ``>= 0``.
        seed: seed of the noise, in ``[0, 2**32)``.
        block_path: dotted path of the block list for architectures mmie does not know.

    Raises:
        TypeError: ``layer``, ``scale`` or ``seed`` of the wrong type.
        ValueError: ``layer`` out of range, a negative or infinite ``scale``, or a seed
            out of range.

    Example:
        >>> with NoiseIntervention(model, 1, scale=0.5, seed=0):  # doctest: +SKIP
        ...     logits = model(**batch).logits
    """

    def __init__(
        self,
        model: nn.Module,
        layer: int,
        *,
        scale: float,
        seed: int,
        block_path: str | None = None,
    ) -> None:
        super().__init__(model, block_path=block_path)
        n_blocks = num_layers(model, block_path)
        self.layer = integer(layer, "layer", minimum=0, maximum=n_blocks - 1)
        self.scale = nonnegative_float(scale, "scale")
        self.seed = integer(seed, "seed", minimum=0, maximum=2**32 - 1)

    def __repr__(self) -> str:
        return (
            f"NoiseIntervention(layer={self.layer}, scale={self.scale}, seed={self.seed}, "
            f"attached={self.attached})"
        )

    def _build_edits(self) -> list[tuple[int, Edit]]:
        scale = self.scale
        if scale == 0.0:
            return [(self.layer, lambda hidden: hidden)]
        device = block_device(self.model, self.layer, self.block_path)
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed)

        def edit(hidden: Tensor) -> Tensor:
            h = hidden.float()
            rms = h.pow(2).mean(dim=-1, keepdim=True).sqrt()  # [batch, seq, 1]
            z = torch.randn(h.shape, generator=generator, device=h.device, dtype=h.dtype)
            return (h + scale * rms * z).to(hidden.dtype)

        return [(self.layer, edit)]
