"""Decision gates: did an arm erase the target language, not just hide it, without damage?

Each gate compares an arm with the base model on **per-item values** paired item by item,
with a test that is valid for the data it gets (docs/methods.md, "Gates"):

==================  =============================================================  ==========
gate                passes when                                                    side
==================  =============================================================  ==========
``forget_es``       greedy extraction strength on held-out forget prompts drops     forget
                    by at least ``min_forget_reduction`` of the base value (an
                    empty continuation gets no credit: it counts as the base's)
``sampled``         the share of target-dominated samples (N per prompt) drops      forget
                    by at least ``min_forget_reduction``
``knowledge``       teacher-forced: P(next letter is target) drops by at least      forget
                    ``min_script_mass_reduction`` **and** forget perplexity grows
                    by at least ``min_forget_ppl_ratio``
``mixed_es``        per mixed prompt set that elicits the target on the base         forget
                    model, its ES drops significantly
``mia``             membership-inference AUC close to the retrained reference's     forget
                    (or, without one, inside ``0.5 ± mia_margin``); DeLong
``retain_ppl``      retain perplexity grows by less than ``retain_ppl_ratio``       retain
``english``         on English prompts, with the arm's processors active: empty /    retain
                    degenerate output, target-script leakage and the base
                    model's perplexity of the output stay within their margins
``leakage``         per related language: perplexity and target ES on its prompts   retain
                    stay within their margins
``redistribution``  on forget prompts: romanised-target ES and Arabic-script         retain
                    output rise by less than ``redistribution_margin``
==================  =============================================================  ==========

**Valid tests.** Bounded metrics (ES, shares, script mass, 0/1 outcomes, sampled fractions)
are tested with one-sided bounds that hold for *any* distribution on the known range
(``GateConfig.bound``: a betting bound, empirical Bernstein or Hoeffding), never with a
sign-flip test that assumes symmetric differences (it falsely passed 12-45% of the time on
zero-inflated ES differences). A relative requirement ("at least 25% lower") is a margin
test, ``H0: mean(arm) >= (1 - r) mean(base)``. Continuous log-perplexity differences use a
one-sided paired sign-flip permutation test. AUCs use DeLong's variance from both classes.

**Seeds are training runs.** An arm passes a gate only if *every* seed passes its
item-level test: the gate's p-value is the largest over seeds (an intersection-union test,
valid whatever the seeds' correlation). With 3 seeds this supports "the method worked in
each of these runs", not a population claim about the method. Seed-invariant arms (no
training, no SAE: the scrubber, the controls but noise) are one run, labelled "no seed
variance".

**Not evaluated.** A gate whose input cannot show its effect (the base model at or below
``es_floor`` on the prompts; the base MIA already as close to the reference as the margin;
a metric not computed) is "not evaluated" with the reason, never "pass", and prints no
p-value. An arm with a not-evaluated gate and no failed gate is "incomplete".

**Selection apart from testing.** Every item list is split once (``ExperimentConfig.split``)
into a selection part and a test part; gates use only the test part, and the report's best
arm is chosen on the selection part.

p-values are Holm-adjusted across the study's arms within each gate
(``GateConfig.correction``); control arms and reference models are judged at the
unadjusted level, the setting most favourable to them. An arm passes when every gate passes
(an intersection-union test, which needs no correction across gates).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy.special import ndtri

from mmie.errors import DataError
from mmie.gate_stats import (
    auc_difference_test,
    auc_equivalence_test,
    log_ratio_test,
    noninferiority_test,
    paired_proportions_test,
    relative_reduction_test,
)
from mmie.stats import holm_bonferroni
from mmie.study.config import GateConfig, SplitConfig
from mmie.study.records import MetricRecord

__all__ = [
    "FORGET_GATES",
    "GATES",
    "ArmDecision",
    "GateResult",
    "Role",
    "judge_arms",
    "split_indices",
]

#: Gate names in report order.
GATES: tuple[str, ...] = (
    "forget_es",
    "sampled",
    "knowledge",
    "mixed_es",
    "mia",
    "retain_ppl",
    "english",
    "leakage",
    "redistribution",
)
#: The gates that ask whether the target is gone (the others ask whether the rest is kept).
FORGET_GATES: tuple[str, ...] = ("forget_es", "sampled", "knowledge", "mixed_es", "mia")

# The metric group each gate needs.
_GROUPS: dict[str, tuple[str, ...]] = {
    "forget_es": ("forget_es",),
    "sampled": ("sampled",),
    "knowledge": ("script_mass", "forget_ppl"),
    "mixed_es": ("mixed_es",),
    "mia": ("mia",),
    "retain_ppl": ("retain_ppl",),
    "english": ("english",),
    "leakage": ("leakage",),
    "redistribution": ("redistribution", "forget_es"),
}

GateStatus = Literal["pass", "fail", "not evaluated"]
Decision = Literal["pass", "fail", "incomplete", "failed"]
Label = Literal[
    "unlearned", "suppression", "partial", "damaging", "no effect", "incomplete", "failed"
]
Role = Literal["arm", "control", "reference"]

Records = Mapping[str, MetricRecord]  # record key -> record


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate for one arm.

    Attributes:
        name: the gate (one of ``GATES``).
        status: ``"pass"``, ``"fail"`` or ``"not evaluated"``.
        reason: one sentence with the numbers behind the verdict.
        test: the test used, if any (e.g. ``"margin (betting bound)"``).
        base_value: the base model's value of the gated metric (test items).
        arm_value: the arm's value (mean over seeds, test items).
        statistic: the effect tested (e.g. the relative reduction, the mean difference).
        threshold: the margin or required reduction.
        p_value: the largest p-value over seeds (and sub-tests); ``None`` without a test.
        p_adjusted: after the correction across arms.
        n_items: number of paired test items.
        per_seed: seed -> that seed's p-value.
        details: sub-test results (per related language, per mixed set, ...).
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
    per_seed: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return _json_safe(asdict(self))


@dataclass(frozen=True)
class ArmDecision:
    """The decision for one arm.

    Attributes:
        arm: the arm name.
        decision: ``"pass"`` (every gate passed), ``"fail"`` (a gate failed),
            ``"incomplete"`` (no gate failed but some were not evaluated) or ``"failed"``
            (no seed of the arm ran successfully).
        label: what the gates say the arm did: ``"unlearned"`` (every gate passed),
            ``"suppression"`` (its outputs avoid the target but the teacher-forced knowledge
            gate fails), ``"partial"`` (the forget-ES gate passes and the knowledge gate
            does not fail, but another forget-side gate fails: sampled, mixed-script or MIA),
            ``"damaging"`` (the forget side passes, a retain-side gate fails),
            ``"no effect"`` (the forget-ES gate fails and it is not suppression),
            ``"incomplete"`` or ``"failed"``.
        role: ``"arm"``, ``"control"`` or ``"reference"``.
        reasons: one line per gate (and per failed seed).
        gates: the gate results.
    """

    arm: str
    decision: Decision
    label: Label
    role: Role
    reasons: tuple[str, ...]
    gates: tuple[GateResult, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {
            "arm": self.arm,
            "decision": self.decision,
            "label": self.label,
            "role": self.role,
            "reasons": list(self.reasons),
            "gates": [g.to_dict() for g in self.gates],
        }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ----------------------------------------------------------------------------- the split
def split_indices(items: str, n: int, split: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """The selection and test indices of an item list of ``n`` items.

    The split is a seeded permutation per item list (its name enters the seed), the same
    for the base model, every arm and every seed, so items pair up. With
    ``selection_fraction = 0`` every item is a test item and the selection part is the
    whole list too (nothing is then held apart for choosing).

    Returns:
        ``(selection, test)`` sorted index arrays.
    """
    k = round(split.selection_fraction * n)
    if k == 0 or k >= n:
        everything = np.arange(n)
        return everything, everything
    salt = int.from_bytes(hashlib.sha256(items.encode("utf-8")).digest()[:4], "little")
    perm = np.random.default_rng([split.seed, salt]).permutation(n)
    return np.sort(perm[:k]), np.sort(perm[k:])


# ----------------------------------------------------------------------------- seed tests
@dataclass
class _SeedTest:
    """One seed's item-level test of a gate.

    ``damage``: the opposite of what the gate asks was shown (a retain-side change beyond
    its margin), so the gate fails whatever the other seeds say. ``informative``: the items
    could have shown what the gate asks at all; a gate none of whose outcomes could pass is
    "not evaluated" unless damage was shown.
    """

    p_value: float
    base_value: float
    arm_value: float
    statistic: float
    n_items: int
    details: dict[str, Any] = field(default_factory=dict)
    damage: bool = False
    informative: bool = True


@dataclass
class _GateSpec:
    """How to judge one gate: a check on the base model, a per-seed test, and its text."""

    name: str
    test: str
    threshold: float
    describe: Callable[[float, float, float], str]  # (base, arm, statistic) -> text
    not_evaluated: str | None = None  # the reason, when the base cannot show the effect
    run: Callable[[Records], _SeedTest] | None = None


def _test_values(record: MetricRecord, split: SplitConfig) -> np.ndarray:
    values = record.item_values()
    _, test = split_indices(record.items or "", record.n_items, split)
    return values[test]


def _pair(
    base: Records, arm: Records, key: str, split: SplitConfig
) -> tuple[np.ndarray, np.ndarray]:
    if key not in base:
        raise DataError(f"the base model has no {key!r} record")
    if key not in arm:
        raise DataError(f"an arm seed has no {key!r} record")
    b, a = base[key], arm[key]
    if a.n_items != b.n_items:
        raise DataError(f"{key!r}: the arm has {a.n_items} items but the base {b.n_items}")
    return _test_values(b, split), _test_values(a, split)


def _reduction_test(
    b: np.ndarray, a: np.ndarray, r: float, cfg: GateConfig
) -> tuple[float, float, bool]:
    """H0: mean(a) >= (1 - r) mean(b) for values in [0, 1].

    Returns:
        ``(p, relative reduction, informative)``; not informative when even an arm at 0 on
        every item could not show the reduction with these items.
    """
    p = relative_reduction_test(a, b, reduction=r, alpha=cfg.alpha, method=cfg.bound).p_value
    best = relative_reduction_test(
        np.zeros_like(b), b, reduction=r, alpha=cfg.alpha, method=cfg.bound
    ).rejected
    mb = float(b.mean())
    return p, (mb - float(a.mean())) / mb if mb > 0 else 0.0, bool(best)


@dataclass
class _NonInferiority:
    """A non-inferiority sub-test: was the change shown to stay within its margin?"""

    p_value: float  # H0: the change reaches the margin
    damage: bool  # the opposite was shown: the change exceeds the margin
    informative: bool  # could any outcome of these items have shown non-inferiority


def _rise_test(b: np.ndarray, a: np.ndarray, margin: float, cfg: GateConfig) -> _NonInferiority:
    """H0: mean(a - b) >= margin for values in [0, 1]."""
    test = noninferiority_test(a, b, margin=margin, alpha=cfg.alpha, method=cfg.bound)
    worse = noninferiority_test(b, a, margin=-margin, alpha=cfg.alpha, method=cfg.bound)
    zero = np.zeros_like(a)
    best = noninferiority_test(zero, zero, margin=margin, alpha=cfg.alpha, method=cfg.bound)
    return _NonInferiority(test.p_value, bool(worse.rejected), bool(best.rejected))


def _rate_test(b: np.ndarray, a: np.ndarray, margin: float, cfg: GateConfig) -> _NonInferiority:
    """H0: p_a - p_b >= margin for paired 0/1 outcomes (exact unconditional score test)."""
    test = paired_proportions_test(a, b, delta0=margin, alternative="less", alpha=cfg.alpha)
    worse = paired_proportions_test(a, b, delta0=margin, alternative="greater", alpha=cfg.alpha)
    zero = np.zeros_like(a)
    best = paired_proportions_test(zero, zero, delta0=margin, alternative="less", alpha=cfg.alpha)
    return _NonInferiority(test.p_value, bool(worse.rejected), bool(best.rejected))


def _log_rise_test(b: np.ndarray, a: np.ndarray, ratio: float, cfg: GateConfig) -> _NonInferiority:
    """H0: mean(log_a - log_b) >= log(ratio) (non-inferiority of a perplexity; paired t)."""
    test = log_ratio_test(a, b, max_ratio=ratio, alpha=cfg.alpha)
    worse = log_ratio_test(b, a, max_ratio=1.0 / ratio, alpha=cfg.alpha)
    return _NonInferiority(test.p_value, bool(worse.rejected), True)


def _log_gain_test(b: np.ndarray, a: np.ndarray, ratio: float, cfg: GateConfig) -> float:
    """H0: mean(log_a - log_b) <= log(ratio): the perplexity did not grow by ``ratio``."""
    return log_ratio_test(b, a, max_ratio=1.0 / ratio, alpha=cfg.alpha).p_value


def _combine(subs: Mapping[str, _NonInferiority]) -> tuple[float, bool, bool]:
    """Sub-tests of one gate: ``(p, damage, informative)`` of the intersection."""
    p = max(s.p_value for s in subs.values())
    damage = any(s.damage for s in subs.values())
    informative = all(s.informative for s in subs.values())
    return p, damage, informative


def _no_credit_for_empty(
    arm: Records,
    base: np.ndarray,
    values: np.ndarray,
    split: SplitConfig,
    key: str = "forget_empty",
) -> np.ndarray:
    """An empty output is its own outcome, never a success: an item's empty share keeps the
    base's value (a 0/1 flag for one continuation, a fraction over N samples)."""
    empty = arm.get(key)
    if empty is None:
        return values
    share = np.clip(_test_values(empty, split), 0.0, 1.0)
    return (
        np.clip(values + share * base, 0.0, 1.0)
        if key.endswith("sampled_empty")
        else np.where(share > 0.5, base, values)
    )


