"""Reports: aggregate shards into intervals, gate verdicts and a readable verdict.

:func:`build_report` turns a :class:`~mmie.study.shards.ShardSet` into a :class:`Report`, a JSON
document (validated against the schema shipped as ``mmie/report_schema.json``) that keeps
the resolved config, the environment, every per-seed and per-item value, intervals, gate
results and decisions. :meth:`Report.to_markdown` renders tables with intervals, the gate
verdicts and a short reading of the result (:mod:`mmie.study.markdown`);
:func:`~mmie.plot_report` (:mod:`mmie.study.plots`) draws figures when the ``plot`` extra
(matplotlib) is installed; the schema and its validator live in :mod:`mmie.study.schema`.

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
from pathlib import Path
from typing import Any

import numpy as np

from mmie._io import atomic_write_json, atomic_write_text
from mmie._version import __version__
from mmie.stats import bootstrap_ci
from mmie.study.config import ArmConfig, ExperimentConfig, SplitConfig
from mmie.study.decisions import Role, judge_arms, split_indices
from mmie.study.markdown import fmt_ci, render_markdown
from mmie.study.records import MetricRecord
from mmie.study.robustness import recoverability
from mmie.study.schema import REPORT_SCHEMA_VERSION
from mmie.study.shards import ShardSet

__all__ = ["Report", "build_report"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- intervals
def _ci_method(config: ExperimentConfig, n: int) -> str:
    if config.ci_method != "auto":
        return config.ci_method
    return "t" if n < 10 else "bca"


def _domain(key: str) -> tuple[float, float]:
    """The range a metric's values (hence their mean) cannot leave."""
    metric = key.split(".", 1)[0]  # "related_es.urdu" -> "related_es"
    if metric in _UNIT_METRICS or metric.endswith(_UNIT_SUFFIXES):
        return (0.0, 1.0)
    if metric.endswith(("_ppl", "_fluency")):
        return (0.0, math.inf)
    return (-math.inf, math.inf)


# Metrics that are means of per-item values in [0, 1] (shares, 0/1 indicators, ES, AUC).
_UNIT_SUFFIXES = (
    "_es",
    "script_mass",
    "_auc",
    "_share",
    "_any",
    "_empty",
    "_degenerate",
    "_sampled",
    "_sampled_worst",
)
_UNIT_METRICS = frozenset({"forget_scripts", "mixed_empty"})


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


