"""Reports: aggregate shards into intervals, gate verdicts and a readable verdict.

:func:`build_report` turns a :class:`~mmie.study.shards.ShardSet` into a :class:`Report`, a JSON
document (validated against the schema shipped as ``mmie/report_schema.json``) that keeps
the resolved config, the environment, every per-seed and per-item value, intervals, gate
results and decisions. :meth:`Report.to_markdown` renders tables with intervals, the gate
verdicts and a short reading of the result; :func:`plot_report` draws figures when the
``plot`` extra (matplotlib) is installed.

Intervals:

* base model: over items (prompts or texts), since the base model is evaluated once;
* arms: over seeds (the spread of the training runs), method ``ci_method`` (``"auto"``:
  Student t below 10 values, BCa from 10 on);
* effects: the paired per-item difference ``arm − base`` (the arm's value of an item is
  its mean over seeds), interval over items. This is the interval of "how much did the arm
  change the metric", the one that answers whether an effect is measurable.

Wall-clock times live in the ``timings`` section only, so two reports of the same shards
are equal once ``timings`` is removed (:meth:`Report.stable`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mmie._io import atomic_write_json, atomic_write_text
from mmie._version import __version__
from mmie.errors import DataError
from mmie.stats import bootstrap_ci
from mmie.study.config import ArmConfig, ExperimentConfig
from mmie.study.decisions import GATES, item_values, judge_arms
from mmie.study.shards import ShardSet

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "Report",
    "build_report",
    "plot_report",
    "report_schema",
    "validate_report",
]

logger = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = "1.0"
_SCHEMA_FILE = "report_schema.json"

# Record key -> (label, better direction) for tables; unknown keys are shown as they are.
_LABELS: dict[str, tuple[str, str]] = {
    "forget_es": ("forget ES (Hindi prompts)", "↓"),
    "mixed_es": ("mixed-prompt ES", "↓"),
    "romanized_es": ("romanised-Hindi ES", "↓"),
    "forget_script_mass": ("P(next letter is Devanagari)", "↓"),
    "retain_ppl": ("retain perplexity", "↓"),
    "forget_ppl": ("forget perplexity", "↑"),
    "mia_auc": ("MIA AUC (loss attack)", "→0.5"),
}


# ----------------------------------------------------------------------------- intervals
def _ci_method(config: ExperimentConfig, n: int) -> str:
    if config.ci_method != "auto":
        return config.ci_method
    return "t" if n < 10 else "bca"


def _domain(key: str) -> tuple[float, float]:
    """The range a metric's values (hence their mean) cannot leave."""
    metric = key.split(".", 1)[0]  # "related_es.urdu" -> "related_es"
    if metric.endswith(("_es", "script_mass", "_auc")):
        return (0.0, 1.0)
    if metric.endswith("_ppl"):
        return (0.0, math.inf)
    return (-math.inf, math.inf)


