"""Tokenisation with explicit padding sides, and right-padded collation of token ids."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from mmie.errors import TruncationWarning

__all__ = ["collate_ids", "tokenize"]


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int | None = None,
    padding_side: Literal["left", "right"] = "right",
    device: torch.device | str | None = None,
    add_special_tokens: bool = True,
) -> BatchEncoding:
    """Tokenise a batch of texts with padding on the requested side.

    Right padding (the default) keeps position ids of real tokens equal to their index, which
    is what teacher-forced scoring needs; use left padding for generation.

    Args:
        tokenizer: a tokenizer with a pad token (see :func:`prepare_tokenizer`).
        texts: the texts.
        max_length: truncate longer texts to this many tokens (a
            :class:`~mmie.errors.TruncationWarning` is emitted when that happens).
        padding_side: ``"right"`` or ``"left"``.
        device: where to put the tensors.
        add_special_tokens: passed to the tokenizer.

    Returns:
        A ``BatchEncoding`` with ``input_ids`` and ``attention_mask`` ``[batch, seq]``.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    if len(texts) == 0:
        raise ValueError("texts must not be empty")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if tokenizer.pad_token is None:
        raise ValueError("tokenizer has no pad token; call mmie.prepare_tokenizer(tokenizer)")
    previous = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        if max_length is None:
            enc = tokenizer(
                list(texts),
                return_tensors="pt",
                padding=True,
                add_special_tokens=add_special_tokens,
            )
        else:
            enc = _truncated(tokenizer, list(texts), max_length, add_special_tokens)
    finally:
        tokenizer.padding_side = previous
    if device is not None:
        enc = enc.to(device)
    return enc


def _truncated(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, add_special_tokens: bool
) -> BatchEncoding:
    """Padded tensors of ``texts`` cut to ``max_length`` tokens, with a warning naming how
    many were cut: one tokenizer pass counts and encodes every text; only the texts that are
    too long are encoded again with truncation (so special tokens are placed exactly as
    ``truncation=True`` places them), then the batch is padded."""
    enc = tokenizer(texts, add_special_tokens=add_special_tokens)
    long = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > max_length]
    if long:
        cut = tokenizer(
            [texts[i] for i in long],
            add_special_tokens=add_special_tokens,
            truncation=True,
            max_length=max_length,
        )
        for key in enc:
            for j, i in enumerate(long):
                enc[key][i] = cut[key][j]
        warnings.warn(
            f"{len(long)} of {len(texts)} texts were longer than max_length={max_length} "
            "tokens and were truncated",
            TruncationWarning,
            stacklevel=3,
        )
    # ``pad`` of a fast tokenizer logs advice to call the tokenizer instead; this is that
    # call's result, padded (the flag is how transformers' own collators silence it).
    flags = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(flags, dict):
        flags["Asking-to-pad-a-fast-tokenizer"] = True
    return tokenizer.pad(enc, padding=True, return_tensors="pt")


def collate_ids(
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
