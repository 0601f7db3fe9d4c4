"""Result shards: one JSON file per (seed, arm), written atomically, merged for reports.

A study directory looks like::

    OUTPUT_DIR/
      config.json                  resolved config of the last run
      shards/base.json             base-model metrics and the selected layers (computed once)
      shards/seed0__lora.json      one shard per (seed, arm): status, metrics, per-item values
      shards/seed0__sae_gate.json
      shards/reference.oracle.json reference models, evaluated like the base model
      artifacts/KEY/seed0/         SAEs trained for that seed (reused when resuming)
      report.json, report.md       written from the shards only
      .mmie/study.json             which study the directory holds (config fingerprint, inputs)
      .mmie/locks/                 inter-process locks of concurrent runs

Every shard is written to a temporary file in the same directory, flushed and fsynced, then
moved over the target with :func:`os.replace`, so a killed run leaves either the old shard or
the new one, never half a file. Because reports are computed from the shards alone, a
resumed run produces the same report as an uninterrupted one, and shards written by
separate jobs (``--seed``/``--arm`` subsets, SLURM arrays) merge with :func:`load_shards`.

Shards of one unit found in several directories, and the base shards of several
directories, must agree within a tolerance (:func:`shard_differences`: numbers within
``rtol``/``atol``, everything else exactly), since jobs on different GPUs or machines
compute the base evaluation with floating-point differences; ``base_from`` takes the base
(and reference) results from one directory instead, requiring only the same layers and
items of the others.

Every shard records the study's inputs (:mod:`mmie.study.inputs`: the SHA-256 of the texts
used, the model's fingerprint, the mmie version); shards whose inputs disagree are never
merged. A shard is refused, with the reason, when it is not UTF-8 JSON, repeats a key, lacks
a key, has a ``seed`` that is not an integer or does not match its file name, or is a unit
of an arm the study's config does not have (unless it carries that arm's own config, as a
job of a larger arm list writes it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmie._io import DuplicateKeyError, decode_utf8, strict_json_loads
from mmie._validation import is_integer
from mmie.errors import ConfigError, DataError
from mmie.study.config import SEED_LIMIT, ArmConfig, ExperimentConfig
from mmie.study.inputs import input_changes

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "SHARD_FORMAT_VERSION",
    "ShardSet",
    "arm_fingerprint",
    "base_shard_path",
    "config_fingerprint",
    "load_shards",
    "read_json",
    "reference_shard_path",
    "shard_differences",
    "unit_shard_path",
]

logger = logging.getLogger(__name__)

SHARD_FORMAT_VERSION = 3  # 2: metric records carry their scale; 3: shards record their inputs
SHARD_DIR = "shards"
BASE_SHARD = "base.json"
# Keys of a shard that legitimately differ between two runs of the same unit (inputs are
# compared on their own, by input_changes; "reused" says how a result was computed).
VOLATILE_KEYS = ("timings", "environment", "inputs", "reused")
SHARD_KINDS = ("base", "unit", "reference")
_UNIT_NAME = re.compile(r"^seed(\d+)__(.+)\.json$")
# Config fields that do not change any result: subsets, labels, where files go.
_NON_RESULT_FIELDS = ("name", "arms", "seeds", "output_dir", "plots")


#: Relative and absolute tolerances of :func:`shard_differences` (and so of
#: :func:`load_shards` and :func:`~mmie.aggregate`): NumPy's ``allclose`` defaults, far above
#: the ~1e-7 relative differences fp32 kernels give on different GPUs, far below any effect
#: a gate could see.
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-8


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file.

    Raises:
        DataError: the file is not UTF-8 or not valid JSON, repeats a key in an object or
            nests too deeply; the message names the file (and the line).
        FileNotFoundError: the file does not exist.
    """
    p = Path(path)
    text = decode_utf8(p.read_bytes(), p, DataError)
    try:
        return strict_json_loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except DuplicateKeyError as exc:
        raise DataError(f"{p}: invalid JSON: {exc}") from None
    except ValueError as exc:
        raise DataError(f"{p}: invalid JSON: {exc}") from None


