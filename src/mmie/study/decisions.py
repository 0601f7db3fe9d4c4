"""Decision gates: did an arm erase the target language without collateral damage?

Each gate compares an arm with the base model on **per-item values** (one value per prompt,
text or forget example; the arm's value of an item is its mean over the successful seeds),
paired item by item, with :func:`mmie.stats.paired_permutation_test`:

==================  ==========================================================  ==============
gate                passes when                                                 test
==================  ==========================================================  ==============
``forget_es``       Hindi extraction strength on held-out Hindi prompts drops   one-sided,
                    significantly and by at least ``min_forget_reduction`` of   superiority
                    the base value
``retain_ppl``      retain (English) perplexity grows by less than              non-inferiority
                    ``retain_ppl_ratio`` (log scale, see :meth:`~mmie.study.records.MetricRecord.item_values`)
``mixed_es``        Hindi ES on mixed/adversarial prompts drops significantly;  superiority or
                    if the base is already at or below ``es_floor`` it must     non-inferiority
                    stay within ``es_floor`` of the base
``leakage``         for every related language, perplexity grows by less than   non-inferiority
                    ``related_ppl_ratio`` and Hindi ES rises by less than       (all must pass)
                    ``leakage_es_margin``
``redistribution``  romanised-Hindi ES rises by less than                       non-inferiority
                    ``redistribution_margin``
``mia``             the membership-inference AUC lies within ``0.5 ±            two one-sided
                    mia_margin`` (two one-sided tests on per-member AUC         tests (TOST)
                    contributions)
==================  ==========================================================  ==============

A non-inferiority test with margin ``m`` tests ``mean(arm − base) < m`` one-sidedly: the
arm passes only when the data *show* the change is below the margin, so too few items make
a gate fail rather than pass. p-values are Holm-adjusted across arms within each gate
(``GateConfig.correction``); an arm passes when every gate passes (an intersection-union
test, which needs no correction across gates). A gate whose metric was not computed, or whose
base value leaves nothing to test, is ``"not evaluated"``: never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from mmie.errors import DataError
from mmie.stats import holm_bonferroni, paired_permutation_test
from mmie.study.config import GateConfig
from mmie.study.records import MetricRecord

__all__ = [
    "GATES",
    "ArmDecision",
    "GateResult",
    "decide",
    "judge_arms",
]

#: Gate names in report order; each gate needs the metric group of the same name.
GATES: tuple[str, ...] = ("forget_es", "retain_ppl", "mixed_es", "leakage", "redistribution", "mia")

GateStatus = Literal["pass", "fail", "not evaluated"]
Decision = Literal["pass", "fail", "incomplete", "failed"]

MetricRecords = Mapping[str, MetricRecord]  # record key -> record


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate for one arm.

    Attributes:
        name: the gate (one of ``GATES``).
        status: ``"pass"``, ``"fail"`` or ``"not evaluated"``.
        reason: one sentence with the numbers behind the verdict.
        test: the test used (``"superiority"``, ``"non-inferiority"``, ``"tost"``), if any.
        base_value: the base model's value of the gated metric.
        arm_value: the arm's value (mean over seeds).
        statistic: mean paired difference (arm − base) of the per-item values.
        threshold: the margin or required reduction.
        p_value: the raw p-value (for several sub-tests, the largest).
        p_adjusted: after the correction across arms.
        n_items: number of paired items.
        details: sub-test results (per related language, interval bounds, ...).
    """

    name: str
    status: GateStatus
    reason: str
    test: str | None = None
    base_value: float | None = None
    arm_value: float | None = None
    statistic: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    n_items: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class ArmDecision:
    """The decision for one arm.

    Attributes:
        arm: the arm name.
        decision: ``"pass"`` (every gate passed), ``"fail"`` (a gate failed),
            ``"incomplete"`` (no gate failed but some were not evaluated) or ``"failed"``
            (no seed of the arm ran successfully).
        reasons: one line per gate (and per failed seed).
        gates: the gate results.
    """

    arm: str
    decision: Decision
    reasons: tuple[str, ...]
    gates: tuple[GateResult, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {
            "arm": self.arm,
            "decision": self.decision,
            "reasons": list(self.reasons),
            "gates": [g.to_dict() for g in self.gates],
        }


@dataclass
class _Pending:
    """A gate whose p-value still has to be adjusted across arms."""

    result: GateResult
    describe: str  # "forget ES 0.62 → 0.10"
    extra_ok: bool = True
    extra_reason: str = ""


def _items(records: MetricRecords, key: str) -> np.ndarray | None:
    record = records.get(key)
    if record is None:
        return None
    return record.item_values()


def _arm_items(seed_records: Sequence[MetricRecords], key: str) -> np.ndarray | None:
    """Per-item mean over seeds; ``None`` if any seed lacks the metric."""
    rows = [_items(r, key) for r in seed_records]
    if not rows or any(r is None for r in rows):
        return None
    sizes = {r.size for r in rows if r is not None}
    if len(sizes) != 1:
        raise DataError(f"metric {key!r} has different item counts across seeds: {sorted(sizes)}")
    return np.mean(np.stack([r for r in rows if r is not None]), axis=0)


def _value(records: MetricRecords, key: str) -> float:
    return float(records[key].value)


def _arm_value(seed_records: Sequence[MetricRecords], key: str) -> float:
    return float(np.mean([_value(r, key) for r in seed_records]))


def _not_evaluated(name: str, reason: str) -> GateResult:
    return GateResult(name=name, status="not evaluated", reason=reason)


def _test(
    arm: np.ndarray,
    base: np.ndarray,
    *,
    margin: float,
    alternative: Literal["less", "greater"],
    cfg: GateConfig,
) -> float:
    """p-value of ``mean(arm - base) < margin`` (or ``> margin`` for ``greater``)."""
    return paired_permutation_test(
        arm - margin, base, alternative=alternative, n_permutations=cfg.n_permutations, seed=0
    ).p_value


def _paired(
    base: MetricRecords, seeds: Sequence[MetricRecords], key: str, name: str
) -> tuple[np.ndarray, np.ndarray] | GateResult:
    b = _items(base, key)
    a = _arm_items(seeds, key)
    if b is None:
        return _not_evaluated(name, f"the base model has no {key!r} values")
    if a is None:
        return _not_evaluated(name, f"{key!r} was not computed for every successful seed")
    if a.size != b.size:
        raise DataError(f"{key!r}: the arm has {a.size} items but the base {b.size}")
    if a.size < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return _not_evaluated(name, f"{key!r} has fewer than 2 finite items")
    return a, b


def _es_gate(
    name: str,
    key: str,
    base: MetricRecords,
    seeds: Sequence[MetricRecords],
    cfg: GateConfig,
    *,
    label: str,
    floor_rule: Literal["not evaluated", "non-inferiority"],
) -> GateResult | _Pending:
    pair = _paired(base, seeds, key, name)
    if isinstance(pair, GateResult):
        return pair
    a, b = pair
    b_mean, a_mean = float(b.mean()), float(a.mean())
    describe = f"{label} {b_mean:.3f} → {a_mean:.3f}"
    common: dict[str, Any] = {
        "base_value": b_mean,
        "arm_value": a_mean,
        "statistic": a_mean - b_mean,
    }
    if b_mean <= cfg.es_floor:
        if floor_rule == "not evaluated":
            return GateResult(
                name=name,
                status="not evaluated",
                reason=(
                    f"{label} of the base model is {b_mean:.3f} <= es_floor={cfg.es_floor}: "
                    "there is nothing to remove"
                ),
                n_items=a.size,
                **common,
            )
        p = _test(a, b, margin=cfg.es_floor, alternative="less", cfg=cfg)
        return _Pending(
            GateResult(
                name=name,
                status="fail",
                reason="",
                test="non-inferiority",
                threshold=cfg.es_floor,
                p_value=p,
                n_items=a.size,
                details={"base_below_floor": True},
                **common,
            ),
            describe=f"{describe} (base at or below es_floor; must stay within {cfg.es_floor})",
        )
    p = _test(a, b, margin=0.0, alternative="less", cfg=cfg)
    reduction = (b_mean - a_mean) / b_mean
    enough = reduction >= cfg.min_forget_reduction
    return _Pending(
        GateResult(
            name=name,
            status="fail",
            reason="",
            test="superiority",
            threshold=cfg.min_forget_reduction,
            p_value=p,
            n_items=a.size,
            details={"relative_reduction": reduction},
            **common,
        ),
        describe=f"{describe} ({-100 * reduction:+.0f}%)",
        extra_ok=enough,
        extra_reason=(
            f"the reduction {100 * reduction:.0f}% is below the required "
            f"{100 * cfg.min_forget_reduction:.0f}%"
        ),
    )


def _ppl_subtest(
    key: str, base: MetricRecords, seeds: Sequence[MetricRecords], ratio: float, cfg: GateConfig
) -> dict[str, Any] | GateResult:
    pair = _paired(base, seeds, key, key)
    if isinstance(pair, GateResult):
        return pair
    a, b = pair  # linearised log-perplexity values (see item_values)
    p = _test(a, b, margin=math.log(ratio), alternative="less", cfg=cfg)
    base_ppl, arm_ppl = _value(base, key), _arm_value(seeds, key)
    return {
        "metric": key,
        "base": base_ppl,
        "arm": arm_ppl,
        "ratio": arm_ppl / base_ppl,
        "threshold": ratio,
        "log_ratio": float((a - b).mean()),
        "p_value": p,
        "n_items": int(a.size),
    }


def _retain_gate(
    base: MetricRecords, seeds: Sequence[MetricRecords], cfg: GateConfig
) -> GateResult | _Pending:
    sub = _ppl_subtest("retain_ppl", base, seeds, cfg.retain_ppl_ratio, cfg)
    if isinstance(sub, GateResult):
        return replace(sub, name="retain_ppl")
    return _Pending(
        GateResult(
            name="retain_ppl",
            status="fail",
            reason="",
            test="non-inferiority",
            base_value=sub["base"],
            arm_value=sub["arm"],
            statistic=sub["log_ratio"],
            threshold=cfg.retain_ppl_ratio,
            p_value=sub["p_value"],
            n_items=sub["n_items"],
            details={"ratio": sub["ratio"]},
        ),
        describe=(
            f"retain perplexity {sub['base']:.3g} → {sub['arm']:.3g} "
            f"(x{sub['ratio']:.3f}, limit x{cfg.retain_ppl_ratio})"
        ),
    )


def _leakage_gate(
    base: MetricRecords,
    seeds: Sequence[MetricRecords],
    cfg: GateConfig,
    related: Sequence[str],
) -> GateResult | _Pending:
    if not related:
        return _not_evaluated("leakage", "no related languages are configured")
    subs: dict[str, Any] = {}
    for lang in related:
        ppl = _ppl_subtest(f"related_ppl.{lang}", base, seeds, cfg.related_ppl_ratio, cfg)
        if isinstance(ppl, GateResult):
            return replace(ppl, name="leakage")
        pair = _paired(base, seeds, f"related_es.{lang}", "leakage")
        if isinstance(pair, GateResult):
            return pair
        a, b = pair
        p_es = _test(a, b, margin=cfg.leakage_es_margin, alternative="less", cfg=cfg)
        subs[lang] = {
            "ppl": ppl,
            "es": {
                "base": float(b.mean()),
                "arm": float(a.mean()),
                "threshold": cfg.leakage_es_margin,
                "p_value": p_es,
                "n_items": int(a.size),
            },
        }
    p = max(max(s["ppl"]["p_value"], s["es"]["p_value"]) for s in subs.values())
    worst_ratio = max(s["ppl"]["ratio"] for s in subs.values())
    worst_es = max(s["es"]["arm"] - s["es"]["base"] for s in subs.values())
    return _Pending(
        GateResult(
            name="leakage",
            status="fail",
            reason="",
            test="non-inferiority",
            statistic=worst_es,
            threshold=cfg.related_ppl_ratio,
            p_value=p,
            details=subs,
        ),
        describe=(
            f"related languages ({', '.join(related)}): worst perplexity x{worst_ratio:.3f} "
            f"(limit x{cfg.related_ppl_ratio}), worst Hindi ES change {worst_es:+.3f} "
            f"(limit +{cfg.leakage_es_margin})"
        ),
    )


def _redistribution_gate(
    base: MetricRecords, seeds: Sequence[MetricRecords], cfg: GateConfig
) -> GateResult | _Pending:
    pair = _paired(base, seeds, "romanized_es", "redistribution")
    if isinstance(pair, GateResult):
        return pair
    a, b = pair
    p = _test(a, b, margin=cfg.redistribution_margin, alternative="less", cfg=cfg)
    b_mean, a_mean = float(b.mean()), float(a.mean())
    return _Pending(
        GateResult(
            name="redistribution",
            status="fail",
            reason="",
            test="non-inferiority",
            base_value=b_mean,
            arm_value=a_mean,
            statistic=a_mean - b_mean,
            threshold=cfg.redistribution_margin,
            p_value=p,
            n_items=a.size,
        ),
        describe=(
            f"romanised-Hindi ES {b_mean:.3f} → {a_mean:.3f} (limit +{cfg.redistribution_margin})"
        ),
    )


def _mia_gate(
    base: MetricRecords, seeds: Sequence[MetricRecords], cfg: GateConfig
) -> GateResult | _Pending:
    u = _arm_items(seeds, "mia_auc")
    if u is None:
        return _not_evaluated("mia", "'mia_auc' was not computed for every successful seed")
    if u.size < 2:
        return _not_evaluated("mia", "fewer than 2 members were scored")
    lo, hi = 0.5 - cfg.mia_margin, 0.5 + cfg.mia_margin
    zeros = np.zeros_like(u)
    p_low = paired_permutation_test(
        u - lo, zeros, alternative="greater", n_permutations=cfg.n_permutations, seed=0
    ).p_value
    p_high = paired_permutation_test(
        u - hi, zeros, alternative="less", n_permutations=cfg.n_permutations, seed=0
    ).p_value
    auc = _arm_value(seeds, "mia_auc")
    base_auc = _value(base, "mia_auc") if "mia_auc" in base else None
    return _Pending(
        GateResult(
            name="mia",
            status="fail",
            reason="",
            test="tost",
            base_value=base_auc,
            arm_value=auc,
            statistic=float(u.mean()) - 0.5,
            threshold=cfg.mia_margin,
            p_value=max(p_low, p_high),
            n_items=u.size,
            details={"p_lower": p_low, "p_upper": p_high, "band": [lo, hi]},
        ),
        describe=(
            "MIA AUC "
            + (f"{base_auc:.3f} → " if base_auc is not None else "")
            + f"{auc:.3f} (band 0.5 ± {cfg.mia_margin})"
        ),
    )


def _gates_for_arm(
    base: MetricRecords,
    seeds: Sequence[MetricRecords],
    cfg: GateConfig,
    computed: Sequence[str],
    related: Sequence[str],
) -> dict[str, GateResult | _Pending]:
    out: dict[str, GateResult | _Pending] = {}
    for name in GATES:
        if name not in computed:
            out[name] = _not_evaluated(name, f"metric group {name!r} was not computed")
            continue
        if not seeds:
            out[name] = _not_evaluated(name, "no successful seed")
            continue
        if name == "forget_es":
            out[name] = _es_gate(
                name, "forget_es", base, seeds, cfg, label="forget ES", floor_rule="not evaluated"
            )
        elif name == "mixed_es":
            out[name] = _es_gate(
                name, "mixed_es", base, seeds, cfg, label="mixed-prompt ES",
                floor_rule="non-inferiority",
            )  # fmt: skip
        elif name == "retain_ppl":
            out[name] = _retain_gate(base, seeds, cfg)
        elif name == "leakage":
            out[name] = _leakage_gate(base, seeds, cfg, related)
        elif name == "redistribution":
            out[name] = _redistribution_gate(base, seeds, cfg)
        else:
            out[name] = _mia_gate(base, seeds, cfg)
    return out


def _finalise(pending: _Pending, p_adj: float, cfg: GateConfig) -> GateResult:
    r = pending.result
    significant = p_adj <= cfg.alpha
    p_text = f"p_adj={p_adj:.3g}" if cfg.correction != "none" else f"p={p_adj:.3g}"
    if significant and pending.extra_ok:
        return replace(
            r,
            status="pass",
            p_adjusted=p_adj,
            reason=f"{pending.describe}: {p_text} <= {cfg.alpha}",
        )
    why = pending.extra_reason if significant else f"not shown at level {cfg.alpha} ({p_text})"
    return replace(r, status="fail", p_adjusted=p_adj, reason=f"{pending.describe}: {why}")


def decide(
    arm: str, gates: Sequence[GateResult], failed_seeds: Mapping[int, str], *, n_ok: int
) -> ArmDecision:
    """Combine gate verdicts into an arm decision (see :class:`ArmDecision`).

    Args:
        arm: the arm name.
        gates: its gate results.
        failed_seeds: seed -> error message of the seeds that failed.
        n_ok: number of seeds that ran successfully.

    Returns:
        The :class:`ArmDecision`.
    """
    reasons = [f"{g.name}: {g.status} — {g.reason}" for g in gates]
    reasons += [f"seed {s} failed: {msg}" for s, msg in sorted(failed_seeds.items())]
    if n_ok == 0 and failed_seeds:
        decision: Decision = "failed"
    elif any(g.status == "fail" for g in gates):
        decision = "fail"
    elif any(g.status == "not evaluated" for g in gates):
        decision = "incomplete"
    else:
        decision = "pass"
    return ArmDecision(arm=arm, decision=decision, reasons=tuple(reasons), gates=tuple(gates))


def judge_arms(
    base: MetricRecords,
    arms: Mapping[str, Mapping[int, MetricRecords]],
    cfg: GateConfig,
    *,
    computed: Sequence[str],
    related: Sequence[str] = (),
    failed: Mapping[str, Mapping[int, str]] | None = None,
) -> dict[str, ArmDecision]:
    """Run every gate for every arm and decide.

    Args:
        base: the base model's metric records.
        arms: arm name -> seed -> metric records of the successful seeds.
        cfg: gate thresholds.
        computed: the metric groups the study computed (others are "not evaluated").
        related: the related languages of the leakage gate.
        failed: arm name -> seed -> error message of failed seeds.

    Returns:
        Arm name -> :class:`ArmDecision`, in the order of ``arms``.

    Raises:
        DataError: per-item values that do not pair up (different item counts).
    """
    failed = failed or {}
    per_arm = {
        name: _gates_for_arm(base, [seeds[s] for s in sorted(seeds)], cfg, computed, related)
        for name, seeds in arms.items()
    }
    adjusted: dict[tuple[str, str], float] = {}
    for gate in GATES:
        keys = [a for a in per_arm if isinstance(per_arm[a][gate], _Pending)]
        raw = [float(per_arm[a][gate].result.p_value or 0.0) for a in keys]  # type: ignore[union-attr]
        if not keys:
            continue
        adj = holm_bonferroni(raw) if cfg.correction == "holm" else np.asarray(raw)
        for a, p in zip(keys, adj.tolist()):
            adjusted[(a, gate)] = float(p)
    decisions: dict[str, ArmDecision] = {}
    for name, gates in per_arm.items():
        final = [
            _finalise(g, adjusted[(name, gate)], cfg) if isinstance(g, _Pending) else g
            for gate, g in gates.items()
        ]
        decisions[name] = decide(name, final, failed.get(name, {}), n_ok=len(arms[name]))
    return decisions
