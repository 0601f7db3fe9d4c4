"""Result shards: one JSON file per (seed, arm), written atomically, merged for reports.

A study directory looks like::

    OUTPUT_DIR/
      config.json                  resolved config of the last run
      shards/base.json             base-model metrics and the selected layers (computed once)
      shards/seed0__lora.json      one shard per (seed, arm): status, metrics, per-item values
      shards/seed0__sae_gate.json
      shards/reference.oracle.json reference models, evaluated like the base model
      artifacts/FINGERPRINT/seed0/ SAEs trained for that seed (reused when resuming)
      report.json, report.md       written from the shards only

Every shard is written to a temporary file in the same directory, flushed and fsynced, then
moved over the target with :func:`os.replace`, so a killed run leaves either the old shard or
the new one, never half a file. Because reports are computed from the shards alone, a
resumed run produces the same report as an uninterrupted one, and shards written by
separate jobs (``--seed``/``--arm`` subsets, SLURM arrays) merge with :func:`load_shards`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmie.errors import DataError
from mmie.study.config import ArmConfig, ExperimentConfig

__all__ = [
    "SHARD_FORMAT_VERSION",
    "ShardSet",
    "arm_fingerprint",
    "base_shard_path",
    "config_fingerprint",
    "load_shards",
    "read_json",
    "reference_shard_path",
    "unit_shard_path",
]

logger = logging.getLogger(__name__)

SHARD_FORMAT_VERSION = 2  # 2: metric records carry their scale
SHARD_DIR = "shards"
BASE_SHARD = "base.json"
# Keys of a shard that legitimately differ between two runs of the same unit.
VOLATILE_KEYS = ("timings", "environment", "reused")  # how a result was computed
# Config fields that do not change any result: subsets, labels, where files go.
_NON_RESULT_FIELDS = ("name", "arms", "seeds", "output_dir", "plots")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file.

    Raises:
        DataError: the file is not valid JSON; the message names the file and line.
        FileNotFoundError: the file does not exist.
    """
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg})") from exc


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def config_fingerprint(config: ExperimentConfig) -> str:
    """Hash of the config fields that change results shared by every arm.

    Seeds, the arm list, the study name, the output directory and plotting do not enter:
    shards of subset runs (``--seed``/``--arm``) carry the same fingerprint.
    """
    data = config.to_dict()
    for key in _NON_RESULT_FIELDS:
        data.pop(key, None)
    data["__format__"] = SHARD_FORMAT_VERSION  # a new format never reuses old artifacts
    return _digest(data)


def arm_fingerprint(arm: ArmConfig) -> str:
    """Hash of an arm's options (a changed option invalidates that arm's shards)."""
    return _digest(arm.to_dict())


def base_shard_path(root: str | os.PathLike[str]) -> Path:
    """``ROOT/shards/base.json``."""
    return Path(root) / SHARD_DIR / BASE_SHARD


def unit_shard_path(root: str | os.PathLike[str], seed: int, arm: str) -> Path:
    """``ROOT/shards/seed{seed}__{arm}.json``."""
    return Path(root) / SHARD_DIR / f"seed{seed}__{arm}.json"


def reference_shard_path(root: str | os.PathLike[str], name: str) -> Path:
    """``ROOT/shards/reference.{name}.json`` (``name``: ``"oracle"`` or ``"retrain"``)."""
    return Path(root) / SHARD_DIR / f"reference.{name}.json"


def stable_content(shard: Mapping[str, Any]) -> dict[str, Any]:
    """What must match between two copies of a shard: no timings, no environment, and for
    the base shard no config (its ``fingerprint`` covers the fields that change results;
    the output directory and the seed/arm lists may differ between jobs)."""
    skip = (*VOLATILE_KEYS, "config") if shard.get("kind") == "base" else VOLATILE_KEYS
    return {k: v for k, v in shard.items() if k not in skip}


@dataclass
class ShardSet:
    """The shards of one study, possibly merged from several directories.

    Attributes:
        base: the base shard (config, layers, base metrics).
        units: ``(seed, arm) -> shard``.
        references: reference name -> its shard (oracle, retrain).
        sources: ``(seed, arm) -> file`` the shard was read from (``("base", "")`` for base).
        directories: the directories read.
    """

    base: dict[str, Any]
    units: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[tuple[Any, str], Path] = field(default_factory=dict)
    directories: tuple[Path, ...] = ()

    @property
    def config(self) -> ExperimentConfig:
        """The resolved config stored in the base shard."""
        config: ExperimentConfig = ExperimentConfig.from_dict(self.base["config"])
        return config


