"""Collect residual-stream activations of several layers in one forward pass per batch.

Layer selection, SAE training, feature picking, probes and LEACE fitting all need the hidden
states of the same texts at several layers. :func:`collect_activations` runs each batch
through the model once, records every requested block output, drops pad positions, and stops
the forward pass after the deepest requested block (the LM head and later blocks never run).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from mmie.models.blocks import get_block, input_device, num_layers
from mmie.models.hooks import HookSet
from mmie.models.tokenization import tokenize

__all__ = ["Activations", "collect_activations"]

logger = logging.getLogger(__name__)


class _StopForwardError(Exception):
    """Raised by the capture hook after the deepest requested block to skip the rest."""


@dataclass(frozen=True)
class Activations:
    """Hidden states of a text set at several layers (block outputs), pad positions removed.

    Attributes:
        layers: the layers collected, ascending.
        tokens: per layer, ``[n_tokens, d_model]`` fp32 CPU activations of every non-pad
            token, texts concatenated in input order (empty if ``keep_tokens=False``).
        means: per layer, ``[n_texts, d_model]`` mean over each text's non-pad tokens.
        token_text_index: ``[n_tokens]`` index of the text each token came from.
        n_texts: number of texts.
        n_forward: number of model forward passes used to collect everything.
    """

    layers: tuple[int, ...]
    tokens: dict[int, torch.Tensor]
    means: dict[int, torch.Tensor]
    token_text_index: torch.Tensor
    n_texts: int
    n_forward: int

    @property
    def n_tokens(self) -> int:
        """Number of non-pad tokens over all texts."""
        return int(self.token_text_index.numel())


def pooled_means(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[batch, d_model]``: each row's mean hidden state over its real tokens (``mask``
    ``[batch, seq]`` bool; a row without a real token gives zeros). The one pooling rule of
    :func:`collect_activations` and of the study's shared scoring pass."""
    counts = mask.sum(dim=1).clamp_min(1).unsqueeze(1).float()  # (batch, 1)
    masked = hidden * mask.unsqueeze(-1)
    return masked.sum(dim=1) / counts


@torch.no_grad()
def collect_activations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    batch_size: int = 8,
    max_length: int = 256,
    keep_tokens: bool = True,
    block_path: str | None = None,
    show_progress: bool = False,
    desc: str | None = None,
) -> Activations:
    """Run ``texts`` through ``model`` once and collect the outputs of blocks ``layers``.

    Hooks of attached interventions stay active, so activations can be collected under an
    intervention (e.g. upstream erasure while fitting a scrubber layer by layer).

    Args:
        model: a causal LM (PEFT-wrapped models work).
        tokenizer: its tokenizer (with a pad token).
        texts: the texts; each is one sequence.
        layers: block indices to collect (any order, duplicates ignored).
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).
        keep_tokens: keep token-level activations (set False when only means are needed).
        block_path: dotted path of the block list for unknown architectures.
        show_progress: show a tqdm progress bar.
        desc: progress bar label.

    Returns:
        An :class:`Activations`.

    Raises:
        ValueError: empty ``texts`` or ``layers``, a layer out of range, or ``batch_size < 1``.
    """
    if len(texts) == 0:
        raise ValueError("texts must not be empty")
    wanted = sorted(set(int(layer) for layer in layers))
    if not wanted:
        raise ValueError("layers must not be empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_blocks = num_layers(model, block_path)
    for layer in wanted:
        if not 0 <= layer < n_blocks:
            raise ValueError(f"layer {layer} out of range [0, {n_blocks - 1}]")
    deepest = wanted[-1]

    captured: dict[int, torch.Tensor] = {}

    def recorder(layer: int) -> Callable[[torch.Tensor], None]:
        def observe(hidden: torch.Tensor) -> None:
            captured[layer] = hidden
            if layer == deepest:
                raise _StopForwardError

        return observe

    token_chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in wanted}
    mean_chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in wanted}
    index_chunks: list[torch.Tensor] = []
    device = input_device(model)
    n_forward = 0
    hooks = HookSet("collect_activations")
    try:
        for layer in wanted:
            hooks.add_observer(get_block(model, layer, block_path), recorder(layer))
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=desc or "activations", disable=not show_progress):
            batch = list(texts[start : start + batch_size])
            enc = tokenize(
                tokenizer, batch, max_length=max_length, padding_side="right", device=device
            )
            captured.clear()
            with contextlib.suppress(_StopForwardError):
                model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            n_forward += 1
            mask = enc["attention_mask"].bool().cpu()  # (batch, seq)
            for layer in wanted:
                hidden = captured[layer].detach().float().cpu()  # (batch, seq, d_model)
                mean_chunks[layer].append(pooled_means(hidden, mask))
                if keep_tokens:
                    token_chunks[layer].append(hidden[mask])  # (n_tok, d_model)
            rows = torch.arange(start, start + len(batch)).unsqueeze(1).expand_as(mask)
            index_chunks.append(rows[mask])
    finally:
        hooks.remove()
        captured.clear()

    d = mean_chunks[wanted[0]][0].shape[-1]
    tokens = {
        layer: torch.cat(token_chunks[layer]) if keep_tokens else torch.empty(0, d)
        for layer in wanted
    }
    means = {layer: torch.cat(mean_chunks[layer]) for layer in wanted}
    index = torch.cat(index_chunks)
    logger.debug(
        "collected layers %s for %d texts (%d tokens) in %d forward passes",
        wanted,
        len(texts),
        index.numel(),
        n_forward,
    )
    return Activations(
        layers=tuple(wanted),
        tokens=tokens,
        means=means,
        token_text_index=index,
        n_texts=len(texts),
        n_forward=n_forward,
    )