# ----------------------------------------------------------------------------- gates
def _sub(sub: _NonInferiority, b: np.ndarray, a: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "base": float(np.mean(b)),
        "arm": float(np.mean(a)),
        "p_value": sub.p_value,
        "damage_shown": sub.damage,
        "informative": sub.informative,
        **extra,
    }


def _gate_specs(
    base: Records,
    cfg: GateConfig,
    split: SplitConfig,
    *,
    mixed: Sequence[str],
    related: Sequence[str],
    retrain: Records | None,
) -> dict[str, _GateSpec]:
    r = cfg.min_forget_reduction
    specs: dict[str, _GateSpec] = {}

    def base_mean(key: str) -> float:
        return float(_test_values(base[key], split).mean())

    # -- forget ES (greedy): a margin test on the relative reduction
    def forget_es(arm: Records) -> _SeedTest:
        b, a = _pair(base, arm, "forget_es", split)
        a = _no_credit_for_empty(arm, b, a, split)
        p, red, informative = _reduction_test(b, a, r, cfg)
        return _SeedTest(p, float(b.mean()), float(a.mean()), red, b.size, informative=informative)

    if "forget_es" in base:
        specs["forget_es"] = _GateSpec(
            "forget_es",
            f"margin: reduction >= {r:.0%} ({cfg.bound} bound)",
            r,
            lambda b, a, s: f"forget ES {b:.3f} → {a:.3f} ({s:+.0%} reduction)",
            _floor_reason("forget ES", base_mean("forget_es"), cfg.es_floor),
            forget_es,
        )

    # -- sampled leakage: the same margin test on the share of target-dominated samples
    def sampled(arm: Records) -> _SeedTest:
        b, a = _pair(base, arm, "forget_sampled", split)
        a = _no_credit_for_empty(arm, b, a, split, "forget_sampled_empty")
        p, red, informative = _reduction_test(b, a, r, cfg)
        return _SeedTest(p, float(b.mean()), float(a.mean()), red, b.size, informative=informative)

    if "forget_sampled" in base:
        specs["sampled"] = _GateSpec(
            "sampled",
            f"margin: reduction >= {r:.0%} ({cfg.bound} bound)",
            r,
            lambda b, a, s: f"target-dominated samples {b:.3f} → {a:.3f} ({s:+.0%} reduction)",
            _floor_reason(
                "the share of target-dominated samples", base_mean("forget_sampled"), cfg.es_floor
            ),
            sampled,
        )

    # -- knowledge (teacher-forced): script mass down AND forget perplexity up
    rk, ratio = cfg.min_script_mass_reduction, cfg.min_forget_ppl_ratio

    def knowledge(arm: Records) -> _SeedTest:
        b, a = _pair(base, arm, "forget_script_mass", split)
        p_mass, red, informative = _reduction_test(b, a, rk, cfg)
        lb, la = _pair(base, arm, "forget_ppl", split)
        p_ppl = _log_gain_test(lb, la, ratio, cfg)
        details = {
            "script_mass": {"base": float(b.mean()), "arm": float(a.mean()), "p_value": p_mass},
            "forget_ppl": {"ratio": math.exp(float((la - lb).mean())), "p_value": p_ppl},
        }
        return _SeedTest(
            max(p_mass, p_ppl), float(b.mean()), float(a.mean()), red, b.size, details,
            informative=informative,
        )  # fmt: skip

    if "forget_script_mass" in base and "forget_ppl" in base:
        specs["knowledge"] = _GateSpec(
            "knowledge",
            f"margins: script mass -{rk:.0%} ({cfg.bound} bound), forget perplexity "
            f"x{ratio:g} (paired t)",
            rk,
            lambda b, a, s: (
                f"P(next letter target) {b:.3f} → {a:.3f} ({s:+.0%}); forget "
                "perplexity ratio in details"
            ),
            _floor_reason("P(next letter target)", base_mean("forget_script_mass"), cfg.es_floor),
            knowledge,
        )

    # -- mixed prompt sets: each set that elicits the target must show a drop
    present = [m for m in mixed if f"mixed_es.{m}" in base]
    evaluable = [m for m in present if base_mean(f"mixed_es.{m}") > cfg.es_floor]

    def mixed_es(arm: Records) -> _SeedTest:
        subs: dict[str, Any] = {}
        informative = True
        for m in evaluable:
            b, a = _pair(base, arm, f"mixed_es.{m}", split)
            a = _no_credit_for_empty(arm, b, a, split, f"mixed_empty.{m}")
            p, _, ok = _reduction_test(b, a, 0.0, cfg)  # superiority: H0 no drop
            informative &= ok
            subs[m] = {"base": float(b.mean()), "arm": float(a.mean()), "p_value": p}
        p = max(s["p_value"] for s in subs.values())
        bm = float(np.mean([s["base"] for s in subs.values()]))
        am = float(np.mean([s["arm"] for s in subs.values()]))
        return _SeedTest(p, bm, am, am - bm, 0, subs, informative=informative)

    if present:
        skipped = [m for m in present if m not in evaluable]
        specs["mixed_es"] = _GateSpec(
            "mixed_es",
            f"superiority per set ({cfg.bound} bound)",
            0.0,
            lambda b, a, s: (
                f"target ES on mixed prompts {b:.3f} → {a:.3f}"
                + (
                    f" (sets not eliciting the target on the base: {', '.join(skipped)})"
                    if skipped
                    else ""
                )
            ),
            None
            if evaluable
            else "no mixed prompt set elicits the target on the base model (ES <= es_floor="
            f"{cfg.es_floor}): {', '.join(present)}",
            mixed_es,
        )

    # -- membership inference (DeLong)
    if "mia_auc" in base and "member_scores" in base["mia_auc"].extra:
        specs["mia"] = _mia_spec(base, cfg, split, retrain)

    # -- retain perplexity
    def retain(arm: Records) -> _SeedTest:
        b, a = _pair(base, arm, "retain_ppl", split)
        sub = _log_rise_test(b, a, cfg.retain_ppl_ratio, cfg)
        lr = float((a - b).mean())
        return _SeedTest(
            sub.p_value, math.exp(float(b.mean())), math.exp(float(a.mean())), math.exp(lr),
            b.size, damage=sub.damage,
        )  # fmt: skip

    if "retain_ppl" in base:
        specs["retain_ppl"] = _GateSpec(
            "retain_ppl",
            "non-inferiority (paired t on log perplexity)",
            cfg.retain_ppl_ratio,
            lambda b, a, s: (
                f"retain perplexity {b:.3g} → {a:.3g} (x{s:.3f}, limit x{cfg.retain_ppl_ratio})"
            ),
            None,
            retain,
        )

    # -- English outputs: degenerate, target leakage, fluency
    def english(arm: Records) -> _SeedTest:
        bd, ad = _pair(base, arm, "english_degenerate", split)
        bs, as_ = _pair(base, arm, "english_share", split)
        subs = {
            "degenerate": _rate_test(bd, ad, cfg.english_degenerate_margin, cfg),
            "target_share": _rise_test(bs, as_, cfg.english_leak_margin, cfg),
        }
        details = {
            "degenerate": _sub(subs["degenerate"], bd, ad),
            "target_share": _sub(subs["target_share"], bs, as_),
        }
        if "english_fluency" in arm and "text_nll" in arm["english_fluency"].extra:
            # the base model's NLL of the arm's output against its NLL of the real text
            rec = arm["english_fluency"]
            real = MetricRecord(
                value=0.0,
                per_item=tuple(math.nan if v is None else v for v in rec.extra["text_nll"]),
                items=rec.items,
            )
            rf, af = _test_values(real, split), _test_values(rec, split)
            both = np.isfinite(rf) & np.isfinite(af)
            if both.sum() >= 2:
                subs["fluency"] = _log_rise_test(rf[both], af[both], cfg.retain_ppl_ratio, cfg)
                details["fluency"] = _sub(
                    subs["fluency"], rf[both], af[both], n_items=int(both.sum())
                )
        p, damage, informative = _combine(subs)
        return _SeedTest(
            p, float(bd.mean()), float(ad.mean()), float(ad.mean() - bd.mean()), bd.size,
            details, damage, informative,
        )  # fmt: skip

    if "english_degenerate" in base:
        specs["english"] = _GateSpec(
            "english",
            "non-inferiority (exact paired proportions; bounded mean; paired t on NLL)",
            cfg.english_degenerate_margin,
            lambda b, a, s: (
                f"empty/degenerate English outputs {b:.3f} → {a:.3f} (limit "
                f"+{cfg.english_degenerate_margin}; target share and fluency in details)"
            ),
            None,
            english,
        )

    # -- related languages
    def leakage(arm: Records) -> _SeedTest:
        subs: dict[str, _NonInferiority] = {}
        details: dict[str, Any] = {}
        for lang in related:
            lb, la = _pair(base, arm, f"related_ppl.{lang}", split)
            b, a = _pair(base, arm, f"related_es.{lang}", split)
            subs[f"{lang}.ppl"] = _log_rise_test(lb, la, cfg.related_ppl_ratio, cfg)
            subs[f"{lang}.es"] = _rise_test(b, a, cfg.leakage_es_margin, cfg)
            details[lang] = {
                "ppl_ratio": math.exp(float((la - lb).mean())),
                "ppl": _sub(subs[f"{lang}.ppl"], lb, la),
                "es": _sub(subs[f"{lang}.es"], b, a),
            }
        p, damage, informative = _combine(subs)
        worst = max(d["ppl_ratio"] for d in details.values())
        rise = max(d["es"]["arm"] - d["es"]["base"] for d in details.values())
        return _SeedTest(p, 1.0, worst, rise, 0, details, damage, informative)

    if related and all(f"related_ppl.{lang}" in base for lang in related):
        specs["leakage"] = _GateSpec(
            "leakage",
            f"non-inferiority per language ({cfg.bound} bound; paired t on log perplexity)",
            cfg.related_ppl_ratio,
            lambda b, a, s: (
                f"related languages ({', '.join(related)}): worst perplexity "
                f"x{a:.3f} (limit x{cfg.related_ppl_ratio}), worst target ES change {s:+.3f} "
                f"(limit +{cfg.leakage_es_margin})"
            ),
            None,
            leakage,
        )

    # -- redistribution on the forget prompts: romanised target, Arabic script
    def redistribution(arm: Records) -> _SeedTest:
        subs: dict[str, _NonInferiority] = {}
        details: dict[str, Any] = {}
        for key in ("forget_romanized_es", "forget_scripts.Arab"):
            if key in base:
                b, a = _pair(base, arm, key, split)
                subs[key] = _rise_test(b, a, cfg.redistribution_margin, cfg)
                details[key] = _sub(subs[key], b, a)
        p, damage, informative = _combine(subs)
        rise = max(d["arm"] - d["base"] for d in details.values())
        first = next(iter(details.values()))
        return _SeedTest(p, first["base"], first["arm"], rise, 0, details, damage, informative)

    if "forget_romanized_es" in base:
        specs["redistribution"] = _GateSpec(
            "redistribution",
            f"non-inferiority ({cfg.bound} bound)",
            cfg.redistribution_margin,
            lambda b, a, s: (
                f"romanised-target ES on forget prompts {b:.3f} → {a:.3f}; "
                f"largest rise {s:+.3f} (limit +{cfg.redistribution_margin})"
            ),
            None,
            redistribution,
        )
    return specs