def _base_interval(record: MetricRecord, config: ExperimentConfig) -> dict[str, Any] | None:
    """Item-level interval of a base-model record; perplexity on its own scale.

    Perplexity records are intervals of the token-weighted log-perplexity (linearised item
    values, see :meth:`~mmie.MetricRecord.item_values`), exponentiated.
    """
    ci = _interval(record.item_values().tolist(), config)
    if ci is None or record.scale != "log_perplexity":
        return ci
    return {
        **ci,
        "estimate": math.exp(ci["estimate"]),
        "low": math.exp(ci["low"]),
        "high": math.exp(ci["high"]),
    }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


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
        """The arm the summary highlights (the lowest mean forget ES among passing arms), if any."""
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
        return render_markdown(self.data)

    def write(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``report.json`` and ``report.md`` atomically into ``directory``.

        Returns:
            ``{"json": path, "markdown": path}``.
        """
        d = Path(directory)
        json_path = atomic_write_json(d / "report.json", self.data)
        md_path = atomic_write_text(d / "report.md", self.to_markdown())
        return {"json": json_path, "markdown": md_path}


def _records(metrics: Mapping[str, Any], source: str) -> dict[str, MetricRecord]:
    return {
        key: MetricRecord.from_dict(value, source=f"{source}: metrics.{key}")
        for key, value in metrics.items()
    }


@dataclass
class _Units:
    """The (seed, arm) shards of a study, sorted into successes and failures."""

    rows: list[dict[str, Any]]  # one row per expected (seed, arm): status and error
    ok: dict[str, dict[int, dict[str, MetricRecord]]]  # arm -> seed -> records
    failed: dict[str, dict[int, str]]  # arm -> seed -> error
    records: list[dict[str, Any]]  # the raw records of every success, for the report
    timings: dict[str, Any]
    environments: list[dict[str, Any]]


def _error_text(error: Mapping[str, Any] | None) -> str | None:
    return None if error is None else f"{error['type']}: {error['message']}"


def _expected_seeds(arm: ArmConfig, seeds: Sequence[int], canonical: int) -> list[int]:
    return [canonical] if arm.seed_invariant else list(seeds)


def _collect_units(
    shards: ShardSet, arms: Mapping[str, ArmConfig], seeds: Sequence[int], canonical: int
) -> _Units:
    base = shards.base
    units = _Units(
        rows=[],
        ok={name: {} for name in arms},
        failed={name: {} for name in arms},
        records=[],
        timings={"base": base.get("timings", {}), "units": {}, "references": {}},
        environments=[],
    )

    def add_env(env: Any) -> None:
        if env and env not in units.environments:
            units.environments.append(env)

    add_env(base.get("environment"))
    for name, ref in sorted(shards.references.items()):
        add_env(ref.get("environment"))
        units.timings["references"][name] = ref.get("timings", {})
    for seed in seeds:
        for arm, arm_cfg in arms.items():
            if seed not in _expected_seeds(arm_cfg, seeds, canonical):
                continue
            shard = shards.units.get((seed, arm))
            if shard is None:
                units.rows.append({"seed": seed, "arm": arm, "status": "missing", "error": None})
                continue
            add_env(shard.get("environment"))
            units.timings["units"][f"seed{seed}__{arm}"] = shard.get("timings", {})
            error = _error_text(shard.get("error"))
            units.rows.append({"seed": seed, "arm": arm, "status": shard["status"], "error": error})
            if shard["status"] == "ok":
                source = str(shards.sources.get((seed, arm), f"seed {seed}, arm {arm}"))
                units.ok[arm][seed] = _records(shard["metrics"], source)
                units.records.append(
                    {
                        "seed": seed,
                        "arm": arm,
                        "metrics": shard["metrics"],
                        "info": shard.get("info", {}),
                    }
                )
            else:
                units.failed[arm][seed] = error or ""
    return units


def _test_mean(record: MetricRecord, split: SplitConfig, part: str = "test") -> float:
    values = record.item_values()
    selection, test = split_indices(record.items or "", record.n_items, split)
    chosen = values[selection if part == "selection" else test]
    chosen = chosen[np.isfinite(chosen)]
    return float(chosen.mean()) if chosen.size else math.nan


def _arm_metrics(
    seed_records: Mapping[int, Mapping[str, MetricRecord]],
    base: Mapping[str, MetricRecord],
    config: ExperimentConfig,
    *,
    seed_invariant: bool,
) -> dict[str, Any]:
    """Per metric of one arm: mean and interval over seeds, and the paired change."""
    metrics: dict[str, Any] = {}
    for key in sorted({k for rec in seed_records.values() for k in rec}):
        have = {s: rec[key] for s, rec in seed_records.items() if key in rec}
        values = [float(have[s].value) for s in sorted(have)]
        finite = [v for v in values if math.isfinite(v)]
        entry: dict[str, Any] = {
            "mean": float(np.mean(finite)) if finite else None,
            "per_seed": {str(s): _finite(float(have[s].value)) for s in sorted(have)},
            # a seed-invariant arm has no seed variance: no interval, never a zero-width one
            "ci": None if seed_invariant else _interval(finite, config, _domain(key)),
            "delta": None,
        }
        if key in base and len(have) == len(seed_records):
            items = np.mean([have[s].item_values() for s in sorted(have)], axis=0)
            b = base[key].item_values()
            if items.shape == b.shape:
                diff = items - b
                diff = diff[np.isfinite(diff)]
                entry["delta"] = {
                    "mean": _finite(float(diff.mean())) if diff.size else None,
                    "ci": _interval(diff.tolist(), config),
                    "n_items": int(diff.size),
                    "scale": "log_ratio" if base[key].scale == "log_perplexity" else "difference",
                }
        metrics[key] = entry
    return metrics


def _reference_section(
    references: Mapping[str, Mapping[str, MetricRecord]],
    base: Mapping[str, MetricRecord],
    arms: Mapping[str, Mapping[int, Mapping[str, MetricRecord]]],
) -> dict[str, Any]:
    """Reference values, each arm's closeness to the oracle, and PrivLeak vs the retrain."""
    out: dict[str, Any] = {
        "models": {
            name: {key: _finite(float(rec.value)) for key, rec in sorted(recs.items())}
            for name, recs in references.items()
        },
        "closeness_to_oracle": {},
        "privleak": {},
    }
    oracle = references.get("oracle")
    if oracle is not None:
        for arm, seeds in arms.items():
            row: dict[str, Any] = {}
            for key in ("forget_es", "forget_share", "forget_sampled", "forget_script_mass"):
                if key not in oracle or key not in base or not seeds:
                    continue
                vals = [float(r[key].value) for r in seeds.values() if key in r]
                gap = float(oracle[key].value) - float(base[key].value)
                if vals and abs(gap) > 1e-9:
                    row[key] = _finite((float(np.mean(vals)) - float(base[key].value)) / gap)
            if "forget_ppl" in oracle and "forget_ppl" in base:
                vals = [
                    math.log(r["forget_ppl"].value) for r in seeds.values() if "forget_ppl" in r
                ]
                gap = math.log(oracle["forget_ppl"].value) - math.log(base["forget_ppl"].value)
                if vals and abs(gap) > 1e-9:
                    row["forget_ppl"] = _finite(
                        (float(np.mean(vals)) - math.log(base["forget_ppl"].value)) / gap
                    )
            out["closeness_to_oracle"][arm] = row
    retrain = references.get("retrain")
    if retrain is not None and "mia_auc" in retrain:
        ref_auc = float(retrain["mia_auc"].value)
        for arm, seeds in {"base": {0: base}, **arms}.items():
            vals = [float(r["mia_auc"].value) for r in seeds.values() if "mia_auc" in r]
            if vals and ref_auc > 0:
                out["privleak"][arm] = _finite((float(np.mean(vals)) - ref_auc) / ref_auc)
    return out


def build_report(shards: ShardSet) -> Report:
    """Aggregate a study's shards into a :class:`Report`.

    The best arm is the arm with the lowest mean forget extraction strength *on the
    selection items* among those whose decision is ``pass``, or among all arms with a
    successful seed when none passes; control arms and references are never candidates.

    Args:
        shards: the base shard, the (seed, arm) shards and the reference shards.

    Returns:
        The report; it depends on the shards only (not on how or when they were computed).

    Raises:
        DataError: a malformed metric record, or per-item values that do not pair up between
            the base model and an arm.
    """
    base = shards.base
    config = shards.config
    base_metrics = _records(base["metrics"], str(shards.sources.get(("base", ""), "base")))
    arm_configs: dict[str, ArmConfig] = {a.name: a for a in config.all_arms}
    for (_seed, arm), unit in sorted(shards.units.items()):
        if arm not in arm_configs:
            arm_configs[arm] = ArmConfig.from_dict(unit["arm_config"])
    seeds = sorted(set(config.seeds) | {s for s, _ in shards.units})
    units = _collect_units(shards, arm_configs, seeds, config.seeds[0])
    references = {
        name: _records(ref["metrics"], str(shards.sources.get(("reference", name), name)))
        for name, ref in sorted(shards.references.items())
    }
    roles: dict[str, Role] = {
        name: "control" if arm.control is not None else "arm" for name, arm in arm_configs.items()
    }
    judged: dict[str, Mapping[int, Mapping[str, MetricRecord]]] = dict(units.ok)
    for name, recs in references.items():
        judged[f"reference.{name}"] = {0: recs}
        roles[f"reference.{name}"] = "reference"
    decisions = judge_arms(
        base_metrics,
        judged,
        config.gates,
        computed=config.metrics,
        split=config.split,
        mixed=config.data.mixed,
        related=config.data.related,
        roles=roles,
        references=references,
        failed=units.failed,
    )
    base_section = {
        key: {
            "value": _finite(rec.value),
            "ci": _base_interval(rec, config),
            "n_items": rec.n_items,
        }
        for key, rec in sorted(base_metrics.items())
    }
    arms_section: dict[str, Any] = {}
    for name, arm_cfg in arm_configs.items():
        ok, failed = units.ok[name], units.failed[name]
        expected = _expected_seeds(arm_cfg, seeds, config.seeds[0])
        decision = decisions[name]
        arms_section[name] = {
            "kind": arm_cfg.kind,
            "role": roles[name],
            "config": arm_cfg.to_dict(),
            "seed_invariant": arm_cfg.seed_invariant,
            "seeds_ok": sorted(ok),
            "seeds_failed": sorted(failed),
            "seeds_missing": [s for s in expected if s not in ok and s not in failed],
            "metrics": _arm_metrics(
                ok, base_metrics, config, seed_invariant=arm_cfg.seed_invariant
            ),
            "selection_forget_es": _selection_es(ok, config),
            "gates": [g.to_dict() for g in decision.gates],
            "decision": decision.decision,
            "label": decision.label,
            "reasons": list(decision.reasons),
        }
    references_section = _reference_section(references, base_metrics, units.ok)
    references_section["decisions"] = {
        name: {
            "decision": decisions[f"reference.{name}"].decision,
            "label": decisions[f"reference.{name}"].label,
            "gates": [g.to_dict() for g in decisions[f"reference.{name}"].gates],
            "reasons": list(decisions[f"reference.{name}"].reasons),
            "model": shards.references[name].get("model"),
        }
        for name in references
    }
    recover = _recoverability_section(shards, config, arms_section)
    data: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "mmie_version": __version__,
        "name": config.name,
        "fingerprint": base["fingerprint"],
        "config": {
            **config.to_dict(),
            "seeds": seeds,
            "arms": [a.to_dict() for a in arm_configs.values() if a.control is None],
        },
        "environment": units.environments,
        "layers": list(base.get("layers", [])),
        "items": base.get("items", {}),
        "units": units.rows,
        "base": {"metrics": base_section, "per_item": base["metrics"]},
        "arms": arms_section,
        "references": references_section,
        "records": units.records,
        "summary": {},
        "timings": units.timings,
    }
    if recover is not None:
        data["recoverability"] = recover
    data["summary"] = _summary(data, config)
    return Report(data=data)


