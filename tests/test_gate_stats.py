"""Tests of mmie.gate_stats: size at the null boundary, independent computations, properties.

The size tests simulate each gate test at its null boundary on data shaped like the study's
(zero-inflated bounded ES differences, paired 0/1 outcomes, continuous log-perplexity
differences, two classes of MIA scores) and require a false-pass rate of at most ``alpha +
3`` Monte Carlo standard errors. A control runs the old sign-flip gate test through the same
simulation and requires it to *fail* that bound, so the simulation can see the problem it
guards against. The ``slow`` versions use 5,000 replicates and more settings.
"""

from __future__ import annotations

import dataclasses
import doctest
import itertools
import json
import math
import re

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import mmie.gate_stats as gs
from mmie.gate_stats import (
    AUCTestResult,
    BoundedMeanTest,
    DeLongAUC,
    Evidence,
    LogRatioTest,
    MeanBound,
    PairedProportionsTest,
    auc_equivalence_test,
    auc_test,
    check_evidence,
    delong_auc,
    log_ratio_test,
    mean_bound,
    noninferiority_test,
    paired_proportions_test,
    relative_reduction_test,
)
from mmie.stats import paired_permutation_test

ALPHA = 0.05
BOUND_METHODS = ("betting", "bernstein", "hoeffding")
FAST, SLOW = 400, 5000


def limit(reps: int, alpha: float = ALPHA) -> float:
    """The largest false-pass rate a valid level-alpha test shows in ``reps`` replicates
    (alpha + 3 Monte Carlo standard errors)."""
    return alpha + 3.0 * math.sqrt(alpha * (1.0 - alpha) / reps)


# ------------------------------------------------------------------ study-shaped data


def es_differences(rng, reps, n, mean, p_zero=0.9):
    """Zero-inflated per-prompt ES differences ``arm - base`` in [-1, 1] with E[d] = mean.

    A share ``p_zero`` of the items is exactly 0 (the arm did not change the prompt's ES);
    the others move by ``±U``, ``U ~ Uniform(0.2, 1)``, the sign + with the probability that
    makes the mean exact.
    """
    q = 0.5 * (1.0 + mean / ((1.0 - p_zero) * 0.6))
    assert 0.0 <= q <= 1.0
    moved = rng.random((reps, n)) >= p_zero
    sign = np.where(rng.random((reps, n)) < q, 1.0, -1.0)
    return np.where(moved, sign * rng.uniform(0.2, 1.0, (reps, n)), 0.0)


def two_point_differences(rng, reps, n, mean):
    """The least favourable shape for a bounded mean: d in {-1, 1} with E[d] = mean."""
    return np.where(rng.random((reps, n)) < 0.5 * (1.0 + mean), 1.0, -1.0)


def es_pairs(rng, reps, n, keep):
    """(arm, base) forget ES in [0, 1] with E[arm] = keep · E[base] exactly.

    Base ES is 1 for 80% of the prompts (target language from the first word) and uniform
    otherwise; the arm erases a prompt completely (ES 0) with probability ``1 - keep`` and
    leaves it unchanged otherwise.
    """
    base = np.where(rng.random((reps, n)) < 0.8, 1.0, rng.random((reps, n)))
    arm = np.where(rng.random((reps, n)) < keep, base, 0.0)
    return arm, base


def paired_binary(rng, n, q10, q01, q11=0.1):
    """One item's (arm, base) 0/1 outcomes, cells (1,0), (0,1), (1,1), (0,0)."""
    u = rng.random(n)
    arm = (u < q10) | ((u >= q10 + q01) & (u < q10 + q01 + q11))
    base = (u >= q10) & (u < q10 + q01 + q11)
    return arm.astype(np.int8), base.astype(np.int8)


def mia_scores(rng, n_pos, n_neg, auc):
    """Member and non-member scores, normal with equal variance, true AUC = ``auc``."""
    shift = math.sqrt(2.0) * scipy.stats.norm.ppf(auc)
    return rng.normal(shift, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)


# --------------------------------------------------------------------- simulations


def bounded_false_passes(method, n, reps, shape, margin=0.05, seed=0):
    """Share of replicates where noninferiority_test shows mean(d) < margin, true mean = margin.

    Uses the batch kernel that noninferiority_test runs with one row (checked in
    test_batch_kernel_is_what_the_public_test_runs), so the decision is the public one.
    """
    rng = np.random.default_rng(seed)
    make = es_differences if shape == "zero_inflated" else two_point_differences
    d = make(rng, reps, n, margin)
    x = (d + 1.0) / 2.0  # noninferiority_test's scaling for values in [0, 1]
    upper = -1.0 + 2.0 * gs._upper_batch(x, ALPHA, method)
    return float(np.mean(upper < margin))


def relative_false_passes(method, n, reps, reduction=0.25, seed=0):
    rng = np.random.default_rng(seed)
    arm, base = es_pairs(rng, reps, n, keep=1.0 - reduction)
    keep = 1.0 - reduction
    x = (arm - keep * base + keep) / (1.0 + keep)
    upper = -keep + (1.0 + keep) * gs._upper_batch(x, ALPHA, method)
    return float(np.mean(upper < 0.0))


def old_sign_flip_false_passes(n, reps, margin=0.05, seed=0, n_permutations=1000):
    """The gates' old non-inferiority test: sign flips of ``arm - margin`` against ``base``."""
    rng = np.random.default_rng(seed)
    d = es_differences(rng, reps, n, margin)
    arm, base = np.maximum(d, 0.0), np.maximum(-d, 0.0)
    hits = 0
    for i in range(reps):
        p = paired_permutation_test(
            arm[i] - margin, base[i], alternative="less", n_permutations=n_permutations, seed=i
        ).p_value
        hits += p <= ALPHA
    return hits / reps