def _interval(
    values: Sequence[float],
    config: ExperimentConfig,
    domain: tuple[float, float] = (-math.inf, math.inf),
) -> dict[str, Any] | None:
    """CI of the mean as a dict, or ``None`` for fewer than 2 finite values.

    Bounds are clipped to the metric's ``domain`` (e.g. [0, 1] for extraction strength):
    the true mean lies in it, so this never lowers coverage, unlike clipping a Student-t
    interval to the sample's [min, max].
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2 or not np.all(np.isfinite(arr)):
        return None
    method = _ci_method(config, arr.size)
    # A Student-t interval clipped to [min, max] covers at most 1 - 2**(1 - n) (75% for 3
    # seeds), so the honest small-sample interval is reported unclipped.
    ci = bootstrap_ci(
        arr,
        alpha=config.ci_alpha,
        n_boot=config.n_boot,
        seed=0,
        method=method,  # type: ignore[arg-type]
        clip=method != "t",
    )
    return {
        "estimate": ci.estimate,
        "low": max(ci.low, domain[0]),
        "high": min(ci.high, domain[1]),
        "method": ci.method,
        "alpha": ci.alpha,
        "n": ci.n,
        "clipped": ci.clip,
    }


def _base_interval(record: Mapping[str, Any], config: ExperimentConfig) -> dict[str, Any] | None:
    """Item-level interval of a base-model record; perplexity on its own scale.

    Perplexity records are intervals of the token-weighted log-perplexity (linearised item
    values, see :func:`mmie.study.decisions.item_values`), exponentiated.
    """
    ci = _interval(item_values(record).tolist(), config)
    if ci is None or "weights" not in record:
        return ci
    return {
        **ci,
        "estimate": math.exp(ci["estimate"]),
        "low": math.exp(ci["low"]),
        "high": math.exp(ci["high"]),
    }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# ----------------------------------------------------------------------------- environment
def environment_manifest(device: str | None = None) -> dict[str, Any]:
    """Versions, platform, device and git commit, for reproducibility.

    Args:
        device: the device the study ran on (as resolved), if known.

    Returns:
        A JSON-ready dictionary (``git_commit`` is ``None`` outside a git checkout).
    """
    import platform
    import subprocess
    import sys
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist in ("torch", "transformers", "peft", "numpy", "scipy", "safetensors"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    commit: str | None = None
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode == 0:
            commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        logger.debug("git is not available; no commit recorded", exc_info=True)
    accelerator: str | None = None
    if device is not None and device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            accelerator = torch.cuda.get_device_name(torch.device(device))
    return {
        "mmie": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": versions,
        "device": device,
        "accelerator": accelerator,
        "git_commit": commit,
    }


# ----------------------------------------------------------------------------- report
@dataclass(frozen=True)
class Report:
    """A study report: the JSON document plus renderers.

    Attributes:
        data: the JSON document (see ``mmie/report_schema.json``).
    """

    data: dict[str, Any]

    @property
    def decisions(self) -> dict[str, str]:
        """Arm name -> decision (``pass``, ``fail``, ``incomplete``, ``failed``)."""
        return {name: arm["decision"] for name, arm in self.data["arms"].items()}

    @property
    def best_arm(self) -> str | None:
        """The arm the summary highlights (see :func:`build_report`), if any."""
        best: str | None = self.data["summary"]["best_arm"]
        return best

    def stable(self) -> dict[str, Any]:
        """The document without ``timings``: equal for equal shards, however they were run."""
        return {k: v for k, v in self.data.items() if k != "timings"}

    def to_json(self) -> str:
        """The document as indented JSON with sorted keys."""
        return json.dumps(self.data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def to_markdown(self) -> str:
        """A readable Markdown report (no timings, so it is stable too)."""
        return _markdown(self.data)

    def write(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``report.json`` and ``report.md`` atomically into ``directory``.

        Returns:
            ``{"json": path, "markdown": path}``.
        """
        d = Path(directory)
        json_path = atomic_write_json(d / "report.json", self.data)
        md_path = atomic_write_text(d / "report.md", self.to_markdown())
        return {"json": json_path, "markdown": md_path}


