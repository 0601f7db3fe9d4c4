"""LoRA adapter plumbing: default target modules, target checks, save and load.

:func:`default_lora_targets` gives the attention projections of the known architectures;
the target check resolves names against the model's ``nn.Linear`` and transformers
``Conv1D`` layers (listing the available ones when a name does not exist). :func:`save_lora`
writes only the adapter (safetensors plus its JSON config) and :func:`load_lora` attaches it
again with every tensor key checked. peft is imported inside the functions, never at module
level.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from mmie._io import read_safetensors
from mmie.errors import CheckpointError, ConfigError, IncompatibleModelError
from mmie.models.blocks import unwrap_model
from mmie.seeding import seed_context

__all__ = ["default_lora_targets", "load_lora", "save_lora"]

logger = logging.getLogger(__name__)


# Default LoRA targets per ``config.model_type``: the attention projections.
_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gpt2": ("c_attn", "c_proj"),  # transformers Conv1D: needs fan_in_fan_out=True
    "gpt_neox": ("query_key_value", "dense"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense"),
}

_ADAPTER_CONFIG = "adapter_config.json"
_ADAPTER_WEIGHTS = "adapter_model.safetensors"


# ------------------------------------------------------------------------ targets


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence the FutureWarning peft triggers on transformers 5 (a version skew, not ours)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def drop_peft_config(base: nn.Module) -> None:
    """Delete the ``peft_config`` that peft < 0.19 leaves on the base model after ``unload()``.

    Every caller attaches adapters only to a model without one (:func:`is_peft` is checked
    first), so an attribute there now was put there by peft. Left in place, the next
    ``get_peft_model`` would add its adapter to that stale dict.
    """
    if "peft_config" in vars(base):
        delattr(base, "peft_config")


def attach_lora(model: nn.Module, lora_config: Any) -> Any:
    """peft's ``get_peft_model`` on a model without an adapter, undone if it raises."""
    from peft import get_peft_model

    drop_peft_config(model)  # stale: left by an earlier unload() of peft < 0.19
    try:
        with quiet_peft():
            return get_peft_model(model, lora_config)
    except BaseException:
        _unwrap_lora_layers(model)
        drop_peft_config(model)
        raise


def _unwrap_lora_layers(model: nn.Module) -> None:
    """Put back the original module of every peft layer injected before a failure."""
    for name, module in list(model.named_modules()):
        base_layer = getattr(module, "base_layer", None)
        if isinstance(base_layer, nn.Module) and _is_peft_module(module):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, base_layer)


def remove_lora(peft_model: Any, requires_grad: Sequence[bool]) -> None:
    """Take an adapter off the base model and restore its ``requires_grad`` flags.

    The base model is left as it was before :func:`attach_lora`: the original modules back
    (peft's ``unload()``) and no ``peft_config`` attribute (see :func:`drop_peft_config`),
    whatever the peft version.
    """
    with quiet_peft():
        base = peft_model.unload()
    drop_peft_config(base)
    for p, flag in zip(base.parameters(), requires_grad):
        p.requires_grad_(flag)


def _is_peft_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith("peft")


def is_peft(model: nn.Module) -> bool:
    """Whether ``model`` is a PEFT model or carries adapters (also through transformers).

    A ``peft_config`` attribute alone does not count: peft < 0.19 leaves it on the base
    model after ``unload()``, with no adapter layer left (see :func:`drop_peft_config`).
    """
    if _is_peft_module(model):
        return True
    if not hasattr(model, "peft_config"):
        return False
    return bool(getattr(model, "_hf_peft_config_loaded", False)) or any(
        _is_peft_module(m) for m in model.modules()
    )


def _linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``nn.Linear`` and transformers ``Conv1D`` of ``model`` by qualified name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    }


def default_lora_targets(model: nn.Module) -> tuple[str, ...]:
    """The default LoRA target modules for ``model``'s architecture (the attention projections).

    ============================================  =====================================
    ``config.model_type``                          targets
    ============================================  =====================================
    llama, qwen2, qwen3, mistral, gemma, gemma2    ``q_proj k_proj v_proj o_proj``
    gpt2                                           ``c_attn c_proj`` (``fan_in_fan_out``)
    gpt_neox                                       ``query_key_value dense``
    phi                                            ``q_proj k_proj v_proj dense``
    ============================================  =====================================

    Args:
        model: a Hugging Face causal LM.

    Returns:
        Module names as peft's ``target_modules`` expects them.

    Raises:
        IncompatibleModelError: no default for this architecture; the message lists the
            model's Linear layer names to choose ``target_modules`` from.
    """
    base = unwrap_model(model)
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    targets = _LORA_TARGETS.get(str(model_type))
    if targets is None:
        names = sorted({n.rsplit(".", 1)[-1] for n in _linear_layers(base)})
        raise IncompatibleModelError(
            f"no default LoRA target modules for model_type={model_type!r} "
            f"({type(base).__name__}); pass target_modules=[...] chosen from its Linear "
            f"layers: {', '.join(names)}"
        )
    return targets