def proportions_false_passes(method, n, reps, delta0=0.05, q01=0.1, seed=0):
    """False passes of paired_proportions_test(alternative="less") at p_arm - p_base = delta0.

    The score test is called per data set; the exact test's decisions are looked up in the
    table of all its p-values for n items (equal to the per-call ones, see
    test_exact_table_matches_single_table_p_values).
    """
    rng = np.random.default_rng(seed)
    if method == "exact":
        b, c, p = gs._exact_p_table(n, delta0, "less")
        p_of = {(int(i), int(j)): float(v) for i, j, v in zip(b, c, p)}
    hits = 0
    for _ in range(reps):
        arm, base = paired_binary(rng, n, q10=q01 + delta0, q01=q01)
        if method == "exact":
            n10 = int(np.sum((arm == 1) & (base == 0)))
            n01 = int(np.sum((arm == 0) & (base == 1)))
            hits += p_of[(n10, n01)] <= ALPHA
        else:
            r = paired_proportions_test(arm, base, delta0=delta0, alternative="less", method=method)
            hits += r.rejected
    return hits / reps


def delong_false_passes(kind, n, reps, seed=0, margin=0.15):
    """TOST at the band's upper edge, or a one-sided test at its threshold."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        if kind == "tost":
            pos, neg = mia_scores(rng, n, n, 0.5 + margin)
            r = auc_equivalence_test(pos, neg, low=0.5 - margin, high=0.5 + margin)
        elif kind == "less":
            pos, neg = mia_scores(rng, n, n, 0.65)
            r = auc_test(pos, neg, threshold=0.65, alternative="less")
        else:
            pos, neg = mia_scores(rng, n, n, 0.35)
            r = auc_test(pos, neg, threshold=0.35, alternative="greater")
        hits += r.rejected
    return hits / reps


def old_mia_false_passes(n, reps, seed=0, margin=0.15, n_permutations=1000):
    """The old MIA gate: sign-flip TOST on the members' placement values only."""
    rng = np.random.default_rng(seed)
    lo, hi = 0.5 - margin, 0.5 + margin
    hits = 0
    for i in range(reps):
        pos, neg = mia_scores(rng, n, n, hi)
        u = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean(axis=1)
        zeros = np.zeros_like(u)
        p_lo = paired_permutation_test(
            u - lo, zeros, alternative="greater", n_permutations=n_permutations, seed=i
        ).p_value
        p_hi = paired_permutation_test(
            u - hi, zeros, alternative="less", n_permutations=n_permutations, seed=i
        ).p_value
        hits += max(p_lo, p_hi) <= ALPHA
    return hits / reps


def log_ratio_differences(rng, reps, n, mean, shape, scale=0.3):
    if shape == "normal":
        e = rng.normal(0.0, 1.0, (reps, n))
    elif shape == "laplace":
        e = rng.laplace(0.0, 1.0 / math.sqrt(2.0), (reps, n))
    else:  # Student t with 3 degrees of freedom, unit variance
        e = rng.standard_t(3, (reps, n)) / math.sqrt(3.0)
    return mean + scale * e


def log_ratio_false_passes(shape, n, reps, ratio=1.25, seed=0):
    rng = np.random.default_rng(seed)
    d = log_ratio_differences(rng, reps, n, math.log(ratio), shape)
    hits = 0
    for row in d:
        hits += log_ratio_test(row, np.zeros(n), max_ratio=ratio).rejected
    return hits / reps


# ------------------------------------------------------------------- size (fast CI)


@pytest.mark.parametrize("method", BOUND_METHODS)
@pytest.mark.parametrize("shape", ["zero_inflated", "two_point"])
@pytest.mark.parametrize("n", [32, 128])
def test_noninferiority_holds_its_size_at_the_margin(method, shape, n):
    assert bounded_false_passes(method, n, FAST, shape) <= limit(FAST)


@pytest.mark.parametrize("method", BOUND_METHODS)
@pytest.mark.parametrize("n", [32, 128])
def test_relative_reduction_holds_its_size_at_the_boundary(method, n):
    assert relative_false_passes(method, n, FAST) <= limit(FAST)


def test_control_old_sign_flip_test_is_inflated_on_zero_inflated_data():
    """The control: the same simulation must catch the old test's false passes (about 20% at
    n = 16, where 0.9**16 = 18.5% of the samples are all zero)."""
    reps = 200
    assert old_sign_flip_false_passes(16, reps) > limit(reps)


def test_control_old_mia_sign_flip_tost_is_inflated_at_the_band_edge():
    reps = 300
    assert old_mia_false_passes(32, reps) > limit(reps)


@pytest.mark.parametrize("n", [16, 64])
def test_tango_score_holds_its_size_on_realistic_paired_outcomes(n):
    assert proportions_false_passes("score", n, FAST) <= limit(FAST)


@pytest.mark.parametrize("n", [16, 64])
def test_exact_unconditional_holds_its_size_in_simulation(n):
    assert proportions_false_passes("exact", n, FAST) <= limit(FAST)


@pytest.mark.parametrize("kind", ["tost", "less", "greater"])
@pytest.mark.parametrize("n", [16, 64])
def test_delong_holds_its_size_at_the_band_edge(kind, n):
    assert delong_false_passes(kind, n, FAST) <= limit(FAST)


@pytest.mark.parametrize("shape", ["normal", "laplace", "t3"])
@pytest.mark.parametrize("n", [16, 64])
def test_log_ratio_t_test_holds_its_size(shape, n):
    assert log_ratio_false_passes(shape, n, FAST) <= limit(FAST)


# ----------------------------------------------------------------- size (slow, 5,000)