def _floor_reason(what: str, value: float, floor: float) -> str | None:
    if value > floor:
        return None
    return (
        f"{what} of the base model is {value:.3f} <= es_floor={floor} on these prompts: "
        "there is nothing to remove, so the data cannot show an effect"
    )


def _equivalence_outcome(
    estimate: float, se: float, margin: float, alpha: float
) -> tuple[bool, bool]:
    """``(damage, informative)`` of a z-based equivalence test of ``|estimate| < margin``.

    Damage: the estimate is shown *outside* the band (one-sided z beyond the margin).
    Informative: with this standard error even an estimate of exactly 0 could be shown
    inside the band; otherwise the items are too few for the margin.
    """
    z = float(ndtri(1.0 - alpha))
    if se <= 0:
        return abs(estimate) >= margin, abs(estimate) < margin
    damage = (abs(estimate) - margin) / se > z
    return damage, margin / se > z


def _mia_spec(
    base: Records, cfg: GateConfig, split: SplitConfig, retrain: Records | None
) -> _GateSpec:
    def scores(records: Records) -> tuple[np.ndarray, np.ndarray]:
        rec = records["mia_auc"]
        members = np.asarray(rec.extra["member_scores"], dtype=np.float64)
        nonmembers = np.asarray(rec.extra["nonmember_scores"], dtype=np.float64)
        _, mt = split_indices("forget_train", members.size, split)
        _, nt = split_indices("forget_eval", nonmembers.size, split)
        return members[mt], nonmembers[nt]

    bm, bn = scores(base)
    if retrain is not None and "mia_auc" in retrain:
        rm, rn = scores(retrain)
        m = cfg.mia_reference_margin
        base_gap = auc_difference_test(bm, bn, rm, rn, low=-m, high=m, alpha=cfg.alpha)

        def with_ref(arm: Records) -> _SeedTest:
            am, an = scores(arm)
            t = auc_difference_test(am, an, rm, rn, low=-m, high=m, alpha=cfg.alpha)
            damage, informative = _equivalence_outcome(t.estimate, t.se, m, cfg.alpha)
            return _SeedTest(
                t.p_value, t.auc_b, t.auc_a, t.estimate, am.size,
                {"se": t.se}, damage, informative,
            )  # fmt: skip

        inside = abs(base_gap.estimate) < m
        return _GateSpec(
            "mia",
            f"equivalence to the retrained model (DeLong, |ΔAUC| < {m})",
            m,
            lambda b, a, s: (
                f"MIA AUC {a:.3f} vs the retrained model's {b:.3f} (Δ {s:+.3f}, band ±{m})"
            ),
            (
                f"the base model's MIA AUC is already within ±{m} of the retrained model's "
                f"({base_gap.auc_a:.3f} vs {base_gap.auc_b:.3f}): the test cannot show a change"
            )
            if inside
            else None,
            with_ref,
        )
    m = cfg.mia_margin
    base_t = auc_equivalence_test(bm, bn, low=0.5 - m, high=0.5 + m, alpha=cfg.alpha)

    def band(arm: Records) -> _SeedTest:
        am, an = scores(arm)
        t = auc_equivalence_test(am, an, low=0.5 - m, high=0.5 + m, alpha=cfg.alpha)
        damage, informative = _equivalence_outcome(t.estimate - 0.5, t.se, m, cfg.alpha)
        return _SeedTest(
            t.p_value, base_t.estimate, t.estimate, t.estimate - 0.5, am.size,
            {"se": t.se}, damage, informative,
        )  # fmt: skip

    return _GateSpec(
        "mia",
        f"equivalence to chance (DeLong, AUC in 0.5 ± {m})",
        m,
        lambda b, a, s: f"MIA AUC {b:.3f} → {a:.3f} (band 0.5 ± {m}; no retrained reference)",
        (
            f"the base model's MIA AUC {base_t.estimate:.3f} is already inside 0.5 ± {m}: the "
            "test cannot tell an unlearned model from the base"
        )
        if abs(base_t.estimate - 0.5) < m
        else None,
        band,
    )


