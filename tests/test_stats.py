"""Tests of mmie.stats against scipy, exact enumeration and hand computations."""

from __future__ import annotations

import dataclasses
import doctest
import itertools
import json
import random
import tracemalloc
import warnings

import numpy as np
import pytest
import scipy
import scipy.stats
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import mmie
import mmie.stats
from mmie.errors import SmallSampleWarning
from mmie.stats import (
    ConfidenceInterval,
    PermutationTestResult,
    bootstrap_ci,
    holm_bonferroni,
    paired_permutation_test,
    permutation_test,
)

METHODS = ("percentile", "basic", "bca", "t")
BOOT_METHODS = ("percentile", "basic", "bca")

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=2, max_size=40).filter(lambda v: min(v) != max(v))
open_unit = st.floats(0.0, 1.0, exclude_min=True, exclude_max=True)

# scipy 1.15 renamed ``random_state`` to ``rng`` (SPEC 7); the floors job runs an older scipy.
_SCIPY_RNG = (
    "rng" if tuple(int(p) for p in scipy.__version__.split(".")[:2]) >= (1, 15) else "random_state"
)


def scipy_seed(seed: int) -> dict[str, np.random.Generator]:
    """The keyword that seeds a scipy.stats resampling function with default_rng(seed)."""
    return {_SCIPY_RNG: np.random.default_rng(seed)}


def ci(values, **kwargs) -> ConfidenceInterval:
    """bootstrap_ci, asserting that SmallSampleWarning comes exactly when it should."""
    x = np.asarray(values, dtype=float)
    expect = kwargs.get("method", "percentile") != "t" and x.size < 10 and np.ptp(x) > 0
    if expect:
        with pytest.warns(SmallSampleWarning, match="method='t'"):
            return bootstrap_ci(values, **kwargs)
    return bootstrap_ci(values, **kwargs)