@pytest.mark.slow
@pytest.mark.parametrize("method", BOUND_METHODS)
@pytest.mark.parametrize("shape", ["zero_inflated", "two_point"])
@pytest.mark.parametrize("n", [16, 32, 64, 128])
def test_slow_noninferiority_size(method, shape, n):
    assert bounded_false_passes(method, n, SLOW, shape, seed=1) <= limit(SLOW)


@pytest.mark.slow
@pytest.mark.parametrize("method", BOUND_METHODS)
@pytest.mark.parametrize("reduction", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("n", [16, 64, 128])
def test_slow_relative_reduction_size(method, reduction, n):
    assert relative_false_passes(method, n, SLOW, reduction=reduction, seed=1) <= limit(SLOW)


@pytest.mark.slow
@pytest.mark.parametrize("n", [16, 32])
def test_slow_control_old_sign_flip_test_is_inflated(n):
    assert old_sign_flip_false_passes(n, SLOW, seed=1) > limit(SLOW)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["score", "exact"])
@pytest.mark.parametrize("q01", [0.05, 0.2])
@pytest.mark.parametrize("n", [16, 64, 128])
def test_slow_paired_proportions_size(method, q01, n):
    assert proportions_false_passes(method, n, SLOW, q01=q01, seed=1) <= limit(SLOW)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tost", "less", "greater"])
@pytest.mark.parametrize("n", [16, 32, 64, 128])
def test_slow_delong_size(kind, n):
    assert delong_false_passes(kind, n, SLOW, seed=1) <= limit(SLOW)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["normal", "laplace", "t3"])
@pytest.mark.parametrize("n", [16, 32, 128])
def test_slow_log_ratio_size(shape, n):
    assert log_ratio_false_passes(shape, n, SLOW, seed=1) <= limit(SLOW)


# ----------------------------------------------------- exact size of the exact test


def _exact_size(n, delta0, alternative, grid=4001):
    """The exact rejection probability of the exact unconditional test, maximised over a
    grid of the nuisance parameter 4x finer than the test's own."""
    b, c, p = gs._exact_p_table(n, delta0, alternative)
    reject = p <= ALPHA
    b, c = b[reject], c[reject]
    rest = n - b - c
    q = np.linspace(max(0.0, -delta0), (1.0 - delta0) / 2.0, grid)
    pmf = scipy.stats.multinomial.pmf(
        np.stack([b, c, rest], axis=1)[None, :, :],
        n,
        np.clip(np.stack([q + delta0, q, 1.0 - 2.0 * q - delta0], axis=1), 0.0, 1.0)[:, None, :],
    )
    return float(np.max(np.sum(np.nan_to_num(pmf), axis=1)))


@pytest.mark.parametrize("alternative", ["less", "greater", "two-sided"])
@pytest.mark.parametrize(("n", "delta0"), [(12, 0.0), (16, 0.05), (20, -0.1)])
def test_exact_unconditional_size_is_at_most_alpha(n, delta0, alternative):
    assert _exact_size(n, delta0, alternative) <= ALPHA + 1e-3


def test_exact_table_matches_single_table_p_values():
    for n, delta0, alternative in [(9, 0.05, "less"), (11, -0.2, "two-sided"), (8, 0.0, "greater")]:
        b, c, p = gs._exact_p_table(n, delta0, alternative)
        single = [gs._exact_p(int(i), int(j), n, delta0, alternative) for i, j in zip(b, c)]
        np.testing.assert_allclose(single, p, rtol=1e-12, atol=1e-15)


def test_exact_p_value_matches_brute_force_enumeration():
    """The supremum of the tail probability, with the tail found by enumerating tables."""
    n, delta0 = 7, 0.1
    arm = [1, 1, 1, 0, 0, 0, 0]
    base = [0, 0, 0, 0, 1, 0, 0]
    r = paired_proportions_test(arm, base, delta0=delta0, alternative="greater")
    z_obs = r.statistic
    tail = []
    for b, c in itertools.product(range(n + 1), repeat=2):
        if b + c <= n:
            z = _tango_by_restricted_mle(b, c, n, delta0)
            if z >= z_obs - 1e-9:
                tail.append((b, c))
    grid = np.linspace(0.0, (1.0 - delta0) / 2.0, gs._NUISANCE_GRID)
    best = max(
        sum(
            scipy.stats.multinomial.pmf([b, c, n - b - c], n, [q + delta0, q, 1 - 2 * q - delta0])
            for b, c in tail
        )
        for q in grid[::10]
    )
    assert r.p_value >= best - 1e-12
    assert r.p_value == pytest.approx(best, abs=2e-3)


# ------------------------------------------------------- bounded means: correctness


def test_hoeffding_and_bernstein_match_their_formulas():
    v = np.array([0.2, -0.4, 0.0, 0.0, 0.9, 0.0, -1.0, 0.3])
    n, alpha, log_term = v.size, 0.1, math.log(2 / 0.1)
    for low, high in [(-1.0, 1.0), (-5.0, 5.0), (-1.0, 20.0)]:
        w = high - low
        hoeffding = v.mean() + w * math.sqrt(math.log(1 / alpha) / (2 * n))
        bernstein = (
            v.mean()
            + math.sqrt(2 * np.var(v, ddof=1) * log_term / n)
            + 7 * w * log_term / (3 * (n - 1))
        )
        for method, expected in [("hoeffding", hoeffding), ("bernstein", bernstein)]:
            b = mean_bound(v, low=low, high=high, alpha=alpha, method=method)
            assert b.bound == pytest.approx(min(high, expected), rel=1e-12)


