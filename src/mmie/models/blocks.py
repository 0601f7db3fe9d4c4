"""Locating transformer blocks, their devices and dtypes, across architectures and wrappers.

Every intervention in mmie edits the output of a transformer *block* (the residual stream
after block ``L``, i.e. TransformerLens ``blocks.L.hook_resid_post``). This module finds the
blocks of the common Hugging Face architectures, also inside PEFT wrappers, and tells on
which device and in which dtype each block runs, so interventions can place their tensors
per block when a model is split across devices with ``device_map``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmie._validation import is_integer
from mmie.errors import IncompatibleModelError

__all__ = [
    "block_device",
    "block_dtype",
    "get_block",
    "get_blocks",
    "hidden_size",
    "input_device",
    "num_layers",
    "unwrap_model",
]

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


def resolve_attribute(root: nn.Module, path: str) -> Any:
    """The object at dotted attribute ``path`` under ``root``, or ``None`` if a step is missing."""
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
        blocks = resolve_attribute(base, path)
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
    if not is_integer(layer):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    layer = int(layer)
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