def check_targets(model: nn.Module, targets: Sequence[str]) -> bool:
    """Check every target names a Linear/Conv1D layer; returns whether they are Conv1D."""
    layers = _linear_layers(unwrap_model(model))
    missing: list[str] = []
    kinds: set[bool] = set()
    for target in targets:
        hits = [m for n, m in layers.items() if n == target or n.endswith("." + target)]
        if not hits:
            missing.append(target)
        kinds.update(type(m).__name__ == "Conv1D" for m in hits)
    if missing:
        names = sorted({n.rsplit(".", 1)[-1] for n in layers})
        raise IncompatibleModelError(
            f"LoRA target module(s) {missing} not found among the Linear layers of "
            f"{type(unwrap_model(model)).__name__}; available: {', '.join(names)}"
        )
    if len(kinds) > 1:
        raise ConfigError(
            "target_modules mixes nn.Linear and transformers Conv1D layers, which need "
            "different fan_in_fan_out settings; target one kind per call"
        )
    return kinds == {True}


# --------------------------------------------------------------------- save / load


def save_lora(peft_model: Any, directory: str | Path) -> Path:
    """Save a LoRA adapter: ``adapter_model.safetensors`` plus ``adapter_config.json``.

    Only the adapter weights are written (peft's ``save_pretrained`` with
    ``safe_serialization=True`` and ``save_embedding_layers=False``), never the base model
    nor its embeddings.

    Args:
        peft_model: a ``peft.PeftModel`` (e.g. :attr:`UnlearnResult.model`).
        directory: target directory (created if needed).

    Returns:
        The directory.

    Raises:
        TypeError: ``peft_model`` is not a PEFT model.
    """
    if not is_peft(peft_model) or not hasattr(peft_model, "save_pretrained"):
        raise TypeError(f"peft_model must be a peft.PeftModel, got {type(peft_model).__name__}")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with quiet_peft():
        # mmie never resizes the vocabulary, so the base embeddings are not saved; "auto"
        # would look the base model up on the Hub (and warn when it cannot).
        peft_model.save_pretrained(str(path), safe_serialization=True, save_embedding_layers=False)
    return path


def load_lora(model: nn.Module, directory: str | Path, *, is_trainable: bool = False) -> Any:
    """Attach a LoRA adapter saved by :func:`save_lora` to ``model``, checking every key.

    Unlike a ``strict=False`` load (which silently loaded nothing in the original script when
    the key names did not match), every adapter tensor of the freshly injected adapter must
    be present in the file and every tensor of the file must be used; otherwise the adapter
    is removed again and an error lists the mismatches.

    Args:
        model: the base model the adapter was trained on (no adapter attached).
        directory: a directory with ``adapter_config.json`` and
            ``adapter_model.safetensors``.
        is_trainable: keep the adapter parameters trainable (to resume training).

    Returns:
        The ``peft.PeftModel`` in eval mode.

    Raises:
        CheckpointError: files are missing, the config is not a LoRA config, a target module
            does not exist, or the tensors do not match the adapter (missing, unexpected or
            wrongly shaped keys).
        TypeError: ``model`` already carries a PEFT adapter.
    """
    if is_peft(model):
        raise TypeError("model already carries a PEFT adapter; pass the base model")
    path = Path(directory)
    for name in (_ADAPTER_CONFIG, _ADAPTER_WEIGHTS):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} has no {name}: not a LoRA adapter saved by save_lora")

    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    try:
        lora_config = LoraConfig.from_pretrained(str(path))
    except (ValueError, TypeError, OSError) as exc:
        raise CheckpointError(f"cannot read the LoRA config in {path}: {exc}") from exc
    try:
        check_targets(model, list(lora_config.target_modules or ()))
    except IncompatibleModelError as exc:
        raise CheckpointError(f"adapter in {path} does not fit this model: {exc}") from exc
    lora_config.inference_mode = not is_trainable
    state = read_safetensors(path / _ADAPTER_WEIGHTS)  # CheckpointError: corrupt, NaN/inf
    flags = [p.requires_grad for p in model.parameters()]
    with seed_context(0):  # the random init is overwritten below
        peft_model: Any = attach_lora(model, lora_config)
    try:
        expected = {n for n in peft_model.state_dict() if "lora_" in n}
        try:
            result: Any = set_peft_model_state_dict(peft_model, state)
        except RuntimeError as exc:  # shape mismatches raise even with strict=False
            raise CheckpointError(f"adapter tensors in {path} do not fit: {exc}") from exc
        missing = sorted(k for k in result.missing_keys if k in expected)
        unexpected = sorted(result.unexpected_keys)
        if missing or unexpected or len(state) != len(expected):
            raise CheckpointError(
                f"adapter in {path} does not match the model: {len(missing)} adapter "
                f"tensor(s) missing from the file {missing[:5]}, {len(unexpected)} unexpected "
                f"tensor(s) {unexpected[:5]} ({len(state)} in the file, {len(expected)} "
                "expected)"
            )
    except BaseException:
        remove_lora(peft_model, flags)
        raise
    peft_model.eval()
    logger.info("loaded LoRA adapter from %s (%d tensors)", path, len(state))
    return peft_model