def _capital_by_loop(x, m, c=0.9, alpha0=0.05):
    """The betting capital ``max_t K_t(m)``, written out item by item (no vectorisation)."""
    n = len(x)
    total, total_sq, best, log_k = 0.0, 0.0, 0.0, 0.0
    sigma2_prev = 0.25
    for t, xi in enumerate(x, start=1):
        lam = min(math.sqrt(2 * math.log(1 / alpha0) / (n * sigma2_prev)), c / (1 - m))
        log_k += math.log(1 + lam * (m - xi))
        best = max(best, log_k)
        total += xi
        mu_t = (0.5 + total) / (t + 1)
        total_sq += (xi - mu_t) ** 2
        sigma2_prev = (0.25 + total_sq) / (t + 1)
    return math.exp(best)


def test_betting_bound_is_the_smallest_rejected_mean():
    rng = np.random.default_rng(3)
    x = np.clip(rng.beta(0.5, 3.0, 40), 0, 1)
    b = mean_bound(x, low=0.0, high=1.0, alpha=0.05)
    assert _capital_by_loop(x, b.bound) >= 20.0 * (1 - 1e-9)
    assert _capital_by_loop(x, b.bound - 1e-9) < 20.0
    p = noninferiority_test(x, np.zeros_like(x), margin=0.3).p_value  # d = x in [-1, 1]
    assert p == pytest.approx(min(1.0, 1.0 / _capital_by_loop((x + 1) / 2, 0.65)), rel=1e-9)


def test_betting_is_tighter_than_bernstein_and_hoeffding_on_study_data():
    rng = np.random.default_rng(4)
    d = es_differences(rng, 50, 128, 0.0)
    x = (d + 1) / 2
    betting = gs._upper_batch(x, ALPHA, "betting")
    assert np.mean(betting < gs._upper_batch(x, ALPHA, "bernstein")) == 1.0
    assert np.mean(betting < gs._upper_batch(x, ALPHA, "hoeffding")) == 1.0


def test_batch_kernel_is_what_the_public_test_runs():
    rng = np.random.default_rng(5)
    d = es_differences(rng, 6, 40, 0.02)
    for method in BOUND_METHODS:
        upper = -1 + 2 * gs._upper_batch((d + 1) / 2, ALPHA, method)
        for row, u in zip(d, upper):
            r = noninferiority_test(
                np.maximum(row, 0), np.maximum(-row, 0), margin=0.05, method=method
            )
            assert r.bound == pytest.approx(max(u, row.mean()), abs=1e-12)


def test_few_items_cannot_show_noninferiority_and_many_can():
    zeros16, zeros200 = np.zeros(16), np.zeros(200)
    for method in BOUND_METHODS:
        assert not noninferiority_test(zeros16, zeros16, margin=0.05, method=method).rejected
    assert noninferiority_test(zeros200, zeros200, margin=0.05).rejected


def test_values_outside_the_support_raise():
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]; values\[1\] is 1.5"):
        mean_bound([0.5, 1.5], low=0.0, high=1.0)
    with pytest.raises(ValueError, match=r"arm must lie in \[0, 1\]; arm\[0\] is -0.1"):
        noninferiority_test([-0.1], [0.0], margin=0.05)


def test_relative_reduction_null_and_shape():
    arm, base = [0.0] * 60 + [1.0] * 40, [1.0] * 100
    r = relative_reduction_test(arm, base, reduction=0.25)
    assert (r.low, r.high, r.margin) == (-0.75, 1.0, 0.0)
    assert r.estimate == pytest.approx(0.4 - 0.75)
    assert r.rejected
    # r = 1 (arm mean below 0) can never be shown
    assert not relative_reduction_test([0.0] * 500, [1.0] * 500, reduction=1.0).rejected
    # a reduction that is not there is not shown
    assert not relative_reduction_test([0.9] * 100, [1.0] * 100, reduction=0.25).rejected


# -------------------------------------------------------------- bounded: properties

unit_values = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=2, max_size=60)
alphas = st.floats(0.001, 0.5)


@settings(max_examples=25, deadline=None)
@given(values=unit_values, alpha=alphas, method=st.sampled_from(BOUND_METHODS))
def test_upper_is_above_mean_is_above_lower(values, alpha, method):
    up = mean_bound(values, low=0.0, high=1.0, alpha=alpha, method=method)
    lo = mean_bound(values, low=0.0, high=1.0, alpha=alpha, method=method, side="lower")
    assert 0.0 <= lo.bound <= lo.estimate == up.estimate <= up.bound <= 1.0


@settings(max_examples=25, deadline=None)
@given(values=unit_values, a1=alphas, a2=alphas, method=st.sampled_from(BOUND_METHODS))
def test_bounds_are_monotone_in_alpha(values, a1, a2, method):
    small, large = sorted((a1, a2))
    for side in ("upper", "lower"):
        b_small = mean_bound(values, low=0.0, high=1.0, alpha=small, side=side, method=method)
        b_large = mean_bound(values, low=0.0, high=1.0, alpha=large, side=side, method=method)
        if side == "upper":
            assert b_small.bound >= b_large.bound
        else:
            assert b_small.bound <= b_large.bound


@settings(max_examples=25, deadline=None)
@given(
    values=unit_values,
    shift=st.floats(-100.0, 100.0),
    scale=st.floats(0.01, 100.0),
    method=st.sampled_from(BOUND_METHODS),
)
def test_bounds_are_shift_and_scale_equivariant(values, shift, scale, method):
    ref = mean_bound(values, low=0.0, high=1.0, method=method)
    moved = mean_bound(
        [shift + scale * v for v in values], low=shift, high=shift + scale, method=method
    )
    assert moved.bound == pytest.approx(shift + scale * ref.bound, abs=1e-9 * (scale + abs(shift)))


