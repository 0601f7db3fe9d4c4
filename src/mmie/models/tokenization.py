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
        enc = tokenizer(
            list(texts),
            return_tensors="pt",
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            add_special_tokens=add_special_tokens,
        )
        if max_length is not None:
            full = tokenizer(
                list(texts), add_special_tokens=add_special_tokens, return_length=True
            )["length"]
            n_cut = sum(1 for n in full if n > max_length)
            if n_cut:
                warnings.warn(
                    f"{n_cut} of {len(texts)} texts were longer than max_length={max_length} "
                    "tokens and were truncated",
                    TruncationWarning,
                    stacklevel=2,
                )
    finally:
        tokenizer.padding_side = previous
    if device is not None:
        enc = enc.to(device)
    return enc


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
