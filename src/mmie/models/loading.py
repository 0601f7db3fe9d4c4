"""Loading causal LMs, tokenizer set-up and freeing a model's memory."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mmie.models.blocks import unwrap_model
from mmie.models.hooks import remove_mmie_hooks

__all__ = ["free_memory", "load_causal_lm", "loaded_model", "prepare_tokenizer"]

logger = logging.getLogger(__name__)


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase,
    model: nn.Module | None = None,
    *,
    padding_side: Literal["left", "right"] = "left",
) -> PreTrainedTokenizerBase:
    """Set a tokenizer up for decoder-only work, in place, and return it.

    * A pad token is guaranteed: an existing one is kept, else the EOS token is reused
      (logged), so batched inputs can be padded. Padding is always masked out by mmie's
      metrics, so reusing EOS changes no number.
    * ``padding_side`` defaults to left, which batched generation needs. Scoring functions
      in mmie pad on the right explicitly.
    * If ``model`` is given, its ``config.pad_token_id`` and ``generation_config``
      pad/eos ids are made consistent with the tokenizer.

    Raises:
        ValueError: the tokenizer has neither a pad nor an EOS token.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                "tokenizer has neither a pad token nor an EOS token; add one with "
                "tokenizer.add_special_tokens({'pad_token': '<pad>'}) and resize the "
                "model's embeddings"
            )
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("tokenizer has no pad token; using the EOS token %r", tokenizer.eos_token)
    tokenizer.padding_side = padding_side
    if model is not None:
        base = unwrap_model(model)
        config = getattr(base, "config", None)
        if config is not None and getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id
        gen = getattr(base, "generation_config", None)
        if gen is not None:
            if gen.pad_token_id is None:
                gen.pad_token_id = tokenizer.pad_token_id
            if gen.eos_token_id is None and tokenizer.eos_token_id is not None:
                gen.eos_token_id = tokenizer.eos_token_id
    return tokenizer


def load_causal_lm(
    name_or_path: str | Path,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    device_map: str | dict[str, Any] | None = None,
    tokenizer: str | Path | None = None,
    padding_side: Literal["left", "right"] = "left",
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, ready for evaluation.

    The model is put in eval mode; nothing else about it is changed (no gradient
    checkpointing, ``use_cache`` left as configured).

    Args:
        name_or_path: a local directory or a hub id (hub ids need network access or a
            populated cache).
        dtype: parameter dtype (``torch.bfloat16``, ``"float32"``, ``"auto"``); ``None`` keeps
            transformers' default (float32).
        device: a single device to move the model to; exclusive with ``device_map``.
        device_map: an accelerate device map (``"auto"`` shards a model across the available
            GPUs and CPU); every mmie intervention places its tensors per block.
        tokenizer: where to load the tokenizer from, if not ``name_or_path``.
        padding_side: tokenizer padding side (left for generation).
        revision: model revision on the hub.
        trust_remote_code: passed to transformers.

    Returns:
        ``(model, tokenizer)``; the tokenizer is set up by :func:`prepare_tokenizer`.

    Raises:
        ValueError: both ``device`` and ``device_map`` were given.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device is not None and device_map is not None:
        raise ValueError("pass either device or device_map, not both")
    if isinstance(dtype, str) and dtype != "auto":
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype name")
        dtype = resolved
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
    if device is not None:
        cast(Any, model).to(torch.device(device))
    model.eval()
    tok = AutoTokenizer.from_pretrained(
        str(tokenizer if tokenizer is not None else name_or_path),
        revision=revision,
        trust_remote_code=trust_remote_code,
    )
    prepare_tokenizer(tok, model, padding_side=padding_side)
    logger.info(
        "loaded %s (%s, %.1fM parameters)",
        name_or_path,
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model, tok


def free_memory(*, collect: bool | None = None) -> None:
    """Release memory: run the garbage collector and release cached CUDA memory.

    Args:
        collect: run ``gc.collect()``. ``None`` (default): only when CUDA is in use, where
            tensors held by reference cycles must be collected before ``empty_cache`` can
            hand their memory back; on a CPU, memory not in a cycle is freed as soon as its
            last reference goes, and the collector's own schedule reclaims cycles, so the
            full collection (tens of milliseconds with a model's objects alive) is skipped.
            ``True``: always (:func:`loaded_model` does, once per model); ``False``: never.
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if collect or (collect is None and cuda):
        gc.collect()
    if cuda:
        torch.cuda.empty_cache()


@contextlib.contextmanager
def loaded_model(
    name_or_path: str | Path, **load_kwargs: Any
) -> Iterator[tuple[PreTrainedModel, PreTrainedTokenizerBase]]:
    """Load a model for the duration of a ``with`` block and free it afterwards.

    On exit (also on exceptions) mmie hooks left on the model are removed with a warning in
    the log, the context's references are dropped, the garbage collector runs and cached
    CUDA memory is released. The memory comes back only if the body kept no reference of
    its own to the model.

    Example:
        >>> with mmie.loaded_model("path/to/model") as (model, tok):  # doctest: +SKIP
        ...     ppl = mmie.perplexity(model, tok, texts)
    """
    model, tok = load_causal_lm(name_or_path, **load_kwargs)
    try:
        yield model, tok
    finally:
        n = remove_mmie_hooks(model)
        if n:
            logger.warning("removed %d mmie hook(s) left on the model at release", n)
        del model, tok
        free_memory(collect=True)
