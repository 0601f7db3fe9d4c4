"""Benchmark: size and power of the gate tests of mmie.gate_stats, next to the old sign-flip tests.

For each gate test and n in {16, 32, 64, 128} it simulates ``--reps`` data sets (default
10,000: a rate's 95% Monte Carlo interval is at most ±1%) shaped like the study's and prints

* the **false-pass rate** at the null boundary (the test's size: a valid level-0.05 test
  stays at or below 0.05), and
* the **power** at a realistic effect,

for the new tests and, where the gates used one, the old sign-flip permutation test
(:func:`mmie.stats.paired_permutation_test` of ``arm - margin`` against ``base``), here
vectorised with 2,000 random sign vectors per data set (the gates use 10,000; the rates do
not depend on it). The scenarios:

* **ES non-inferiority** (leakage / redistribution gates, margin 0.05): per-prompt ES
  differences ``d = arm - base`` in [-1, 1], 90% exactly 0, the others ``±U(0.2, 1)``;
  null: ``E[d] = 0.05``; power: ``E[d] = 0``.
* **Forget ES, relative reduction** (``r = 0.25``): base ES 1 on 80% of the prompts, uniform
  otherwise (mean 0.9); the arm erases a prompt (ES 0) or leaves it. Null: ``E[arm] = 0.75
  E[base]``; power: an ES drop of 0.3 (``E[arm] = 0.6``, a 33% reduction). The old gate:
  sign-flip superiority test *and* the observed reduction >= 25%.
* **Paired 0/1 outcome** (e.g. "the continuation contains target-script text"),
  non-inferiority margin 0.05: ``P(arm 0, base 1) = 0.1``, ``P(1, 1) = 0.1``; null:
  ``p_arm - p_base = 0.05``; power: 0.
* **MIA AUC inside 0.5 ± 0.15** (TOST), n members and n non-members, normal scores; null:
  AUC = 0.65 (the band's edge); power: AUC = 0.5. The old gate: sign-flip TOST on the
  members' placement values.
* **Paired 0/1 outcome, exact size**: the paired-proportions tests' size computed exactly
  (sum over all tables) and maximised over the nuisance parameter, no simulation.
* **Retain log-perplexity ratio below 1.25**: per-item log differences with sd 0.3, normal,
  Student t3, or right-skewed (centred gamma with skewness 1, centred exponential with
  skewness 2); null: mean ``log 1.25``; power: mean 0.

Run: ``python benchmarks/gate_size.py [--reps 10000] [--seed 0]`` (about 2 minutes on
2 CPU cores).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import scipy
import scipy.special
import scipy.stats

from mmie import gate_stats as gs

ALPHA = 0.05
NS = (16, 32, 64, 128)
SIGN_FLIPS = 2000
CHUNK = 500  # data sets per vectorised block

Rates = tuple[float, float]  # (false-pass rate at the null boundary, power)


# ------------------------------------------------------------------------ the data


def es_differences(rng: np.random.Generator, reps: int, n: int, mean: float) -> np.ndarray:
    """Zero-inflated ES differences in [-1, 1]: 90% exactly 0, else ±U(0.2, 1), E[d] = mean."""
    p_zero = 0.9
    q = 0.5 * (1.0 + mean / ((1.0 - p_zero) * 0.6))
    moved = rng.random((reps, n)) >= p_zero
    sign = np.where(rng.random((reps, n)) < q, 1.0, -1.0)
    return np.where(moved, sign * rng.uniform(0.2, 1.0, (reps, n)), 0.0)


def es_pairs(
    rng: np.random.Generator, reps: int, n: int, keep: float
) -> tuple[np.ndarray, np.ndarray]:
    """(arm, base) forget ES with E[arm] = keep · E[base]."""
    base = np.where(rng.random((reps, n)) < 0.8, 1.0, rng.random((reps, n)))
    arm = np.where(rng.random((reps, n)) < keep, base, 0.0)
    return arm, base


def paired_counts(
    rng: np.random.Generator, reps: int, n: int, q10: float, q01: float, q11: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Discordant counts (n10, n01) of n paired 0/1 outcomes."""
    counts = rng.multinomial(n, [q10, q01, q11, 1.0 - q10 - q01 - q11], size=reps)
    return counts[:, 0], counts[:, 1]


