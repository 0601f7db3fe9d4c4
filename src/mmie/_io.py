"""Atomic file writes and safetensors + JSON checkpoints (private helpers).

Every file mmie writes goes through a temporary file in the target directory, ``fsync`` and
``os.replace``, so a crash never leaves a half-written shard, report or checkpoint behind:
the target holds either the old content or the new one. A checkpoint is a safetensors file
plus a JSON config; the config is written last, so its presence marks a complete checkpoint.
Nothing here unpickles.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

from mmie.errors import CheckpointError

logger = logging.getLogger(__name__)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_checkpoint_config",
    "write_checkpoint",
]


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        logger.debug("cannot open %s to fsync it", directory, exc_info=True)
        return
    try:
        os.fsync(fd)
    except OSError:
        logger.debug("fsync of directory %s failed", directory, exc_info=True)
    finally:
        os.close(fd)


def _atomic_write(target: Path, write: Callable[[IO[bytes]], object]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; its directory is created if needed."""
    return _atomic_write(Path(path), lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, sort_keys: bool = True) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (two-space indent, trailing newline).

    With ``sort_keys`` (the default) equal data gives equal bytes.

    Raises:
        ValueError: ``data`` holds NaN/inf or is not JSON-serialisable (nothing is written).
    """
    text = json.dumps(data, indent=2, sort_keys=sort_keys, allow_nan=False, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


def write_checkpoint(
    directory: str | os.PathLike[str],
    *,
    tensors: Mapping[str, torch.Tensor],
    weights_name: str,
    config: Mapping[str, Any],
    config_name: str,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` (safetensors) and then ``config`` (JSON) into ``directory``.

    Returns:
        The directory.
    """
    from safetensors.torch import save

    path = Path(directory)
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    blob = save(contiguous, metadata=dict(metadata) if metadata is not None else None)
    atomic_write_bytes(path / weights_name, blob)
    atomic_write_json(path / config_name, dict(config), sort_keys=False)
    return path


def read_checkpoint_config(
    path: str | os.PathLike[str], *, fmt: str | None = None
) -> dict[str, Any]:
    """Read a checkpoint's JSON config.

    Args:
        path: the JSON file.
        fmt: when given, the config's ``"format"`` entry must equal it.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: invalid JSON, not an object, or another format.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{p} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{p} must hold a JSON object, got {type(data).__name__}")
    if fmt is not None and data.get("format") != fmt:
        raise CheckpointError(f"{p} is not a {fmt!r} config (format={data.get('format')!r})")
    return data
