"""The tutorial in examples/ is run as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_runs_and_resumes_to_the_same_report(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", str(ROOT / "examples" / "tutorial.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Hindi extraction strength of the first continuation" in out
    assert "rerun computed 0 unit(s); same report: True" in out
    assert "why `" in out


def test_example_study_config_runs_on_the_bundled_data():
    """examples/study.toml loads, and its text and prompt sets build from the bundled data
    (every set large enough, no duplicate prompt, every pair of sets held out)."""
    import warnings

    import mmie
    from mmie.study.suite import load_eval_sets

    config = mmie.load_config(ROOT / "examples" / "study.toml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sets = load_eval_sets(config)
    d = config.data
    assert len(sets.forget_train) == d.n_forget
    assert len(sets.forget_eval) == len(sets.retain_eval) == d.n_scored == 124
    assert set(sets.prompts) == {
        "forget",
        "english",
        *(f"mixed.{n}" for n in d.mixed),
        *(f"romanized.{n}" for n in d.romanized),
        *(f"related.{n}" for n in d.related),
    }
    assert len(sets.prompts["mixed.adversarial"]) == d.n_eval  # whole lines, all 80
    for name, prompts in sets.prompts.items():
        assert len(set(prompts)) == len(prompts), name
        assert config.generation.min_prompts <= len(prompts) <= d.n_eval, name
    assert {a.name for a in config.arms} == {"lora", "reft", "sae_gate", "scrub", "dynamic_gate"}
