"""Tutorial: a small multilingual unlearning study on the bundled demo model.

Run it with ``python3 examples/tutorial.py`` (about a minute on a laptop CPU; no network,
no GPU). It walks through what ``mmie demo`` does, with the library API:

1. look at the base model: it continues Hindi prompts in Hindi;
2. configure a reduced study (three arms, two seeds) and run it;
3. read the verdict: intervals, gate decisions, per-prompt values;
4. resume and aggregate: rerunning does no work, separate jobs merge into one report.

Every number printed below comes from the report, which is computed from the result shards
alone; docs/methods.md defines each metric and gate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import mmie


def main() -> None:
    # Small models run fastest on one CPU thread; seeding globally is the script's job
    # (library functions take seeds and never touch global RNG state).
    torch.set_num_threads(1)
    mmie.set_seed(0)

    # 1. The base model continues Hindi prompts in Devanagari and English in English.
    model, tokenizer = mmie.load_demo_model()
    prompts = ["मेरे दोस्त अमित को", "My friend Amit had"]
    for prompt, text in zip(prompts, mmie.generate(model, tokenizer, prompts, max_new_tokens=24)):
        print(f"{prompt!r} -> {text!r}")
    es = mmie.extraction_strength(
        mmie.generate(model, tokenizer, prompts[:1], max_new_tokens=24), mmie.EnsembleDetector()
    )
    print(f"Hindi extraction strength of the first continuation: {es.mean:.2f}\n")

    # 2. A reduced version of the embedded study: three of its arms, two seeds, fewer texts.
    out = Path(tempfile.mkdtemp(prefix="mmie-tutorial-"))
    demo = mmie.demo_config()
    config = mmie.demo_config(
        quick=True,
        arms=[arm for arm in demo.arms if arm.name in ("reft", "sae_gate", "scrub")],
        output_dir=str(out / "study"),
    )
    print(f"arms: {[arm.kind for arm in config.arms]}, seeds: {config.seeds}")
    # The already loaded model is reused; with model=None run_experiment loads config.model.
    result = mmie.run_experiment(config, model=model, tokenizer=tokenizer, show_progress=True)
    report = result.report

    # 3. The verdict, then the numbers behind it.
    print("\n" + report.data["summary"]["text"] + "\n")
    base = report.data["base"]["metrics"]["forget_es"]
    print(
        f"{'arm':<10} {'decision':<11} forget ES [interval over seeds]   change vs base [over prompts]"
    )
    print(f"{'base':<10} {'':<11} {base['value']:.3f}")
    for name, arm in report.data["arms"].items():
        if arm["role"] != "arm":
            continue  # the control arms are summarised below
        m = arm["metrics"]["forget_es"]
        ci, d = m["ci"], m["delta"]
        spread = "no seed variance" if ci is None else f"[{ci['low']:.3f}, {ci['high']:.3f}]"
        print(
            f"{name:<10} {arm['decision']:<11} {m['mean']:.3f} {spread:<18}"
            f" {d['mean']:+.3f} [{d['ci']['low']:+.3f}, {d['ci']['high']:+.3f}]"
        )
    # Controls cannot have unlearned anything; each must fail at least one gate.
    summary = report.data["summary"]
    print(f"gates calibrated (every control fails a gate): {summary['calibrated']}")
    best = report.best_arm
    print(f"\nwhy `{best}` got its decision:")
    for reason in report.data["arms"][best]["reasons"]:
        print("  -", reason)

    # Per-prompt values are kept: the prompts the best arm still continues in Hindi.
    items = report.data["items"]["prompts.forget"]
    per_seed = [
        r["metrics"]["forget_es"]["per_item"] for r in report.data["records"] if r["arm"] == best
    ]
    still_hindi = [p for i, p in enumerate(items) if min(v[i] for v in per_seed) > 0.5]
    print(
        f"\n{len(still_hindi)} of {len(items)} prompts still continued in Hindi by every seed of `{best}`"
    )

    # 4. Resume: every (seed, arm) shard exists, so nothing is recomputed (and no model is
    # needed). A job that ran only seed 1 into another directory merges with aggregate().
    again = mmie.run_experiment(config, show_progress=False)
    print(
        f"\nrerun computed {len(again.computed)} unit(s); same report: {again.report.stable() == report.stable()}"
    )
    print(f"reports: {result.paths['markdown']}  {result.paths['json']}")


if __name__ == "__main__":
    main()