@settings(max_examples=25, deadline=None)
@given(values=unit_values, method=st.sampled_from(BOUND_METHODS))
def test_lower_bound_is_the_reflected_upper_bound(values, method):
    lo = mean_bound(values, low=0.0, high=1.0, side="lower", method=method)
    up = mean_bound([1.0 - v for v in values], low=0.0, high=1.0, method=method)
    assert lo.bound == pytest.approx(1.0 - up.bound, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    d=st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.0, 0.0, 0.3, 1.0]), min_size=2, max_size=80),
    margin=st.floats(-0.5, 0.6),
    method=st.sampled_from(BOUND_METHODS),
)
def test_p_value_agrees_with_the_bound(d, margin, method):
    arr = np.array(d)
    r = noninferiority_test(np.maximum(arr, 0), np.maximum(-arr, 0), margin=margin, method=method)
    assert 0.0 <= r.p_value <= 1.0
    if abs(r.bound - margin) > 1e-9:
        assert r.rejected == (r.p_value <= ALPHA)
    assert r.rejected == (r.bound < margin)


# ------------------------------------------------------------------ Tango / McNemar


def _tango_by_restricted_mle(b, c, n, delta0):
    """Tango's statistic from a numerically solved restricted MLE (no closed form).

    Profile log-likelihood of the multinomial in q01 = t under q10 - q01 = delta0: the
    concordant cells share the remaining mass ``1 - 2t - delta0`` in proportion to their
    counts, so ``ℓ(t) = b log(t + δ0) + c log t + (n - b - c) log(1 - 2t - δ0)``.
    """
    lo, hi = max(0.0, -delta0), (1.0 - delta0) / 2.0
    rest = n - b - c

    def negative_loglik(t):
        terms = [(b, t + delta0), (c, t), (rest, 1.0 - 2.0 * t - delta0)]
        return -sum(k * math.log(p) if k else 0.0 for k, p in terms)

    eps = 1e-13
    res = scipy.optimize.minimize_scalar(
        negative_loglik, bounds=(lo + eps, hi - eps), method="bounded", options={"xatol": 1e-13}
    )
    t = float(res.x)
    # at a boundary optimum the bounded search stops next to it
    t = min((lo, t, hi), key=lambda s: negative_loglik(min(max(s, lo + eps), hi - eps)))
    q10, q01 = t + delta0, t
    var = (q10 + q01 - (q10 - q01) ** 2) / n  # variance of (b - c)/n under the restricted MLE
    if var <= 0:
        return 0.0
    return ((b - c) / n - delta0) / math.sqrt(var)


def _outcomes(n10, n01, n11, n00):
    arm = [1] * n10 + [0] * n01 + [1] * n11 + [0] * n00
    base = [0] * n10 + [1] * n01 + [1] * n11 + [0] * n00
    return arm, base


@pytest.mark.parametrize(
    ("n10", "n01", "n11", "n00", "delta0"),
    [
        (3, 8, 5, 24, 0.05),
        (10, 2, 0, 8, -0.2),
        (0, 0, 4, 12, 0.1),
        (0, 5, 0, 0, 0.3),
        (7, 7, 1, 1, -0.05),
        (25, 1, 40, 62, 0.15),
    ],
)
def test_tango_matches_a_numerical_restricted_mle(n10, n01, n11, n00, delta0):
    arm, base = _outcomes(n10, n01, n11, n00)
    r = paired_proportions_test(arm, base, delta0=delta0, method="score")
    n = n10 + n01 + n11 + n00
    expected = _tango_by_restricted_mle(n10, n01, n, delta0)
    assert r.statistic == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert r.p_value == pytest.approx(scipy.stats.norm.cdf(expected), rel=1e-5, abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(n10=st.integers(0, 40), n01=st.integers(0, 40), rest=st.integers(0, 40))
def test_tango_at_zero_is_mcnemar(n10, n01, rest):
    arm, base = _outcomes(n10, n01, rest, 3)
    r = paired_proportions_test(arm, base, delta0=0.0, alternative="two-sided", method="score")
    if n10 + n01 == 0:
        assert (r.statistic, r.p_value) == (0.0, 1.0)
    else:
        mcnemar = (n10 - n01) / math.sqrt(n10 + n01)
        assert r.statistic == pytest.approx(mcnemar, rel=1e-12, abs=1e-12)
        chi2 = scipy.stats.chi2.sf(mcnemar**2, df=1)  # McNemar's chi-square, no correction
        assert r.p_value == pytest.approx(chi2, rel=1e-9, abs=1e-300)


@settings(max_examples=40, deadline=None)
@given(
    n10=st.integers(0, 30),
    n01=st.integers(0, 30),
    rest=st.integers(1, 30),
    delta0=st.floats(-0.9, 0.9),
)
def test_tango_is_antisymmetric_and_decreasing_in_delta0(n10, n01, rest, delta0):
    arm, base = _outcomes(n10, n01, rest, 0)
    z = paired_proportions_test(arm, base, delta0=delta0, method="score").statistic
    swapped = paired_proportions_test(base, arm, delta0=-delta0, method="score").statistic
    assert swapped == pytest.approx(-z, rel=1e-9, abs=1e-9)
    z_higher = paired_proportions_test(
        arm, base, delta0=min(delta0 + 0.05, 0.95), method="score"
    ).statistic
    assert z_higher <= z + 1e-9


def test_exact_and_score_agree_on_a_clear_case():
    arm, base = _outcomes(2, 14, 10, 34)  # 2 vs 14 discordant pairs: a clear drop
    exact = paired_proportions_test(arm, base, delta0=0.0)
    score = paired_proportions_test(arm, base, method="score")
    assert exact.method == "exact_unconditional"
    assert score.method == "tango_score"
    assert exact.rejected
    assert score.rejected
    assert exact.statistic == score.statistic
    assert paired_proportions_test(arm, base, alternative="greater").p_value > 0.9


# ------------------------------------------------------------------------- DeLong


def _delong_brute_force(pos, neg):
    """Structural components by the O(m·n) definition."""
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), np.var(v10, ddof=1), np.var(v01, ddof=1)