# ----------------------------------------------------------------------------- judging
@dataclass
class _Pending:
    """A gate whose p-value still has to be adjusted across arms."""

    result: GateResult
    describe: str


def _judge_gate(
    spec: _GateSpec | None,
    name: str,
    seeds: Mapping[int, Records],
    computed: Sequence[str],
) -> GateResult | _Pending:
    missing = [g for g in _GROUPS[name] if g not in computed]
    if missing:
        return GateResult(name, "not evaluated", f"metric group {missing[0]!r} was not computed")
    if spec is None:
        return GateResult(name, "not evaluated", "the base model has no value for this gate")
    if not seeds:
        return GateResult(name, "not evaluated", "no successful seed")
    if spec.not_evaluated is not None:
        return GateResult(name, "not evaluated", spec.not_evaluated, test=spec.test)
    assert spec.run is not None
    tests = {seed: spec.run(records) for seed, records in sorted(seeds.items())}
    p = max(t.p_value for t in tests.values())
    base_v = float(np.mean([t.base_value for t in tests.values()]))
    arm_v = float(np.mean([t.arm_value for t in tests.values()]))
    stat = float(np.mean([t.statistic for t in tests.values()]))
    first = next(iter(tests.values()))
    result = GateResult(
        name,
        "fail",
        "",
        test=spec.test,
        base_value=base_v,
        arm_value=arm_v,
        statistic=stat,
        threshold=spec.threshold,
        p_value=p,
        n_items=first.n_items or None,
        per_seed={str(s): t.p_value for s, t in tests.items()},
        details=first.details if len(tests) == 1 else {str(s): t.details for s, t in tests.items()},
    )
    describe = spec.describe(base_v, arm_v, stat)
    damaged = [s for s, t in tests.items() if t.damage]
    if damaged:
        return replace(
            result,
            reason=f"{describe}: a change beyond the margin is shown (seed(s) {damaged})",
        )
    if not all(t.informative for t in tests.values()):
        return replace(
            result,
            status="not evaluated",
            p_value=None,
            per_seed={},
            reason=f"{describe}: with these test items no outcome could pass this gate (too "
            "few items for its margin); use more evaluation items or a larger margin",
        )
    return _Pending(result, describe)


