"""Atomic file writes, strict reads and safetensors + JSON checkpoints (private helpers).

Every file mmie writes goes through a temporary file in the target directory, ``fsync`` and
``os.replace``, so a crash never leaves a half-written shard, report or checkpoint behind:
the target holds either the old content or the new one. A checkpoint is a safetensors file
plus a JSON config; the config is written last, so its presence marks a complete checkpoint.
Nothing here unpickles.

**Permissions.** ``tempfile.mkstemp`` creates its file with mode ``0600`` whatever the
umask; before the temporary file replaces its target it is given the mode an ordinary
``open(path, "w")`` would create, ``0o666 & ~umask`` (``0644`` under the common umask
``022``), so results stay readable by the group or others exactly when the user's umask
says so. The umask is read from ``/proc/self/status`` where that exists (Linux), else with
the ``os.umask`` set-and-restore idiom.

**Temporary files** are named ``.<target name>.<random>.tmp`` (:data:`TEMP_PATTERN`); a
killed process can leave one behind, and :func:`remove_temp_files` removes them (the study
runner does at start, when no other run is writing into the directory).

**Errors.** A failed write (read-only directory, full disk) raises one :class:`OSError`
naming the target file, not a chain through the temporary file. Reads used for mmie's own
files (:func:`decode_utf8`, :func:`strict_json_loads`, :func:`read_checkpoint_config`,
:func:`read_safetensors`) reject bytes that are not UTF-8 (naming the line), JSON objects
with a repeated key, nesting too deep to parse, and truncated, corrupt or non-finite
safetensors files, each with a typed error naming the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch

from mmie.errors import CheckpointError, MmieError

logger = logging.getLogger(__name__)

__all__ = [
    "TEMP_PATTERN",
    "DuplicateKeyError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "current_umask",
    "decode_utf8",
    "file_lock",
    "read_checkpoint_config",
    "read_safetensors",
    "remove_temp_files",
    "strict_json_loads",
    "write_checkpoint",
]

#: Names of mmie's temporary files: ``.<target name>.<mkstemp's random part>.tmp``.
TEMP_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def current_umask() -> int:
    """The process's umask (``/proc/self/status`` where available: no set-and-restore race)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _named(exc: OSError, target: Path) -> OSError:
    """``exc`` as one OSError naming ``target`` (the same subclass, e.g. PermissionError)."""
    if exc.errno is None:
        return OSError(f"cannot write {target}: {exc}")
    return OSError(exc.errno, exc.strerror or str(exc), str(target))


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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _named(exc, target) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 -> what open() would give
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _named(exc, target) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def remove_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of interrupted writes (:data:`TEMP_PATTERN`) in
    ``directory`` (not recursively); other files are never touched.

    Returns:
        The files removed.
    """
    d = Path(directory)
    removed: list[Path] = []
    if not d.is_dir():
        return removed
    for path in sorted(d.iterdir()):
        if TEMP_PATTERN.match(path.name) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    if removed:
        logger.info("removed %d leftover temporary file(s) in %s", len(removed), d)
    return removed


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, what: str = "") -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``path`` (created with its directory) for the
    block; waiting for another process is logged (``what`` says what is locked)."""
    from filelock import FileLock, Timeout

    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _named(exc, p) from None
    lock = FileLock(str(p))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another mmie process (%s, lock %s)", what or p.name, p)
        lock.acquire()
    except OSError as exc:
        raise _named(exc, p) from None
    try:
        yield
    finally:
        lock.release()


# ----------------------------------------------------------------------------- strict reads
class DuplicateKeyError(ValueError):
    """A JSON object repeats a key (``json`` would silently keep the last value)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def strict_json_loads(text: str) -> Any:
    """:func:`json.loads` that refuses repeated keys and nesting too deep to parse.

    Raises:
        json.JSONDecodeError: invalid JSON.
        DuplicateKeyError: an object repeats a key.
        ValueError: nesting too deep (Python's recursion limit), with that message.
    """
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None


def decode_utf8(
    data: bytes, source: str | os.PathLike[str], error: type[MmieError] = CheckpointError
) -> str:
    """``data`` decoded as UTF-8 (an initial BOM is dropped).

    Raises:
        error: bytes that are not UTF-8; the message names ``source``, the line and the
            column of the first bad byte.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(
            f"{source}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
            "save the file as UTF-8"
        ) from None


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
        CheckpointError: not UTF-8, invalid JSON, a repeated key, not an object, or another
            format.
    """
    p = Path(path)
    text = decode_utf8(p.read_bytes(), p, CheckpointError)
    try:
        data = strict_json_loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{p} is not valid JSON: {err}") from None
    except ValueError as err:
        raise CheckpointError(f"{p}: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{p} must hold a JSON object, got {type(data).__name__}")
    if fmt is not None and data.get("format") != fmt:
        raise CheckpointError(f"{p} is not a {fmt!r} config (format={data.get('format')!r})")
    return data


def read_safetensors(
    path: str | os.PathLike[str], *, finite: bool = True
) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never unpickles), as CPU tensors.

    Args:
        path: the file.
        finite: refuse floating-point tensors holding NaN or infinite values.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is empty, truncated or not safetensors, or (``finite``) a
            tensor holds NaN/inf; the message names the file (and the tensor).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    try:
        tensors = load_file(str(p))
    except SafetensorError as exc:
        raise CheckpointError(
            f"{p} is not a readable safetensors file ({exc}): it is empty, truncated or "
            "corrupt; delete it and save or compute it again"
        ) from None
    if finite:
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise CheckpointError(
                    f"{p}: tensor {name!r} holds {bad} NaN/inf value(s); the checkpoint is "
                    "broken (was it saved after training diverged?)"
                )
    return tensors