def is_mmie_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a shard mmie wrote: a JSON object with an integer
    ``format_version`` and a shard ``kind`` (never raises)."""
    try:
        data = read_json(path)
    except (OSError, DataError):
        return False
    return (
        isinstance(data, dict)
        and is_integer(data.get("format_version"))
        and data.get("kind") in SHARD_KINDS
    )


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


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _show(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _differences(
    a: Any, b: Any, path: str, rtol: float, atol: float, out: list[str], limit: int
) -> None:
    if len(out) >= limit:
        return
    where = path or "(the whole shard)"
    if _is_number(a) and _is_number(b):
        if isinstance(a, int) and isinstance(b, int):
            same = a == b  # counts and indices: exactly
        else:
            fa, fb = float(a), float(b)
            same = (math.isnan(fa) and math.isnan(fb)) or math.isclose(
                fa, fb, rel_tol=rtol, abs_tol=atol
            )
        if not same:
            out.append(f"{where}: {a!r} vs {b!r}")
    elif isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(f"{sub}: present in only one of them")
            else:
                _differences(a[key], b[key], sub, rtol, atol, out, limit)
            if len(out) >= limit:
                return
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} vs {len(b)} entries")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            _differences(x, y, f"{path}[{i}]", rtol, atol, out, limit)
            if len(out) >= limit:
                return
    elif type(a) is not type(b) or a != b:
        out.append(f"{where}: {_show(a)} vs {_show(b)}")


def _check_tolerance(rtol: float, atol: float) -> None:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def shard_differences(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    limit: int = 5,
) -> list[str]:
    """Where two copies of a shard differ: one line per difference, ``path: a vs b``.

    Timings, environment and inputs are not compared (nor the base shard's config, whose
    fingerprint is compared on its own). Two numbers agree when
    ``abs(a - b) <= max(rtol * max(abs(a), abs(b)), atol)`` (``math.isclose``; two NaNs
    agree), except two integers (counts, indices), which must be equal; strings
    (generations), booleans, ``null`` and the shape of lists and objects must be equal.

    Example:
        >>> def shard(ppl):
        ...     return {"kind": "unit", "metrics": {"retain_ppl": {"value": ppl}}}
        >>> shard_differences(shard(12.5), shard(12.5 + 1e-12))
        []
        >>> shard_differences(shard(12.5), shard(12.6))
        ['metrics.retain_ppl.value: 12.5 vs 12.6']

    Args:
        a: one shard.
        b: the other.
        rtol: relative tolerance (default ``DEFAULT_RTOL``, 1e-5).
        atol: absolute tolerance (default ``DEFAULT_ATOL``, 1e-8).
        limit: report at most this many differences.

    Returns:
        The differences, at most ``limit`` (empty: they agree).

    Raises:
        ValueError: a negative or non-finite tolerance.
    """
    _check_tolerance(rtol, atol)
    out: list[str] = []
    _differences(stable_content(a), stable_content(b), "", rtol, atol, out, limit)
    return out


def _structure(base: Mapping[str, Any]) -> dict[str, Any]:
    """What every base shard of one study must share even when ``base_from`` picks one."""
    return {"layers": base.get("layers"), "items": base.get("items")}


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
    if kind == "unit":
        _check_unit(shard, path)
    return shard


def _check_unit(shard: dict[str, Any], path: Path) -> None:
    seed, arm = shard["seed"], shard["arm"]
    if not is_integer(seed) or not 0 <= seed < SEED_LIMIT:
        raise DataError(f"{path}: seed must be an integer in [0, 2**32), got {seed!r}")
    if not isinstance(arm, str) or not arm:
        raise DataError(f"{path}: arm must be a non-empty string, got {arm!r}")
    if shard["status"] not in ("ok", "failed"):
        raise DataError(f"{path}: status must be 'ok' or 'failed', got {shard['status']!r}")
    if shard["status"] == "ok" and not isinstance(shard.get("metrics"), dict):
        raise DataError(f"{path}: a successful unit must hold its metrics")
    match = _UNIT_NAME.match(path.name)
    if match is None or (int(match.group(1)), match.group(2)) != (seed, arm):
        raise DataError(
            f"{path}: the shard says seed {seed}, arm {arm!r}, but its file name says "
            f"otherwise (expected {unit_shard_path(path.parent.parent, seed, arm).name}); was "
            "it renamed or edited by hand?"
        )


def _check_arm(shard: dict[str, Any], path: Path, config: ExperimentConfig) -> None:
    """A unit's arm is the config's (with the same options), or carries its own config."""
    name = shard["arm"]
    known = {a.name: a for a in config.all_arms}
    recorded = shard.get("arm_fingerprint")
    if name in known:
        expected = arm_fingerprint(known[name])
        if recorded is not None and recorded != expected:
            raise DataError(
                f"{path}: arm {name!r} was computed with other options than the study's "
                f"config gives it (arm fingerprint {recorded} != {expected}); recompute it "
                "or remove the shard"
            )
        return
    own: ArmConfig | None
    try:
        own = ArmConfig.from_dict(shard.get("arm_config") or {})
    except (ConfigError, TypeError) as exc:
        own, why = None, str(exc)
    else:
        why = "its arm_config names another arm or does not match its arm_fingerprint"
    if own is None or own.name != name or arm_fingerprint(own) != recorded:
        raise DataError(
            f"{path}: arm {name!r} is not in the study's config (arms: {sorted(known)}) and "
            f"the shard does not carry a valid config of its own ({why}); was it renamed or "
            "edited by hand?"
        )


def _foreign(data: Any, path: Path) -> bool:
    """A JSON object with neither ``format_version`` nor ``kind`` is someone else's file
    that happens to have a shard's name: it is skipped, with a warning, never read as one."""
    if isinstance(data, dict) and "format_version" not in data and "kind" not in data:
        logger.warning("%s is not an mmie shard (no format_version, no kind); ignoring it", path)
        return True
    return False


