"""Statistics for reports and gates: confidence intervals, permutation tests, Holm correction.

Everything here works on small 1-D samples of floats (one value per seed, per prompt or per
example), takes an explicit ``seed`` and never touches global RNG state: resampling draws from
``numpy.random.default_rng(seed)``.

* :func:`bootstrap_ci` — a confidence interval for the mean (percentile, basic, BCa or
  Student t). Percentile, basic and BCa follow :func:`scipy.stats.bootstrap` draw for draw:
  given the same seed and ``n_resamples=n_boot`` they give the same interval.
* :func:`paired_permutation_test` and :func:`permutation_test` — sign-flip and two-sample
  permutation tests of a mean difference, exact when every rearrangement can be enumerated
  within ``n_permutations``; conventions follow :func:`scipy.stats.permutation_test`.
* :func:`holm_bonferroni` — Holm's step-down adjustment of a family of p-values.

Example:
    >>> from mmie.stats import bootstrap_ci, holm_bonferroni
    >>> ci = bootstrap_ci([0.1, 0.4, 0.35, 0.2, 0.3], method="t")
    >>> round(ci.estimate, 2), ci.low <= ci.estimate <= ci.high
    (0.27, True)
    >>> holm_bonferroni([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, ndtri, stdtrit
from scipy.stats import rankdata

from mmie.errors import SmallSampleWarning

__all__ = [
    "ConfidenceInterval",
    "PermutationTestResult",
    "bootstrap_ci",
    "holm_bonferroni",
    "paired_permutation_test",
    "permutation_test",
    "placement_values",
    "rank_auc",
]

logger = logging.getLogger(__name__)

CIMethod = Literal["percentile", "basic", "bca", "t"]
Alternative = Literal["two-sided", "greater", "less"]

_CI_METHODS: tuple[str, ...] = get_args(CIMethod)
_ALTERNATIVES: tuple[str, ...] = get_args(Alternative)
_STATISTICS: tuple[str, ...] = ("mean",)
# Indices drawn per chunk of resamples (at least one whole resample). 2**16 int64 indices
# (512 KiB, plus as much for the gathered values) stay in cache and are recycled by the
# allocator: measured 2-3x faster than one large matrix, whose fresh pages must be faulted
# in, and memory stays bounded at any n (no 800 MB matrix for n = n_boot = 10000).
_CHUNK_ELEMENTS = 2**16
# Below this many values bootstrap intervals undercover badly (see SmallSampleWarning).
_SMALL_N = 10
# Null values this close to the observed one (in units of n · eps · max|value|, a bound on
# the rounding error of the sums involved) count as ties: equal in exact arithmetic.
_TIE_ULPS = 16.0


@dataclass(frozen=True)
class ConfidenceInterval:
    """A confidence interval for the mean, with the settings that produced it.

    Attributes:
        estimate: the sample mean (the point estimate).
        low: lower bound; ``low <= estimate``.
        high: upper bound; ``estimate <= high``.
        method: ``"percentile"``, ``"basic"``, ``"bca"`` or ``"t"``.
        alpha: one minus the nominal coverage (0.05 for a 95% interval).
        n: number of values.
        n_boot: bootstrap resamples requested (unused by ``method="t"``).
        seed: seed of the resampling generator (unused by ``method="t"``).
        statistic: the statistic the interval is for (always ``"mean"``).
        clip: whether the bounds were clipped to the range of the values.
    """

    estimate: float
    low: float
    high: float
    method: str
    alpha: float
    n: int
    n_boot: int
    seed: int
    statistic: str = "mean"
    clip: bool = True

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def to_dict(self) -> dict[str, float | int | str | bool]:
        """The fields as a JSON-ready dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class PermutationTestResult:
    """Outcome of :func:`paired_permutation_test` or :func:`permutation_test`.

    Attributes:
        statistic: the observed mean difference (``mean(a - b)`` for the paired test,
            ``mean(x) - mean(y)`` for the two-sample test).
        p_value: the p-value in ``(0, 1]``; never 0 (see the test functions).
        n: number of pairs (paired test) or of observations in both samples (two-sample).
        method: ``"exact"`` when every rearrangement was enumerated, ``"monte_carlo"`` when
            ``n_permutations`` random ones were drawn.
        alternative: ``"two-sided"``, ``"greater"`` or ``"less"``.
        n_permutations: rearrangements in the null distribution (all of them when exact).
        sizes: sample sizes: ``(n,)`` for the paired test, ``(len(x), len(y))`` otherwise.
        seed: seed of the generator (unused when exact).
    """

    statistic: float
    p_value: float
    n: int
    method: Literal["exact", "monte_carlo"]
    alternative: str
    n_permutations: int
    sizes: tuple[int, ...]
    seed: int

    def to_dict(self) -> dict[str, float | int | str | list[int]]:
        """The fields as a JSON-ready dictionary (``sizes`` as a list)."""
        out: dict[str, float | int | str | list[int]] = dict(asdict(self))
        out["sizes"] = list(self.sizes)
        return out