def _recoverability_section(
    shards: ShardSet, config: ExperimentConfig, arms: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The recoverability verdicts (:func:`mmie.study.robustness.recoverability`): every
    attacked arm (each attacked seed; an arm is hidden if any seed is), the references
    and the raw attack results of every model (for tables and plots)."""
    if "robustness" not in config.metrics:
        return None
    r = config.robustness
    base = shards.base.get("robustness") or None
    refs = {n: sh["robustness"] for n, sh in shards.references.items() if sh.get("robustness")}
    per_arm: dict[str, dict[int, Any]] = {}
    for (seed, arm), unit in sorted(shards.units.items()):
        if arm in arms and unit.get("status") == "ok" and unit.get("robustness"):
            per_arm.setdefault(arm, {})[seed] = unit["robustness"]
    models = {f"{arm}@{seed}": res for arm, seeds in per_arm.items() for seed, res in seeds.items()}
    models.update({f"reference.{n}": res for n, res in refs.items()})
    judged = recoverability(base, refs, models, margin=r.margin, attacks=r.attacks)
    out_arms: dict[str, Any] = {}
    for arm, seeds in per_arm.items():
        verdicts = {seed: judged["models"][f"{arm}@{seed}"] for seed in seeds}
        hidden = [s for s, v in verdicts.items() if v["verdict"] == "hidden"]
        if hidden:
            verdict, reason = "hidden", f"seed {hidden[0]}: {verdicts[hidden[0]]['reason']}"
        elif all(v["verdict"] == "removed" for v in verdicts.values()):
            verdict, reason = "removed", next(iter(verdicts.values()))["reason"]
        else:
            verdict = "not evaluated"
            reason = next(v["reason"] for v in verdicts.values() if v["verdict"] == verdict)
        out_arms[arm] = {
            "verdict": verdict,
            "reason": reason,
            "role": arms[arm]["role"],
            "seeds": {str(s): v for s, v in verdicts.items()},
        }
    raw = {"base": base} if base else {}
    raw.update({f"reference.{n}": res for n, res in refs.items()})
    raw.update({f"{arm}": seeds[min(seeds)] for arm, seeds in per_arm.items()})
    return {
        "reference": judged["reference"],
        "margin": r.margin,
        "attacks": list(r.attacks),
        "arms": out_arms,
        "references": {
            n: judged["models"][f"reference.{n}"]
            for n in refs
            if f"reference.{n}" in judged["models"]
        },
        "results": raw,
    }


def _selection_es(
    seeds: Mapping[int, Mapping[str, MetricRecord]], config: ExperimentConfig
) -> float | None:
    """The arm's mean forget ES over seeds on the *selection* items (for choosing only)."""
    vals = [
        _test_mean(r["forget_es"], config.split, "selection")
        for r in seeds.values()
        if "forget_es" in r
    ]
    return _finite(float(np.mean(vals))) if vals else None


def _summary(data: Mapping[str, Any], config: ExperimentConfig) -> dict[str, Any]:
    arms = data["arms"]
    real = {n: a for n, a in arms.items() if a["role"] == "arm"}
    controls = {n: a for n, a in arms.items() if a["role"] == "control"}
    candidates = [
        n for n, a in real.items() if a["seeds_ok"] and a["selection_forget_es"] is not None
    ]
    passing = [n for n in candidates if real[n]["decision"] == "pass"]
    pool = passing or candidates
    best = min(pool, key=lambda n: real[n]["selection_forget_es"]) if pool else None
    counts = {
        d: sum(a["decision"] == d for a in real.values())
        for d in ("pass", "fail", "incomplete", "failed")
    }
    passed_controls = {
        n: [g["name"] for g in a["gates"] if g["status"] == "pass"]
        for n, a in controls.items()
        if a["seeds_ok"]
    }
    uncalibrated = sorted(
        n for n, a in controls.items() if a["seeds_ok"] and a["decision"] == "pass"
    )
    oracle = data["references"]["decisions"].get("oracle")
    summary: dict[str, Any] = {
        "best_arm": best,
        "best_arm_passed": bool(passing),
        "decision_counts": counts,
        "labels": {n: a["label"] for n, a in real.items()},
        "calibrated": not uncalibrated and bool(controls),
        "controls_passing_every_gate": uncalibrated,
        "control_gates_passed": passed_controls,
        "oracle_decision": None if oracle is None else oracle["decision"],
        "n_units": len(data["units"]),
        "n_units_failed": sum(u["status"] == "failed" for u in data["units"]),
        "n_units_missing": sum(u["status"] == "missing" for u in data["units"]),
        "text": "",
    }
    summary["text"] = _reading(data, summary, config)
    return summary


def _recoverability_reading(recover: Mapping[str, Any]) -> str:
    ref = recover["reference"]
    real = {n: a for n, a in recover["arms"].items() if a["role"] == "arm"}
    if ref is None:
        return (
            "Recoverability: the attacks ran, but without a reference model removal cannot "
            "be claimed (the curves are shown against the base model)."
        )
    groups = {
        v: [f"`{n}`" for n, a in real.items() if a["verdict"] == v]
        for v in ("removed", "hidden", "not evaluated")
    }
    parts = [f"{v}: {', '.join(names)}" for v, names in groups.items() if names]
    others = [
        f"the {name}: {v['verdict']}"
        for name, v in sorted(recover["references"].items())
        if name != ref and v.get("verdict")
    ]
    return (
        f"Recoverability against the {ref} under the same attacks — "
        + ("; ".join(parts) if parts else "no arm was attacked")
        + (f" ({'; '.join(others)})." if others else ".")
    )


def _reading(data: Mapping[str, Any], summary: Mapping[str, Any], config: ExperimentConfig) -> str:
    lines: list[str] = []
    target = config.target
    if summary["controls_passing_every_gate"]:
        lines.append(
            "**The gates are not calibrated for this study:** the control arm(s) "
            + ", ".join(f"`{n}`" for n in summary["controls_passing_every_gate"])
            + " pass every gate although they cannot have unlearned anything, so no verdict "
            "below can be trusted."
        )
    elif not summary["calibrated"]:
        lines.append("No control arm ran, so the gates' calibration is unknown.")
    base = data["base"]["metrics"].get("forget_es")
    best = summary["best_arm"]
    level = f"{100 * (1 - config.ci_alpha):.0f}%"
    if base is None:
        lines.append("Forget extraction strength was not computed, so no arm can be judged on it.")
    else:
        lines.append(
            f"The base model continues held-out target-language (`{target}`) prompts in the "
            f"target language with extraction strength {fmt_ci(base['value'], base['ci'])} "
            f"({level} interval over {base['n_items']} prompts)."
        )
    oracle = summary["oracle_decision"]
    if oracle is not None:
        failing = [
            g["name"]
            for g in data.get("references", {})
            .get("decisions", {})
            .get("oracle", {})
            .get("gates", [])
            if g["status"] == "fail"
        ]
        lines.append(
            f"The reference that never saw the target language is judged `{oracle}`"
            + (
                f" (failing {', '.join(failing)}: the gold standard itself is not shown to "
                "pass it at this study's size, so an arm failing it may lack power rather "
                "than fail; see the gate calibration table)."
                if failing
                else "."
            )
        )
    if best is not None and base is not None:
        arm = data["arms"][best]
        m = arm["metrics"]["forget_es"]
        gate = next((g for g in arm["gates"] if g["name"] == "forget_es"), None)
        n = len(arm["seeds_ok"])
        lead = (
            "Of the arms that pass every gate, the lowest"
            if summary["best_arm_passed"]
            else "No arm passes every gate; the lowest"
        )
        if arm["seed_invariant"]:
            spread = "; one run, no seed variance"
        elif m["ci"] is not None:
            spread = f", {level} interval over {n} seeds"
        else:
            spread = f", {n} seed{'s' if n != 1 else ''}"
        lines.append(
            f"{lead} forget extraction strength (chosen on the selection prompts) is "
            f"`{best}`'s: {fmt_ci(m['mean'], m['ci'])} (mean over seeds{spread}); it is "
            f"labelled **{arm['label']}**."
        )
        covers = m["ci"] is not None and m["ci"]["high"] >= base["value"]
        if gate is not None and gate["status"] == "pass" and not covers:
            lines.append(
                f"Its forget-ES reduction is shown in every seed on the test prompts "
                f"({gate['test']}, p_adj = {gate['p_adjusted']:.3g})."
            )
        elif gate is not None and gate["status"] == "pass":
            lines.append(
                "Its forget-ES reduction passes on the test prompts in every seed, but the "
                "interval over seeds still reaches the base value: the seeds disagree too "
                "much to call the effect measurable at the level of training runs."
            )
        elif gate is not None and gate["status"] == "not evaluated":
            lines.append(f"Its forget-ES gate is not evaluated: {gate['reason']}")
        else:
            lines.append(
                f"Its forget-ES reduction is not shown at level {config.gates.alpha} on the "
                "test prompts: this study shows no measurable effect."
            )
    counts = summary["decision_counts"]
    lines.append(
        f"Decisions: {counts['pass']} arm(s) pass every gate, {counts['fail']} fail at least one, "
        f"{counts['incomplete']} incomplete (a gate not evaluated), {counts['failed']} failed to run."
    )
    suppressed = sorted(n for n, label in summary["labels"].items() if label == "suppression")
    if suppressed:
        lines.append(
            "Suppression, not unlearning: "
            + ", ".join(f"`{n}`" for n in suppressed)
            + " avoid the target in their outputs while the teacher-forced knowledge gate fails."
        )
    recover = data.get("recoverability")
    if recover is not None:
        lines.append(_recoverability_reading(recover))
    if summary["n_units_failed"] or summary["n_units_missing"]:
        lines.append(
            f"{summary['n_units_failed']} (seed, arm) run(s) failed and "
            f"{summary['n_units_missing']} are missing; see the Runs section."
        )
    return " ".join(lines)