def _same_inputs(shard: dict[str, Any], path: Path, base: dict[str, Any], base_path: Path) -> None:
    changes = input_changes(base.get("inputs"), shard.get("inputs"))
    if changes:
        raise DataError(
            f"{path} was written with other inputs than {base_path}: {'; '.join(changes)}; "
            "recompute it (rerun with --no-resume) or remove it"
        )


def load_shards(
    directories: Sequence[str | os.PathLike[str]],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    base_from: str | os.PathLike[str] | None = None,
) -> ShardSet:
    """Read and merge the shards of one or more study directories.

    Every directory must hold a base shard with the same config fingerprint and the same
    inputs (texts, model, mmie version; see :mod:`mmie.study.inputs`), and every shard the
    inputs of its base shard. Base shards of several directories, and a (seed, arm) or a
    reference found in several, must agree within ``rtol``/``atol`` apart from timings and
    environment (:func:`shard_differences`); the first directory's copy is used, and a
    successful unit wins over a failed one.

    Args:
        directories: study output directories (each with a ``shards/`` folder).
        rtol: relative tolerance of the comparison (default ``DEFAULT_RTOL``, 1e-5).
        atol: absolute tolerance of the comparison (default ``DEFAULT_ATOL``, 1e-8).
        base_from: take the base and reference results from this directory (read first,
            added when it is not among ``directories``); the other base shards must still
            have the same config, inputs, selected layers and items, but their metrics and
            generations are not compared, and their references are used only where
            ``base_from`` has none.

    Returns:
        The merged :class:`ShardSet`.

    Raises:
        ValueError: ``directories`` is empty, or a tolerance is negative.
        FileNotFoundError: a directory has no base shard.
        DataError: a malformed or hand-edited shard, base shards of different studies (or
            whose results differ beyond the tolerance), shards written with other inputs, or
            two different results for the same (seed, arm); the message names the files and
            says which input, metric or value differs.
    """
    if isinstance(directories, (str, os.PathLike)) or not directories:
        raise ValueError("directories must be a non-empty sequence of paths")
    _check_tolerance(rtol, atol)
    dirs = tuple(Path(d) for d in directories)
    if base_from is not None:
        first_dir = Path(base_from)
        dirs = (first_dir, *(d for d in dirs if d.resolve() != first_dir.resolve()))
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
            try:
                config = shard_set.config
            except (ConfigError, TypeError) as exc:
                raise DataError(f"{base_path}: its config is invalid: {exc}") from None
        else:
            first = shard_set.sources[("base", "")]
            if base["fingerprint"] != shard_set.base["fingerprint"]:
                why = "configs differ"
            else:
                changes = input_changes(shard_set.base.get("inputs"), base.get("inputs"))
                if changes:
                    why = "inputs differ: " + "; ".join(changes)
                elif base_from is not None:
                    diffs = shard_differences(
                        _structure(shard_set.base), _structure(base), rtol=0.0, atol=0.0
                    )
                    why = "base results differ: " + "; ".join(diffs) if diffs else ""
                else:
                    diffs = shard_differences(shard_set.base, base, rtol=rtol, atol=atol)
                    why = (
                        f"base results differ beyond rtol={rtol:g}, atol={atol:g}: "
                        + "; ".join(diffs)
                        if diffs
                        else ""
                    )
            if why:
                hint = (
                    " (or pass --base-from DIR to take the base from one directory, or a "
                    "larger --rtol/--atol)"
                    if why.startswith("base results differ beyond")
                    else ""
                )
                raise DataError(
                    f"{base_path} and {first} belong to different studies ({why}); aggregate "
                    f"only directories written with the same config and inputs{hint}"
                )
        for path in sorted((directory / SHARD_DIR).glob("reference.*.json")):
            data = read_json(path)
            if _foreign(data, path):
                continue
            ref = _check_shard(data, path, "reference")
            if ref["fingerprint"] != base["fingerprint"]:
                raise DataError(f"{path}: written for another config; remove it")
            _same_inputs(ref, path, base, base_path)
            old_ref = shard_set.references.get(ref["name"])
            if old_ref is not None:
                diffs = (
                    []
                    if base_from is not None
                    else shard_differences(old_ref, ref, rtol=rtol, atol=atol)
                )
                if diffs:
                    raise DataError(
                        f"conflicting reference results for {ref['name']!r}: "
                        f"{shard_set.sources[('reference', ref['name'])]} and {path} differ "
                        f"beyond rtol={rtol:g}, atol={atol:g}: {'; '.join(diffs)}"
                    )
                continue  # the first copy is used
            shard_set.references[ref["name"]] = ref
            shard_set.sources[("reference", ref["name"])] = path
        for path in sorted((directory / SHARD_DIR).glob("seed*__*.json")):
            data = read_json(path)
            if _foreign(data, path):
                continue
            shard = _check_shard(data, path, "unit")
            if shard.get("fingerprint") != base["fingerprint"]:
                raise DataError(
                    f"{path}: written for another config (fingerprint "
                    f"{shard.get('fingerprint')} != {base['fingerprint']})"
                )
            _same_inputs(shard, path, base, base_path)
            _check_arm(shard, path, config)
            key = (int(shard["seed"]), str(shard["arm"]))
            old = shard_set.units.get(key)
            if old is not None:
                both_ok = old["status"] == "ok" and shard["status"] == "ok"
                diffs = shard_differences(old, shard, rtol=rtol, atol=atol) if both_ok else []
                if diffs:
                    raise DataError(
                        f"conflicting results for seed {key[0]}, arm {key[1]!r}: "
                        f"{shard_set.sources[key]} and {path} differ beyond rtol={rtol:g}, "
                        f"atol={atol:g}: {'; '.join(diffs)}; remove one of them"
                    )
                if old["status"] == "ok" or shard["status"] != "ok":
                    continue  # keep the first success (or the first failure)
            shard_set.units[key] = shard
            shard_set.sources[key] = path
    assert shard_set is not None
    return shard_set