def mia_scores(
    rng: np.random.Generator, reps: int, n: int, auc: float
) -> tuple[np.ndarray, np.ndarray]:
    shift = math.sqrt(2.0) * float(scipy.stats.norm.ppf(auc))
    return rng.normal(shift, 1.0, (reps, n)), rng.normal(0.0, 1.0, (reps, n))


def log_differences(
    rng: np.random.Generator, reps: int, n: int, mean: float, shape: str
) -> np.ndarray:
    if shape == "normal":
        e = rng.normal(0.0, 1.0, (reps, n))
    elif shape == "t3":
        e = rng.standard_t(3, (reps, n)) / math.sqrt(3.0)
    elif shape == "gamma4":  # skewness 1: centred gamma, shape 4, unit variance
        e = (rng.gamma(4.0, 1.0, (reps, n)) - 4.0) / 2.0
    else:  # skewness 2: centred exponential
        e = rng.exponential(1.0, (reps, n)) - 1.0
    return mean + 0.3 * e


# ---------------------------------------------------------------------- the tests


def old_sign_flip_p(d: np.ndarray, signs: np.ndarray, alternative: str) -> np.ndarray:
    """Monte Carlo sign-flip p-values of mean(d) per row, as paired_permutation_test.

    ``p = (1 + #{null <= observed}) / (B + 1)`` for ``"less"`` (``>=`` for ``"greater"``),
    null values within 16·n·eps·max|d| of the observed one counted as ties.
    """
    n = d.shape[1]
    observed = d.mean(axis=1)
    null = (signs @ d.T) / n  # (B, reps)
    tol = 16.0 * n * np.finfo(np.float64).eps * np.max(np.abs(d), axis=1)
    if alternative == "less":
        count = np.sum(null <= observed + tol, axis=0)
    else:
        count = np.sum(null >= observed - tol, axis=0)
    out: np.ndarray = (1.0 + count) / (signs.shape[0] + 1.0)
    return out


def bounded_reject(
    d: np.ndarray, low: float, high: float, margin: float, method: str
) -> np.ndarray:
    """noninferiority_test's decision (bound < margin) per row of d in [low, high]."""
    w = high - low
    upper = low + w * gs._upper_batch((d - low) / w, ALPHA, method)
    out: np.ndarray = np.maximum(upper, d.mean(axis=1)) < margin
    return out