def build_report(shards: ShardSet) -> Report:
    """Aggregate a study's shards into a :class:`Report`.

    The best arm is the arm with the lowest mean forget extraction strength among those
    whose decision is ``pass``, or among all arms with a successful seed when none passes.

    Args:
        shards: the base shard and the (seed, arm) shards.

    Returns:
        The report; it depends on the shards only (not on how or when they were computed).

    Raises:
        DataError: per-item values that do not pair up between the base model and an arm.
    """
    base = shards.base
    config = shards.config
    base_metrics: dict[str, Any] = base["metrics"]

    arm_configs: dict[str, ArmConfig] = {a.name: a for a in config.arms}
    for (_seed, arm), unit in sorted(shards.units.items()):
        if arm not in arm_configs:
            arm_configs[arm] = ArmConfig.from_dict(unit["arm_config"])
    seeds = sorted(set(config.seeds) | {s for s, _ in shards.units})

    units: list[dict[str, Any]] = []
    ok: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in arm_configs}
    failed: dict[str, dict[int, str]] = {name: {} for name in arm_configs}
    records: list[dict[str, Any]] = []
    timings: dict[str, Any] = {"base": base.get("timings", {}), "units": {}}
    environments: list[dict[str, Any]] = []

    def add_env(env: Any) -> None:
        if env and env not in environments:
            environments.append(env)

    add_env(base.get("environment"))
    for seed in seeds:
        for arm in arm_configs:
            shard = shards.units.get((seed, arm))
            if shard is None:
                units.append({"seed": seed, "arm": arm, "status": "missing", "error": None})
                continue
            add_env(shard.get("environment"))
            timings["units"][f"seed{seed}__{arm}"] = shard.get("timings", {})
            error = shard.get("error")
            units.append(
                {
                    "seed": seed,
                    "arm": arm,
                    "status": shard["status"],
                    "error": None if error is None else f"{error['type']}: {error['message']}",
                }
            )
            if shard["status"] == "ok":
                ok[arm][seed] = shard["metrics"]
                records.append(
                    {
                        "seed": seed,
                        "arm": arm,
                        "metrics": shard["metrics"],
                        "info": shard.get("info", {}),
                    }
                )
            else:
                failed[arm][seed] = "" if error is None else f"{error['type']}: {error['message']}"

    decisions = judge_arms(
        base_metrics,
        ok,
        config.gates,
        computed=config.metrics,
        related=config.data.related,
        failed=failed,
    )

    base_section = {
        key: {
            "value": rec["value"],
            "ci": _base_interval(rec, config),
            "n_items": len(rec["per_item"]),
        }
        for key, rec in sorted(base_metrics.items())
    }
    arms_section: dict[str, Any] = {}
    for name, arm_cfg in arm_configs.items():
        seed_records = ok[name]
        metrics: dict[str, Any] = {}
        keys = sorted({k for rec in seed_records.values() for k in rec})
        for key in keys:
            have = {s: rec[key] for s, rec in seed_records.items() if key in rec}
            values = [float(have[s]["value"]) for s in sorted(have)]
            entry: dict[str, Any] = {
                "mean": float(np.mean(values)),
                "per_seed": {str(s): float(have[s]["value"]) for s in sorted(have)},
                "ci": _interval(values, config, _domain(key)),
                "delta": None,
            }
            if key in base_metrics and len(have) == len(seed_records):
                items = np.mean([item_values(have[s]) for s in sorted(have)], axis=0)
                b = item_values(base_metrics[key])
                if items.shape == b.shape:
                    diff = items - b
                    entry["delta"] = {
                        "mean": _finite(float(diff.mean())),
                        "ci": _interval(diff.tolist(), config),
                        "n_items": int(diff.size),
                        "scale": "log_ratio" if "weights" in base_metrics[key] else "difference",
                    }
            metrics[key] = entry
        decision = decisions[name]
        arms_section[name] = {
            "kind": arm_cfg.kind,
            "config": arm_cfg.to_dict(),
            "seeds_ok": sorted(seed_records),
            "seeds_failed": sorted(failed[name]),
            "seeds_missing": [s for s in seeds if s not in seed_records and s not in failed[name]],
            "metrics": metrics,
            "gates": [g.to_dict() for g in decision.gates],
            "decision": decision.decision,
            "reasons": list(decision.reasons),
        }

    data: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "mmie_version": __version__,
        "name": config.name,
        "fingerprint": base["fingerprint"],
        "config": {
            **config.to_dict(),
            "seeds": seeds,
            "arms": [a.to_dict() for a in arm_configs.values()],
        },
        "environment": environments,
        "layers": list(base.get("layers", [])),
        "items": base.get("items", {}),
        "units": units,
        "base": {"metrics": base_section, "per_item": base_metrics},
        "arms": arms_section,
        "records": records,
        "summary": {},
        "timings": timings,
    }
    data["summary"] = _summary(data, config)
    return Report(data=data)


def _summary(data: Mapping[str, Any], config: ExperimentConfig) -> dict[str, Any]:
    arms = data["arms"]
    candidates = [n for n, a in arms.items() if a["seeds_ok"] and "forget_es" in a["metrics"]]
    passing = [n for n in candidates if arms[n]["decision"] == "pass"]
    pool = passing or candidates
    best = min(pool, key=lambda n: arms[n]["metrics"]["forget_es"]["mean"]) if pool else None
    counts = {
        d: sum(a["decision"] == d for a in arms.values())
        for d in ("pass", "fail", "incomplete", "failed")
    }
    summary: dict[str, Any] = {
        "best_arm": best,
        "best_arm_passed": bool(passing),
        "decision_counts": counts,
        "n_units": len(data["units"]),
        "n_units_failed": sum(u["status"] == "failed" for u in data["units"]),
        "n_units_missing": sum(u["status"] == "missing" for u in data["units"]),
        "text": "",
    }
    summary["text"] = _reading(data, summary, config)
    return summary


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def _fmt_ci(value: float | None, ci: Mapping[str, Any] | None) -> str:
    if ci is None:
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(ci['low'])}, {_fmt(ci['high'])}]"


