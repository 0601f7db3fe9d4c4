"""Checks a study runs before it loads anything, so a bad run fails in seconds, not hours.

:func:`check_before_loading` looks at what a config names outside itself: the output
directory (not a file, writable), the device (CUDA or MPS present), the models (a local
directory that exists, or a hub id that is cached or, when online, reachable), and the plot
extra. :func:`check_model_fits` checks what needs the model's shape -- the SAE's ``k``
against ``d_sae = d_sae_multiple * hidden_size``, the selected and the arms' layers against
the number of blocks -- first from the model's ``config.json`` (before any weight is read)
and again right after the model loads, before any work. Every failure is a
:class:`~mmie.ConfigError` naming the field.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mmie.errors import ConfigError
from mmie.study.config import ExperimentConfig
from mmie.study.demo import DEMO_MODELS, demo_model_path
from mmie.study.inputs import hub_cache_dir, hub_cached

__all__ = [
    "check_before_loading",
    "check_device",
    "check_model_fits",
    "check_model_source",
    "check_model_sources",
    "check_output_dir",
    "check_sae_paths",
    "config_model_shape",
]

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_TRUE = ("1", "true", "yes", "on")


def _looks_like_path(source: str) -> bool:
    """A string meant as a local path: ``/``, ``.`` or ``~`` first, or a separator in it
    while it is not ``org/name``."""
    if source.startswith(("/", ".", "~")):
        return True
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    if not any(sep in source for sep in separators):
        return False
    return not (source.count("/") == 1 and _HUB_ID.match(source))


def _offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host accepts a TCP connection within ``timeout`` seconds."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_model_source(source: str, field: str) -> None:
    """``source`` names a model that can be loaded: the demo, an existing local model
    directory, or a hub id that is cached (or, online, whose hub answers).

    Raises:
        ConfigError: naming ``field``: an unknown demo model, a path that does not exist or
            is not a model directory, a malformed hub id, or a hub id that is not cached
            while offline (``HF_HUB_OFFLINE=1``) or while the hub cannot be reached.
    """
    if source == "demo" or source.startswith("demo:"):
        which = "base" if source == "demo" else source.split(":", 1)[1]
        if which not in DEMO_MODELS:
            raise ConfigError(f"{field}: unknown demo model {source!r}; use one of {DEMO_MODELS}")
        return
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(
                f"{field}: {source!r} is a file; a local model is a directory with config.json "
                "and the weights"
            )
        if not (path / "config.json").is_file():
            raise ConfigError(f"{field}: {path} holds no config.json; is it a model directory?")
        return
    if _looks_like_path(source):
        raise ConfigError(f"{field}: there is no model directory at {str(path)!r}")
    if not _HUB_ID.match(source):
        raise ConfigError(
            f"{field}: {source!r} is neither an existing directory nor a hub id ('org/name')"
        )
    if hub_cached(source):
        return
    cache = hub_cache_dir()
    if _offline():
        raise ConfigError(
            f"{field}: hub model {source!r} is not in the local cache ({cache}) and "
            "HF_HUB_OFFLINE is set; download it first (`huggingface-cli download "
            f"{source}`) or give a local directory"
        )
    if not _hub_reachable():
        raise ConfigError(
            f"{field}: hub model {source!r} is not in the local cache ({cache}) and the hub "
            "cannot be reached; download it where there is network access, or give a local "
            "directory"
        )


def check_device(device: str) -> None:
    """The configured device exists (checked before anything is loaded).

    Raises:
        ConfigError: ``cuda``/``cuda:N`` without CUDA, a CUDA index beyond the devices
            present, or ``mps`` without MPS (``auto`` and ``sharded`` work anywhere).
    """
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: {device!r} needs CUDA, but torch.cuda.is_available() is False (no "
                'GPU visible, or a CPU-only torch build); use device = "cpu" or "auto"'
            )
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"device: {device!r} does not exist; {count} CUDA device(s) visible")
    elif device.startswith("mps"):
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f'device: {device!r} is not available here; use "cpu" or "auto"')


def check_output_dir(output_dir: str) -> None:
    """``output_dir`` is a directory (or can be created) and is writable.

    Raises:
        ConfigError: it is a file, a parent is a file, or it cannot be written.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir: {str(out)!r} is a file, not a directory")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(
            f"output_dir: {str(out)!r} cannot be created: {str(existing)!r} is a file"
        )
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir: {str(existing)!r} is not writable")


def check_model_sources(config: ExperimentConfig, *, model_given: bool = False) -> None:
    """:func:`check_model_source` for the model (unless ``model_given``) and the references.

    Raises:
        ConfigError: naming the field (``model``, ``references.oracle``, ...).
    """
    if not model_given:
        check_model_source(config.model, "model")
    for name, source in config.references.named().items():
        check_model_source(source, f"references.{name}")


