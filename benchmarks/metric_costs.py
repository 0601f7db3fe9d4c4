"""Benchmark: what each metric group of the evaluation suite costs on the demo model.

Times :func:`mmie.study.suite.evaluate_model` on the bundled base model with one metric
group at a time (median of ``--repeats`` runs, one torch thread), side by side with the
groups of mmie 0.1 (forget_es, mixed_es, retain_ppl, forget_ppl, leakage, redistribution,
mia, script_mass, probe), and prints each group's share of a full evaluation.

Run: ``python3 benchmarks/metric_costs.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import mmie
from mmie.study.suite import evaluate_model, load_eval_sets

NEW = ("english", "sampled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = mmie.demo_config()
    sets = load_eval_sets(config)
    model, tok = mmie.load_demo_model()
    times: dict[str, float] = {}
    for group in config.metrics:
        cfg = config.replace(metrics=(group,))
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            evaluate_model(model, tok, sets, cfg, probe_layers=(1, 2, 3))
            runs.append(time.perf_counter() - t0)
        times[group] = statistics.median(runs)
    total = sum(times.values())
    old = sum(v for k, v in times.items() if k not in NEW)
    print(f"{'metric group':<16} {'seconds':>8} {'share':>7}")
    for group, seconds in times.items():
        tag = "  (new)" if group in NEW else ""
        print(f"{group:<16} {seconds:8.3f} {seconds / total:7.1%}{tag}")
    print(f"{'all groups':<16} {total:8.3f}")
    print(f"new groups / the groups of 0.1: {(total - old) / old:.2f}x extra")


if __name__ == "__main__":
    main()