# --------------------------------------------------------------------------- validation


def _sample(values: object, name: str, *, min_n: int) -> np.ndarray:
    """``values`` as a finite 1-D float64 array of at least ``min_n`` elements."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:  # ragged nested sequences
        raise TypeError(f"{name} must be a 1-D array-like of numbers; {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a 1-D array-like of numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    if arr.size < min_n:
        raise ValueError(f"{name} needs at least {min_n} values, got {arr.size}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite; {name}[{bad}] is {arr[bad]}")
    with np.errstate(over="ignore"):
        total = np.sum(np.abs(arr))
    if not np.isfinite(total):
        raise ValueError(f"{name} are too large in magnitude: their sum overflows float64")
    return arr


def _integer(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _choice(value: object, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def _alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a float in (0, 1), got {type(alpha).__name__}")
    a = float(alpha)
    if not 0.0 < a < 1.0:  # also rejects nan
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    return a


# ------------------------------------------------------------------------ bootstrap_ci


def bootstrap_ci(
    values: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
    method: CIMethod = "percentile",
    statistic: Literal["mean"] = "mean",
    clip: bool = True,
) -> ConfidenceInterval:
    """A ``1 - alpha`` confidence interval for the mean of ``values``.

    Methods:

    * ``"percentile"``: the ``alpha/2`` and ``1 - alpha/2`` quantiles of the bootstrap
      means.
    * ``"basic"``: the percentile interval reflected about the estimate,
      ``(2·mean - q_hi, 2·mean - q_lo)``.
    * ``"bca"``: bias-corrected and accelerated (Efron & Tibshirani 1993, §14.3), the
      acceleration from the jackknife (in closed form for the mean).
    * ``"t"``: Student t, ``mean ± t_{n-1, 1-alpha/2} · s / sqrt(n)``; no resampling.

    Resampling is vectorised and chunked (about 65 000 indices at a time) and draws
    ``rng.integers(0, n, (rows, n))`` from ``numpy.random.default_rng(seed)`` in the same
    order as :func:`scipy.stats.bootstrap`; quantiles use NumPy's ``"linear"`` rule. So,
    apart from the two rules below, percentile, basic and BCa intervals equal
    ``scipy.stats.bootstrap((values,), np.mean, n_resamples=n_boot, method=...,
    confidence_level=1 - alpha, rng=numpy.random.default_rng(seed))``. Global RNG state is
    never used or changed.

    Two rules make every interval well formed:

    1. The interval always contains the estimate: a bound on the wrong side of it (possible
       with very few resamples or a large ``alpha``) is moved onto it.
    2. With ``clip=True`` (the default) the bounds are clipped to ``[min(values),
       max(values)]``, the range the sample mean can take. Percentile and BCa bounds lie in
       that range anyway, so for them clipping changes nothing. ``"basic"`` and ``"t"``
       bounds often extend beyond it for small or skewed samples, and there clipping changes
       the nominal interval and lowers its coverage: the *population* mean lies outside the
       sample range with probability ``2**(1 - n)`` for a continuous distribution
       symmetric about its mean, so a clipped interval covers at most ``1 - 2**(1 - n)``:
       75% for 3 values, 87.5% for 4, 93.75% for 5. Pass ``clip=False`` for the nominal
       ``"t"`` (or ``"basic"``) interval, which is what the small-sample advice below
       assumes.

    Small samples: with 3-5 values (seeds), nominal-95% bootstrap intervals cover the true
    mean only about 73-83% of the time, because the bootstrap distribution of so few values
    is too narrow. ``method="t", clip=False`` covers close to nominally for roughly normal
    data and is the honest choice there. A :class:`~mmie.errors.SmallSampleWarning` is
    emitted for a bootstrap method with fewer than 10 values. When all values are equal
    the interval is ``(v, v)``, without resampling and without any warning.

    Args:
        values: the sample, a 1-D array-like of at least two finite numbers.
        alpha: one minus the confidence level, in ``(0, 1)``; 0.05 gives a 95% interval.
        n_boot: number of bootstrap resamples (>= 1). Validated but unused for ``"t"``.
        seed: seed (>= 0) of the ``numpy.random.default_rng`` generator used to resample.
        method: ``"percentile"``, ``"basic"``, ``"bca"`` or ``"t"``.
        statistic: the statistic; only ``"mean"`` is supported.
        clip: clip the bounds to ``[min(values), max(values)]`` (rule 2 above).

    Returns:
        A frozen :class:`ConfidenceInterval` with ``estimate``, ``low``, ``high`` and the
        settings used, ``low <= estimate <= high``.

    Raises:
        TypeError: if ``values`` is not numeric, ``n_boot``/``seed`` are not ints or
            ``clip`` is not a bool.
        ValueError: if ``values`` has fewer than 2 elements, is not 1-D or holds non-finite
            numbers; if ``alpha`` is outside ``(0, 1)``; if ``n_boot < 1`` or ``seed < 0``;
            if ``method`` or ``statistic`` is unknown.

    Warns:
        SmallSampleWarning: for a bootstrap method with fewer than 10 (not all equal) values.

    Example:
        >>> ci = bootstrap_ci([1.0, 2.0, 4.0, 3.0, 5.0, 2.5, 3.5, 1.5, 4.5, 2.0], seed=1)
        >>> round(ci.estimate, 3), round(ci.low, 3), round(ci.high, 3)
        (2.9, 2.15, 3.7)
    """
    x = _sample(values, "values", min_n=2)
    a = _alpha(alpha)
    n_boot = _integer(n_boot, "n_boot", minimum=1)
    seed = _integer(seed, "seed", minimum=0)
    method = _choice(method, "method", _CI_METHODS)  # type: ignore[assignment]
    _choice(statistic, "statistic", _STATISTICS)
    if not isinstance(clip, bool | np.bool_):
        raise TypeError(f"clip must be a bool, got {type(clip).__name__}")
    clip = bool(clip)
    n = x.size
    x_min, x_max = float(np.min(x)), float(np.max(x))

    def result(estimate: float, low: float, high: float) -> ConfidenceInterval:
        return ConfidenceInterval(
            estimate=estimate,
            low=low,
            high=high,
            method=method,
            alpha=a,
            n=n,
            n_boot=n_boot,
            seed=seed,
            clip=clip,
        )

    if x_min == x_max:  # every resample mean is v: no resampling, no NaN, no warning
        return result(x_min, x_min, x_min)
    if method != "t" and n < _SMALL_N:
        warnings.warn(
            f"bootstrap_ci with method={method!r} on only {n} values: bootstrap intervals "
            "cover far below their nominal level for fewer than 10 values (nominal 95% "
            "covers about 73-83% with 3-5 values); use method='t', clip=False",
            SmallSampleWarning,
            stacklevel=2,
        )

    mean = float(np.mean(x))
    if method == "t":
        # -t_{n-1}(a/2), not t_{n-1}(1 - a/2): 1 - a/2 rounds to 1 for tiny alpha.
        half = -float(stdtrit(n - 1, a / 2)) * float(np.std(x, ddof=1)) / math.sqrt(n)
        if not math.isfinite(half):  # t = inf (or inf * an underflowed s): whole range
            half = math.inf
        low, high = mean - half, mean + half
    else:
        theta_b = _bootstrap_means(x, n_boot, np.random.default_rng(seed))
        if method == "bca":
            levels = _bca_levels(x, mean, theta_b, a)
        else:
            levels = (a / 2, 1.0 - a / 2)
        q_low, q_high = (float(q) for q in np.quantile(theta_b, levels, method="linear"))
        if method == "basic":
            low, high = 2.0 * mean - q_high, 2.0 * mean - q_low
        else:
            low, high = q_low, q_high

    estimate = min(max(mean, x_min), x_max)  # rounding can put the mean an ulp outside
    low, high = min(low, estimate), max(high, estimate)  # rule 1
    if clip:  # rule 2
        low, high = max(low, x_min), min(high, x_max)
    return result(estimate, low, high)


def _bootstrap_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples of ``x``; shape ``[n_boot]``.

    Draws the same indices as one ``rng.integers(0, n, (n_boot, n))`` call (and as
    scipy.stats.bootstrap), a chunk of rows at a time, and computes each mean exactly as
    ``np.mean(resample, axis=-1)`` does.
    """
    n = x.size
    rows = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(start + rows, n_boot)
        idx = rng.integers(0, n, (stop - start, n))  # (rows, n)
        out[start:stop] = np.mean(x[idx], axis=-1)
    return out