def delong_tost_reject(pos: np.ndarray, neg: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """auc_equivalence_test's decision per row (DeLong placements from midranks)."""
    m, n = pos.shape[1], neg.shape[1]
    pooled = scipy.stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (pooled[:, :m] - scipy.stats.rankdata(pos, axis=1)) / n
    v01 = 1.0 - (pooled[:, m:] - scipy.stats.rankdata(neg, axis=1)) / m
    auc = v10.mean(axis=1)
    se = np.sqrt(v10.var(axis=1, ddof=1) / m + v01.var(axis=1, ddof=1) / n)
    z = np.minimum(auc - lo, hi - auc) / se
    out: np.ndarray = (se > 0) & (scipy.stats.norm.sf(z) <= ALPHA)
    return out


def member_placements(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    m = pos.shape[1]
    pooled = scipy.stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    out: np.ndarray = (pooled[:, :m] - scipy.stats.rankdata(pos, axis=1)) / neg.shape[1]
    return out


# ------------------------------------------------------------------ the scenarios

Scenario = Callable[[np.random.Generator, int, int, bool], dict[str, np.ndarray]]


def es_noninferiority(
    rng: np.random.Generator, reps: int, n: int, null: bool
) -> dict[str, np.ndarray]:
    margin = 0.05
    d = es_differences(rng, reps, n, margin if null else 0.0)
    out = {
        m: bounded_reject(d, -1.0, 1.0, margin, m) for m in ("betting", "bernstein", "hoeffding")
    }
    signs = 1.0 - 2.0 * rng.integers(0, 2, (SIGN_FLIPS, n))
    out["old sign-flip"] = old_sign_flip_p(d - margin, signs, "less") <= ALPHA
    return out


def relative_reduction(
    rng: np.random.Generator, reps: int, n: int, null: bool
) -> dict[str, np.ndarray]:
    r = 0.25
    keep = 1.0 - r if null else 1.0 - 0.3 / 0.9
    arm, base = es_pairs(rng, reps, n, keep)
    d = arm - (1.0 - r) * base
    out = {
        m: bounded_reject(d, -(1.0 - r), 1.0, 0.0, m) for m in ("betting", "bernstein", "hoeffding")
    }
    signs = 1.0 - 2.0 * rng.integers(0, 2, (SIGN_FLIPS, n))
    significant = old_sign_flip_p(arm - base, signs, "less") <= ALPHA
    with np.errstate(divide="ignore", invalid="ignore"):
        reduction = 1.0 - arm.mean(axis=1) / base.mean(axis=1)
    out["old sign-flip + point reduction"] = significant & (reduction >= r)
    return out


_EXACT_TABLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _exact_lookup(n: int, delta0: float) -> tuple[np.ndarray, np.ndarray]:
    """(index[n10, n01], p) of the exact unconditional test for every table of n items."""
    if n not in _EXACT_TABLES:
        b, c, p = gs._exact_p_table(n, delta0, "less")
        index = np.full((n + 1, n + 1), -1)
        index[b.astype(int), c.astype(int)] = np.arange(b.size)
        _EXACT_TABLES[n] = (index, p)
    return _EXACT_TABLES[n]


def paired_proportions(
    rng: np.random.Generator, reps: int, n: int, null: bool
) -> dict[str, np.ndarray]:
    delta0, q01 = 0.05, 0.1
    n10, n01 = paired_counts(rng, reps, n, q01 + (delta0 if null else 0.0), q01)
    z = gs._tango_z(n10.astype(float), n01.astype(float), n, delta0)
    index, table_p = _exact_lookup(n, delta0)
    out = {
        "Tango score": scipy.stats.norm.cdf(z) <= ALPHA,
        "exact unconditional": table_p[index[n10, n01]] <= ALPHA,
    }
    # the old test on the per-item differences d in {-1, 0, 1} (order does not matter)
    items = np.arange(n)
    d = np.where(items < n10[:, None], 1.0, 0.0) - np.where(
        (items >= n10[:, None]) & (items < (n10 + n01)[:, None]), 1.0, 0.0
    )
    signs = 1.0 - 2.0 * rng.integers(0, 2, (SIGN_FLIPS, n))
    out["old sign-flip"] = old_sign_flip_p(d - delta0, signs, "less") <= ALPHA
    return out


def mia_tost(rng: np.random.Generator, reps: int, n: int, null: bool) -> dict[str, np.ndarray]:
    lo, hi = 0.35, 0.65
    pos, neg = mia_scores(rng, reps, n, hi if null else 0.5)
    out = {"DeLong TOST": delong_tost_reject(pos, neg, lo, hi)}
    u = member_placements(pos, neg)
    signs = 1.0 - 2.0 * rng.integers(0, 2, (SIGN_FLIPS, n))
    p_lo = old_sign_flip_p(u - lo, signs, "greater")
    p_hi = old_sign_flip_p(u - hi, signs, "less")
    out["old sign-flip TOST"] = np.maximum(p_lo, p_hi) <= ALPHA
    return out


def log_ratio(shape: str) -> Scenario:
    def scenario(rng: np.random.Generator, reps: int, n: int, null: bool) -> dict[str, np.ndarray]:
        margin = math.log(1.25)
        d = log_differences(rng, reps, n, margin if null else 0.0, shape)
        se = d.std(axis=1, ddof=1) / math.sqrt(n)
        t = (d.mean(axis=1) - margin) / se
        out = {"paired t": scipy.stats.t.cdf(t, n - 1) <= ALPHA}
        signs = 1.0 - 2.0 * rng.integers(0, 2, (SIGN_FLIPS, n))
        out["old sign-flip"] = old_sign_flip_p(d - margin, signs, "less") <= ALPHA
        return out

    return scenario


SCENARIOS: list[tuple[str, Scenario]] = [
    ("ES non-inferiority, margin 0.05 (zero-inflated d in [-1, 1])", es_noninferiority),
    ("Forget ES, relative reduction >= 25% (power: ES drop 0.3)", relative_reduction),
    ("Paired 0/1 outcome, non-inferiority margin 0.05", paired_proportions),
    ("MIA AUC inside 0.5 ± 0.15 (TOST; n members, n non-members)", mia_tost),
    ("Log-perplexity ratio < 1.25, normal differences (sd 0.3)", log_ratio("normal")),
    ("Log-perplexity ratio < 1.25, Student t3 differences", log_ratio("t3")),
    ("Log-perplexity ratio < 1.25, right-skewed differences (skewness 1)", log_ratio("gamma4")),
    ("Log-perplexity ratio < 1.25, right-skewed differences (skewness 2)", log_ratio("exp")),
]


def rates(scenario: Scenario, n: int, reps: int, seed: int) -> dict[str, Rates]:
    """(false-pass rate, power) per method, ``reps`` data sets each, in blocks."""
    hits: dict[str, list[int]] = {}
    for which, null in enumerate((True, False)):
        rng = np.random.default_rng([seed, n, which])
        for start in range(0, reps, CHUNK):
            block = scenario(rng, min(CHUNK, reps - start), n, null)
            for method, reject in block.items():
                hits.setdefault(method, [0, 0])[which] += int(np.count_nonzero(reject))
    return {m: (h[0] / reps, h[1] / reps) for m, h in hits.items()}


def worst_case_size(n: int, delta0: float, method: str) -> tuple[float, float]:
    """Exact size of the paired-proportions test (alternative "less"), maximised over the
    nuisance parameter q01 on a grid of 2001 values: (size, argmax q01). No simulation."""
    b, c, p = gs._exact_p_table(n, delta0, "less")
    if method == "score":
        p = scipy.stats.norm.cdf(gs._tango_z(b, c, n, delta0))
    b, c = b[p <= ALPHA], c[p <= ALPHA]
    rest = n - b - c
    q = np.linspace(max(0.0, -delta0), (1.0 - delta0) / 2.0, 2001)
    cells = np.clip(np.stack([q + delta0, q, 1.0 - 2.0 * q - delta0], axis=1), 1e-300, 1.0)
    log_coef = (
        scipy.special.gammaln(n + 1.0)
        - scipy.special.gammaln(b + 1.0)
        - scipy.special.gammaln(c + 1.0)
        - scipy.special.gammaln(rest + 1.0)
    )
    size = np.exp(log_coef + np.log(cells) @ np.stack([b, c, rest])).sum(axis=1)
    k = int(np.argmax(size))
    return float(size[k]), float(q[k])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=10_000, help="data sets per cell")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    print(
        f"# gate_size: {args.reps} data sets per cell, alpha = {ALPHA}, seed {args.seed}; "
        f"cells are 'false-pass rate / power'"
    )
    print(
        f"# Python {platform.python_version()}, numpy {np.__version__}, scipy "
        f"{scipy.__version__}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    se = math.sqrt(ALPHA * (1 - ALPHA) / args.reps)
    print(
        f"# Monte Carlo s.e. of a rate: {se:.4f} at 0.05, at most {0.5 / math.sqrt(args.reps):.4f}"
    )
    for title, scenario in SCENARIOS:
        table = {n: rates(scenario, n, args.reps, args.seed) for n in NS}
        methods = list(table[NS[0]])
        print(f"\n{title}\n")
        print("| n | " + " | ".join(methods) + " |")
        print("|---:|" + "---:|" * len(methods))
        for n in NS:
            cells = " | ".join(f"{table[n][m][0]:.3f} / {table[n][m][1]:.3f}" for m in methods)
            print(f"| {n} | {cells} |")
    print("\nPaired 0/1 outcome: exact size (no simulation), worst case over P(arm 0, base 1)\n")
    print("| n | delta0 | Tango score | exact unconditional |")
    print("|---:|---:|---:|---:|")
    for n in NS:
        for delta0 in (0.05, -0.05):
            cells = []
            for method in ("score", "exact"):
                size, q = worst_case_size(n, delta0, method)
                cells.append(f"{size:.4f} (q01 = {q:.3f})")
            print(f"| {n} | {delta0:+.2f} | {cells[0]} | {cells[1]} |")
    print(f"\n# {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
