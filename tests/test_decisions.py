"""The decision gates: valid tests per gate, seeds as training runs, honest "not evaluated"."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmie.gate_stats import (
    auc_difference_test,
    auc_equivalence_test,
    log_ratio_test,
    relative_reduction_test,
)
from mmie.study.config import GateConfig, SplitConfig
from mmie.study.decisions import GATES, judge_arms, split_indices
from mmie.study.records import MetricRecord

ALL = SplitConfig(selection_fraction=0.0)  # every item is a test item


def rec(values, **extra):
    values = [float(v) for v in values]
    return MetricRecord(value=float(np.mean(values)), per_item=tuple(values), extra=extra)


def ppl(nll, weights=None):
    nll = np.asarray(nll, dtype=float)
    w = np.full(nll.size, 10) if weights is None else np.asarray(weights)
    return MetricRecord(
        value=math.exp(float(np.sum(w * nll) / w.sum())),
        per_item=tuple(nll.tolist()),
        scale="log_perplexity",
        weights=tuple(int(x) for x in w),
    )


def gate(decision, name):
    return next(g for g in decision.gates if g.name == name)


def test_forget_gate_is_a_margin_test_taking_the_worst_seed():
    rng = np.random.default_rng(0)
    base = {"forget_es": rec(rng.uniform(0.6, 1.0, 40))}
    seeds = {s: {"forget_es": rec(rng.uniform(0.0, 0.2, 40))} for s in range(3)}
    out = judge_arms(base, {"a": seeds}, GateConfig(), computed=["forget_es"], split=ALL)["a"]
    g = gate(out, "forget_es")
    expected = [
        relative_reduction_test(
            np.asarray(seeds[s]["forget_es"].per_item),
            np.asarray(base["forget_es"].per_item),
            reduction=0.25,
        ).p_value
        for s in range(3)
    ]
    assert g.status == "pass"
    assert g.p_value == pytest.approx(max(expected))
    assert g.per_seed == {str(s): pytest.approx(p) for s, p in enumerate(expected)}
    # every other gate's metric group was not computed: not evaluated, so "incomplete"
    assert {x.status for x in out.gates if x.name != "forget_es"} == {"not evaluated"}
    assert out.decision == "incomplete"


def test_an_arm_that_works_in_one_seed_of_three_fails():
    """Seeds are training runs: a method that works in 1 of 3 runs has not been shown to work
    (0.1's seed-averaged test passed it with p_adj = 1e-4)."""
    base = {"forget_es": rec([0.9] * 40)}
    seeds = {
        0: {"forget_es": rec([0.0] * 40)},
        1: {"forget_es": rec([0.9] * 40)},
        2: {"forget_es": rec([0.85] * 40)},
    }
    g = gate(
        judge_arms(base, {"a": seeds}, GateConfig(), computed=["forget_es"], split=ALL)["a"],
        "forget_es",
    )
    assert g.status == "fail"
    assert float(g.per_seed["0"]) < 0.05 < float(g.per_seed["1"])


def test_empty_continuations_get_no_credit():
    base = {"forget_es": rec([0.9] * 40), "forget_empty": rec([0.0] * 40)}
    empty = {0: {"forget_es": rec([0.0] * 40), "forget_empty": rec([1.0] * 40)}}
    g = gate(
        judge_arms(base, {"eos": empty}, GateConfig(), computed=["forget_es"], split=ALL)["eos"],
        "forget_es",
    )
    assert g.status == "fail"
    assert g.arm_value == pytest.approx(0.9)  # the base's value: empty output is not success


def test_nothing_to_remove_is_not_evaluated_and_prints_no_p_value():
    base = {"forget_es": rec([0.0, 0.02, 0.0, 0.01] * 10)}
    arm = {0: {"forget_es": rec([0.0] * 40)}}
    g = gate(
        judge_arms(base, {"a": arm}, GateConfig(), computed=["forget_es"], split=ALL)["a"],
        "forget_es",
    )
    assert g.status == "not evaluated"
    assert "nothing to remove" in g.reason
    assert g.p_value is None


def test_holm_runs_over_the_arms_only_not_the_controls():
    base = {"forget_es": rec([0.9] * 40)}
    good = {0: {"forget_es": rec([0.05] * 40)}}
    weak = {0: {"forget_es": rec([0.6] * 39 + [0.9])}}
    cfg = GateConfig()
    out = judge_arms(
        base,
        {"good": good, "weak": weak, "control.identity": {0: base}},
        cfg,
        computed=["forget_es"],
        split=ALL,
        roles={"control.identity": "control"},
    )
    g_good, g_weak = gate(out["good"], "forget_es"), gate(out["weak"], "forget_es")
    raw = sorted([g_good.p_value, g_weak.p_value])
    assert g_good.p_adjusted == pytest.approx(min(1, 2 * raw[0]))
    assert g_weak.p_adjusted == pytest.approx(max(min(1, 2 * raw[0]), raw[1]))
    control = gate(out["control.identity"], "forget_es")
    assert control.p_adjusted == control.p_value  # judged unadjusted
    assert control.status == "fail"
    assert out["control.identity"].role == "control"


def test_retain_gate_is_a_paired_t_on_log_perplexity_and_names_damage():
    rng = np.random.default_rng(1)
    nll = rng.uniform(2.0, 3.0, 40)
    base = {"retain_ppl": ppl(nll)}
    cfg = GateConfig(retain_ppl_ratio=1.25)
    small = judge_arms(
        base,
        {"a": {0: {"retain_ppl": ppl(nll + rng.normal(0.01, 0.02, 40))}}},
        cfg,
        computed=["retain_ppl"],
        split=ALL,
    )
    big = judge_arms(
        base,
        {"a": {0: {"retain_ppl": ppl(nll + rng.normal(0.6, 0.05, 40))}}},
        cfg,
        computed=["retain_ppl"],
        split=ALL,
    )
    assert gate(small["a"], "retain_ppl").status == "pass"
    assert gate(big["a"], "retain_ppl").status == "fail"
    assert "beyond the margin is shown" in gate(big["a"], "retain_ppl").reason


def test_retain_gate_p_value_is_log_ratio_test_of_linearised_values():
    rng = np.random.default_rng(2)
    nll = rng.uniform(2.0, 3.0, 30)
    w = rng.integers(5, 40, 30)
    arm_nll = nll + rng.normal(0.05, 0.05, 30)
    base = {"retain_ppl": ppl(nll, w)}
    arm = {"retain_ppl": ppl(arm_nll, w)}
    g = gate(
        judge_arms(base, {"a": {0: arm}}, GateConfig(), computed=["retain_ppl"], split=ALL)["a"],
        "retain_ppl",
    )
    direct = log_ratio_test(
        arm["retain_ppl"].item_values(), base["retain_ppl"].item_values(), max_ratio=1.25
    )
    assert g.p_value == pytest.approx(direct.p_value)


def test_non_inferiority_that_no_outcome_could_show_is_not_evaluated_unless_damage_is_shown():
    """With 12 bounded items no data can show a rise below 0.05; a clear rise still fails."""
    cfg = GateConfig()
    base = {"english_degenerate": rec([0.0] * 12), "english_share": rec([0.0] * 12)}
    same = {0: dict(base)}
    broken = {0: {"english_degenerate": rec([1.0] * 12), "english_share": rec([0.0] * 12)}}
    out = judge_arms(base, {"same": same, "broken": broken}, cfg, computed=["english"], split=ALL)
    assert gate(out["same"], "english").status == "not evaluated"
    assert "too few items" in gate(out["same"], "english").reason
    assert gate(out["broken"], "english").status == "fail"


def test_english_gate_passes_with_enough_unchanged_items():
    cfg = GateConfig(english_degenerate_margin=0.1, english_leak_margin=0.1)
    n = 200
    base = {"english_degenerate": rec([0.0] * n), "english_share": rec([0.0] * n)}
    out = judge_arms(base, {"a": {0: dict(base)}}, cfg, computed=["english"], split=ALL)
    assert gate(out["a"], "english").status == "pass"


def test_mia_gate_is_delong_tost_and_not_evaluated_when_the_base_is_already_in_band():
    rng = np.random.default_rng(3)
    members, nonmembers = rng.normal(0, 1, 60), rng.normal(0, 1, 60)

    def mia(pos, neg):
        return MetricRecord(
            value=0.5,
            per_item=(0.5,) * len(pos),
            extra={"member_scores": list(pos), "nonmember_scores": list(neg)},
        )

    cfg = GateConfig(mia_margin=0.15)
    memorised = {"mia_auc": mia(members + 2.0, nonmembers)}
    chance = {0: {"mia_auc": mia(members, nonmembers)}}
    out = judge_arms(memorised, {"a": chance}, cfg, computed=["mia"], split=ALL)["a"]
    g = gate(out, "mia")
    direct = auc_equivalence_test(members, nonmembers, low=0.35, high=0.65)
    assert g.p_value == pytest.approx(direct.p_value)
    already = judge_arms(
        {"mia_auc": mia(members, nonmembers)}, {"a": chance}, cfg, computed=["mia"], split=ALL
    )["a"]
    assert gate(already, "mia").status == "not evaluated"
    assert "already inside" in gate(already, "mia").reason
    # with a retrained reference the arm is compared with it (paired DeLong)
    retrain = {"mia_auc": mia(members + 0.1, nonmembers)}
    ref = judge_arms(
        memorised, {"a": chance}, cfg, computed=["mia"], split=ALL, references={"retrain": retrain}
    )["a"]
    direct = auc_difference_test(members, nonmembers, members + 0.1, nonmembers, low=-0.1, high=0.1)
    assert gate(ref, "mia").p_value == pytest.approx(direct.p_value)
    # the retrained reference itself is not judged against itself; a copy of it is
    refs = judge_arms(
        memorised,
        {"reference.retrain": {0: retrain}, "copy": {0: dict(retrain)}},
        cfg,
        computed=["mia"],
        split=ALL,
        roles={"reference.retrain": "reference"},
        references={"retrain": retrain},
    )
    own = gate(refs["reference.retrain"], "mia")
    assert (own.status, own.p_value) == ("not evaluated", None)
    assert "compares with" in own.reason
    assert gate(refs["copy"], "mia").status != "not evaluated"


def test_suppression_label_when_outputs_change_but_knowledge_does_not():
    n = 60
    base = {
        "forget_es": rec([0.9] * n),
        "forget_script_mass": rec([0.8] * n),
        "forget_ppl": ppl([1.5] * (n // 2) + [1.7] * (n // 2)),
    }
    banned = {0: {**base, "forget_es": rec([0.0] * n)}}
    out = judge_arms(
        base,
        {"ban": banned},
        GateConfig(),
        computed=["forget_es", "script_mass", "forget_ppl"],
        split=ALL,
    )["ban"]
    assert gate(out, "forget_es").status == "pass"
    assert gate(out, "knowledge").status == "fail"
    assert out.label == "suppression"


def test_split_is_deterministic_disjoint_and_per_item_list():
    split = SplitConfig(selection_fraction=0.25, seed=3)
    sel, test = split_indices("prompts.forget", 32, split)
    assert len(sel) == 8
    assert len(test) == 24
    assert not set(sel) & set(test)
    assert set(sel) | set(test) == set(range(32))
    again = split_indices("prompts.forget", 32, split)
    assert np.array_equal(again[0], sel)
    assert np.array_equal(again[1], test)
    other = split_indices("prompts.english", 32, split)
    assert not np.array_equal(other[0], sel)
    assert split_indices("x", 10, SplitConfig(selection_fraction=0.0))[1].tolist() == list(
        range(10)
    )


def test_gates_run_on_the_test_items_only():
    split = SplitConfig(selection_fraction=0.5, seed=0)
    n = 40
    sel, _ = split_indices("prompts.forget", n, split)
    base_vals = np.full(n, 0.9)
    arm_vals = np.full(n, 0.9)
    arm_vals[sel] = 0.0  # the arm only "works" on the selection items
    base = {"forget_es": MetricRecord(value=0.9, per_item=tuple(base_vals), items="prompts.forget")}
    arm = {
        0: {
            "forget_es": MetricRecord(
                value=float(arm_vals.mean()), per_item=tuple(arm_vals), items="prompts.forget"
            )
        }
    }
    g = gate(
        judge_arms(base, {"a": arm}, GateConfig(), computed=["forget_es"], split=split)["a"],
        "forget_es",
    )
    assert g.status == "fail"
    assert g.arm_value == pytest.approx(0.9)


def test_gate_names_are_the_report_order():
    assert GATES[0] == "forget_es"
    assert set(GATES) == {
        "forget_es", "sampled", "knowledge", "mixed_es", "mia", "retain_ppl", "english",
        "leakage", "redistribution",
    }  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    statuses=st.fixed_dictionaries(
        {g: st.sampled_from(["pass", "fail", "not evaluated"]) for g in GATES}
    )
)
def test_labels_follow_the_forget_side_first(statuses):
    """The label is a function of the gate statuses: suppression and partial need the
    forget-ES gate to pass; no effect means it did not; damaging needs the forget side clean."""
    from mmie.study.decisions import FORGET_GATES, GateResult, _label

    gates = [GateResult(name=g, status=s, reason="") for g, s in statuses.items()]
    failing = [g for g, s in statuses.items() if s == "fail"]
    decision = "fail" if failing else (
        "incomplete" if "not evaluated" in statuses.values() else "pass"
    )  # fmt: skip
    label = _label(gates, decision)
    forget_fail = any(statuses[g] == "fail" for g in FORGET_GATES)
    if statuses["forget_es"] == "pass" and statuses["knowledge"] == "fail":
        assert label == "suppression"
    elif forget_fail:
        assert label == ("partial" if statuses["forget_es"] == "pass" else "no effect")
    elif failing:
        assert label == "damaging"
    else:
        assert label == ("unlearned" if decision == "pass" else "incomplete")