def _bca_levels(
    x: np.ndarray, mean: float, theta_b: np.ndarray, alpha: float
) -> tuple[float, float]:
    """Quantile levels of the BCa interval, as in scipy's ``_bca_interval``.

    Bias correction ``z0 = Φ⁻¹(share of resample means below the estimate, ties counted
    half)``. Acceleration from the jackknife: for the mean, ``(n-1)(θ̄_(·) - θ_(i)) = x_i -
    x̄``, so ``a = Σd³ / (6 (Σd²)^{3/2})`` with ``d = x - x̄`` (scaled first, to avoid
    under- and overflow; ``a`` is scale-free).
    """
    B = theta_b.size
    below = np.count_nonzero(theta_b < mean) + np.count_nonzero(theta_b <= mean)
    # When every resample mean falls on one side, scipy's z0 is infinite and its interval
    # NaN; keeping the share within [1/(2B), 1 - 1/(2B)] changes nothing otherwise.
    share = min(max(below / (2 * B), 1 / (2 * B)), 1 - 1 / (2 * B))
    z0 = float(ndtri(share))
    d = x - mean
    u = d / np.max(np.abs(d))
    a_hat = float(np.sum(u**3) / (6.0 * np.sum(u**2) ** 1.5))
    z_alpha = float(ndtri(max(alpha / 2, np.finfo(np.float64).tiny)))  # alpha/2 may underflow
    levels: list[float] = []
    for z in (z_alpha, -z_alpha):
        num = np.float64(z0 + z)
        with np.errstate(divide="ignore"):  # a·num == 1: the level is 0 or 1
            levels.append(float(ndtr(z0 + num / (1.0 - a_hat * num))))
    return levels[0], levels[1]