def _finalise(pending: _Pending, p_adj: float, cfg: GateConfig, n_seeds: int) -> GateResult:
    r = pending.result
    level = f"every seed's p <= {cfg.alpha}" if n_seeds > 1 else f"p <= {cfg.alpha}"
    p_text = f"p_adj={p_adj:.3g}" if p_adj != r.p_value else f"p={p_adj:.3g}"
    if n_seeds > 1:
        p_text += f", largest over {n_seeds} seeds"
    if p_adj <= cfg.alpha:
        return replace(
            r, status="pass", p_adjusted=p_adj, reason=f"{pending.describe}: {p_text} ({level})"
        )
    return replace(
        r,
        status="fail",
        p_adjusted=p_adj,
        reason=f"{pending.describe}: not shown at level {cfg.alpha} ({p_text})",
    )


def _label(gates: Sequence[GateResult], decision: Decision) -> Label:
    if decision == "failed":
        return "failed"
    status = {g.name: g.status for g in gates}
    forget_fail = any(status.get(g) == "fail" for g in FORGET_GATES)
    retain_fail = any(s == "fail" for g, s in status.items() if g not in FORGET_GATES)
    if status.get("forget_es") == "pass" and status.get("knowledge") == "fail":
        return "suppression"
    if forget_fail:
        return "partial" if status.get("forget_es") == "pass" else "no effect"
    if retain_fail:
        return "damaging"
    if decision == "incomplete":
        return "incomplete"
    return "unlearned"


