"""Teacher-forced log-probabilities with padding masked out: one rule for the whole library.

A next-token prediction *counts* when the token it predicts and the token it predicts from
are both real (``attention_mask`` 1 at ``t`` and ``t + 1``). Every teacher-forced number in
mmie -- perplexity, MIA scores, script mass, the unlearning losses -- goes through
:func:`token_logprobs`, so evaluation and training can never disagree about which tokens
count. The batching helpers run a right-padded forward pass (real tokens keep positions
``0..L-1``), longest texts first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BatchEncoding, PreTrainedTokenizerBase

from mmie.models.tokenization import tokenize

__all__ = [
    "batch_logprobs",
    "forward_logits",
    "predicted_token_mask",
    "right_padded_batches",
    "token_logprobs",
]

logger = logging.getLogger(__name__)


def _check_batch(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits must be [batch, seq, vocab], got shape {tuple(logits.shape)}")
    if input_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"input_ids must be [batch, seq] = {tuple(logits.shape[:2])} like logits, got "
            f"{tuple(input_ids.shape)}"
        )
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
            f"{tuple(attention_mask.shape)}"
        )


def predicted_token_mask(attention_mask: Tensor) -> Tensor:
    """Which next-token predictions count: both the context token and the target are real.

    Args:
        attention_mask: ``[batch, seq]``, 1 for real tokens and 0 for padding.

    Returns:
        ``[batch, seq - 1]`` bool; entry ``t`` says whether the prediction of token ``t + 1``
        from position ``t`` counts.
    """
    real = attention_mask.bool()
    return real[:, 1:] & real[:, :-1]


def token_logprobs(
    logits: Tensor, input_ids: Tensor, attention_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Log-probabilities of the observed next tokens and the mask of the ones that count.

    Args:
        logits: ``[batch, seq, vocab]`` teacher-forced logits.
        input_ids: ``[batch, seq]`` token ids.
        attention_mask: ``[batch, seq]``, 1 for real tokens and 0 for padding.

    Returns:
        ``(logp, mask)``: ``logp [batch, seq - 1]`` fp32, ``log p(input_ids[:, t + 1] |
        input_ids[:, :t + 1])``, set to 0 where ``mask [batch, seq - 1]`` (bool, see
        :func:`predicted_token_mask`) is False.

    Raises:
        ValueError: the shapes do not match.
    """
    _check_batch(logits, input_ids, attention_mask)
    mask = predicted_token_mask(attention_mask)
    targets = input_ids[:, 1:].masked_fill(~mask, -100)  # (batch, seq-1)
    pred = logits[:, :-1].float()  # (batch, seq-1, vocab)
    nll = F.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
    ).view_as(targets)
    return -nll, mask


# ---------------------------------------------------------------------- teacher-forced scoring
def right_padded_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int | None,
    device: torch.device,
) -> Iterator[tuple[list[int], BatchEncoding]]:
    """Right-padded batches of ``texts``, longest first (less padding), with their indices."""
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenize(
            tokenizer,
            [texts[i] for i in idx],
            max_length=max_length,
            padding_side="right",
            device=device,
        )
        yield idx, enc


def forward_logits(
    model: nn.Module, enc: BatchEncoding, device: torch.device | None = None
) -> Tensor:
    """``[batch, seq, vocab]`` logits of a right-padded batch (inputs moved to ``device``)."""
    if getattr(model, "training", False):
        logger.warning("scoring a model in training mode (dropout active); call model.eval()")
    ids, attn = enc["input_ids"], enc["attention_mask"]
    if device is not None:
        ids, attn = ids.to(device), attn.to(device)
    out = model(input_ids=ids, attention_mask=attn, use_cache=False)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits


def batch_logprobs(logits: Tensor, enc: BatchEncoding) -> tuple[Tensor, Tensor]:
    """:func:`token_logprobs` of a batch encoding (inputs moved to the logits' device).

    Returns:
        ``(logp [batch, seq-1], mask [batch, seq-1])`` as :func:`token_logprobs`.
    """
    ids = enc["input_ids"].to(logits.device)
    mask = enc["attention_mask"].to(logits.device)
    return token_logprobs(logits, ids, mask)