# ------------------------------------------------------------------- permutation tests


def _p_value(
    counts: tuple[int, int], total: int, exact: bool, alternative: str
) -> tuple[float, float, float]:
    """(p, p_less, p_greater) from counts of null values <= and >= the observed one."""
    adjustment = 0 if exact else 1  # Monte Carlo: count the observed arrangement too
    p_less = (counts[0] + adjustment) / (total + adjustment)
    p_greater = (counts[1] + adjustment) / (total + adjustment)
    if alternative == "less":
        p = p_less
    elif alternative == "greater":
        p = p_greater
    else:
        p = min(1.0, 2.0 * min(p_less, p_greater))
    return p, p_less, p_greater


def _tie_tolerance(values: np.ndarray) -> float:
    """Distance below which two null values are equal up to rounding."""
    return _TIE_ULPS * values.size * float(np.finfo(np.float64).eps * np.max(np.abs(values)))


def _count_extremes(
    null_chunks: Iterator[np.ndarray], observed: float, tolerance: float
) -> tuple[int, int, int]:
    """Counts of null values ``<= observed + tol`` and ``>= observed - tol``, and the total."""
    n_less = n_greater = total = 0
    for chunk in null_chunks:
        n_less += int(np.count_nonzero(chunk <= observed + tolerance))
        n_greater += int(np.count_nonzero(chunk >= observed - tolerance))
        total += chunk.size
    return n_less, n_greater, total