def _check_shard(shard: Any, path: Path, kind: str) -> dict[str, Any]:
    if not isinstance(shard, dict):
        raise DataError(f"{path}: a shard must be a JSON object")
    version = shard.get("format_version")
    if version != SHARD_FORMAT_VERSION:
        raise DataError(
            f"{path}: shard format_version {version!r} is not {SHARD_FORMAT_VERSION}; it was "
            "written by another mmie version"
        )
    if shard.get("kind") != kind:
        raise DataError(f"{path}: expected a {kind!r} shard, got {shard.get('kind')!r}")
    required = {
        "base": ("fingerprint", "config"),
        "unit": ("seed", "arm", "status"),
        "reference": ("fingerprint", "name", "metrics"),
    }[kind]
    missing = [k for k in required if k not in shard]
    if missing:
        raise DataError(f"{path}: shard lacks keys {missing}")
    return shard


def load_shards(directories: Sequence[str | os.PathLike[str]]) -> ShardSet:
    """Read and merge the shards of one or more study directories.

    Every directory must hold a base shard with the same config fingerprint (the same study).
    A (seed, arm) found in several directories must agree apart from timings and
    environment; a successful shard wins over a failed one.

    Args:
        directories: study output directories (each with a ``shards/`` folder).

    Returns:
        The merged :class:`ShardSet`.

    Raises:
        ValueError: ``directories`` is empty.
        FileNotFoundError: a directory has no base shard.
        DataError: a malformed shard, base shards of different studies, or two different
            results for the same (seed, arm); the message names the files.
    """
    if isinstance(directories, (str, os.PathLike)) or not directories:
        raise ValueError("directories must be a non-empty sequence of paths")
    dirs = tuple(Path(d) for d in directories)
    shard_set: ShardSet | None = None
    for directory in dirs:
        base_path = base_shard_path(directory)
        if not base_path.is_file():
            raise FileNotFoundError(
                f"{directory} holds no {SHARD_DIR}/{BASE_SHARD}; is it a study output directory?"
            )
        base = _check_shard(read_json(base_path), base_path, "base")
        if shard_set is None:
            shard_set = ShardSet(base=base, directories=dirs)
            shard_set.sources[("base", "")] = base_path
        elif stable_content(base) != stable_content(shard_set.base):
            first = shard_set.sources[("base", "")]
            why = (
                "configs differ"
                if base["fingerprint"] != shard_set.base["fingerprint"]
                else "base results differ"
            )
            raise DataError(
                f"{base_path} and {first} belong to different studies ({why}); aggregate only "
                "directories written with the same config"
            )
        for path in sorted((directory / SHARD_DIR).glob("reference.*.json")):
            ref = _check_shard(read_json(path), path, "reference")
            if ref["fingerprint"] != base["fingerprint"]:
                raise DataError(f"{path}: written for another config; remove it")
            old_ref = shard_set.references.get(ref["name"])
            if old_ref is not None and stable_content(old_ref) != stable_content(ref):
                raise DataError(
                    f"conflicting reference results for {ref['name']!r}: "
                    f"{shard_set.sources[('reference', ref['name'])]} and {path} differ"
                )
            shard_set.references[ref["name"]] = ref
            shard_set.sources[("reference", ref["name"])] = path
        for path in sorted((directory / SHARD_DIR).glob("seed*__*.json")):
            shard = _check_shard(read_json(path), path, "unit")
            if shard.get("fingerprint") != base["fingerprint"]:
                raise DataError(
                    f"{path}: written for another config (fingerprint "
                    f"{shard.get('fingerprint')} != {base['fingerprint']})"
                )
            key = (int(shard["seed"]), str(shard["arm"]))
            old = shard_set.units.get(key)
            if old is not None:
                both_ok = old["status"] == "ok" and shard["status"] == "ok"
                if both_ok and stable_content(old) != stable_content(shard):
                    raise DataError(
                        f"conflicting results for seed {key[0]}, arm {key[1]!r}: "
                        f"{shard_set.sources[key]} and {path} differ; remove one of them"
                    )
                if old["status"] == "ok" or shard["status"] != "ok":
                    continue  # keep the first success (or the first failure)
            shard_set.units[key] = shard
            shard_set.sources[key] = path
    assert shard_set is not None
    return shard_set