@settings(max_examples=40, deadline=None)
@given(
    pos=st.lists(st.integers(0, 6), min_size=2, max_size=30),
    neg=st.lists(st.integers(0, 6), min_size=2, max_size=30),
)
def test_delong_matches_the_structural_components(pos, neg):
    p, q = np.array(pos, float), np.array(neg, float)
    r = delong_auc(p, q)
    auc, s10, s01 = _delong_brute_force(p, q)
    assert r.estimate == pytest.approx(auc, abs=1e-12)
    assert r.s10 == pytest.approx(s10, abs=1e-12)
    assert r.s01 == pytest.approx(s01, abs=1e-12)
    assert r.variance == pytest.approx(s10 / p.size + s01 / q.size, abs=1e-12)
    flipped = delong_auc(q, p)
    assert flipped.estimate == pytest.approx(1.0 - r.estimate, abs=1e-12)
    assert flipped.variance == pytest.approx(r.variance, abs=1e-12)


def test_delong_variance_agrees_with_a_stratified_bootstrap():
    rng = np.random.default_rng(7)
    pos, neg = mia_scores(rng, 60, 50, 0.7)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    boots = 3000
    ip = rng.integers(0, pos.size, (boots, pos.size))
    ineg = rng.integers(0, neg.size, (boots, neg.size))
    aucs = np.array([psi[np.ix_(a, b)].mean() for a, b in zip(ip, ineg)])
    ratio = delong_auc(pos, neg).variance / np.var(aucs, ddof=1)
    assert 0.85 < ratio < 1.18


def test_auc_tests_directions_and_degenerate_cases():
    pos, neg = [0.9, 0.8, 0.4, 0.7], [0.1, 0.5, 0.3, 0.2]
    greater = auc_test(pos, neg, threshold=0.65, alternative="greater")
    less = auc_test(pos, neg, threshold=0.65, alternative="less")
    assert greater.statistic == less.statistic > 0
    assert greater.p_value + less.p_value == pytest.approx(1.0)
    # perfect separation: se = 0, nothing to scale by, no rejection
    sep = auc_test([1.0, 2.0], [0.0, -1.0], threshold=0.5, alternative="greater")
    assert sep.estimate == 1.0
    assert sep.se == 0.0
    assert math.isnan(sep.statistic)
    assert (sep.p_value, sep.rejected) == (1.0, False)
    tied = auc_equivalence_test([1.0, 1.0, 1.0], [1.0, 1.0], low=0.35, high=0.65)
    assert tied.estimate == 0.5
    assert not tied.rejected
    pos, neg = mia_scores(np.random.default_rng(1), 400, 400, 0.5)
    eq = auc_equivalence_test(pos, neg, low=0.4, high=0.6)
    assert eq.rejected
    assert eq.thresholds == (0.4, 0.6)
    z_lo = (eq.estimate - 0.4) / eq.se
    z_hi = (0.6 - eq.estimate) / eq.se
    assert eq.statistic == pytest.approx(min(z_lo, z_hi))
    assert eq.p_value == pytest.approx(scipy.stats.norm.sf(min(z_lo, z_hi)))


# ------------------------------------------------------------------ log ratio (t test)


def test_log_ratio_matches_scipy_ttest():
    rng = np.random.default_rng(8)
    arm, base = rng.normal(2.1, 0.3, 30), rng.normal(2.0, 0.3, 30)
    r = log_ratio_test(arm, base, max_ratio=1.25)
    ref = scipy.stats.ttest_1samp(arm - base - math.log(1.25), 0.0, alternative="less")
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert r.rejected == (r.bound < r.margin)
    assert r.ratio == pytest.approx(math.exp(np.mean(arm - base)))
    # every difference equal: the t test's limit (the mean is known exactly)
    same = log_ratio_test([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], max_ratio=1.25)
    assert same.p_value == 0.0
    assert same.statistic == -math.inf
    assert same.rejected
    above = log_ratio_test([1.5, 1.5, 1.5], [1.0, 1.0, 1.0], max_ratio=1.25)
    assert above.p_value == 1.0
    assert not above.rejected


# -------------------------------------------------------------------------- evidence


def test_evidence_guard():
    none = check_evidence([0.0] * 5, [0.0] * 5)
    assert not none.informative
    assert none.constant
    assert none.n_differing == 0
    assert none.reason == "arm equals base on every item (all 5 values are 0)"
    same = check_evidence([0.2, 0.5], [0.2, 0.5])
    assert not same.informative
    assert not same.constant
    assert same.reason == "arm equals base on every item"
    some = check_evidence([0.0, 0.0, 0.1], [0.0, 0.0, 0.0])
    assert some.informative
    assert some.n_differing == 1
    assert some.reason == ""
    assert not check_evidence([], []).informative
    tied = check_evidence([0.5, 0.5], [0.5], paired=False)
    assert not tied.informative
    assert tied.reason == "every value of both samples is 0.5"
    assert check_evidence([0.5, 0.6], [0.5], paired=False).informative
    assert check_evidence([], [0.5], paired=False).reason == "arm has no values"


@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from([0.0, 1.0]))))
def test_evidence_is_informative_iff_some_item_differs(pairs):
    arm = [a for a, _ in pairs]
    base = [b for _, b in pairs]
    e = check_evidence(arm, base)
    assert e.informative == any(a != b for a, b in pairs)
    assert e.n == len(pairs)


# -------------------------------------------------------------- results and messages