def paired_permutation_test(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    alternative: Alternative = "two-sided",
    n_permutations: int = 10_000,
    seed: int = 0,
) -> PermutationTestResult:
    """Sign-flip permutation test of the mean paired difference ``mean(a - b)``.

    Under the null hypothesis the differences ``a - b`` are symmetric about 0, so flipping
    the sign of any subset of them is as likely as the observed signs. The test is exact
    (all ``2**n`` sign vectors) when ``2**n <= n_permutations``; otherwise it draws
    ``n_permutations`` random sign vectors from ``numpy.random.default_rng(seed)`` and uses
    ``p = (1 + #{null ≥ observed}) / (n_permutations + 1)`` (Phipson & Smyth 2010), so the
    p-value is never 0. The exact p-value includes the observed arrangement, so it is at
    least ``2**-n`` (two-sided: ``2**(1-n)``). Two-sided p-values are twice the smaller
    one-sided p-value, capped at 1, as in :func:`scipy.stats.permutation_test` (for the
    symmetric sign-flip null this equals counting ``|null| >= |observed|``). Null values
    equal to the observed one up to rounding count as ties.

    Use it to compare two arms over the same seeds or prompts (pair ``a[i]`` with ``b[i]``).

    Args:
        a: first sample, 1-D, at least one finite number.
        b: second sample, paired with ``a`` (same length).
        alternative: ``"two-sided"``; ``"greater"`` (mean of ``a - b`` above 0) or
            ``"less"``.
        n_permutations: number of random sign vectors for the Monte Carlo test (>= 1); also
            the enumeration budget that decides whether the test is exact.
        seed: seed (>= 0) of the generator of random sign vectors.

    Returns:
        A frozen :class:`PermutationTestResult`; ``statistic`` is ``mean(a - b)`` and ``n``
        the number of pairs.

    Raises:
        TypeError: if ``a``/``b`` are not numeric or ``n_permutations``/``seed`` not ints.
        ValueError: if ``a``/``b`` are empty, not 1-D, hold non-finite numbers or differ in
            length; if ``alternative`` is unknown; if ``n_permutations < 1`` or ``seed < 0``.

    Example:
        >>> r = paired_permutation_test([0.9, 0.8, 0.85, 0.95], [0.5, 0.6, 0.55, 0.7])
        >>> r.method, r.p_value  # all 16 sign vectors; only the observed one is as extreme
        ('exact', 0.125)
    """
    x = _sample(a, "a", min_n=1)
    y = _sample(b, "b", min_n=1)
    if x.size != y.size:
        raise ValueError(f"a and b must have the same length, got {x.size} and {y.size}")
    alternative = _choice(alternative, "alternative", _ALTERNATIVES)  # type: ignore[assignment]
    n_permutations = _integer(n_permutations, "n_permutations", minimum=1)
    seed = _integer(seed, "seed", minimum=0)
    with np.errstate(over="ignore"):
        d = x - y
    if not np.all(np.isfinite(d)):
        raise ValueError("a - b overflows float64; rescale a and b")
    n = d.size
    exact = n < n_permutations.bit_length()  # 2**n <= n_permutations
    rows = max(1, _CHUNK_ELEMENTS // n)

    def null_means(signs: np.ndarray) -> np.ndarray:  # signs (rows, n) of ±1
        return np.sum(signs * d, axis=-1) / n  # (rows,)

    def exact_chunks() -> Iterator[np.ndarray]:
        bits = np.arange(n, dtype=np.int64)
        for start in range(0, 2**n, rows):
            k = np.arange(start, min(start + rows, 2**n), dtype=np.int64)
            yield null_means(1.0 - 2.0 * ((k[:, None] >> bits) & 1))

    def random_chunks() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for start in range(0, n_permutations, rows):
            size = min(rows, n_permutations - start)
            yield null_means(1.0 - 2.0 * rng.integers(0, 2, (size, n)))

    # The observed value goes through the same arithmetic as the null values (identity
    # signs), so the observed arrangement ties with itself bit for bit.
    observed = float(null_means(np.ones((1, n)))[0])
    tolerance = _tie_tolerance(d)
    n_less, n_greater, total = _count_extremes(
        exact_chunks() if exact else random_chunks(), observed, tolerance
    )
    p, _, _ = _p_value((n_less, n_greater), total, exact, alternative)
    return PermutationTestResult(
        statistic=float(np.mean(d)),
        p_value=p,
        n=n,
        method="exact" if exact else "monte_carlo",
        alternative=alternative,
        n_permutations=total,
        sizes=(n,),
        seed=seed,
    )


def permutation_test(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    alternative: Alternative = "two-sided",
    n_permutations: int = 10_000,
    seed: int = 0,
) -> PermutationTestResult:
    """Two-sample permutation test of the difference of means ``mean(x) - mean(y)``.

    Under the null hypothesis the two samples are exchangeable: every split of the pooled
    values into groups of sizes ``len(x)`` and ``len(y)`` is equally likely. The test is
    exact (all ``C(len(x) + len(y), len(x))`` splits) when their number is at most
    ``n_permutations``; otherwise it draws ``n_permutations`` random permutations from
    ``numpy.random.default_rng(seed)``, with ``p = (1 + #{null ≥ observed}) /
    (n_permutations + 1)`` so the p-value is never 0. Two-sided p-values are twice the
    smaller one-sided p-value, capped at 1, as in :func:`scipy.stats.permutation_test`.

    Use it for unpaired comparisons (different seeds or example sets in the two groups);
    prefer :func:`paired_permutation_test` when values pair up.

    Args:
        x: first sample, 1-D, at least one finite number.
        y: second sample, 1-D, at least one finite number.
        alternative: ``"two-sided"``; ``"greater"`` (mean of ``x`` above that of ``y``) or
            ``"less"``.
        n_permutations: number of random permutations for the Monte Carlo test (>= 1); also
            the enumeration budget that decides whether the test is exact.
        seed: seed (>= 0) of the generator of random permutations.

    Returns:
        A frozen :class:`PermutationTestResult`; ``statistic`` is ``mean(x) - mean(y)``,
        ``n`` is ``len(x) + len(y)`` and ``sizes`` is ``(len(x), len(y))``.

    Raises:
        TypeError: if ``x``/``y`` are not numeric or ``n_permutations``/``seed`` not ints.
        ValueError: if ``x``/``y`` are empty, not 1-D or hold non-finite numbers; if
            ``alternative`` is unknown; if ``n_permutations < 1`` or ``seed < 0``.

    Example:
        >>> r = permutation_test([3.0, 4.0, 5.0], [0.0, 1.0, 2.0], alternative="greater")
        >>> r.method, r.p_value  # 1 of the C(6, 3) = 20 splits is as extreme
        ('exact', 0.05)
    """
    xs = _sample(x, "x", min_n=1)
    ys = _sample(y, "y", min_n=1)
    alternative = _choice(alternative, "alternative", _ALTERNATIVES)  # type: ignore[assignment]
    n_permutations = _integer(n_permutations, "n_permutations", minimum=1)
    seed = _integer(seed, "seed", minimum=0)
    nx, ny = xs.size, ys.size
    N = nx + ny
    pooled = np.concatenate([xs, ys])
    # Centre the pooled values (the statistic is shift-invariant) so that sums round less.
    pooled = pooled - np.mean(pooled)
    total_sum = float(np.sum(pooled))
    n_splits = math.comb(N, nx)
    exact = n_splits <= n_permutations
    rows = max(1, _CHUNK_ELEMENTS // N)

    def null_diffs(idx: np.ndarray) -> np.ndarray:  # idx (rows, nx): members of group x
        sum_x = np.sum(pooled[idx], axis=-1)
        return sum_x / nx - (total_sum - sum_x) / ny  # (rows,)

    def exact_chunks() -> Iterator[np.ndarray]:
        combos = itertools.combinations(range(N), nx)
        while block := list(itertools.islice(combos, rows)):
            yield null_diffs(np.array(block, dtype=np.int64).reshape(len(block), nx))

    def random_chunks() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for start in range(0, n_permutations, rows):
            size = min(rows, n_permutations - start)
            perms = rng.permuted(np.tile(np.arange(N), (size, 1)), axis=1)  # (rows, N)
            yield null_diffs(perms[:, :nx])

    observed = float(null_diffs(np.arange(nx)[None, :])[0])
    tolerance = _tie_tolerance(pooled)
    n_less, n_greater, total = _count_extremes(
        exact_chunks() if exact else random_chunks(), observed, tolerance
    )
    p, _, _ = _p_value((n_less, n_greater), total, exact, alternative)
    return PermutationTestResult(
        statistic=float(np.mean(xs) - np.mean(ys)),
        p_value=p,
        n=N,
        method="exact" if exact else "monte_carlo",
        alternative=alternative,
        n_permutations=total,
        sizes=(nx, ny),
        seed=seed,
    )


# -------------------------------------------------------------------- multiple testing


def holm_bonferroni(p_values: npt.ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), controlling the family-wise error.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value
    of ``p_(i)`` is ``max_{j <= i} min(1, (m - j + 1) · p_(j))``; the adjusted values come
    back in the input order. Reject hypothesis ``i`` at level ``alpha`` when its adjusted
    p-value is ``<= alpha``. Uniformly more powerful than Bonferroni, valid under any
    dependence between the tests.

    Args:
        p_values: 1-D array-like of p-values in ``[0, 1]`` (may be empty).

    Returns:
        Adjusted p-values, float64 array of the same shape, each ``>=`` its input and
        ``<= 1``.

    Raises:
        TypeError: if ``p_values`` is not numeric.
        ValueError: if ``p_values`` is not 1-D or holds values outside ``[0, 1]`` or NaN.

    Example:
        >>> holm_bonferroni([0.01, 0.04, 0.03, 0.005]).tolist()
        [0.03, 0.06, 0.06, 0.02]
    """
    p = _sample(p_values, "p_values", min_n=0)
    if np.any((p < 0.0) | (p > 1.0)):
        bad = int(np.flatnonzero((p < 0.0) | (p > 1.0))[0])
        raise ValueError(f"p_values must lie in [0, 1]; p_values[{bad}] is {p[bad]}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


# ------------------------------------------------------------------------------ AUC


def rank_auc(pos: npt.NDArray[np.float64], neg: npt.NDArray[np.float64]) -> float:
    """Mann-Whitney AUC ``P(pos > neg) + ½ P(pos = neg)`` from average ranks.

    Args:
        pos: ``[n_pos]`` scores of the positive class (higher = more positive).
        neg: ``[n_neg]`` scores of the negative class.

    Returns:
        ``U / (n_pos n_neg)``, ties counted half.

    Example:
        >>> rank_auc(np.array([0.9, 0.2]), np.array([0.1, 0.5]))
        0.75
    """
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks, ties counted half
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def placement_values(members: npt.ArrayLike, nonmembers: npt.ArrayLike) -> np.ndarray:
    """Per member, the share of non-members it out-scores (ties count ½).

    Their mean is the Mann-Whitney AUC ``P(score(member) > score(non-member))``, so they are
    the per-item values of the membership-inference AUC.

    Args:
        members: ``[n_members]`` member scores (higher = more member-like).
        nonmembers: ``[n_nonmembers]`` non-member scores.

    Returns:
        ``[n_members]`` float64 values in ``[0, 1]``.

    Example:
        >>> placement_values([0.9, 0.2], [0.1, 0.5]).tolist()
        [1.0, 0.5]
    """
    m = np.asarray(members, dtype=np.float64)[:, None]  # (n_members, 1)
    n = np.asarray(nonmembers, dtype=np.float64)[None, :]  # (1, n_nonmembers)
    result: np.ndarray = ((m > n) + 0.5 * (m == n)).mean(axis=1)
    return result