def _fmt_delta(delta: Mapping[str, Any]) -> str:
    """A paired change: ``+0.12 [..]``, or ``×1.03 [..]`` for perplexity (log-ratio) rows."""
    if delta.get("scale") != "log_ratio":
        return _fmt_ci(delta["mean"], delta["ci"])
    ci = delta["ci"]
    mean = delta["mean"]
    text = "—" if mean is None else f"×{math.exp(mean):.3f}"
    if ci is not None:
        text += f" [×{math.exp(ci['low']):.3f}, ×{math.exp(ci['high']):.3f}]"
    return text


def _reading(data: Mapping[str, Any], summary: Mapping[str, Any], config: ExperimentConfig) -> str:
    lines: list[str] = []
    base = data["base"]["metrics"].get("forget_es")
    best = summary["best_arm"]
    level = f"{100 * (1 - config.ci_alpha):.0f}%"
    if base is None:
        lines.append("Forget extraction strength was not computed, so no arm can be judged on it.")
    else:
        lines.append(
            f"The base model continues held-out Hindi prompts in Hindi with extraction strength "
            f"{_fmt_ci(base['value'], base['ci'])} ({level} interval over "
            f"{base['n_items']} prompts)."
        )
    if best is not None and base is not None:
        arm = data["arms"][best]
        m = arm["metrics"]["forget_es"]
        delta = m.get("delta")
        gate = next((g for g in arm["gates"] if g["name"] == "forget_es"), None)
        n = len(arm["seeds_ok"])
        lead = (
            "Of the arms that pass every gate, the lowest"
            if summary["best_arm_passed"]
            else "No arm passes every gate; the lowest"
        )
        spread = ", interval over seeds" if m["ci"] else ""
        text = (
            f"{lead} forget extraction strength is `{best}`'s: {_fmt_ci(m['mean'], m['ci'])} "
            f"(mean over {n} seed{'s' if n != 1 else ''}{spread})"
        )
        if delta is not None and delta["ci"] is not None:
            text += (
                f"; the paired per-prompt change is {_fmt(delta['mean'])} "
                f"[{_fmt(delta['ci']['low'])}, {_fmt(delta['ci']['high'])}]"
            )
        if gate is not None and gate.get("p_adjusted") is not None:
            text += f" (one-sided permutation p_adj = {gate['p_adjusted']:.3g})"
        lines.append(text + ".")
        p_adj = None if gate is None else gate.get("p_adjusted")
        if p_adj is not None and p_adj <= config.gates.alpha:
            lines.append(
                "The reduction is significant (one-sided paired permutation test over prompts, "
                f"Holm-adjusted across arms, level {config.gates.alpha}): a measurable effect."
            )
        else:
            lines.append(
                f"The reduction is not significant at level {config.gates.alpha}: this study "
                "shows no measurable effect."
            )
    counts = summary["decision_counts"]
    lines.append(
        f"Decisions: {counts['pass']} arm(s) pass every gate, {counts['fail']} fail at least one, "
        f"{counts['incomplete']} incomplete (a gate not evaluated), {counts['failed']} failed to run."
    )
    if summary["n_units_failed"] or summary["n_units_missing"]:
        lines.append(
            f"{summary['n_units_failed']} (seed, arm) run(s) failed and "
            f"{summary['n_units_missing']} are missing; see the Runs section."
        )
    return " ".join(lines)


