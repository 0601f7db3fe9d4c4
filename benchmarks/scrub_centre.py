"""Benchmark: the scrubber's centre (retain mean vs LEACE's pooled mean) on the demo model.

Runs the demo study with only its scrub arm, twice in one study (``scrub_center = "retain"``
and ``"mean"``), and prints forget ES, the target-script share and the retain-perplexity
ratio of both side by side.

Run: ``python3 benchmarks/scrub_centre.py [OUT_DIR]`` (about two minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import mmie


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=None, help="output directory (default: temp)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="mmie-scrub-centre-"))
    config = mmie.demo_config()
    scrub = next(a for a in config.arms if a.kind == "scrub")
    pooled = dataclasses.replace(scrub, name="scrub_pooled", scrub_center="mean")
    config = dataclasses.replace(
        config,
        arms=(scrub, pooled),
        controls=(),
        references=mmie.ReferenceConfig(),
        output_dir=str(out),
    )
    mmie.run_experiment(config, show_progress=False)
    report = json.loads((out / "report.json").read_text())
    base = report["base"]["metrics"]
    print(f"{'centre':>8} {'forget ES':>10} {'target share':>13} {'retain ppl ratio':>17}")
    print(
        f"{'(base)':>8} {base['forget_es']['value']:>10.3f} {base['forget_share']['value']:>13.3f}"
    )
    for name, centre in (("scrub", "retain"), ("scrub_pooled", "mean")):
        m = report["arms"][name]["metrics"]
        ratio = m["retain_ppl"]["mean"] / base["retain_ppl"]["value"]
        print(
            f"{centre:>8} {m['forget_es']['mean']:>10.3f} {m['forget_share']['mean']:>13.3f} "
            f"{ratio:>16.3f}x"
        )


if __name__ == "__main__":
    main()
