"""Loading causal LMs, tokenizer set-up and locating transformer blocks.

Every intervention in mmie edits the output of a transformer *block* (the residual stream
after block ``L``, i.e. TransformerLens ``blocks.L.hook_resid_post``). This module finds the
blocks of the common Hugging Face architectures, also inside PEFT wrappers, and tells on
which device and in which dtype each block runs, so interventions can place their tensors
per block when a model is split across devices with ``device_map``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from transformers import (
    BatchEncoding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mmie.errors import IncompatibleModelError, TruncationWarning

__all__ = [
    "block_device",
    "block_dtype",
    "count_live_models",
    "free_memory",
    "get_block",
    "get_blocks",
    "hidden_size",
    "input_device",
    "load_causal_lm",
    "loaded_model",
    "num_layers",
    "prepare_tokenizer",
    "tokenize",
    "unwrap_model",
]

logger = logging.getLogger(__name__)

# Attribute paths of the block list, tried in order on the unwrapped model.
_BLOCK_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Qwen2, Mistral, Gemma, Gemma2, Phi, Phi3, OLMo, ...
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "model.language_model.layers",  # multimodal wrappers (Gemma3, Llava-style)
    "layers",  # bare decoder models (LlamaModel)
    "h",  # bare GPT2Model
)

# Every PreTrainedModel created while mmie is imported; lets lifecycle tests count copies.
_LIVE_MODELS: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the underlying transformers model of a PEFT wrapper (or the model itself).

    Handles ``PeftModel`` (``get_base_model()``) and LoRA-tuner wrappers (``.model``)
    without importing peft.
    """
    seen = 0
    while seen < 8:
        seen += 1
        get_base = getattr(model, "get_base_model", None)
        if callable(get_base) and type(model).__module__.startswith("peft"):
            base = get_base()
            if isinstance(base, nn.Module):
                model = base
                continue
        inner = getattr(model, "model", None)
        if type(model).__module__.startswith("peft") and isinstance(inner, nn.Module):
            model = inner
            continue
        break
    return model


def _resolve_path(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def get_blocks(model: nn.Module, block_path: str | None = None) -> nn.ModuleList:
    """The list of transformer blocks of ``model``.

    Args:
        model: a Hugging Face causal LM, possibly wrapped by PEFT.
        block_path: dotted attribute path of the block list on the unwrapped model (e.g.
            ``"model.layers"``). Only needed for architectures mmie does not know.

    Returns:
        The ``nn.ModuleList`` whose ``i``-th entry is block ``i``.

    Raises:
        IncompatibleModelError: no block list was found; the message names the model class
            and the paths that were tried.
    """
    base = unwrap_model(model)
    paths = (block_path,) if block_path is not None else _BLOCK_PATHS
    for path in paths:
        blocks = _resolve_path(base, path)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return blocks
    if block_path is not None:
        raise IncompatibleModelError(
            f"block_path={block_path!r} does not name a non-empty nn.ModuleList on "
            f"{type(base).__name__}"
        )
    raise IncompatibleModelError(
        f"cannot locate the transformer blocks of {type(base).__name__}; tried "
        f"{', '.join(_BLOCK_PATHS)}. Pass block_path='<dotted.path.to.ModuleList>' explicitly "
        f"(e.g. block_path='model.layers')."
    )


def num_layers(model: nn.Module, block_path: str | None = None) -> int:
    """Number of transformer blocks of ``model``."""
    return len(get_blocks(model, block_path))


def get_block(model: nn.Module, layer: int, block_path: str | None = None) -> nn.Module:
    """Block ``layer`` of ``model`` (0-based).

    Raises:
        ValueError: ``layer`` is out of range; the message gives the valid range.
    """
    blocks = get_blocks(model, block_path)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    if not 0 <= layer < len(blocks):
        raise ValueError(
            f"layer must be in [0, {len(blocks) - 1}] for this {len(blocks)}-block model, "
            f"got {layer}"
        )
    return blocks[layer]


def _first_tensor(module: nn.Module) -> torch.Tensor | None:
    for p in module.parameters():
        return p
    for b in module.buffers():
        return b
    return None


def block_device(model: nn.Module, layer: int, block_path: str | None = None) -> torch.device:
    """Device on which block ``layer`` runs (its parameters' device).

    With an accelerate ``device_map`` that offloads a block, the execution device recorded
    by accelerate's hook (``_hf_hook.execution_device``) is returned instead.
    """
    block = get_block(model, layer, block_path)
    hf_hook = getattr(block, "_hf_hook", None)
    exec_device = getattr(hf_hook, "execution_device", None)
    if exec_device is not None:
        return torch.device(exec_device)
    t = _first_tensor(block)
    return t.device if t is not None else torch.device("cpu")


def block_dtype(model: nn.Module, layer: int, block_path: str | None = None) -> torch.dtype:
    """Floating dtype of block ``layer``'s parameters (the dtype of its hidden states)."""
    block = get_block(model, layer, block_path)
    for p in block.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def input_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings: where ``input_ids`` must be placed."""
    base = unwrap_model(model)
    get_emb = getattr(base, "get_input_embeddings", None)
    if callable(get_emb):
        emb = get_emb()
        if isinstance(emb, nn.Module):
            t = _first_tensor(emb)
            if t is not None:
                return t.device
    t = _first_tensor(base)
    return t.device if t is not None else torch.device("cpu")


def hidden_size(model: nn.Module) -> int:
    """``d_model`` of ``model`` read from its config (``hidden_size`` or ``n_embd``)."""
    config = getattr(unwrap_model(model), "config", None)
    for attr in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise IncompatibleModelError(
        f"cannot read the hidden size of {type(model).__name__} from its config"
    )


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


def _collate_ids(
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
    _LIVE_MODELS.add(model)
    logger.info(
        "loaded %s (%s, %.1fM parameters)",
        name_or_path,
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model, tok


def free_memory() -> None:
    """Run the garbage collector and release cached CUDA memory (if CUDA is in use)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def count_live_models() -> int:
    """Number of top-level ``PreTrainedModel`` instances alive in this process.

    A model nested in another (``LlamaModel`` inside ``LlamaForCausalLM``) is not counted
    separately. Used by lifecycle tests and the memory benchmark to prove that no second copy
    of the base model is ever created. Runs the garbage collector first.
    """
    gc.collect()
    models = [obj for obj in gc.get_objects() if issubclass(type(obj), PreTrainedModel)]
    nested: set[int] = set()
    for model in models:
        for sub in model.modules():
            if sub is not model and issubclass(type(sub), PreTrainedModel):
                nested.add(id(sub))
    return sum(1 for model in models if id(model) not in nested)


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
    from mmie.models.hooks import remove_mmie_hooks

    model, tok = load_causal_lm(name_or_path, **load_kwargs)
    try:
        yield model, tok
    finally:
        n = remove_mmie_hooks(model)
        if n:
            logger.warning("removed %d mmie hook(s) left on the model at release", n)
        del model, tok
        free_memory()