# ----------------------------------------------------------------------------- markdown
def _label(key: str) -> str:
    if key in _LABELS:
        label, direction = _LABELS[key]
        return f"{label} {direction}"
    if key.startswith("related_ppl."):
        return f"{key.split('.', 1)[1]} perplexity ↓"
    if key.startswith("related_es."):
        return f"Hindi ES on {key.split('.', 1)[1]} prompts ↓"
    if key.startswith("probe_auc."):
        return f"linear-probe AUC, forget vs retain, layer {key.split('.', 1)[1]} →0.5"
    return key


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def _markdown(data: Mapping[str, Any]) -> str:
    cfg = data["config"]
    arms: Mapping[str, Any] = data["arms"]
    names = list(arms)
    level = f"{100 * (1 - cfg['ci_alpha']):.0f}%"
    out: list[str] = [f"# mmie report: {data['name']}", ""]
    out.append(
        f"Model `{cfg['model']}` ({cfg['dtype']}) · seeds {', '.join(map(str, cfg['seeds']))} · "
        f"layers {data['layers']} · {cfg['data']['n_eval']} evaluation texts per set · "
        f"mmie {data['mmie_version']} · config fingerprint `{data['fingerprint']}`"
    )
    out += ["", "## Verdict", "", data["summary"]["text"], ""]

    out += ["## Decisions", ""]
    rows = []
    for name in names:
        arm = arms[name]
        failing = [g["name"] for g in arm["gates"] if g["status"] == "fail"]
        missing = [g["name"] for g in arm["gates"] if g["status"] == "not evaluated"]
        rows.append(
            [
                f"`{name}`",
                f"**{arm['decision']}**",
                f"{len(arm['seeds_ok'])}/{len(cfg['seeds'])}",
                ", ".join(failing) or "—",
                ", ".join(missing) or "—",
            ]
        )
    out += _table(["arm", "decision", "seeds ok", "failed gates", "not evaluated"], rows)

    keys = sorted(set(data["base"]["metrics"]) | {k for a in arms.values() for k in a["metrics"]})
    order = list(_LABELS)
    keys.sort(key=lambda k: (order.index(k) if k in order else len(order), k))
    out += ["", "## Metrics", ""]
    out.append(
        f"Base model: value [{level} interval over items]. Arms: mean over seeds "
        f"[{level} interval over seeds; Student t below 10 seeds]. — = not computed."
    )
    out.append("")
    rows = []
    for key in keys:
        base = data["base"]["metrics"].get(key)
        row = [_label(key), _fmt_ci(base["value"], base["ci"]) if base else "—"]
        for name in names:
            m = arms[name]["metrics"].get(key)
            row.append(_fmt_ci(m["mean"], m["ci"]) if m else "—")
        rows.append(row)
    out += _table(["metric", "base", *[f"`{n}`" for n in names]], rows)

    out += ["", "## Change versus the base model", ""]
    out.append(
        f"Mean paired per-item difference arm − base (the arm's item value is its mean over "
        f"seeds) [{level} interval over items]. Perplexity rows give the ratio arm / base of "
        f"the token-weighted perplexity."
    )
    out.append("")
    rows = []
    for key in keys:
        row = [_label(key)]
        for name in names:
            m = arms[name]["metrics"].get(key)
            d = m.get("delta") if m else None
            row.append(_fmt_delta(d) if d else "—")
        rows.append(row)
    out += _table(["metric", *[f"`{n}`" for n in names]], rows)

    out += ["", "## Gates", ""]
    rows = []
    for gate in GATES:
        row = [gate]
        for name in names:
            g = next((x for x in arms[name]["gates"] if x["name"] == gate), None)
            if g is None:
                row.append("—")
                continue
            p = g.get("p_adjusted")
            row.append(g["status"] + (f" (p={p:.2g})" if p is not None else ""))
        rows.append(row)
    out += _table(["gate", *[f"`{n}`" for n in names]], rows)
    out += ["", "### Reasons", ""]
    for name in names:
        out.append(f"- `{name}` — **{arms[name]['decision']}**")
        out += [f"  - {reason}" for reason in arms[name]["reasons"]]

    out += ["", "## Runs", ""]
    status = {(u["seed"], u["arm"]): u for u in data["units"]}
    rows = []
    for seed in cfg["seeds"]:
        rows.append(
            [str(seed)] + [status.get((seed, n), {"status": "missing"})["status"] for n in names]
        )
    out += _table(["seed", *[f"`{n}`" for n in names]], rows)
    errors = [u for u in data["units"] if u["status"] == "failed"]
    if errors:
        out += ["", "Failures (full tracebacks are in the shards and the log):", ""]
        out += [f"- seed {u['seed']}, `{u['arm']}`: {u['error']}" for u in errors]
    out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- schema
