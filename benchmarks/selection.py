"""Benchmark: mmie.select_layers with stability seeds vs the original recompute-per-seed loop.

Both select layers by the same contrast score on the same subsamples (5 stability seeds,
80% of each text set per seed, vote over seeds), so they must choose the same layers; the
benchmark checks that, then reports model forward passes and wall time side by side:

* ``mmie``: :func:`mmie.select_layers` — an :class:`mmie.ActivationCache` runs each text set
  once, one forward pass per batch for all layers; the seeds only index the cached means.
* ``original``: the research script's pattern — for every seed, subsample the texts and, for
  every layer, run the model over the subsample of each text set to collect that layer's
  means (review item 7: activations recomputed per call, per layer and per seed).

Forward passes are counted by a pre-hook on the model. Times are the best of ``--repeats``.
The model is a random tiny Llama (``--layers`` blocks of width ``--width``) on the bundled
Hindi and English training texts.

Run: ``python3 benchmarks/selection.py [--repeats 3] [--layers 8] [--width 128]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

import mmie
from mmie.errors import TruncationWarning
from mmie.study.datasets import load_texts
from mmie.testing import byte_tokenizer, tiny_causal_lm

SEEDS = 5
SUBSAMPLE = 0.8
TOP_K = 2
BATCH = 8
MAX_LENGTH = 256  # byte tokens: most bundled Hindi texts fit


class ForwardCounter:
    """Counts full-model forward passes with a pre-hook."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.n = 0
        self._handle = model.register_forward_pre_hook(self._count)

    def _count(self, *_args: object) -> None:
        self.n += 1

    def remove(self) -> None:
        self._handle.remove()


def contrast(f: torch.Tensor, r: torch.Tensor) -> float:
    """``‖μ_f − μ_r‖² / ½(tr Σ_f + tr Σ_r)``, the score of select_layers(mode="contrast")."""
    f, r = f.double(), r.double()
    gap = (f.mean(0) - r.mean(0)).pow(2).sum()
    return float(gap / (0.5 * (f.var(0).sum() + r.var(0).sum())).clamp_min(1e-12))


def original_select(
    model: torch.nn.Module, tok: object, forget: Sequence[str], retain: Sequence[str], layers: int
) -> tuple[int, ...]:
    """Recompute activations for every seed and every layer, then vote (original pattern)."""
    votes = np.zeros(layers)
    means_score = np.zeros(layers)
    m_f, m_r = round(SUBSAMPLE * len(forget)), round(SUBSAMPLE * len(retain))
    for s in range(SEEDS):
        rng = np.random.default_rng([0, s])
        sub_f = [forget[i] for i in np.sort(rng.choice(len(forget), m_f, replace=False))]
        sub_r = [retain[i] for i in np.sort(rng.choice(len(retain), m_r, replace=False))]
        scores = np.zeros(layers)
        for layer in range(layers):
            kw = {"batch_size": BATCH, "max_length": MAX_LENGTH, "keep_tokens": False}
            f = mmie.collect_activations(model, tok, sub_f, [layer], **kw).means[layer]  # type: ignore[arg-type]
            r = mmie.collect_activations(model, tok, sub_r, [layer], **kw).means[layer]  # type: ignore[arg-type]
            scores[layer] = contrast(f, r)
        votes[np.argsort(-scores, kind="stable")[:TOP_K]] += 1
        means_score += scores / SEEDS
    order = sorted(range(layers), key=lambda j: (-votes[j], -means_score[j], j))
    return tuple(order[:TOP_K])


def timed(
    fn: Callable[[], object], model: torch.nn.Module, repeats: int
) -> tuple[float, int, object]:
    """Best time over ``repeats`` calls, the forward passes of one call, and its result."""
    best, passes, result = math.inf, 0, None
    for _ in range(repeats):
        counter = ForwardCounter(model)
        try:
            t0 = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - t0)
        finally:
            counter.remove()
        passes = counter.n
    return best, passes, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--texts", type=int, default=64, help="texts per language")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)  # 1: robust timings on a shared machine
    warnings.simplefilter("ignore", TruncationWarning)  # a few long texts are cut
    tok = byte_tokenizer()
    model = tiny_causal_lm("llama", hidden_size=args.width, num_layers=args.layers, num_heads=4)
    forget = load_texts("hindi_train")[: args.texts]
    retain = load_texts("english_train")[: args.texts]

    def run_mmie() -> tuple[int, ...]:
        sel = mmie.select_layers(
            model, forget, retain, tokenizer=tok, mode="contrast", top_k=TOP_K,
            stability_seeds=SEEDS, subsample=SUBSAMPLE, batch_size=BATCH, max_length=MAX_LENGTH,
        )  # fmt: skip
        return sel.layers

    t_new, n_new, layers_new = timed(run_mmie, model, args.repeats)
    t_old, n_old, layers_old = timed(
        lambda: original_select(model, tok, forget, retain, args.layers), model, args.repeats
    )
    assert layers_new == layers_old, (layers_new, layers_old)

    print(f"# select_layers benchmark ({platform.machine()}, torch {torch.__version__})")
    print(
        f"model: tiny llama, {args.layers} blocks, d_model {args.width}; "
        f"{len(forget)} Hindi + {len(retain)} English texts; {SEEDS} stability seeds, "
        f"subsample {SUBSAMPLE}, batch {BATCH}, top_k {TOP_K}; {args.threads} thread(s), "
        f"best of {args.repeats}"
    )
    print(f"selected layers (both): {list(layers_new)}")  # type: ignore[arg-type]
    print()
    print("| pattern | forward passes | time (s) |")
    print("|---|---:|---:|")
    print(f"| mmie select_layers (cache, seeds index it) | {n_new} | {t_new:.2f} |")
    print(f"| original (recompute per seed and layer) | {n_old} | {t_old:.2f} |")
    print(f"| ratio original / mmie | {n_old / n_new:.0f}x | {t_old / t_new:.1f}x |")


if __name__ == "__main__":
    main()
