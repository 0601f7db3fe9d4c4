"""The examples in examples/: the tutorial as a user runs it, the Urdu study shrunk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mmie

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


def test_urdu_example_is_a_study_about_urdu(tmp_path):
    """examples/urdu.toml, shrunk to run in seconds (one seed, the scrubber and the identity
    control, a few prompts), is worded by its languages and finds Urdu on the base model."""
    config = mmie.load_config(ROOT / "examples" / "urdu.toml")
    assert config.target == "ur"
    assert config.references.named() == {}
    small = config.replace(
        seeds=(0,),
        arms=[{"kind": "scrub"}],
        controls=["identity"],
        metrics=["forget_es", "retain_ppl", "english", "leakage", "redistribution"],
        data={"n_forget": 16, "n_retain": 16, "n_eval": 8, "n_eval_texts": 8},
        selection={"n_layers": 1, "stability_seeds": 1, "n_texts": 8},
        generation={"max_new_tokens": 12},
        gates={"n_permutations": 200},
        n_boot=200,
        plots=False,
        output_dir=str(tmp_path / "urdu"),
    )
    result = mmie.run_experiment(small, show_progress=False)
    data = result.report.data
    languages = data["languages"]
    assert languages["target"] == {
        "label": "ur",
        "name": "Urdu",
        "script": "Arab",
        "script_name": "Arabic",
    }
    assert languages["retain"]["name"] == "English"
    assert {n: e["label"] for n, e in languages["related"].items()} == {
        "hindi_eval": "hi",
        "punjabi": "pa",
    }
    assert languages["romanized"] is None
    assert languages["other_scripts"] == [{"code": "Deva", "name": "Devanagari"}]
    base = data["base"]["metrics"]
    assert base["forget_es"]["value"] > 0.5  # the demo model continues Urdu prompts in Urdu
    assert base["related_es.punjabi"]["value"] == 0.0  # ... and Punjabi ones not in Urdu
    assert "forget_romanized_es" not in base
    summary = data["summary"]["text"]
    assert "held-out Urdu (`ur`, Arabic script) prompts in Urdu" in summary
    assert "Hindi" not in summary
    md = (result.output_dir / "report.md").read_text(encoding="utf-8")
    assert "target `ur` (Urdu, Arabic script) · retain `en` (English, Latin script)" in md
    assert "forget ES (greedy, held-out Urdu prompts)" in md
    assert "Urdu ES on Punjabi (punjabi) prompts" in md
    assert "Devanagari-script share on forget prompts" in md  # the redistribution gate


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