def test_results_are_frozen_and_json_ready():
    rng = np.random.default_rng(9)
    pos, neg = mia_scores(rng, 10, 12, 0.6)
    arm, base = _outcomes(3, 5, 2, 10)
    results = [
        mean_bound([0.1, 0.2], low=0.0, high=1.0),
        noninferiority_test([0.1, 0.2], [0.1, 0.1], margin=0.05),
        relative_reduction_test([0.1, 0.2], [0.9, 1.0], reduction=0.25),
        paired_proportions_test(arm, base),
        delong_auc(pos, neg),
        auc_test(pos, neg, threshold=0.5, alternative="greater"),
        auc_equivalence_test(pos, neg, low=0.35, high=0.65),
        log_ratio_test([1.0, 1.2, 0.9], [1.0, 1.0, 1.0], max_ratio=1.25),
        check_evidence([0.0, 1.0], [0.0, 0.0]),
    ]
    kinds = (MeanBound, BoundedMeanTest, PairedProportionsTest, DeLongAUC, AUCTestResult)
    kinds += (LogRatioTest, Evidence)
    for r in results:
        assert isinstance(r, kinds)
        d = json.loads(json.dumps(r.to_dict()))
        assert set(d) == {f.name for f in dataclasses.fields(r)}
        with pytest.raises(dataclasses.FrozenInstanceError):
            r.n = 0  # type: ignore[misc]
    auc = results[6]
    assert auc.to_dict()["thresholds"] == [0.35, 0.65]
    for r in results[1:4] + results[5:8]:
        assert r.null
        assert isinstance(r.p_value, float)


def test_inputs_are_not_modified_and_results_repeat():
    arm = np.array([0.0, 0.5, 1.0, 0.2])
    base = np.array([0.0, 0.4, 0.9, 0.2])
    before = (arm.copy(), base.copy())
    first = noninferiority_test(arm, base, margin=0.1)
    assert noninferiority_test(arm, base, margin=0.1) == first
    np.testing.assert_array_equal(arm, before[0])
    np.testing.assert_array_equal(base, before[1])


def _bound_call(**kw):
    return mean_bound(**{"values": [0.1, 0.2], "low": 0.0, "high": 1.0, **kw})


def _ni_call(**kw):
    return noninferiority_test(**{"arm": [0.1, 0.2], "base": [0.0, 0.1], "margin": 0.05, **kw})


def _rr_call(**kw):
    return relative_reduction_test(
        **{"arm": [0.1, 0.2], "base": [0.5, 0.6], "reduction": 0.25, **kw}
    )


def _pp_call(**kw):
    return paired_proportions_test(**{"arm": [1, 0, 1], "base": [0, 0, 1], **kw})


def _auc_call(**kw):
    args = {"positives": [0.9, 0.7], "negatives": [0.1, 0.8]}
    if "threshold" in kw or "alternative" in kw:
        return auc_test(**{**args, "threshold": 0.5, "alternative": "greater", **kw})
    if "low" in kw or "high" in kw:
        return auc_equivalence_test(**{**args, "low": 0.35, "high": 0.65, **kw})
    return delong_auc(**{**args, **kw})


def _lr_call(**kw):
    return log_ratio_test(**{"arm": [1.0, 1.1], "base": [1.0, 1.0], "max_ratio": 1.25, **kw})


def _ev_call(**kw):
    return check_evidence(**{"arm": [0.0, 1.0], "base": [0.0, 0.0], **kw})