def scipy_ci(x, *, alpha, n_boot, seed, method) -> tuple[float, float]:
    """scipy.stats.bootstrap's interval with bootstrap_ci's two documented rules applied."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # scipy returns NaN (with a DegenerateDataWarning) when every resample mean falls
        # on one side of the estimate; such draws are excluded by the caller.
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        # and its standard error of a single resample warns "Degrees of freedom <= 0"
        warnings.simplefilter("ignore", RuntimeWarning)
        res = scipy.stats.bootstrap(
            (x,),
            np.mean,
            n_resamples=n_boot,
            method=method,
            confidence_level=1 - alpha,
            **scipy_seed(seed),
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    est = float(np.mean(x))
    lo, hi = min(lo, est), max(hi, est)  # rule 1: contain the estimate
    return max(lo, float(x.min())), min(hi, float(x.max()))  # rule 2: clip to the range


# ------------------------------------------------------------------------ bootstrap_ci


@settings(max_examples=40, deadline=None)
@given(
    values=samples,
    method=st.sampled_from(METHODS),
    alpha=open_unit,
    n_boot=st.integers(1, 300),
    seed=st.integers(0, 2**63),
    clip=st.booleans(),
)
def test_interval_is_ordered_and_within_range(values, method, alpha, n_boot, seed, clip):
    res = ci(values, method=method, alpha=alpha, n_boot=n_boot, seed=seed, clip=clip)
    assert res.low <= res.estimate <= res.high
    if clip or method in ("percentile", "bca"):
        # percentile and BCa bounds are quantiles of resample means: in range anyway
        # (up to the rounding of a mean, which clipping removes)
        tol = 0.0 if clip else 4 * np.finfo(float).eps * max(map(abs, values))
        assert min(values) - tol <= res.low
        assert res.high <= max(values) + tol
    assert np.isfinite([res.estimate, res.low, res.high]).all() or not clip
    assert res.estimate == pytest.approx(np.mean(values), rel=1e-12, abs=1e-9)
    assert (res.method, res.alpha, res.n, res.n_boot, res.seed, res.clip) == (
        method,
        alpha,
        len(values),
        n_boot,
        seed,
        clip,
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_boot", [1, 2, 3, 7, 19, 20, 21, 39, 40, 41])
@pytest.mark.parametrize("alpha", [1e-12, 0.001, 0.05, 0.5, 0.95, 1 - 1e-12])
def test_any_n_boot_and_alpha_work(method, n_boot, alpha):
    # The original indexed boots[int(alpha/2*n_boot)] and boots[int((1-alpha/2)*n_boot)-1],
    # out of bounds for small n_boot and extreme alpha.
    x = np.random.default_rng(n_boot).lognormal(size=12)
    res = bootstrap_ci(x, method=method, alpha=alpha, n_boot=n_boot, seed=3)
    assert x.min() <= res.low <= res.estimate <= res.high <= x.max()


@settings(max_examples=15, deadline=None)
@given(values=samples, method=st.sampled_from(METHODS), seed=st.integers(0, 2**32))
def test_same_seed_same_result_and_global_rng_untouched(values, method, seed):
    random.random()  # make sure every global state is "somewhere"
    py, npy, tc = random.getstate(), np.random.get_state(), torch.get_rng_state()
    first = ci(values, method=method, seed=seed, n_boot=200)
    second = ci(values, method=method, seed=seed, n_boot=200)
    assert first == second
    assert random.getstate() == py
    after = np.random.get_state()
    assert after[0] == npy[0]
    assert np.array_equal(after[1], npy[1])
    assert after[2:] == npy[2:]
    assert torch.equal(torch.get_rng_state(), tc)


@settings(max_examples=30, deadline=None)
@given(values=samples, method=st.sampled_from(METHODS), seed=st.integers(0, 2**32))
def test_alpha_010_interval_nests_in_alpha_005(values, method, seed):
    wide = ci(values, method=method, alpha=0.05, seed=seed, n_boot=500)
    narrow = ci(values, method=method, alpha=0.10, seed=seed, n_boot=500)
    assert wide.low <= narrow.low <= narrow.high <= wide.high


@settings(max_examples=30, deadline=None)
@given(
    values=samples,
    method=st.sampled_from(("percentile", "basic", "t")),
    shift=finite,
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**32),
)
def test_shift_and_scale_equivariance(values, method, shift, scale, seed):
    x = np.asarray(values)
    base = ci(x, method=method, seed=seed, n_boot=300)
    moved = ci(shift + scale * x, method=method, seed=seed, n_boot=300)
    tol = 1e-9 * (abs(shift) + scale * np.max(np.abs(x)))
    for a, b in [(moved.low, base.low), (moved.estimate, base.estimate), (moved.high, base.high)]:
        assert a == pytest.approx(shift + scale * b, abs=tol)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.integers(-1000, 1000), min_size=2, max_size=30).filter(
        lambda v: min(v) != max(v)
    ),
    shift=st.integers(-(10**4), 10**4),
    log2_scale=st.integers(-4, 4),
    seed=st.integers(0, 2**32),
)
def test_bca_shift_and_scale_equivariance(values, shift, log2_scale, seed):
    # BCa's bias correction counts resample means equal to the estimate: on integer data
    # with integer shifts and power-of-two scales these ties are exact, not rounding noise.
    x = np.asarray(values, dtype=float)
    scale = 2.0**log2_scale
    base = ci(x, method="bca", seed=seed, n_boot=300)
    moved = ci(shift + scale * x, method="bca", seed=seed, n_boot=300)
    tol = 1e-9 * (abs(shift) + scale * np.max(np.abs(x)))
    for a, b in [(moved.low, base.low), (moved.estimate, base.estimate), (moved.high, base.high)]:
        assert a == pytest.approx(shift + scale * b, abs=tol)


def _assert_matches_scipy(x, *, alpha, n_boot, seed, method, hypothesis=True):
    lo, hi = scipy_ci(x, alpha=alpha, n_boot=n_boot, seed=seed, method=method)
    if hypothesis:
        assume(np.isfinite(lo) and np.isfinite(hi))
    assert np.isfinite(lo)
    assert np.isfinite(hi)
    res = ci(x, alpha=alpha, n_boot=n_boot, seed=seed, method=method)
    width = hi - lo
    tol = 1e-10 * max(width, np.finfo(float).eps * np.max(np.abs(x)))
    assert abs(res.low - lo) <= tol
    assert abs(res.high - hi) <= tol


@settings(max_examples=60, deadline=None)
@given(
    values=samples,
    method=st.sampled_from(BOOT_METHODS),
    alpha=st.floats(0.001, 0.5),
    n_boot=st.integers(1, 3000),
    seed=st.integers(0, 2**63),
)
def test_agrees_with_scipy_bootstrap(values, method, alpha, n_boot, seed):
    _assert_matches_scipy(np.asarray(values), alpha=alpha, n_boot=n_boot, seed=seed, method=method)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.integers(0, 5), min_size=2, max_size=12).filter(lambda v: min(v) != max(v)),
    method=st.sampled_from(BOOT_METHODS),
    seed=st.integers(0, 2**32),
)
def test_agrees_with_scipy_bootstrap_with_ties(values, method, seed):
    # Many resample means equal the estimate exactly: BCa's tie counting must match.
    x = np.asarray(values, dtype=float)
    _assert_matches_scipy(x, alpha=0.05, n_boot=2000, seed=seed, method=method)


@pytest.mark.parametrize("method", BOOT_METHODS)
def test_agrees_with_scipy_when_resampling_is_chunked(method):
    # n * n_boot is far above the chunk size: chunked draws must equal scipy's single draw.
    x = np.random.default_rng(7).lognormal(size=1500)
    _assert_matches_scipy(x, alpha=0.05, n_boot=3000, seed=11, method=method, hypothesis=False)


def test_chunk_size_does_not_change_the_result(monkeypatch):
    x = np.random.default_rng(0).normal(size=37)
    expected = [bootstrap_ci(x, method=m, n_boot=1001, seed=5) for m in BOOT_METHODS]
    monkeypatch.setattr(mmie.stats, "_CHUNK_ELEMENTS", 100)  # two resamples per chunk
    assert [bootstrap_ci(x, method=m, n_boot=1001, seed=5) for m in BOOT_METHODS] == expected


def test_large_n_needs_no_large_index_matrix():
    x = np.random.default_rng(0).normal(size=20_000)
    tracemalloc.start()
    try:
        bootstrap_ci(x, n_boot=500, method="bca")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # One matrix of all indices would be 20_000 * 500 * 8 B = 80 MB (and as much again
    # for the gathered values).
    assert peak < 8 * 2**20


def test_bca_stays_finite_where_scipy_gives_nan():
    # One resample of [0, 0, 1]: every resample mean on one side of the estimate makes
    # scipy's bias correction infinite and its interval NaN.
    x = np.array([0.0, 0.0, 1.0])
    seed = next(
        s
        for s in range(1000)
        if np.mean(x[np.random.default_rng(s).integers(0, 3, (1, 3))]) < 1 / 3
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # std of one resample
        with np.errstate(all="ignore"):
            ref = scipy.stats.bootstrap(
                (x,), np.mean, n_resamples=1, method="bca", **scipy_seed(seed)
            )
    assert np.isnan(ref.confidence_interval.low)
    res = ci(x, method="bca", n_boot=1, seed=seed)
    assert 0.0 <= res.low <= res.estimate <= res.high <= 1.0


@settings(max_examples=30, deadline=None)
@given(values=samples, alpha=open_unit)
def test_t_interval_matches_student_t(values, alpha):
    x = np.asarray(values)
    res = ci(x, method="t", alpha=alpha)
    with np.errstate(all="ignore"):
        half = scipy.stats.t.isf(alpha / 2, x.size - 1) * scipy.stats.sem(x)
    if not np.isfinite(half):  # t quantile overflows: the interval is the whole range
        half = np.inf
    mean = np.mean(x)
    tol = 1e-9 * max(half, np.finfo(float).eps * np.max(np.abs(x)))
    assert res.low == pytest.approx(max(mean - half, x.min()), abs=tol)
    assert res.high == pytest.approx(min(mean + half, x.max()), abs=tol)


def test_t_ignores_n_boot_and_seed():
    x = [0.3, 0.5, 0.45, 0.2]
    a = bootstrap_ci(x, method="t", n_boot=1, seed=0)
    b = bootstrap_ci(x, method="t", n_boot=50_000, seed=99)
    assert (a.low, a.estimate, a.high) == (b.low, b.estimate, b.high)


def test_t_clipping_is_applied_unless_disabled():
    # mean ± t·s/√n for [0, 0, 1]: 1/3 ± 4.30·0.577/1.73 spans (-1.10, 1.77) before clipping.
    res = bootstrap_ci([0.0, 0.0, 1.0], method="t")
    assert (res.low, res.high) == (0.0, 1.0)
    raw = bootstrap_ci([0.0, 0.0, 1.0], method="t", clip=False)
    ref = scipy.stats.t.interval(0.95, 2, loc=1 / 3, scale=scipy.stats.sem([0.0, 0.0, 1.0]))
    assert (raw.low, raw.high) == pytest.approx(ref, rel=1e-12)
    assert raw.clip is False


def test_basic_clipping_is_applied_unless_disabled():
    x = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0])  # skewed
    clipped = bootstrap_ci(x, method="basic", seed=1)
    raw = bootstrap_ci(x, method="basic", seed=1, clip=False)
    assert raw.low < 0.0  # 2·mean - q_hi reflects the long right tail below the minimum
    assert clipped.low == 0.0
    assert clipped.high == raw.high


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [2, 3, 9, 10, 25])
def test_all_equal_values_give_a_point_without_warning(method, n):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = bootstrap_ci([0.7] * n, method=method)
    assert caught == []
    assert (res.low, res.estimate, res.high) == (0.7, 0.7, 0.7)


@pytest.mark.parametrize("method", BOOT_METHODS)
def test_small_sample_warning_points_at_the_caller(method):
    with pytest.warns(SmallSampleWarning, match=r"only 4 values") as record:
        bootstrap_ci([0.1, 0.4, 0.35, 0.2], method=method)
    assert len(record) == 1
    assert record[0].filename == __file__


@pytest.mark.parametrize("method", METHODS)
def test_no_warning_from_ten_values_or_with_t(method):
    # warnings are errors in this suite: a warning here fails the test
    bootstrap_ci(np.linspace(0.0, 1.0, 10), method=method)
    bootstrap_ci([0.1, 0.4, 0.35], method="t")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"values": [1.0]}, ValueError, r"values needs at least 2 values, got 1"),
        ({"values": []}, ValueError, r"values needs at least 2 values, got 0"),
        ({"values": [1.0, float("nan")]}, ValueError, r"values must be finite; values\[1\]"),
        ({"values": [float("-inf"), 1.0]}, ValueError, r"values must be finite; values\[0\]"),
        ({"values": [[1.0, 2.0], [3.0, 4.0]]}, ValueError, r"values must be 1-D"),
        ({"values": ["a", "b"]}, TypeError, r"values must be a 1-D array-like of numbers"),
        ({"values": [1e308, 1e308]}, ValueError, r"values are too large in magnitude"),
        ({"alpha": 0.0}, ValueError, r"alpha must lie strictly between 0 and 1, got 0.0"),
        ({"alpha": 1.0}, ValueError, r"alpha must lie strictly between 0 and 1"),
        ({"alpha": -0.1}, ValueError, r"alpha must lie strictly between 0 and 1"),
        ({"alpha": float("nan")}, ValueError, r"alpha must lie strictly between 0 and 1"),
        ({"alpha": "0.05"}, TypeError, r"alpha must be a float in \(0, 1\), got str"),
        ({"n_boot": 0}, ValueError, r"n_boot must be >= 1, got 0"),
        ({"n_boot": -5, "method": "t"}, ValueError, r"n_boot must be >= 1, got -5"),
        ({"n_boot": 10.0}, TypeError, r"n_boot must be an int, got float"),
        ({"n_boot": True}, TypeError, r"n_boot must be an int, got bool"),
        ({"seed": -1}, ValueError, r"seed must be >= 0, got -1"),
        ({"seed": None}, TypeError, r"seed must be an int, got NoneType"),
        ({"method": "studentized"}, ValueError, r"method must be one of 'percentile', 'basic'"),
        ({"statistic": "median"}, ValueError, r"statistic must be one of 'mean'; got 'median'"),
        ({"clip": "yes"}, TypeError, r"clip must be a bool, got str"),
    ],
)
def test_validation_messages_name_the_argument(kwargs, error, match):
    kwargs = {"values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], **kwargs}
    with pytest.raises(error, match=match):
        bootstrap_ci(**kwargs)


def test_accepts_array_likes_and_result_is_frozen_and_serialisable():
    x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    a = bootstrap_ci(x, n_boot=100)
    assert bootstrap_ci(np.asarray(x, dtype=np.float32), n_boot=100) == a
    assert bootstrap_ci(torch.tensor(x), n_boot=100) == a
    assert bootstrap_ci(tuple(x), n_boot=100) == a
    assert mmie.bootstrap_ci is bootstrap_ci
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.low = 0.0  # type: ignore[misc]
    d = json.loads(json.dumps(a.to_dict()))
    assert ConfidenceInterval(**d) == a
    assert a.width == a.high - a.low


def _coverage(method, n, reps, **kwargs):
    rng = np.random.default_rng(2024)
    hits = 0
    for rep in range(reps):
        x = rng.normal(1.0, 2.0, size=n)
        res = bootstrap_ci(x, method=method, n_boot=2000, seed=rep, **kwargs)
        hits += res.low <= 1.0 <= res.high
    return hits / reps


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_coverage_n30_normal(method):
    # true coverage of percentile/basic at n = 30 is about 0.93, of BCa 0.935, of t 0.95
    assert 0.92 <= _coverage(method, 30, 4000) <= 0.97


@pytest.mark.slow
def test_coverage_n4_t_unclipped_is_nominal_and_clipping_caps_it():
    assert 0.935 <= _coverage("t", 4, 4000, clip=False) <= 0.965
    # clipping to the sample range caps coverage at 1 - 2**(1 - n) = 0.875 (documented)
    assert _coverage("t", 4, 4000) <= 0.875


# ------------------------------------------------------------------- permutation tests


def _scipy_mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _scipy_diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _enumerated_paired_p(d, alternative):
    """Exact sign-flip p-value by brute force over all sign vectors (exact integer data)."""
    obs = sum(d)
    null = [
        sum(s * v for s, v in zip(signs, d)) for signs in itertools.product((1, -1), repeat=len(d))
    ]
    le = sum(t <= obs for t in null) / len(null)
    ge = sum(t >= obs for t in null) / len(null)
    return {"less": le, "greater": ge, "two-sided": min(1.0, 2 * min(le, ge))}[alternative]


def _enumerated_two_sample_p(x, y, alternative):
    """Exact two-sample p-value by brute force over all splits (integer data, exact)."""
    pooled, nx, ny = list(x) + list(y), len(x), len(y)
    total = sum(pooled)

    def diff(sx):  # mean difference scaled by nx*ny, an integer
        return sx * ny - (total - sx) * nx

    obs = diff(sum(x))
    null = [diff(sum(pooled[i] for i in c)) for c in itertools.combinations(range(nx + ny), nx)]
    le = sum(t <= obs for t in null) / len(null)
    ge = sum(t >= obs for t in null) / len(null)
    return {"less": le, "greater": ge, "two-sided": min(1.0, 2 * min(le, ge))}[alternative]


alternatives = st.sampled_from(("two-sided", "greater", "less"))
# Multiples of 2**-10: sums are exact, so null values that are equal in exact arithmetic are
# equal in floating point for scipy too, and distinct ones differ far beyond rounding.
grid = st.integers(-(2**20), 2**20).map(lambda k: k / 1024)


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(st.tuples(grid, grid), min_size=2, max_size=10),
    alternative=alternatives,
)
def test_paired_exact_matches_scipy(pairs, alternative):
    a, b = (np.array(v) for v in zip(*pairs))
    res = paired_permutation_test(a, b, alternative=alternative)
    ref = scipy.stats.permutation_test(
        (a - b,), _scipy_mean, permutation_type="samples", alternative=alternative
    )
    assert res.method == "exact"
    assert res.n_permutations == 2 ** len(a)
    assert res.p_value == pytest.approx(ref.pvalue, abs=1e-12)
    assert res.statistic == pytest.approx(np.mean(a - b), rel=1e-12, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    d=st.lists(st.integers(-5, 5), min_size=1, max_size=10),
    alternative=alternatives,
)
def test_paired_exact_matches_enumeration_with_ties(d, alternative):
    a = np.asarray(d, dtype=float) + 10.0
    b = np.full(len(d), 10.0)
    res = paired_permutation_test(a, b, alternative=alternative)
    assert res.p_value == _enumerated_paired_p(d, alternative)
    assert res.p_value > 0
    assert (res.n, res.sizes) == (len(d), (len(d),))


def test_paired_exact_threshold_is_two_to_the_n():
    a, b = [1.0, 2.0, 3.0], [0.0, 0.5, 1.0]
    assert paired_permutation_test(a, b, n_permutations=8).method == "exact"
    res = paired_permutation_test(a, b, n_permutations=7)
    assert (res.method, res.n_permutations) == ("monte_carlo", 7)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_paired_monte_carlo_agrees_with_exact_enumeration(alternative):
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1.0, size=15), rng.normal(0.0, 1.0, size=15)
    exact = paired_permutation_test(a, b, alternative=alternative, n_permutations=2**15)
    mc = paired_permutation_test(a, b, alternative=alternative, n_permutations=20_000, seed=1)
    assert (exact.method, mc.method) == ("exact", "monte_carlo")
    p = exact.p_value
    assert abs(mc.p_value - p) <= 4 * np.sqrt(p * (1 - p) / 20_000) + 2 / 20_000
    assert mc == paired_permutation_test(
        a, b, alternative=alternative, n_permutations=20_000, seed=1
    )


def test_paired_monte_carlo_p_value_is_never_zero():
    a, b = np.arange(1.0, 41.0), np.zeros(40)  # every difference positive
    greater = paired_permutation_test(a, b, alternative="greater", n_permutations=999)
    assert greater.p_value == 1 / 1000  # (0 + 1) / (999 + 1): only the observed signs
    two = paired_permutation_test(a, b, n_permutations=999)
    assert two.p_value == 2 / 1000
    less = paired_permutation_test(a, b, alternative="less", n_permutations=999)
    assert less.p_value == 1.0


@settings(max_examples=40, deadline=None)
@given(
    x=st.lists(grid, min_size=2, max_size=6),
    y=st.lists(grid, min_size=2, max_size=6),
    alternative=alternatives,
)
def test_two_sample_exact_matches_scipy(x, y, alternative):
    res = permutation_test(x, y, alternative=alternative)
    ref = scipy.stats.permutation_test((x, y), _scipy_diff, alternative=alternative)
    assert res.method == "exact"
    assert res.p_value == pytest.approx(ref.pvalue, abs=1e-12)
    assert res.statistic == pytest.approx(np.mean(x) - np.mean(y), rel=1e-12, abs=1e-6)
    assert (res.n, res.sizes) == (len(x) + len(y), (len(x), len(y)))


@settings(max_examples=40, deadline=None)
@given(
    x=st.lists(st.integers(-3, 3), min_size=1, max_size=6),
    y=st.lists(st.integers(-3, 3), min_size=1, max_size=6),
    alternative=alternatives,
)
def test_two_sample_exact_matches_enumeration_with_ties(x, y, alternative):
    res = permutation_test(
        np.asarray(x, float) + 0.5, np.asarray(y, float) + 0.5, alternative=alternative
    )
    assert res.p_value == _enumerated_two_sample_p(x, y, alternative)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_two_sample_monte_carlo_agrees_with_scipy(alternative):
    rng = np.random.default_rng(8)
    x, y = rng.normal(0.4, 1.0, size=14), rng.normal(0.0, 1.0, size=16)
    mc = permutation_test(x, y, alternative=alternative, n_permutations=20_000, seed=2)
    ref = scipy.stats.permutation_test(
        (x, y), _scipy_diff, alternative=alternative, n_resamples=200_000, **scipy_seed(0)
    )
    p = ref.pvalue
    assert mc.method == "monte_carlo"
    assert abs(mc.p_value - p) <= 4 * np.sqrt(p * (1 - p) / 20_000) + 4 / 20_000
    assert mc.p_value >= 1 / 20_001


def test_permutation_results_are_frozen_and_serialisable():
    res = permutation_test([1.0, 2.0, 3.0], [0.0, 0.5])
    assert isinstance(res, PermutationTestResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.p_value = 0.0  # type: ignore[misc]
    d = json.loads(json.dumps(res.to_dict()))
    assert d["sizes"] == [3, 2]
    assert d["method"] == "exact"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: paired_permutation_test([1.0, 2.0], [1.0]), ValueError, r"same length, got 2 and 1"),
        (lambda: paired_permutation_test([], []), ValueError, r"a needs at least 1 values, got 0"),
        (lambda: paired_permutation_test([1.0], [np.nan]), ValueError, r"b must be finite"),
        (lambda: paired_permutation_test([1e308], [-1e308]), ValueError, r"a - b overflows"),
        (lambda: paired_permutation_test([1.0], [2.0], alternative="both"), ValueError, r"alternative must be one of 'two-sided'"),
        (lambda: paired_permutation_test([1.0], [2.0], n_permutations=0), ValueError, r"n_permutations must be >= 1"),
        (lambda: paired_permutation_test([1.0], [2.0], seed=-3), ValueError, r"seed must be >= 0"),
        (lambda: permutation_test([1.0], [[2.0]]), ValueError, r"y must be 1-D"),
        (lambda: permutation_test([], [1.0]), ValueError, r"x needs at least 1 values"),
        (lambda: permutation_test([1.0], [2.0], n_permutations=2.5), TypeError, r"n_permutations must be an int"),
        (lambda: permutation_test([1.0], [2.0], alternative=None), ValueError, r"alternative must be one of"),
    ],
)  # fmt: skip
def test_permutation_validation_messages(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -------------------------------------------------------------------- holm_bonferroni


def test_holm_hand_computed():
    # sorted: 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert holm_bonferroni([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # ties and the cap at 1: sorted 0.2, 0.2, 0.5, 0.9 -> 0.8, max(0.6, 0.8), 1.0, max(0.9, 1)
    assert holm_bonferroni([0.5, 0.2, 0.2, 0.9]) == pytest.approx([1.0, 0.8, 0.8, 1.0])
    assert holm_bonferroni([0.3]).tolist() == [0.3]
    out = holm_bonferroni([])
    assert out.shape == (0,)
    assert out.dtype == np.float64


def _holm_step_down_rejections(p, alpha):
    """Holm's sequential procedure as published: reject while p_(k) <= alpha / (m - k + 1)."""
    m = len(p)
    rejected = set()
    for k, i in enumerate(sorted(range(m), key=lambda j: p[j]), start=1):
        if p[i] > alpha / (m - k + 1):
            break
        rejected.add(i)
    return rejected


