"""Benchmark: mmie.bootstrap_ci against scipy.stats.bootstrap and the original Python loop.

For n in {5, 100, 10000} and n_boot in {2000, 10000} it times, in one run and side by side,

* ``mmie.bootstrap_ci(x, n_boot=..., method=m)`` for m in {percentile, bca},
* ``scipy.stats.bootstrap((x,), np.mean, n_resamples=..., method=m)`` (same method, same
  seed, so the same resamples), and
* the original script's loop (percentile only): ``[np.mean(rng.choice(x, len(x))) for _ in
  range(n_boot)]``, sorted and indexed,

and prints the ratios scipy/mmie and loop/mmie, plus the peak memory NumPy allocated inside
``bootstrap_ci`` (tracemalloc), against the targets: at least as fast as scipy everywhere, at
least 50x faster than the loop for n <= 100, and no multi-GB index matrix at n = 10000.

The column loop/draws divides the loop's time by the time of drawing the resample indices
alone (``rng.integers(0, n, (n_boot, n))`` in chunks, nothing else): it bounds loop/mmie
for any implementation that draws the same resamples as scipy, which agreement with
scipy.stats.bootstrap requires.

All variants of one (n, n_boot) cell run interleaved, round after round, and each keeps its
best round, so load from other processes affects them alike.

Run: ``python3 benchmarks/bootstrap.py [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc
import warnings
from collections.abc import Callable
from functools import partial
from typing import Literal

import numpy as np
import scipy
import scipy.stats

import mmie
from mmie.errors import SmallSampleWarning

SIZES = (5, 100, 10_000)
N_BOOTS = (2_000, 10_000)
METHODS: tuple[Literal["percentile", "bca"], ...] = ("percentile", "bca")
ALPHA = 0.05
SEED = 0


def original_loop(x: np.ndarray, n_boot: int, alpha: float, seed: int) -> tuple[float, float]:
    """The original script's bootstrap, with its index bug fixed so it always runs."""
    rng = np.random.default_rng(seed)
    boots = sorted(float(np.mean(rng.choice(x, len(x)))) for _ in range(n_boot))
    lo = boots[max(0, int(np.floor(alpha / 2 * n_boot)))]
    hi = boots[min(n_boot - 1, int(np.ceil((1 - alpha / 2) * n_boot)) - 1)]
    return lo, hi


def scipy_bootstrap(x: np.ndarray, *, n_boot: int, alpha: float, seed: int, method: str) -> object:
    """scipy.stats.bootstrap with the settings bootstrap_ci uses (same resamples)."""
    return scipy.stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_boot,
        method=method,
        confidence_level=1 - alpha,
        rng=np.random.default_rng(seed),
    )


def draws_only(n: int, n_boot: int, seed: int) -> None:
    """Only the index draws bootstrap_ci makes (same chunking), for the lower bound."""
    rng = np.random.default_rng(seed)
    rows = max(1, 2**16 // n)
    for start in range(0, n_boot, rows):
        rng.integers(0, n, (min(rows, n_boot - start), n))


def interleaved_best(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best wall time (s) of each function over ``rounds`` rounds that call each once."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def peak_mib(fn: Callable[[], object]) -> float:
    """Peak memory traced (NumPy buffers included) while ``fn`` runs, in MiB."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timing rounds (best is kept)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", SmallSampleWarning)  # n = 5 is benchmarked on purpose

    print(
        f"mmie {mmie.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}; best of {args.repeats}"
        " interleaved rounds (2 for n * n_boot = 1e8)"
    )
    header = (
        f"| {'method':<10} | {'n':>6} | {'n_boot':>6} | {'mmie ms':>9} | {'scipy ms':>9} | "
        f"{'loop ms':>9} | {'scipy/mmie':>10} | {'loop/mmie':>9} | {'loop/draws':>10} | "
        f"{'mmie peak MiB':>13} |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    failures: list[str] = []
    for n in SIZES:
        x = np.random.default_rng(12345).lognormal(size=n)
        for n_boot in N_BOOTS:
            fns: dict[str, Callable[[], object]] = {
                "loop": partial(original_loop, x, n_boot, ALPHA, SEED),
                "draws": partial(draws_only, n, n_boot, SEED),
            }
            for m in METHODS:
                fns[f"mmie {m}"] = partial(
                    mmie.bootstrap_ci, x, alpha=ALPHA, n_boot=n_boot, seed=SEED, method=m
                )
                fns[f"scipy {m}"] = partial(
                    scipy_bootstrap, x, n_boot=n_boot, alpha=ALPHA, seed=SEED, method=m
                )
            for fn in fns.values():  # warm-up: imports, allocator, caches
                if n * n_boot < 10**8:
                    fn()
            rounds = 2 if n * n_boot >= 10**8 else args.repeats
            best = interleaved_best(fns, rounds)
            for m in METHODS:
                t_ours, t_scipy = best[f"mmie {m}"], best[f"scipy {m}"]
                mib = peak_mib(fns[f"mmie {m}"])
                r_scipy, r_loop = t_scipy / t_ours, best["loop"] / t_ours
                print(
                    f"| {m:<10} | {n:>6} | {n_boot:>6} | {t_ours * 1e3:>9.2f} | "
                    f"{t_scipy * 1e3:>9.2f} | {best['loop'] * 1e3:>9.1f} | {r_scipy:>10.1f} | "
                    f"{r_loop:>9.0f} | {best['loop'] / best['draws']:>10.0f} | {mib:>13.1f} |",
                    flush=True,
                )
                if r_scipy < 1.0:
                    failures.append(f"{m} n={n} n_boot={n_boot}: slower than scipy")
                if n <= 100 and r_loop < 50.0:
                    failures.append(f"{m} n={n} n_boot={n_boot}: < 50x the loop")
                if mib > 1024:
                    failures.append(f"{m} n={n} n_boot={n_boot}: {mib:.0f} MiB peak")
    print("targets met" if not failures else "targets missed:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()
