"""Batched generation that returns only the new text.

:func:`generate` continues a list of prompts in batches (left padding, prompts truncated on
the left with a warning, greedy by default, seeded sampling). Logits processors that keep
per-generation state expose a ``session(rows_per_prompt=...)`` context manager
(:class:`SessionProcessor`); :func:`generate` opens it around every batch. It knows no
concrete processor: the protocol is all it needs.

Batches are either ``batch_size`` prompts in input order, or (``max_batch_tokens``) prompts
sorted by length, longest first, packed into batches of at most ``max_batch_tokens`` tokens
(rows × (longest prompt + ``max_new_tokens``)): less padding and, on a small model, far
fewer decoding steps. The outputs come back in input order either way. A greedy
continuation is a function of its own prompt only (left padding is masked out and position
ids start at each row's first real token), so both batchings give the same text wherever the
model's per-row logits do not depend on the other rows of the batch in fp32 (true of the
bundled demo model and the tests' tiny models; tests compare every row with its
one-prompt generation). Sampled continuations depend on the batch composition (the RNG
draws for the whole batch): they are reproducible for a given seed and batching, not across
batchings. :data:`DEFAULT_MAX_BATCH_TOKENS` holds the budgets the study's evaluation suite
uses per device type.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from torch import nn
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from mmie._validation import finite_float, positive_float, positive_int, text_list
from mmie.errors import TruncationWarning
from mmie.models.blocks import input_device
from mmie.seeding import seed_context

__all__ = ["DEFAULT_MAX_BATCH_TOKENS", "SessionProcessor", "generate"]

#: Token budgets per generation batch by device type (``rows × (longest prompt +
#: max_new_tokens)``). CPU: 8192 tokens keep a batch's activations and KV cache of a
#: ~1B-parameter model within a few GB and already cut the decoding steps of the demo study
#: ~10×; CUDA: 65536 tokens, about 2 GB of bf16 KV cache for Qwen2-1.5B (28 layers × 2 ×
#: 256 × 2 bytes per token), large batches that keep the GPU busy.
DEFAULT_MAX_BATCH_TOKENS: dict[str, int] = {"cpu": 8192, "cuda": 65536}


@runtime_checkable
class SessionProcessor(Protocol):
    """A logits processor with per-generation state, scoped by a session.

    :func:`generate` enters ``processor.session(rows_per_prompt=...)`` around each
    ``model.generate`` call, where ``rows_per_prompt`` is ``num_beams`` for beam search and
    ``num_return_sequences`` otherwise; the session resets the state on entry and cleans it
    up on exit (also when generation raises).
    """

    def session(self, *, rows_per_prompt: int = 1) -> AbstractContextManager[Any]:
        """Scope one or more ``model.generate`` calls."""
        ...


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_prompt_tokens: int | None
) -> Any:
    """Left-padded batch; prompts longer than ``max_prompt_tokens`` lose their beginning."""
    if max_prompt_tokens is None:
        return tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
    lengths = tokenizer(texts, add_special_tokens=True, return_length=True)["length"]
    cut = [i for i, n in enumerate(lengths) if n > max_prompt_tokens]
    if cut:
        warnings.warn(
            f"{len(cut)} prompt(s) longer than max_prompt_tokens={max_prompt_tokens} (up to "
            f"{max(lengths)} tokens) were truncated on the left, keeping their end; raise "
            "max_prompt_tokens to keep them whole",
            TruncationWarning,
            stacklevel=3,
        )
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"  # keep the end: a trailing instruction survives
    try:
        return tokenizer(
            texts,
            padding=True,
            padding_side="left",
            truncation=True,
            max_length=max_prompt_tokens,
            return_tensors="pt",
        )
    finally:
        tokenizer.truncation_side = side


def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    max_prompt_tokens: int | None = None,
    do_sample: bool = False,
    seed: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_beams: int = 1,
    num_return_sequences: int = 1,
    logits_processors: Sequence[LogitsProcessor] = (),
    show_progress: bool = False,
    max_batch_tokens: int | None = None,
) -> list[str] | list[list[str]]:
    """Continue ``prompts`` in batches and return only the generated text.

    Prompts are processed in order, ``batch_size`` at a time, left padded (so every row's
    prompt ends at the same position); with ``max_batch_tokens`` they are sorted by length
    and packed by a token budget instead (see the module docstring), and the outputs still
    come back in input order. Greedy decoding by default; ``do_sample=True`` samples
    with ``temperature`` and nucleus ``top_p`` (top-k is disabled) inside
    :func:`mmie.seed_context`, so results are reproducible for a given ``seed`` and
    ``batch_size`` and the caller's global RNG state is restored afterwards. Every
    processor in ``logits_processors`` that has a ``session(rows_per_prompt=...)`` method
    (``SessionProcessor``, e.g. :class:`~mmie.DynamicGatingProcessor`) runs inside that
    session for each batch, so per-generation state (a gate's per-sequence alpha) is
    cleared when a batch finishes or raises; a dynamic gate's
    :attr:`~mmie.DynamicGatingProcessor.alpha_history` then describes the last batch.

    Args:
        model: a causal LM (inputs go to :func:`mmie.input_device`).
        tokenizer: its tokenizer, with a pad token (see :func:`mmie.prepare_tokenizer`).
        prompts: the prompts.
        max_new_tokens: tokens generated per sequence (fewer if it ends with EOS).
        batch_size: prompts per ``model.generate`` call.
        max_prompt_tokens: longer prompts are truncated on the *left* (their end, where an
            instruction usually sits, is kept) with a :class:`~mmie.TruncationWarning`;
            ``None`` keeps prompts whole.
        do_sample: sample instead of greedy/beam decoding.
        seed: seed of the sampling; required when ``do_sample=True``.
        temperature: sampling temperature (``do_sample`` only).
        top_p: nucleus sampling mass in ``(0, 1]`` (``do_sample`` only).
        num_beams: beam width; ``1`` is greedy/sampling.
        num_return_sequences: continuations per prompt (``<= num_beams`` with beam search;
            needs ``do_sample`` or beams otherwise).
        logits_processors: extra logits processors, applied in order.
        show_progress: show a tqdm progress bar over batches.
        max_batch_tokens: pack prompts, longest first, into batches of at most this many
            tokens, counting ``rows × (longest prompt + max_new_tokens)`` with ``rows =
            prompts × rows_per_prompt`` (a longer single prompt gets a batch of its own);
            ``batch_size`` is then not used. ``None``: ``batch_size`` prompts in order.

    Returns:
        One string per prompt, or, when ``num_return_sequences > 1``, one list of
        ``num_return_sequences`` strings per prompt. Special tokens are skipped.

    Raises:
        TypeError: ``prompts`` is a single string or contains non-strings.
        ValueError: invalid numbers, sampling options without ``do_sample``, ``do_sample``
            without ``seed``, or a tokenizer without pad token.

    Example:
        >>> texts = mmie.generate(model, tok, ["नमस्ते", "Hello"], max_new_tokens=16)  # doctest: +SKIP
    """
    texts = text_list(prompts, "prompts", allow_empty=True)
    max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
    batch_size = positive_int(batch_size, "batch_size")
    num_beams = positive_int(num_beams, "num_beams")
    num_return_sequences = positive_int(num_return_sequences, "num_return_sequences")
    if max_prompt_tokens is not None:
        max_prompt_tokens = positive_int(max_prompt_tokens, "max_prompt_tokens")
    if max_batch_tokens is not None:
        max_batch_tokens = positive_int(max_batch_tokens, "max_batch_tokens")
    temperature = positive_float(temperature, "temperature")
    top_p = finite_float(top_p, "top_p", low=0.0, high=1.0, low_open=True)
    if do_sample:
        if seed is None:
            raise ValueError("do_sample=True needs a seed for reproducible samples; pass seed=0")
    elif temperature != 1.0 or top_p != 1.0:
        raise ValueError(
            "temperature and top_p only apply when sampling; pass do_sample=True (and a seed) "
            "or leave them at 1.0"
        )
    if num_beams > 1 and num_return_sequences > num_beams:
        raise ValueError(
            f"num_return_sequences ({num_return_sequences}) must be <= num_beams ({num_beams})"
        )
    if num_beams == 1 and not do_sample and num_return_sequences > 1:
        raise ValueError(
            "num_return_sequences > 1 with greedy decoding returns identical copies; pass "
            "do_sample=True (and a seed) or num_beams >= num_return_sequences"
        )
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "tokenizer has no pad token; call mmie.prepare_tokenizer(tokenizer, model) first"
        )
    processors = list(logits_processors)
    for proc in processors:
        if not callable(proc):
            raise TypeError(f"logits_processors entries must be callable, got {proc!r}")
    rows_per_prompt = num_beams if num_beams > 1 else num_return_sequences
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "num_beams": num_beams,
        "num_return_sequences": num_return_sequences,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if do_sample:
        options.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
    else:  # None: no sampling flags, whatever the model's generation_config says
        options.update(temperature=None, top_p=None, top_k=None)
    device = input_device(model)
    if max_batch_tokens is None:
        batches = [
            list(range(s, min(s + batch_size, len(texts))))
            for s in range(0, len(texts), batch_size)
        ]
    else:
        batches = _token_batches(
            tokenizer, texts, max_prompt_tokens, max_new_tokens, rows_per_prompt, max_batch_tokens
        )
    rows: list[list[str]] = [[] for _ in texts]
    rng = seed_context(seed) if seed is not None else contextlib.nullcontext()
    with rng:
        for index in tqdm(batches, desc="generate", unit="batch", disable=not show_progress):
            batch = _encode(tokenizer, [texts[i] for i in index], max_prompt_tokens)
            batch = batch.to(device)
            with contextlib.ExitStack() as stack:
                for proc in processors:
                    if isinstance(proc, SessionProcessor):
                        stack.enter_context(proc.session(rows_per_prompt=rows_per_prompt))
                out = model.generate(  # type: ignore[operator]
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    logits_processor=LogitsProcessorList(processors),
                    **options,
                )
            new = out[:, batch["input_ids"].shape[1] :]  # (batch × rows_per_prompt, new)
            decoded = tokenizer.batch_decode(new.tolist(), skip_special_tokens=True)
            n = num_return_sequences
            for j, i in enumerate(index):
                rows[i] = decoded[j * n : (j + 1) * n]
    if num_return_sequences == 1:
        return [r[0] for r in rows]
    return rows


def _token_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_prompt_tokens: int | None,
    max_new_tokens: int,
    rows_per_prompt: int,
    max_batch_tokens: int,
) -> list[list[int]]:
    """Prompt indices, longest prompt first (ties in input order), packed into batches of
    at most ``max_batch_tokens`` tokens: ``rows × (longest prompt + max_new_tokens)``."""
    if not texts:
        return []
    lengths = tokenizer(texts, add_special_tokens=True, return_length=True)["length"]
    if max_prompt_tokens is not None:
        lengths = [min(n, max_prompt_tokens) for n in lengths]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    width = 0
    for i in order:
        if batches:
            rows = (len(batches[-1]) + 1) * rows_per_prompt
            if rows * (width + max_new_tokens) <= max_batch_tokens:
                batches[-1].append(i)
                continue
        batches.append([i])
        width = lengths[i]  # the longest prompt of the new batch
    return batches
