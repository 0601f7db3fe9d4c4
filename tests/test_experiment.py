"""run_experiment, shards, resume, aggregation, gates and reports.

Most tests run a small study on a tiny random Llama (byte tokenizer, ``d_model`` 32) so that
the mechanics (shards, resume, failures, aggregation, schema) are tested fast; one test runs
a reduced demo study on the bundled demo model end to end and checks it shows an effect.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmie
from mmie._io import atomic_write_json
from mmie.errors import ConfigError, DataError
from mmie.stats import placement_values
from mmie.study import runner as experiment
from mmie.study.config import demo_config
from mmie.study.decisions import GATES
from mmie.study.records import MetricRecord
from mmie.study.schema import _validate, report_schema, validate_report
from mmie.study.shards import load_shards, unit_shard_path
from mmie.testing import byte_tokenizer, tiny_causal_lm

ARMS = [
    {"kind": "lora", "steps": 2, "batch_size": 4},
    {"kind": "sae_gate"},
    {"kind": "scrub"},
    {"kind": "dynamic_gate", "penalty": 5.0},
]


@pytest.fixture(scope="module")
def tiny():
    return tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0), byte_tokenizer()


def comparable(report):
    """The report without timings and without the (run-specific) output directory."""
    data = copy.deepcopy(report.stable())
    data["config"].pop("output_dir")
    return data


def small_config(out, **overrides):
    base = {
        "model": "tiny-llama",
        "seeds": (0, 1),
        "output_dir": str(out),
        "data": {"n_forget": 6, "n_retain": 6, "n_eval": 4, "max_length": 256, "batch_size": 8},
        "selection": {"n_layers": 1, "stability_seeds": 2, "n_texts": 6},
        "sae": {
            "steps": 10,
            "k": 4,
            "n_features": 4,
            "d_sae_multiple": 2,
            "max_retain_frequency": 1.0,
        },
        "generation": {"max_new_tokens": 6, "batch_size": 8},
        "arms": ARMS,
        "references": {"oracle": "", "retrain": ""},  # the demo's do not fit the tiny model
        "n_boot": 200,
        "gates": {"n_permutations": 200},
        "plots": False,
    }
    base.update(overrides)
    return demo_config(**base)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny):
    model, tok = tiny
    out = tmp_path_factory.mktemp("full")
    result = mmie.run_experiment(small_config(out), model=model, tokenizer=tok, show_progress=False)
    return result


def _units():
    """(seed, arm) units of the small study: seed-invariant arms (scrub, the controls but
    noise) run once, at the first seed."""
    invariant = {"scrub", "control.identity", "control.script_ban", "control.eos"}
    per_seed = [a["kind"] for a in ARMS if a["kind"] not in invariant] + ["control.noise"]
    return [(0, name) for name in sorted(invariant)] + [(s, n) for s in (0, 1) for n in per_seed]


def test_full_run_writes_shards_and_a_valid_report(full_run, tiny):
    out = full_run.output_dir
    assert full_run.ok
    assert sorted(full_run.computed) == sorted(_units())
    assert not full_run.resumed
    names = sorted(p.name for p in (out / "shards").iterdir())
    assert names == sorted(["base.json"] + [f"seed{s}__{a}.json" for s, a in _units()])
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")]  # no tmp left
    data = json.loads((out / "report.json").read_text())
    validate_report(data)
    assert data == full_run.report.data
    controls = {f"control.{c}" for c in ("identity", "script_ban", "eos", "noise")}
    assert set(data["arms"]) == {a["kind"] for a in ARMS} | controls
    assert {n for n, a in data["arms"].items() if a["role"] == "control"} == controls
    assert data["arms"]["scrub"]["seed_invariant"]
    assert data["arms"]["scrub"]["metrics"]["forget_es"]["ci"] is None  # no seed variance
    for arm in data["arms"].values():
        assert arm["decision"] in ("pass", "fail", "incomplete")
        assert [g["name"] for g in arm["gates"]] == list(GATES)
    md = (out / "report.md").read_text()
    for heading in ("## Verdict", "## Metrics", "## Gates", "## Runs", "## Decisions"):
        assert heading in md
    assert "`sae_gate`" in md
    # per-seed, per-item records are kept
    assert len(data["records"]) == len(_units())
    assert len(data["records"][0]["metrics"]["forget_es"]["per_item"]) == 4
    # the probe group runs at the selected layers, for the base model and every arm
    probe_keys = [f"probe_auc.{layer}" for layer in data["layers"]]
    assert probe_keys
    assert set(probe_keys) <= set(data["base"]["metrics"])
    for arm in data["arms"].values():
        assert set(probe_keys) <= set(arm["metrics"])
    # every arm was released cleanly: the caller's model has no hooks and no adapter
    mmie.assert_no_mmie_hooks(tiny[0])
    assert not any(type(m).__module__.startswith("peft") for m in tiny[0].modules())


def test_report_matches_its_schema_with_jsonschema(full_run):
    jsonschema = pytest.importorskip("jsonschema")
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(full_run.report.data)


def test_builtin_validator_rejects_what_jsonschema_rejects(full_run):
    jsonschema = pytest.importorskip("jsonschema")
    schema = report_schema()
    validator = jsonschema.Draft202012Validator(schema)
    good = full_run.report.data
    broken = []
    b = copy.deepcopy(good)
    del b["summary"]
    broken.append(b)
    b = copy.deepcopy(good)
    b["units"][0]["status"] = "exploded"
    broken.append(b)
    b = copy.deepcopy(good)
    next(iter(b["arms"].values()))["gates"][0]["p_value"] = 1.5
    broken.append(b)
    b = copy.deepcopy(good)
    b["extra"] = 1
    broken.append(b)
    b = copy.deepcopy(good)
    b["layers"] = ["x"]
    broken.append(b)
    for doc in broken:
        assert not validator.is_valid(doc)
        assert _validate(doc, schema, schema, "$")
        with pytest.raises(DataError, match="does not match its schema"):
            validate_report(doc)


class _Killed(BaseException):
    """Stands for the process being killed (not an Exception: nothing records it)."""


def test_killed_run_resumes_to_an_identical_report(tmp_path, monkeypatch, tiny, full_run):
    model, tok = tiny
    cfg = small_config(tmp_path / "killed")
    original = experiment._run_unit
    calls = []

    def run_then_die(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(args[2:4])
        raise _Killed

    monkeypatch.setattr(experiment, "_run_unit", run_then_die)
    with pytest.raises(_Killed):
        mmie.run_experiment(cfg, model=model, tokenizer=tok, show_progress=False)
    shards = sorted(p.name for p in (tmp_path / "killed" / "shards").glob("seed*.json"))
    assert shards == ["seed0__lora.json"]  # exactly the first shard survived, whole
    assert calls == [(0, "lora")]
    monkeypatch.setattr(experiment, "_run_unit", original)

    resumed = mmie.run_experiment(cfg, model=model, tokenizer=tok, show_progress=False)
    assert resumed.resumed == ((0, "lora"),)
    assert len(resumed.computed) == len(_units()) - 1
    assert comparable(resumed.report) == comparable(full_run.report)
    assert resumed.report.to_markdown() == full_run.report.to_markdown()
    # A rerun with nothing left to do computes nothing and gives the same report again.
    again = mmie.run_experiment(cfg, show_progress=False)  # no model needed: all shards exist
    assert again.computed == ()
    assert again.report.stable() == resumed.report.stable()


def test_failures_are_logged_recorded_and_retried(tmp_path, monkeypatch, tiny, caplog):
    model, tok = tiny
    cfg = small_config(tmp_path / "fail", seeds=(0,), arms=ARMS[:2], controls=())
    from mmie.study import arms as arms_module

    original = arms_module.Study._trained

    def broken(self, arm, seed, layers):
        if arm.name == "lora":
            raise RuntimeError("boom in training")
        return original(self, arm, seed, layers)

    monkeypatch.setattr(arms_module.Study, "_trained", broken)
    with caplog.at_level(logging.ERROR, logger="mmie.study.runner"):
        result = mmie.run_experiment(cfg, model=model, tokenizer=tok, show_progress=False)
    assert not result.ok
    assert [(f.seed, f.arm) for f in result.failures] == [(0, "lora")]
    assert result.failures[0].error == "RuntimeError: boom in training"
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged
    assert logged[0].exc_info is not None  # the traceback is logged
    shard = json.loads(unit_shard_path(tmp_path / "fail", 0, "lora").read_text())
    assert shard["status"] == "failed"
    assert "boom in training" in shard["error"]["traceback"]
    data = result.report.data
    assert data["arms"]["lora"]["decision"] == "failed"
    assert data["arms"]["lora"]["seeds_failed"] == [0]
    assert {g["status"] for g in data["arms"]["lora"]["gates"]} == {"not evaluated"}
    assert data["arms"]["sae_gate"]["decision"] != "failed"
    mmie.assert_no_mmie_hooks(model)
    assert not any(type(m).__module__.startswith("peft") for m in model.modules())
    # The failed unit is retried on the next run; the successful one is not.
    monkeypatch.setattr(arms_module.Study, "_trained", original)
    retry = mmie.run_experiment(cfg, model=model, tokenizer=tok, show_progress=False)
    assert retry.computed == ((0, "lora"),)
    assert retry.resumed == ((0, "sae_gate"),)
    assert retry.report.data["arms"]["lora"]["decision"] != "failed"


def test_subsets_and_aggregate_merge_directories(tmp_path, tiny, full_run):
    model, tok = tiny
    a = mmie.run_experiment(
        small_config(tmp_path / "a"), seeds=[0], model=model, tokenizer=tok, show_progress=False
    )
    assert {u["status"] for u in a.report.data["units"] if u["seed"] == 1} == {"missing"}
    # seed 1 of every per-seed arm (seed-invariant arms ran once, at seed 0)
    assert a.report.data["summary"]["n_units_missing"] == len([u for u in _units() if u[0] == 1])
    b_cfg = small_config(tmp_path / "b")
    mmie.run_experiment(
        b_cfg, seeds=[1], arms=["lora", "sae_gate"], model=model, tokenizer=tok, show_progress=False
    )
    mmie.run_experiment(
        b_cfg,
        seeds=[1],
        arms=["scrub", "dynamic_gate", "control.noise"],  # scrub: seed-invariant, not rerun
        model=model,
        tokenizer=tok,
        show_progress=False,
    )
    merged = mmie.aggregate([tmp_path / "a", tmp_path / "b"], output_dir=tmp_path / "merged")
    assert comparable(merged) == comparable(full_run.report)
    assert json.loads((tmp_path / "merged" / "report.json").read_text()) == merged.data
    # The same shard in two directories is fine; a different result for it is an error.
    mmie.aggregate([tmp_path / "a", tmp_path / "a"])
    path = unit_shard_path(tmp_path / "b", 1, "dynamic_gate")
    clash = json.loads(path.read_text())
    clash["seed"] = 0
    clash["metrics"]["forget_es"]["value"] += 0.5
    atomic_write_json(unit_shard_path(tmp_path / "b", 0, "dynamic_gate"), clash)
    with pytest.raises(DataError, match=r"conflicting results for seed 0, arm 'dynamic_gate'"):
        mmie.aggregate([tmp_path / "a", tmp_path / "b"])


def test_subset_arguments_are_validated(tmp_path):
    cfg = small_config(tmp_path / "x")
    with pytest.raises(ConfigError, match=r"seeds: \[7\] not in the config's seeds"):
        mmie.run_experiment(cfg, seeds=[7])
    with pytest.raises(ConfigError, match=r"arms: \['reft'\] not in the config's arms"):
        mmie.run_experiment(cfg, arms=["reft"])


def test_other_config_in_output_dir_is_refused(tmp_path, full_run, tiny):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(full_run.output_dir, out)
    changed = small_config(out, gates={"retain_ppl_ratio": 2.0, "n_permutations": 200})
    with pytest.raises(ConfigError, match="holds results of a different config"):
        mmie.run_experiment(changed, show_progress=False)
    stale = tmp_path / "stale"
    shutil.copytree(full_run.output_dir, stale)
    base = json.loads((stale / "shards" / "base.json").read_text())
    base["fingerprint"] = "0" * 16
    atomic_write_json(stale / "shards" / "base.json", base)
    with pytest.raises(DataError, match="belong to different studies"):
        mmie.aggregate([full_run.output_dir, stale])


def test_bad_data_line_names_file_and_line(tmp_path):
    bad = tmp_path / "forget.jsonl"
    bad.write_text('{"text": "एक"}\n{"text": "दो"}\n{"txt": "तीन"}\n', encoding="utf-8")
    cfg = small_config(tmp_path / "out", data={"forget": str(bad), "n_forget": 3})
    with pytest.raises(DataError, match=r"forget\.jsonl:3: missing \"text\" key"):
        mmie.run_experiment(cfg, show_progress=False)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "s.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": math.nan})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["s.json"]


def test_load_shards_rejects_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no shards/base\.json"):
        load_shards([tmp_path])
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "base.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"base\.json:1: invalid JSON"):
        load_shards([tmp_path])


# ----------------------------------------------------------------------------- gates
def _rec(values, weights=None, value=None):
    if weights is None:
        mean = float(np.mean(values)) if value is None else value
        return MetricRecord(value=mean, per_item=tuple(float(v) for v in values))
    return MetricRecord(
        value=float(value),
        per_item=tuple(float(v) for v in values),
        scale="log_perplexity",
        weights=tuple(int(w) for w in weights),
    )


@settings(max_examples=40, deadline=None)
@given(
    members=st.lists(st.floats(-5, 5), min_size=1, max_size=20),
    nonmembers=st.lists(st.floats(-5, 5), min_size=1, max_size=20),
)
def test_placement_values_average_to_the_auc(members, nonmembers):
    from scipy.stats import mannwhitneyu

    u = placement_values(members, nonmembers)
    assert np.all((u >= 0) & (u <= 1))
    stat = mannwhitneyu(members, nonmembers, alternative="two-sided").statistic
    assert u.mean() == pytest.approx(stat / (len(members) * len(nonmembers)), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(data=st.lists(st.tuples(st.floats(0.1, 8.0), st.integers(1, 200)), min_size=2, max_size=30))
def test_linearised_perplexity_values_average_to_log_perplexity(data):
    nll = np.array([d[0] for d in data])
    w = np.array([d[1] for d in data])
    rec = MetricRecord(
        value=0.0, per_item=tuple(nll), scale="log_perplexity", weights=tuple(int(v) for v in w)
    )
    values = rec.item_values()
    assert values.mean() == pytest.approx(np.sum(nll * w) / w.sum(), rel=1e-9)
    assert np.array_equal(MetricRecord(value=0.0, per_item=tuple(nll)).item_values(), nll)
    assert MetricRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


def test_metric_records_validate_their_scale():
    with pytest.raises(DataError, match="needs one token count per item"):
        MetricRecord(value=1.0, per_item=(1.0, 2.0), scale="log_perplexity")
    with pytest.raises(DataError, match="only log_perplexity records carry weights"):
        MetricRecord(value=1.0, per_item=(1.0,), weights=(3,))
    with pytest.raises(DataError, match=r"metrics\.x: metric record lacks"):
        MetricRecord.from_dict({"value": 1.0, "per_item": [1.0]}, source="metrics.x")


# ----------------------------------------------------------------------------- the demo
def test_reduced_demo_calibrates_its_gates_with_controls_and_references(tmp_path):
    """On the demo, with every control and both references: every control fails at least one
    gate, the oracle passes every forget-side gate and shows no retain-side damage, and an
    arm still shows a measurable forget effect."""
    cfg = demo_config(
        seeds=(0,),
        output_dir=str(tmp_path / "demo"),
        data={"n_forget": 32, "n_retain": 32},
        selection={"stability_seeds": 2, "n_texts": 16},
        sae={"steps": 100},
        sampling={"n_samples": 4},
        generation={"max_new_tokens": 16},
        arms=[a for a in demo_config().arms if a.name in ("sae_gate", "dynamic_gate")],
        n_boot=1000,
        plots=False,
    )
    result = mmie.run_experiment(cfg, show_progress=False)
    assert result.ok
    data = result.report.data
    validate_report(data)
    assert data["base"]["metrics"]["forget_es"]["value"] > 0.5  # it continues Hindi in Hindi
    controls = {n: a for n, a in data["arms"].items() if a["role"] == "control"}
    assert set(controls) == {f"control.{c}" for c in ("identity", "script_ban", "eos", "noise")}
    for name, arm in controls.items():
        assert any(g["status"] == "fail" for g in arm["gates"]), name
        assert arm["decision"] == "fail", name
    assert data["summary"]["calibrated"]
    assert controls["control.script_ban"]["label"] == "suppression"
    oracle = {g["name"]: g for g in data["references"]["decisions"]["oracle"]["gates"]}
    for gate in ("forget_es", "sampled", "knowledge"):
        assert oracle[gate]["status"] == "pass", (gate, oracle[gate]["reason"])
    for gate in ("retain_ppl", "english", "leakage"):
        assert "beyond the margin is shown" not in oracle[gate]["reason"], oracle[gate]["reason"]
    md = result.report.to_markdown()
    assert "## Gate calibration" in md
    assert "`reference.oracle`" in md
    gate = next(g for g in data["arms"]["sae_gate"]["gates"] if g["name"] == "forget_es")
    assert gate["status"] == "pass", gate["reason"]


@pytest.mark.slow
def test_full_demo_shows_an_effect_and_plots(tmp_path):
    result = mmie.run_experiment(
        demo_config(output_dir=str(tmp_path / "demo")), show_progress=False
    )
    assert result.ok
    data = result.report.data
    validate_report(data)
    best = data["arms"][result.report.best_arm]
    assert (
        best["metrics"]["forget_es"]["mean"] < 0.5 * data["base"]["metrics"]["forget_es"]["value"]
    )
    assert data["summary"]["calibrated"]
    pytest.importorskip("matplotlib")
    assert {
        "plot:metrics",
        "plot:dose_response",
        "plot:tradeoff",
        "plot:recoverability",
    } <= set(result.paths)


def test_plots_need_the_plot_extra(full_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(ImportError, match=r"mmie\[plot\]"):
        mmie.plot_report(full_run.report, tmp_path)
    paths = experiment._write_report(full_run.report, tmp_path / "auto", None)
    assert not [k for k in paths if k.startswith("plot:")]  # plots=None: skipped quietly
    with pytest.raises(ImportError, match="plot extra"):
        experiment._write_report(full_run.report, tmp_path / "req", True)


def test_plots_are_drawn_with_matplotlib(full_run, tmp_path):
    pytest.importorskip("matplotlib")
    files = mmie.plot_report(full_run.report, tmp_path)
    # one alpha per gate kind: no dose-response; no robustness group: no recoverability
    assert [f.name for f in files] == ["metrics.png", "tradeoff.png"]
    assert all(f.stat().st_size > 1000 for f in files)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=5).filter(
        lambda v: max(v) - min(v) > 1e-6
    )
)
def test_seed_intervals_stay_in_the_metric_domain(values):
    from mmie.study.report import _domain, _interval

    config = demo_config()
    ci = _interval(values, config, _domain("forget_es"))
    raw = mmie.bootstrap_ci(values, method="t", clip=False)
    assert ci is not None
    assert ci["method"] == "t"
    assert not ci["clipped"]  # Student t is never clipped to the sample's range
    assert 0.0 <= ci["low"] <= ci["estimate"] <= ci["high"] <= 1.0
    assert ci["low"] == max(raw.low, 0.0)
    assert ci["high"] == min(raw.high, 1.0)
    assert _domain("retain_ppl") == (0.0, math.inf)
    assert _domain("related_es.urdu") == (0.0, 1.0)
    assert _domain("related_ppl.urdu") == (0.0, math.inf)
    assert _domain("something_else") == (-math.inf, math.inf)


def test_every_proportion_metric_has_the_unit_domain():
    from mmie.study.report import _domain

    unit = [
        "forget_es",
        "forget_share",
        "forget_any",
        "forget_empty",
        "forget_degenerate",
        "forget_scripts.Arab",
        "forget_romanized_es",
        "forget_sampled",
        "forget_sampled_worst",
        "forget_sampled_empty",
        "english_share",
        "english_any",
        "english_degenerate",
        "mixed_es.code_switch",
        "mixed_empty.code_switch",
        "romanized_es.latin",
        "related_es.urdu",
        "mia_auc",
        "forget_script_mass",
        "probe_auc.3",
    ]
    assert {key: _domain(key) for key in unit} == dict.fromkeys(unit, (0.0, 1.0))
    for key in ("retain_ppl", "forget_ppl", "related_ppl.urdu", "english_fluency"):
        assert _domain(key) == (0.0, math.inf)


def test_sharded_device_loads_with_a_device_map():
    from mmie.study.runner import _load_model

    cfg = demo_config(device="sharded")
    assert cfg.device == "sharded"
    with _load_model(cfg, "sharded") as (model, tokenizer):
        out = mmie.generate(model, tokenizer, ["मेरे दोस्त"], max_new_tokens=4)
    assert len(out) == 1
    with pytest.raises(ConfigError, match='"sharded"'):
        demo_config(device="gpu")