E = re.escape
# fmt: off
VALIDATION = [
    (_bound_call, {"values": ["a", "b"]}, TypeError, E("values must be a 1-D array-like of numbers, got dtype <U1")),
    (_bound_call, {"values": [[0.1], [0.2, 0.3]]}, TypeError, E("values must be a 1-D array-like of numbers;")),
    (_bound_call, {"values": [[0.1, 0.2]]}, ValueError, E("values must be 1-D, got an array of shape (1, 2)")),
    (_bound_call, {"values": []}, ValueError, E("values needs at least 1 values, got 0")),
    (_bound_call, {"values": [0.5], "method": "bernstein"}, ValueError, E("values needs at least 2 values, got 1")),
    (_bound_call, {"values": [0.1, float("nan")]}, ValueError, E("values must be finite; values[1] is nan")),
    (_bound_call, {"values": [0.1, 1.5]}, ValueError, E("values must lie in [0, 1]; values[1] is 1.5")),
    (_bound_call, {"low": "0"}, TypeError, E("low must be a finite float, got str '0'")),
    (_bound_call, {"high": float("inf")}, ValueError, E("high must be a finite float, got inf")),
    (_bound_call, {"low": 1.0}, ValueError, E("high must be greater than low, got low=1, high=1")),
    (_bound_call, {"alpha": 0.0}, ValueError, E("alpha must be a float in (0, 1), got 0.0")),
    (_bound_call, {"alpha": 1}, ValueError, E("alpha must be a float in (0, 1), got 1")),
    (_bound_call, {"alpha": "0.05"}, TypeError, E("alpha must be a float in (0, 1), got str '0.05'")),
    (_bound_call, {"alpha": True}, TypeError, E("alpha must be a float in (0, 1), got bool True")),
    (_bound_call, {"side": "both"}, ValueError, E("side must be one of 'upper', 'lower'; got 'both'")),
    (_bound_call, {"method": "t"}, ValueError, E("method must be one of 'betting', 'bernstein', 'hoeffding'; got 't'")),
    (_ni_call, {"margin": float("nan")}, ValueError, E("margin must be a finite float, got nan")),
    (_ni_call, {"margin": None}, TypeError, E("margin must be a finite float, got NoneType None")),
    (_ni_call, {"base": [0.0]}, ValueError, E("arm and base must have the same length, got 2 and 1")),
    (_ni_call, {"arm": [0.1, 2.0]}, ValueError, E("arm must lie in [0, 1]; arm[1] is 2.0")),
    (_ni_call, {"base": [-0.5, 0.0]}, ValueError, E("base must lie in [0, 1]; base[0] is -0.5")),
    (_ni_call, {"arm": "ab"}, TypeError, E("arm must be a 1-D array-like of numbers, got dtype <U2")),
    (_ni_call, {"high": -1.0}, ValueError, E("high must be greater than low, got low=0, high=-1")),
    (_ni_call, {"method": "sign_flip"}, ValueError, E("method must be one of 'betting'")),
    (_ni_call, {"alpha": 1.5}, ValueError, E("alpha must be a float in (0, 1), got 1.5")),
    (_rr_call, {"reduction": 1.5}, ValueError, E("reduction must be a float in [0, 1], got 1.5")),
    (_rr_call, {"reduction": "25%"}, TypeError, E("reduction must be a float in [0, 1], got str '25%'")),
    (_rr_call, {"arm": [0.1, 1.2]}, ValueError, E("arm must lie in [0, 1]; arm[1] is 1.2")),
    (_rr_call, {"base": [0.5, -0.2]}, ValueError, E("base must lie in [0, 1]; base[1] is -0.2")),
    (_rr_call, {"base": [0.5]}, ValueError, E("arm and base must have the same length, got 2 and 1")),
    (_rr_call, {"method": "exact"}, ValueError, E("method must be one of 'betting'")),
    (_rr_call, {"alpha": -0.1}, ValueError, E("alpha must be a float in (0, 1), got -0.1")),
    (_pp_call, {"arm": [2, 0, 1]}, ValueError, E("arm must hold only 0 and 1; arm[0] is 2.0")),
    (_pp_call, {"base": [0, 0.5, 1]}, ValueError, E("base must hold only 0 and 1; base[1] is 0.5")),
    (_pp_call, {"base": [0, 1]}, ValueError, E("arm and base must have the same length, got 3 and 2")),
    (_pp_call, {"arm": []}, ValueError, E("arm needs at least 1 values, got 0")),
    (_pp_call, {"delta0": 1.0}, ValueError, E("delta0 must be a float in (-1, 1), got 1.0")),
    (_pp_call, {"delta0": "0"}, TypeError, E("delta0 must be a float in (-1, 1), got str '0'")),
    (_pp_call, {"alternative": "lower"}, ValueError, E("alternative must be one of 'less', 'greater', 'two-sided'; got 'lower'")),
    (_pp_call, {"method": "mcnemar"}, ValueError, E("method must be one of 'exact', 'score'; got 'mcnemar'")),
    (_pp_call, {"alpha": 0}, ValueError, E("alpha must be a float in (0, 1), got 0")),
    (_auc_call, {"positives": [0.9]}, ValueError, E("positives needs at least 2 values, got 1")),
    (_auc_call, {"negatives": ["x", "y"]}, TypeError, E("negatives must be a 1-D array-like of numbers, got dtype <U1")),
    (_auc_call, {"negatives": [0.1, float("inf")]}, ValueError, E("negatives must be finite; negatives[1] is inf")),
    (_auc_call, {"threshold": 1.5}, ValueError, E("threshold must be a float in [0, 1], got 1.5")),
    (_auc_call, {"alternative": "two-sided"}, ValueError, E("alternative must be one of 'less', 'greater'; got 'two-sided'")),
    (_auc_call, {"threshold": 0.5, "alpha": 2.0}, ValueError, E("alpha must be a float in (0, 1), got 2.0")),
    (_auc_call, {"low": -0.1}, ValueError, E("low must be a float in [0, 1], got -0.1")),
    (_auc_call, {"high": "0.65"}, TypeError, E("high must be a float in [0, 1], got str '0.65'")),
    (_auc_call, {"low": 0.7}, ValueError, E("high must be greater than low, got low=0.7, high=0.65")),
    (_auc_call, {"low": 0.35, "alpha": None}, TypeError, E("alpha must be a float in (0, 1), got NoneType None")),
    (_lr_call, {"max_ratio": 0.0}, ValueError, E("max_ratio must be a finite float > 0, got 0.0")),
    (_lr_call, {"max_ratio": "1.25"}, TypeError, E("max_ratio must be a finite float > 0, got str '1.25'")),
    (_lr_call, {"arm": [1.0], "base": [1.0]}, ValueError, E("arm needs at least 2 values, got 1")),
    (_lr_call, {"base": [1.0, 1.0, 1.0]}, ValueError, E("arm and base must have the same length, got 2 and 3")),
    (_lr_call, {"arm": [1e308, 1.0], "base": [-1e308, 1.0]}, ValueError, E("arm - base overflows float64")),
    (_lr_call, {"alpha": 1.0}, ValueError, E("alpha must be a float in (0, 1), got 1.0")),
    (_ev_call, {"paired": 1}, TypeError, E("paired must be True or False, got int 1")),
    (_ev_call, {"base": [0.0]}, ValueError, E("arm and base must have the same length, got 2 and 1")),
    (_ev_call, {"arm": [[0.0], [1.0]]}, ValueError, E("arm must be 1-D, got an array of shape (2, 1)")),
    (_ev_call, {"base": [0.0, float("nan")]}, ValueError, E("base must be finite; base[1] is nan")),
]
# fmt: on


@pytest.mark.parametrize(("call", "kwargs", "error", "match"), VALIDATION)
def test_validation_messages_name_the_argument(call, kwargs, error, match):
    with pytest.raises(error, match=match):
        call(**kwargs)


def test_module_uses_no_random_numbers():
    with open(gs.__file__, encoding="utf-8") as f:
        source = f.read()
    assert "np.random" not in source
    assert "default_rng" not in source


def test_docstring_examples_run():
    result = doctest.testmod(gs)
    assert result.attempted > 0
    assert result.failed == 0