@settings(max_examples=60, deadline=None)
@given(
    p=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
    alpha=st.sampled_from([0.01, 0.05, 0.1, 0.2]),
)
def test_holm_properties_and_step_down_equivalence(p, alpha):
    adj = holm_bonferroni(p)
    p_arr = np.asarray(p)
    assert adj.shape == p_arr.shape
    assert np.all(adj >= p_arr)
    assert np.all(adj <= 1.0)
    order = np.argsort(p_arr, kind="stable")
    assert np.all(np.diff(adj[order]) >= 0)  # monotone in p
    # Adjusted p <= alpha exactly when the step-down procedure rejects (away from rounding
    # at the boundary).
    m = len(p)
    assume(all(abs(v * (m - k) - alpha) > 1e-12 for k, v in enumerate(np.sort(p_arr))))
    assert set(np.flatnonzero(adj <= alpha).tolist()) == _holm_step_down_rejections(p, alpha)


@pytest.mark.parametrize(
    ("p", "error", "match"),
    [
        ([0.1, 1.2], ValueError, r"p_values must lie in \[0, 1\]; p_values\[1\] is 1.2"),
        ([-0.01], ValueError, r"p_values must lie in \[0, 1\]; p_values\[0\]"),
        ([0.1, float("nan")], ValueError, r"p_values must be finite; p_values\[1\]"),
        ([[0.1], [0.2]], ValueError, r"p_values must be 1-D"),
        (["0.1"], TypeError, r"p_values must be a 1-D array-like of numbers"),
    ],
)
def test_holm_validation_messages(p, error, match):
    with pytest.raises(error, match=match):
        holm_bonferroni(p)


def test_docstring_examples_run():
    result = doctest.testmod(mmie.stats)
    assert result.attempted > 0
    assert result.failed == 0
