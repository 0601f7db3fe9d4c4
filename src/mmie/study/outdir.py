"""The output directory of a study: which study it holds, who writes into it, what is mmie's.

Several runs may write into one output directory at once (jobs of an array, a rerun
started while another is still going). They coordinate through inter-process file locks
(:mod:`filelock`) under ``OUTPUT_DIR/.mmie/locks/``:

* ``directory.lock``, held briefly when a run starts: it compares the study the directory
  holds (``.mmie/study.json``: the config fingerprint and the inputs, see
  :mod:`mmie.study.inputs`) with its own, discards stale results when asked to, removes
  leftover temporary files and records its study;
* ``run-<pid>-<id>.lock``, held for a run's whole duration, so that others can tell that
  it is still writing (a run never discards results or temporary files while another is);
* one lock per shard (``base``, ``reference.<name>``, ``unit.seed<S>__<arm>``) around
  computing and writing it, so no unit is computed twice and no write is lost (a run that
  waited for a unit finds its shard and does not recompute it), and ``report`` around
  reading the shards and writing the report, so the last report written covers every shard;
* locks next to the shared artefacts (SAEs, scrubbers, trained adapters) under
  ``artifacts/``, taken by :class:`~mmie.study.arms.Study`.

Locks are always taken in the order directory, then one shard, then an artefact, so runs
cannot deadlock. A run refuses (:class:`~mmie.ConfigError`) to write into a directory that
holds another study's results unless ``resume`` is off, and never while another run of
another study is writing there. When it discards, it removes only files mmie wrote: shard
files whose name is one of mmie's (``base.json``, ``seed<S>__<arm>.json``,
``reference.<name>.json``) *and* whose content is an mmie shard (``format_version`` and
``kind``); notes, backups and anything else in ``shards/`` stay.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mmie._io import atomic_write_json, file_lock, remove_temp_files
from mmie.errors import ConfigError, DataError
from mmie.study.inputs import input_changes
from mmie.study.shards import (
    BASE_SHARD,
    SHARD_DIR,
    SHARD_FORMAT_VERSION,
    is_mmie_file,
    read_json,
)

__all__ = [
    "STATE_DIR",
    "check_study",
    "claim_output",
    "discard_results",
    "lock",
    "mmie_shard_files",
    "read_study",
]

logger = logging.getLogger(__name__)

STATE_DIR = ".mmie"  # OUTPUT_DIR/.mmie: study.json and locks/
_STUDY_FILE = "study.json"
_LOCKS = "locks"
_SHARD_NAME = re.compile(r"^(base|seed\d+__.+|reference\..+)\.json$")


def _lock_path(out: Path, name: str) -> Path:
    return out / STATE_DIR / _LOCKS / f"{name}.lock"


def lock(out: str | os.PathLike[str], name: str) -> contextlib.AbstractContextManager[None]:
    """The inter-process lock ``name`` of output directory ``out`` (held for a ``with``)."""
    return file_lock(_lock_path(Path(out), name), what=name)


def mmie_shard_files(out: Path) -> list[Path]:
    """The files in ``out/shards`` that mmie wrote (name pattern *and* content marker)."""
    shards = out / SHARD_DIR
    if not shards.is_dir():
        return []
    return [
        p
        for p in sorted(shards.iterdir())
        if _SHARD_NAME.match(p.name) and p.is_file() and is_mmie_file(p)
    ]


def discard_results(out: Path) -> list[Path]:
    """Remove the shards mmie wrote in ``out`` (see :func:`mmie_shard_files`); returns them.
    Other files in ``shards/`` are left alone (and listed in the log)."""
    stale = mmie_shard_files(out)
    for path in stale:
        path.unlink()
    shards = out / SHARD_DIR
    kept = sorted(p.name for p in shards.iterdir()) if shards.is_dir() else []
    logger.warning(
        "discarded %d shard(s) of another study in %s%s",
        len(stale),
        shards,
        f"; kept the other files there: {kept}" if kept else "",
    )
    return stale


def read_study(out: Path) -> dict[str, Any] | None:
    """The study the directory holds: ``{"fingerprint", "inputs"}`` from ``.mmie/study.json``
    or, for directories of older runs, from the base shard; ``None`` when neither is
    readable."""
    for path, what in (
        (out / STATE_DIR / _STUDY_FILE, "study record"),
        (out / SHARD_DIR / BASE_SHARD, "base shard"),
    ):
        if not path.is_file():
            continue
        try:
            data = read_json(path)
        except (OSError, DataError) as exc:
            logger.warning("unreadable %s %s (%s); ignoring it", what, path, exc)
            continue
        if isinstance(data, dict) and isinstance(data.get("fingerprint"), str):
            return {"fingerprint": data["fingerprint"], "inputs": data.get("inputs")}
        logger.warning("%s %s does not name a study; ignoring it", what, path)
    return None


def _other_runs(out: Path, mine: Path) -> list[Path]:
    """Run locks of other runs that are still held (stale ones are removed)."""
    from filelock import FileLock, Timeout

    active = []
    for path in sorted((out / STATE_DIR / _LOCKS).glob("run-*.lock")):
        if path == mine:
            continue
        probe = FileLock(str(path))
        try:
            probe.acquire(timeout=0)
        except Timeout:
            active.append(path)
            continue
        except OSError:
            continue
        probe.release()
        with contextlib.suppress(OSError):
            path.unlink()  # its run ended (or was killed): nobody else ever takes this name
    return active


def _temp_dirs(out: Path) -> Iterator[Path]:
    yield out
    for sub in (SHARD_DIR, STATE_DIR, "plots"):
        yield out / sub
    artifacts = out / "artifacts"
    if artifacts.is_dir():
        yield from (p for p in artifacts.rglob("*") if p.is_dir())


def _mismatch(old: Mapping[str, Any], fingerprint: str, inputs: Mapping[str, Any]) -> str | None:
    if old["fingerprint"] != fingerprint:
        return (
            f"holds results of a different config (fingerprint {old['fingerprint']}, this config "
            f"{fingerprint})"
        )
    changes = input_changes(old.get("inputs"), inputs)
    if changes:
        return "holds results computed from other inputs: " + "; ".join(changes)
    return None


def _refusal(out: Path, why: str) -> ConfigError:
    return ConfigError(
        f"output_dir {out} {why}; choose another output directory, or rerun without resume "
        "(--no-resume) to discard them"
    )


def check_study(out: Path, fingerprint: str) -> None:
    """Refuse (as a resumed run would) when ``out`` holds results of another config.

    Raises:
        ConfigError: ``out`` holds shards of a study with another config fingerprint.
    """
    old = read_study(out)
    if old is not None and old["fingerprint"] != fingerprint and mmie_shard_files(out):
        raise _refusal(out, _mismatch(old, fingerprint, {}) or "holds another study")


def _prepare(
    out: Path, fingerprint: str, inputs: Mapping[str, Any], resume: bool, others: list[Path]
) -> None:
    old = read_study(out)
    why = None if old is None else _mismatch(old, fingerprint, inputs)
    if why is not None and mmie_shard_files(out):
        if others:
            raise ConfigError(
                f"output_dir {out} {why}, and another mmie run is writing into it "
                f"({len(others)} active); wait for it to finish, or choose another output "
                "directory"
            )
        if resume:
            raise _refusal(out, why)
        discard_results(out)
    elif why is not None and others:
        raise ConfigError(
            f"output_dir {out}: another mmie run of another study is writing into it; wait for "
            "it to finish, or choose another output directory"
        )
    if not others:
        for directory in _temp_dirs(out):
            remove_temp_files(directory)
    atomic_write_json(
        out / STATE_DIR / _STUDY_FILE,
        {
            "format_version": SHARD_FORMAT_VERSION,
            "kind": "study",
            "fingerprint": fingerprint,
            "inputs": dict(inputs),
        },
    )


@contextlib.contextmanager
def claim_output(
    out: str | os.PathLike[str], fingerprint: str, inputs: Mapping[str, Any], *, resume: bool
) -> Iterator[None]:
    """Hold ``out`` for one run: check (and record) the study it holds, then keep a run lock
    for the ``with`` block (see the module docstring).

    Raises:
        ConfigError: ``out`` holds results of another config or other inputs and ``resume``
            is on, or another run of another study is writing into it.
    """
    from filelock import FileLock

    root = Path(out)
    mine = _lock_path(root, f"run-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    with lock(root, "directory"):  # creates .mmie/locks
        run = FileLock(str(mine))
        run.acquire(timeout=0)
        try:
            _prepare(root, fingerprint, inputs, resume, _other_runs(root, mine))
        except BaseException:
            run.release()
            with contextlib.suppress(OSError):
                mine.unlink()
            raise
    try:
        yield
    finally:
        run.release()
        with contextlib.suppress(OSError):
            mine.unlink()