def check_sae_paths(config: ExperimentConfig) -> None:
    """Every pretrained SAE in ``sae.paths`` exists (when an arm gates with an SAE).

    Raises:
        ConfigError: naming the entry (``sae.paths[i]``) whose path does not exist.
    """
    if not any(arm.gate_part is not None for arm in config.all_arms):
        return
    for i, entry in enumerate(config.sae.paths):
        directory = entry.partition("=")[2].strip()
        if not Path(directory).expanduser().exists():
            raise ConfigError(f"sae.paths[{i}]: {directory!r} does not exist (in {entry!r})")


def check_before_loading(
    config: ExperimentConfig, *, model_given: bool = False, models: bool = True
) -> None:
    """Every check that needs no model: output directory, device, models, pretrained SAEs,
    plots.

    Args:
        config: the study.
        model_given: the caller passes the base model (its source is not checked).
        models: check the model sources too (:func:`check_model_sources`).

    Raises:
        ConfigError: naming the field that cannot work.
    """
    check_output_dir(config.output_dir)
    check_device(config.device)
    if models:
        check_model_sources(config, model_given=model_given)
    check_sae_paths(config)
    if config.plots is True and importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(
            "plots: true needs matplotlib, which is not installed; install mmie[plot] or set "
            "plots = false (or leave it unset: plots are drawn when matplotlib is there)"
        )


def _shape_of(data: dict[str, Any]) -> tuple[int, int] | None:
    for section in (data, data.get("text_config") or {}):
        if not isinstance(section, dict):
            continue
        blocks = next(
            (section[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if k in section),
            None,
        )
        width = next(
            (section[k] for k in ("hidden_size", "n_embd", "d_model") if k in section), None
        )
        if isinstance(blocks, int) and isinstance(width, int):
            return blocks, width
    return None


def config_model_shape(source: str) -> tuple[int, int] | None:
    """``(blocks, hidden size)`` from a model's ``config.json`` without loading it, or
    ``None`` when it cannot be read (then :func:`check_model_fits` runs after loading)."""
    if source == "demo" or source.startswith("demo:"):
        which = "base" if source == "demo" else source.split(":", 1)[1]
        path = demo_model_path(which) / "config.json"  # type: ignore[arg-type]
    else:
        local = Path(source).expanduser()
        if local.is_dir():
            path = local / "config.json"
        else:
            root = hub_cache_dir() / f"models--{source.replace('/', '--')}" / "snapshots"
            found = sorted(root.glob("*/config.json"))
            if not found:
                return None
            path = found[-1]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _shape_of(data) if isinstance(data, dict) else None


def check_model_fits(config: ExperimentConfig, n_blocks: int, d_model: int) -> None:
    """The config's SAE and layers fit a model of ``n_blocks`` blocks of width ``d_model``.

    Raises:
        ConfigError: ``sae.k`` above ``d_sae`` (when an arm gates), ``selection.layers``,
            ``selection.n_layers``, an arm's ``layers`` or a ``sae.paths`` layer (when an arm
            gates) outside the model.
    """
    sae = config.sae
    gates = any(arm.gate_part is not None for arm in config.arms)
    d_sae = sae.d_sae_multiple * d_model
    if gates and sae.architecture == "topk" and sae.k > d_sae:
        raise ConfigError(
            f"sae.k: {sae.k} exceeds d_sae = d_sae_multiple * hidden_size = "
            f"{sae.d_sae_multiple} * {d_model} = {d_sae} latents of this model"
        )
    last = n_blocks - 1
    sel = config.selection
    if sel.mode == "fixed":
        bad = [layer for layer in sel.layers if layer > last]
        if bad:
            raise ConfigError(
                f"selection.layers: {bad} out of range for this {n_blocks}-block model "
                f"(layers 0..{last})"
            )
    elif sel.n_layers > n_blocks:
        raise ConfigError(
            f"selection.n_layers: {sel.n_layers} exceeds the model's {n_blocks} blocks"
        )
    for i, entry in enumerate(sae.paths):
        layer = int(entry.partition("=")[0])
        if gates and layer > last:
            raise ConfigError(
                f"sae.paths[{i}]: layer {layer} out of range for this {n_blocks}-block model "
                f"(layers 0..{last})"
            )
    for i, arm in enumerate(config.arms):
        bad = [layer for layer in arm.layers if layer > last]
        if bad:
            raise ConfigError(
                f"arms[{i}].layers: {bad} out of range for this {n_blocks}-block model "
                f"(layers 0..{last})"
            )