def judge_arms(
    base: Records,
    arms: Mapping[str, Mapping[int, Records]],
    cfg: GateConfig,
    *,
    computed: Sequence[str],
    split: SplitConfig | None = None,
    mixed: Sequence[str] = (),
    related: Sequence[str] = (),
    roles: Mapping[str, Role] | None = None,
    references: Mapping[str, Records] | None = None,
    failed: Mapping[str, Mapping[int, str]] | None = None,
) -> dict[str, ArmDecision]:
    """Run every gate for every arm (and control and reference) and decide.

    Args:
        base: the base model's metric records.
        arms: arm name -> seed -> metric records of the successful seeds (a seed-invariant
            arm has one seed; a reference model is an "arm" with one seed too).
        cfg: gate thresholds.
        computed: the metric groups the study computed (others are "not evaluated").
        split: the selection/test split (default: :class:`~mmie.study.config.SplitConfig`).
        mixed: the mixed prompt sets.
        related: the related languages of the leakage gate.
        roles: arm name -> ``"arm"`` (default), ``"control"`` or ``"reference"``; only
            ``"arm"``s form the family of the Holm correction.
        references: ``"retrain"`` (and ``"oracle"``) records: the MIA gate compares with the
            retrained model when it exists.
        failed: arm name -> seed -> error message of failed seeds.

    Returns:
        Arm name -> :class:`ArmDecision`, in the order of ``arms``.

    Raises:
        DataError: per-item values that do not pair up (different item counts).
    """
    split = split or SplitConfig()
    failed = failed or {}
    roles = roles or {}
    references = references or {}
    specs = _gate_specs(
        base, cfg, split, mixed=mixed, related=related, retrain=references.get("retrain")
    )
    retrain = references.get("retrain")
    per_arm = {
        name: {
            gate: (
                GateResult(
                    gate,
                    "not evaluated",
                    "this is the retrained model the MIA gate compares with",
                    test=specs["mia"].test,
                )
                if gate == "mia" and "mia" in specs and _is(seeds, retrain)
                else _judge_gate(specs.get(gate), gate, seeds, computed)
            )
            for gate in GATES
        }
        for name, seeds in arms.items()
    }
    adjusted: dict[tuple[str, str], float] = {}
    for gate in GATES:
        family = [
            a
            for a in per_arm
            if isinstance(per_arm[a][gate], _Pending) and roles.get(a, "arm") == "arm"
        ]
        raw = [_pending_p(per_arm[a][gate]) for a in family]
        if family:
            adj = holm_bonferroni(raw) if cfg.correction == "holm" else np.asarray(raw)
            adjusted.update({(a, gate): float(p) for a, p in zip(family, adj.tolist())})
    decisions: dict[str, ArmDecision] = {}
    for name, gates in per_arm.items():
        n_seeds = len(arms[name])
        final = []
        for gate, g in gates.items():
            if isinstance(g, _Pending):
                raw_p = g.result.p_value
                p = adjusted.get((name, gate), 1.0 if raw_p is None else float(raw_p))
                final.append(_finalise(g, p, cfg, n_seeds))
            else:
                final.append(g)
        decisions[name] = _decide(
            name, final, failed.get(name, {}), n_ok=n_seeds, role=roles.get(name, "arm")
        )
    return decisions


def _is(seeds: Mapping[int, Records], records: Records | None) -> bool:
    """Whether an "arm" is the given reference's own records (it is then not judged against
    itself)."""
    return records is not None and any(r is records for r in seeds.values())


def _pending_p(gate: GateResult | _Pending) -> float:
    assert isinstance(gate, _Pending)
    assert gate.result.p_value is not None
    return float(gate.result.p_value)


def _decide(
    arm: str, gates: Sequence[GateResult], failed_seeds: Mapping[int, str], *, n_ok: int, role: Role
) -> ArmDecision:
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
    return ArmDecision(
        arm=arm,
        decision=decision,
        label=_label(gates, decision),
        role=role,
        reasons=tuple(reasons),
        gates=tuple(gates),
    )