def report_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of :attr:`Report.data`."""
    text = resources.files("mmie").joinpath(_SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES[name])


def _validate(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: str
) -> list[str]:
    """A small validator for the subset of JSON Schema the report schema uses."""
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        return _validate(value, root["$defs"][ref.split("/")[-1]], root, path)
    errors: list[str] = []
    if "anyOf" in schema:
        if all(_validate(value, s, root, path) for s in schema["anyOf"]):
            errors.append(f"{path}: matches none of the allowed forms")
        return errors
    types_ = schema.get("type")
    if types_ is not None:
        names = [types_] if isinstance(types_, str) else list(types_)
        if not any(_type_ok(value, t) for t in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required key {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            sub = f"{path}.{key}"
            if key in props:
                errors += _validate(item, props[key], root, sub)
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, Mapping):
                errors += _validate(item, extra, root, sub)
    if isinstance(value, (list, tuple)):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += _validate(item, schema["items"], root, f"{path}[{i}]")
    return errors


def validate_report(data: Mapping[str, Any]) -> None:
    """Check a report document against :func:`report_schema`.

    Uses a small built-in validator for the schema's keywords (type, properties, required,
    additionalProperties, items, enum, const, minimum, maximum, anyOf, $ref), so no extra
    package is needed; the test suite also checks the schema with ``jsonschema``.

    Raises:
        DataError: the document does not conform; the message lists the first problems
            with their JSON paths.
    """

    schema = report_schema()
    errors = _validate(data, schema, schema, "$")
    if errors:
        shown = "; ".join(errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise DataError(f"report does not match its schema: {shown}{more}")


# ----------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "plots need matplotlib: install the plot extra with "
            "`python3 -m pip install 'mmie[plot]'`"
        ) from exc
    return plt


def plot_report(report: Report, directory: str | os.PathLike[str]) -> list[Path]:
    """Draw the report's figures as PNG files (needs the ``plot`` extra).

    * ``metrics.png``: per metric (forget ES, mixed ES, retain perplexity, ...), the base
      value and each arm's mean with its interval over seeds.
    * ``dose_response.png``: for gate arms evaluated at several ``alpha`` values (arms of the
      same kind that differ in alpha), forget ES against alpha with intervals. Skipped when
      no kind has two alphas.

    Args:
        report: the report.
        directory: where to write the files (created if needed).

    Returns:
        The files written.

    Raises:
        ImportError: matplotlib is not installed (the message names the extra).
    """
    plt = _pyplot()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = report.data
    arms = data["arms"]
    names = list(arms)
    keys = [
        k
        for k in ("forget_es", "mixed_es", "romanized_es", "retain_ppl", "forget_ppl", "mia_auc")
        if k in data["base"]["metrics"]
    ]
    written: list[Path] = []
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.4), squeeze=False)
        for ax, key in zip(axes[0], keys):
            base = data["base"]["metrics"][key]
            ax.axhline(base["value"], color="grey", linestyle="--", label="base")
            for i, name in enumerate(names):
                m = arms[name]["metrics"].get(key)
                if m is None:
                    continue
                ci = m["ci"]
                err = (
                    [[max(0.0, m["mean"] - ci["low"])], [max(0.0, ci["high"] - m["mean"])]]
                    if ci is not None
                    else None
                )
                ax.errorbar([i], [m["mean"]], yerr=err, fmt="o", capsize=4)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
            ax.set_title(_label(key), fontsize=9)
            if key.endswith("_ppl"):
                ax.set_yscale("log")
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        path = d / "metrics.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    groups: dict[str, list[tuple[float, str]]] = {}
    for name, arm in arms.items():
        if "forget_es" in arm["metrics"] and any(
            p in arm["kind"] for p in ("sae_gate", "dynamic_gate")
        ):
            groups.setdefault(arm["kind"], []).append((float(arm["config"]["alpha"]), name))
    groups = {k: sorted(v) for k, v in groups.items() if len({a for a, _ in v}) >= 2}
    if groups:
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        for kind, points in groups.items():
            xs = [a for a, _ in points]
            ms = [arms[n]["metrics"]["forget_es"] for _, n in points]
            ys = [m["mean"] for m in ms]
            lo = [max(0.0, m["mean"] - (m["ci"]["low"] if m["ci"] else m["mean"])) for m in ms]
            hi = [max(0.0, (m["ci"]["high"] if m["ci"] else m["mean"]) - m["mean"]) for m in ms]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, label=kind)
        if "forget_es" in data["base"]["metrics"]:
            ax.axhline(
                data["base"]["metrics"]["forget_es"]["value"],
                color="grey",
                linestyle="--",
                label="base",
            )
        ax.set_xlabel("alpha")
        ax.set_ylabel("forget ES")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = d / "dose_response.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
