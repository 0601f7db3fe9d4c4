"""Nothing lost, nothing silent: concurrent runs, input fingerprints, safe discards, typed
errors, early config checks, library misuse, data files, permissions, interrupts, linear
extraction strength and report injection.

Every test here reproduces one failure of the issue (it failed before the fix) and checks
the fix. Most use one small study on a tiny random Llama run in-process (``study_dir``);
tests that change a study work on a copy of it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mmie
from mmie import cli
from mmie._io import (
    atomic_write_json,
    atomic_write_text,
    read_checkpoint_config,
    read_safetensors,
    remove_temp_files,
)
from mmie.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InterventionError,
    MmieError,
    NumericalError,
)
from mmie.evaluation import language_metrics
from mmie.language import detectors
from mmie.language.detectors import EnsembleDetector, RomanizedHindiDetector, ScriptDetector
from mmie.study import runner
from mmie.study.config import ExperimentConfig, demo_config, load_config
from mmie.study.datasets import bundled_path, load_texts
from mmie.study.inputs import input_changes, model_fingerprint
from mmie.study.markdown import render_markdown
from mmie.study.outdir import claim_output
from mmie.study.shards import base_shard_path, load_shards, read_json, unit_shard_path
from mmie.testing import byte_tokenizer, tiny_causal_lm

SRC = Path(__file__).resolve().parents[1] / "src"
ARMS = [
    {"kind": "sae_gate"},
    {"kind": "lora", "steps": 2, "batch_size": 4, "lr": 5e-3},
]


def small_config(out, **overrides):
    base = {
        "model": "tiny-llama",
        "seeds": (0,),
        "output_dir": str(out),
        "references": {"oracle": "", "retrain": ""},
        "controls": (),
        "metrics": ("forget_es", "retain_ppl"),
        "data": {"n_forget": 6, "n_retain": 6, "n_eval": 4, "max_length": 64, "batch_size": 8},
        "selection": {"n_layers": 1, "stability_seeds": 2, "n_texts": 6},
        "sae": {
            "steps": 5,
            "k": 4,
            "n_features": 4,
            "d_sae_multiple": 2,
            "max_retain_frequency": 1.0,
        },
        "generation": {"max_new_tokens": 4, "batch_size": 8},
        "arms": ARMS,
        "n_boot": 50,
        "gates": {"n_permutations": 50},
        "plots": False,
    }
    for key, value in overrides.items():  # sections merge into the small study's
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return demo_config(**base)


def tiny():
    return tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0), byte_tokenizer()


def run(cfg, **kwargs):
    model, tok = tiny()
    return mmie.run_experiment(cfg, model=model, tokenizer=tok, show_progress=False, **kwargs)


def comparable(data):
    data = {k: v for k, v in data.items() if k != "timings"}
    data["config"] = {k: v for k, v in data["config"].items() if k != "output_dir"}
    return data


@pytest.fixture(autouse=True)
def _quiet_truncation():
    # The tiny study cuts texts to 64 tokens on purpose (speed); that warning is not tested here.
    with __import__("warnings").catch_warnings():
        __import__("warnings").filterwarnings("ignore", category=mmie.TruncationWarning)
        yield


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    with __import__("warnings").catch_warnings():
        __import__("warnings").filterwarnings("ignore", category=mmie.TruncationWarning)
        result = run(small_config(out))
    assert result.ok
    return out


@pytest.fixture
def copy_of(study_dir, tmp_path):
    def make(name="copy"):
        dst = tmp_path / name
        shutil.copytree(study_dir, dst)
        return dst

    return make


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_model")
    model, tok = tiny()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def edit_json(path, change):
    data = json.loads(Path(path).read_text())
    change(data)
    Path(path).write_text(json.dumps(data))


# ============================================================================ 1. locks
_WORKER = """
import json, os, sys
import torch
torch.set_num_threads(1)
from mmie.study import runner
from mmie.study.config import load_config
import mmie

marker = sys.argv[2]
original = runner._run_unit


def counting(study, config, seed, name, *args, **kwargs):
    with open(marker, "a") as fh:
        fh.write(f"{seed} {name} {os.getpid()}\\n")
    return original(study, config, seed, name, *args, **kwargs)


runner._run_unit = counting
result = mmie.run_experiment(load_config(sys.argv[1]), show_progress=False)
print(json.dumps({"computed": result.computed, "resumed": result.resumed}))
"""


def test_two_processes_into_one_directory_compute_each_unit_once(tmp_path, tiny_model_dir):
    shared = tmp_path / "shared"
    cfg = small_config(
        shared,
        model=str(tiny_model_dir),
        seeds=(0, 1),
        controls=("identity",),
        arms=[*ARMS, {"kind": "scrub"}],
    )
    config_path = tmp_path / "study.json"
    config_path.write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER, encoding="utf-8")
    marker = tmp_path / "computed.txt"
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(config_path), str(marker)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    lines = marker.read_text().split("\n")
    units = [tuple(line.split()[:2]) for line in lines if line]
    expected = {("0", "sae_gate"), ("0", "lora"), ("0", "scrub"), ("0", "control.identity")}
    expected |= {("1", "sae_gate"), ("1", "lora")}
    assert sorted(units) == sorted(expected)  # every unit computed exactly once, in all
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    computed = [tuple(u) for r in results for u in r["computed"]]
    assert sorted(computed) == sorted((int(s), a) for s, a in expected)
    # no lost write: every shard is there and the last report covers all of them
    report = json.loads((shared / "report.json").read_text())
    assert {u["status"] for u in report["units"]} == {"ok"}
    single = mmie.run_experiment(
        cfg.replace(output_dir=str(tmp_path / "single")), show_progress=False
    )
    assert comparable(report) == comparable(json.loads(json.dumps(single.report.data)))


def test_a_unit_written_by_another_run_while_waiting_is_not_recomputed(
    tmp_path, study_dir, monkeypatch
):
    real_lock = runner.lock
    finished = study_dir / "shards" / "seed0__sae_gate.json"

    @contextlib.contextmanager
    def racing(out, name):
        with real_lock(out, name):
            if name == "unit.seed0__sae_gate":  # another process wrote it while we waited
                shutil.copy(finished, Path(out) / "shards" / finished.name)
            yield

    monkeypatch.setattr(runner, "lock", racing)
    for resume in (True, False):
        result = run(small_config(tmp_path / f"race{resume}"), resume=resume)
        assert (0, "sae_gate") in result.resumed
        assert (0, "sae_gate") not in result.computed
        assert (0, "lora") in result.computed


def test_a_run_of_another_config_racing_into_the_directory_is_refused(tmp_path, study_dir):
    out = tmp_path / "race"
    inputs = read_json(base_shard_path(study_dir))["inputs"]
    with claim_output(out, "a" * 16, inputs, resume=True):  # run A is writing
        for resume in (True, False):
            with (
                pytest.raises(ConfigError, match="another mmie run"),
                claim_output(out, "b" * 16, inputs, resume=resume),
            ):
                pass
        with pytest.raises(ConfigError, match="another mmie run"):
            run(small_config(out), resume=False)  # refused before anything is discarded
    with claim_output(out, "b" * 16, inputs, resume=True):  # A ended, nothing to protect
        pass


# ============================================================================ 2. inputs
def test_every_shard_records_the_inputs(study_dir):
    for path in sorted((study_dir / "shards").glob("*.json")):
        inputs = read_json(path)["inputs"]
        assert inputs["mmie_version"] == mmie.__version__
        assert inputs["model"]["kind"] == "in-process"
        texts = inputs["texts"]
        assert texts["forget_train"]["set"] == "hindi_train"
        assert texts["forget_train"]["n"] == 6
        assert len(texts["forget_train"]["sha256"]) == 64


def test_a_data_file_changed_in_place_is_detected_by_resume_and_aggregate(tmp_path):
    forget = tmp_path / "forget.jsonl"
    lines = bundled_path("hindi_train").read_text(encoding="utf-8").splitlines()[:10]
    forget.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = small_config(tmp_path / "a", data={"forget": str(forget)}, arms=ARMS[:1])
    run(cfg)
    # a line beyond the six used: the texts actually used are unchanged, nothing recomputed
    edited = [*lines[:9], '{"text": "नया वाक्य जो पहले नहीं था"}']
    forget.write_text("\n".join(edited) + "\n", encoding="utf-8")
    assert run(cfg).computed == ()
    # a used line changed: the resumed run refuses and names the set and the file
    edited[0] = '{"text": "बदला हुआ पहला वाक्य"}'
    forget.write_text("\n".join(edited) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"other inputs: texts forget_train \(.*forget\.jsonl\)"):
        run(cfg)
    # a second directory computed from the new file does not merge with the first
    run(cfg.replace(output_dir=str(tmp_path / "b")))
    with pytest.raises(DataError, match=r"inputs differ: texts forget_train"):
        mmie.aggregate([tmp_path / "a", tmp_path / "b"])
    # --no-resume recomputes everything from the new texts
    again = run(cfg, resume=False)
    assert sorted(again.computed) == [(0, "sae_gate")]
    mmie.aggregate([tmp_path / "a", tmp_path / "b"])


def test_load_shards_names_the_changed_input_of_a_shard(copy_of):
    out = copy_of()
    path = unit_shard_path(out, 0, "lora")
    edit_json(path, lambda d: d["inputs"].update(mmie_version="0.0.1"))
    with pytest.raises(
        DataError, match=r"seed0__lora\.json was written with other inputs.*0\.0\.1"
    ):
        load_shards([out])


def test_model_fingerprints(tmp_path, tiny_model_dir, monkeypatch):
    demo = model_fingerprint("demo")
    assert demo["kind"] == "demo"
    assert len(demo["files"]["model.safetensors"]) == 64
    local = model_fingerprint(str(tiny_model_dir))
    assert local["kind"] == "local"
    assert "sha256" in local["files"]["model.safetensors"]  # small files are hashed
    monkeypatch.setattr("mmie.study.inputs.HASH_LIMIT", 10)
    big = model_fingerprint(str(tiny_model_dir))["files"]["model.safetensors"]
    assert set(big) == {"size", "mtime_ns"}  # large ones: size and mtime
    cache = tmp_path / "hub"
    ref = cache / "models--org--name" / "refs"
    ref.mkdir(parents=True)
    (ref / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert model_fingerprint("org/name") == {"kind": "hub", "id": "org/name", "revision": "abc123"}
    model, _ = tiny()
    a = model_fingerprint("x", model=model)
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1.0
    assert model_fingerprint("x", model=model)["sha256"] != a["sha256"]
    # an in-process model stands for config.model when that can be found (the caller vouches)
    from mmie.study.inputs import study_inputs
    from mmie.study.suite import load_eval_sets

    cfg = small_config("unused", model="demo")
    assert study_inputs(cfg, load_eval_sets(cfg), model=model)["model"] == demo
    unknown = {"kind": "hub", "id": "org/name", "revision": None}
    assert input_changes({"model": unknown}, {"model": model_fingerprint("org/name")}) == []


# ============================================================================ 3. --no-resume
def test_no_resume_validates_first_and_removes_only_mmie_files(copy_of, tmp_path):
    out = copy_of()
    shards = out / "shards"
    (shards / "notes.json").write_text('{"my": "notes"}')
    shutil.copy(shards / "base.json", shards / "base-backup.json")  # a backup, mmie content
    (shards / "seed0__mine.json").write_text('{"not": "a shard"}')  # mmie-like name only
    before = sorted(p.name for p in shards.iterdir())
    other = {"gates": {"retain_ppl_ratio": 2.0, "n_permutations": 50}}
    bad_runs = [
        small_config(out, data={"forget": str(tmp_path / "missing.jsonl")}, **other),
        small_config(out, model=str(tmp_path / "no-such-model"), **other),
        small_config(out, device="cuda:99", **other),
    ]
    for cfg in bad_runs:
        with pytest.raises((ConfigError, DataError, FileNotFoundError)):
            mmie.run_experiment(cfg, resume=False, show_progress=False)
        assert sorted(p.name for p in shards.iterdir()) == before  # nothing deleted
    run(small_config(out, **other), resume=False)
    left = sorted(p.name for p in shards.iterdir())
    assert {"notes.json", "base-backup.json", "seed0__mine.json"} <= set(left)
    assert read_json(shards / "base.json")["config"]["gates"]["retain_ppl_ratio"] == 2.0


# ============================================================================ 4. typed errors
def _checkpoints(tmp_path):
    """One saved SAE, scrubber, ReFT adapter and LoRA adapter: (name, weights file, loader)."""
    from peft import LoraConfig, get_peft_model

    from mmie.edits.leace import LeaceEraser
    from mmie.sae.config import SAEConfig
    from mmie.unlearning.lora_checkpoint import load_lora, quiet_peft, save_lora

    model, _ = tiny()
    sae = mmie.SparseAutoencoder(SAEConfig(architecture="topk", d_in=32, d_sae=64, k=4))
    sae.save(tmp_path / "sae")
    eraser = LeaceEraser(torch.zeros(32, 1), torch.zeros(1, 32), torch.zeros(32))
    mmie.Scrubber(model, {0: eraser}).save(tmp_path / "scrub")
    mmie.ReFTAdapter(model, mmie.LoReFTConfig(layers=(0,), rank=2)).save(tmp_path / "reft")
    with quiet_peft():
        peft = get_peft_model(tiny()[0], LoraConfig(r=2, target_modules=["q_proj"]))
    save_lora(peft, tmp_path / "lora")
    return [
        (
            "sae",
            tmp_path / "sae" / "sae.safetensors",
            lambda: mmie.SparseAutoencoder.load(tmp_path / "sae"),
        ),
        (
            "scrub",
            tmp_path / "scrub" / "erasers.safetensors",
            lambda: mmie.Scrubber.load(tmp_path / "scrub", model),
        ),
        (
            "reft",
            tmp_path / "reft" / "reft_weights.safetensors",
            lambda: mmie.ReFTAdapter.load(tmp_path / "reft", model),
        ),
        (
            "lora",
            tmp_path / "lora" / "adapter_model.safetensors",
            lambda: load_lora(tiny()[0], tmp_path / "lora"),
        ),
    ]


def test_corrupt_truncated_or_empty_safetensors_raise_checkpoint_error(tmp_path):
    for _name, weights, load in _checkpoints(tmp_path):
        good = weights.read_bytes()
        load()  # the intact checkpoint loads
        for broken in (good[: len(good) // 2], b"", b"\x00garbage" * 3):
            weights.write_bytes(broken)
            with pytest.raises(CheckpointError, match=re.escape(str(weights))):
                load()
        weights.write_bytes(good)


def test_an_sae_with_nan_weights_is_refused(tmp_path):
    from safetensors.torch import save_file

    from mmie.sae.config import SAEConfig

    sae = mmie.SparseAutoencoder(SAEConfig(architecture="topk", d_in=8, d_sae=16, k=2))
    sae.save(tmp_path)
    tensors = read_safetensors(tmp_path / "sae.safetensors")
    tensors["W_dec"][3, 1] = float("nan")
    save_file(tensors, str(tmp_path / "sae.safetensors"))
    with pytest.raises(CheckpointError, match=r"W_dec.*NaN/inf"):
        mmie.SparseAutoencoder.load(tmp_path)


def test_non_utf8_bytes_are_typed_errors_naming_file_and_line(tmp_path, copy_of):
    data = tmp_path / "texts.jsonl"
    data.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"texts\.jsonl:2: not UTF-8 \(byte 0xe9"):
        load_texts(data)
    toml = tmp_path / "study.toml"
    toml.write_bytes(b'model = "demo"\nname = "\xff"\n')
    with pytest.raises(ConfigError, match=r"study\.toml:2: not UTF-8"):
        load_config(toml)
    sae_dir = tmp_path / "sae"
    from mmie.sae.config import SAEConfig

    mmie.SparseAutoencoder(SAEConfig(architecture="relu", d_in=4, d_sae=8)).save(sae_dir)
    cfg_file = sae_dir / "sae_config.json"
    cfg_file.write_bytes(cfg_file.read_bytes().replace(b'"relu"', b'"rel\xffu"'))
    with pytest.raises(CheckpointError, match=r"sae_config\.json:\d+: not UTF-8"):
        mmie.SparseAutoencoder.load(sae_dir)
    out = copy_of()
    shard = unit_shard_path(out, 0, "lora")
    shard.write_bytes(shard.read_bytes().replace(b'"lora"', b'"lo\xfera"', 1))
    with pytest.raises(DataError, match=r"seed0__lora\.json:\d+: not UTF-8"):
        load_shards([out])


def test_a_garbage_shard_is_recomputed_on_resume(copy_of, caplog):
    out = copy_of()
    garbage = {
        ("0", "lora"): b"\x00\xff not json",
        ("0", "sae_gate"): b'{"format_version": 3, "kind": "unit", "seed": "zero", "arm": "x"}',
    }
    for (seed, arm), content in garbage.items():
        unit_shard_path(out, int(seed), arm).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="mmie.study.runner"):
        result = run(small_config(out))
    assert sorted(result.computed) == [(0, "lora"), (0, "sae_gate")]
    assert "seed0__lora.json" in caplog.text
    assert "seed0__sae_gate.json" in caplog.text
    load_shards([out])


def test_a_shard_whose_seed_is_not_an_integer_is_a_data_error(copy_of):
    out = copy_of()
    edit_json(unit_shard_path(out, 0, "lora"), lambda d: d.update(seed="zero"))
    with pytest.raises(DataError, match=r"seed must be an integer.*'zero'"):
        load_shards([out])


def test_lone_surrogates_and_deep_nesting_in_data_files_name_file_and_line(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "a\\ud800b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"set\.jsonl:2: \"text\" holds a lone surrogate U\+D800"):
        load_texts(path)
    path.write_text('{"text": "fine"}\n' + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"set\.jsonl:2: invalid JSON"):
        load_texts(path)


def test_a_full_or_read_only_disk_is_one_error_naming_the_file(tmp_path, monkeypatch):
    target = tmp_path / "shard.json"

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*shard\.json'") as info:
        atomic_write_json(target, {"a": 1})
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []  # no temporary file left
    monkeypatch.undo()
    if os.geteuid() != 0:  # root writes into read-only directories
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(PermissionError, match=r"ro/report\.md"):
                atomic_write_text(ro / "report.md", "x")
        finally:
            ro.chmod(0o755)


def test_cli_prints_any_mmie_or_os_error_as_one_line_exit_2(tmp_path, capsys, monkeypatch):
    cfg = small_config(tmp_path / "out", model="demo")
    path = tmp_path / "study.json"
    path.write_text(json.dumps(cfg.to_dict()))

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    assert cli.main(["--log-level", "ERROR", "run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmie: error: [Errno 28] No space left on device")
    assert str(tmp_path / "out") in err
    assert "\n" not in err
    assert "Traceback" not in err
    monkeypatch.undo()

    def broken(*_args, **_kwargs):
        raise CheckpointError("line one\nline two")

    monkeypatch.setattr("mmie.study.runner.run_experiment", broken)
    assert cli.main(["run", str(path)]) == 2
    assert capsys.readouterr().err.strip() == "mmie: error: line one line two"


def test_a_nan_metric_does_not_crash_the_report_writer(copy_of, tmp_path):
    out = copy_of()
    report = mmie.aggregate([out])
    report.data["base"]["metrics"]["retain_ppl"]["value"] = float("nan")
    paths = report.write(tmp_path / "nan")
    written = json.loads(paths["json"].read_text())
    assert written["base"]["metrics"]["retain_ppl"]["value"] is None
    assert json.loads(report.to_json())["base"]["metrics"]["retain_ppl"]["value"] is None


def test_a_corrupt_cached_artefact_is_recomputed(copy_of, caplog):
    out = copy_of()
    sae = next(out.glob("artifacts/*/seed0/sae/layer*/sae.safetensors"))
    adapter = next(out.glob("artifacts/*/seed0/lora/*/adapter_model.safetensors"))
    sae.write_bytes(sae.read_bytes()[:100])
    adapter.write_bytes(b"")
    for arm in ("sae_gate", "lora"):
        unit_shard_path(out, 0, arm).unlink()
    with caplog.at_level(logging.WARNING, logger="mmie.study.arms"):
        result = run(small_config(out))
    assert result.ok
    assert sorted(result.computed) == [(0, "lora"), (0, "sae_gate")]
    assert str(sae.parent) in caplog.text
    assert str(adapter.parent) in caplog.text
    read_safetensors(sae)  # rewritten whole
    read_safetensors(adapter)


# ============================================================================ 5. early checks
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"seeds": (2**32,)}, r"seeds\[0\]: must be in \[0, 2\*\*32\)"),
        ({"sampling": {"seed": 2**32}}, r"sampling\.seed: must be in \[0, 2\*\*32\)"),
        ({"data": {"max_length": 1}}, r"data\.max_length: must be >= 2"),
        ({"sae": {"d_sae_multiple": 10_000}}, r"sae\.d_sae_multiple: must be <= 256"),
        ({"sae": {"steps": 10**9}}, r"sae\.steps: must be <= 1,000,000"),
        ({"arms": [{"kind": "lora", "steps": 10**8}]}, r"arms\[0\]\.steps: must be <= 1,000,000"),
        (
            {"name": "study\n# Injected"},
            r"name: must be one line of printable text; it holds U\+000A",
        ),
        ({"name": "a\u202eb"}, r"name: must be one line"),
    ],
)
def test_configs_that_would_fail_late_are_refused_when_built(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small_config("unused", **overrides)


def test_output_dir_expands_the_home_directory():
    assert small_config("~/mmie-x").output_dir == os.path.expanduser("~/mmie-x")


@pytest.mark.parametrize(
    "model", ["/no/such/model", "./no-such-model", "~/no-such-model-dir", "a/b/c"]
)
def test_a_missing_local_model_path_is_refused_before_anything(tmp_path, monkeypatch, model):
    monkeypatch.setattr(runner, "_load_model", lambda *a, **k: pytest.fail("loaded"))
    cfg = small_config(tmp_path / "out", model=model)
    with pytest.raises(ConfigError, match=r"^model: there is no model directory"):
        mmie.run_experiment(cfg, show_progress=False)
    assert not (tmp_path / "out").exists()


def test_a_hub_id_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runner, "_load_model", lambda *a, **k: pytest.fail("loaded"))
    cfg = small_config(tmp_path / "out", model="org/not-cached")
    t0 = time.perf_counter()
    with pytest.raises(
        ConfigError,
        match=r"model: hub model 'org/not-cached' is not in the local cache.*HF_HUB_OFFLINE",
    ):
        mmie.run_experiment(cfg, show_progress=False)
    assert time.perf_counter() - t0 < 5
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("mmie.study.preflight._hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ConfigError, match="the hub cannot be reached"):
        mmie.run_experiment(cfg, show_progress=False)
    snapshot = tmp_path / "cache" / "models--org--not-cached" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    from mmie.study.preflight import check_model_source

    check_model_source("org/not-cached", "model")  # cached: fine offline too


def test_device_output_dir_and_plots_are_checked_before_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_load_model", lambda *a, **k: pytest.fail("loaded"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"device: 'cuda' needs CUDA"):
        mmie.run_experiment(small_config(tmp_path / "o", device="cuda", model="demo"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        with pytest.raises(ConfigError, match=r"output_dir: .* is a file"):
            mmie.run_experiment(small_config(out, model="demo"))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    with pytest.raises(ConfigError, match="plots: true needs matplotlib"):
        mmie.run_experiment(small_config(tmp_path / "p", plots=True, model="demo"))


def test_sae_size_and_layers_are_checked_against_the_model_before_any_work(
    tmp_path, monkeypatch, tiny_model_dir
):
    monkeypatch.setattr(runner, "_evaluate_base", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr(runner, "_load_model", lambda *a, **k: pytest.fail("loaded"))
    # hidden size 32, d_sae_multiple 1: 32 latents
    cases = [
        ({"sae": {"d_sae_multiple": 1, "k": 33}}, r"sae\.k: 33 exceeds d_sae = .* 1 \* 32 = 32"),
        ({"arms": [{"kind": "sae_gate", "layers": [5]}]}, r"arms\[0\]\.layers: \[5\] out of range"),
        ({"selection": {"mode": "fixed", "layers": [2]}}, r"selection\.layers: \[2\] out of range"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):  # from config.json, before loading
            mmie.run_experiment(
                small_config(tmp_path / "o", model=str(tiny_model_dir), **overrides)
            )
        with pytest.raises(ConfigError, match=message):  # an in-process model
            run(small_config(tmp_path / "o2", **overrides))


def test_pretrained_sae_paths_are_checked_before_loading_and_fingerprinted(tmp_path, monkeypatch):
    from mmie.sae.config import SAEConfig
    from mmie.study.inputs import study_inputs
    from mmie.study.suite import load_eval_sets

    monkeypatch.setattr(runner, "_load_model", lambda *a, **k: pytest.fail("loaded"))
    missing = small_config(tmp_path / "o", sae={"paths": [f"1={tmp_path / 'nowhere'}"]})
    with pytest.raises(ConfigError, match=r"sae\.paths\[0\]: .*nowhere.* does not exist"):
        mmie.run_experiment(missing)
    sae_dir = tmp_path / "sae"
    mmie.SparseAutoencoder(SAEConfig(architecture="topk", d_in=32, d_sae=64, k=4)).save(sae_dir)
    outside = small_config(tmp_path / "o", sae={"paths": [f"7={sae_dir}"]})
    with pytest.raises(ConfigError, match=r"sae\.paths\[0\]: layer 7 out of range"):
        run(outside)
    # the SAE's files are an input: rewriting them is a change that names the layer
    cfg = small_config(tmp_path / "o", sae={"paths": [f"1={sae_dir}"]})
    sets = load_eval_sets(cfg)
    before = study_inputs(cfg, sets)
    assert set(before["saes"]["1"]["files"]) == {"sae.safetensors", "sae_config.json"}
    mmie.SparseAutoencoder(SAEConfig(architecture="topk", d_in=32, d_sae=64, k=3)).save(sae_dir)
    changes = input_changes(before, study_inputs(cfg, sets))
    assert len(changes) == 1
    assert re.match(
        r"pretrained SAE of layer 1 \(.*sae\): its files changed \(sae_config", changes[0]
    )
    assert "saes" not in study_inputs(small_config(tmp_path / "o"), sets)  # none: no record


def test_non_finite_sae_weights_are_refused_in_every_layout(tmp_path):
    from safetensors.torch import save_file

    from mmie.sae.config import SAEConfig

    sae = mmie.SparseAutoencoder(SAEConfig(architecture="relu", d_in=8, d_sae=16))
    sae.save(tmp_path / "lens", layout="saelens")
    weights = tmp_path / "lens" / "sae_weights.safetensors"
    tensors = read_safetensors(weights)
    tensors["b_enc"][2] = float("inf")
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match=r"sae_weights\.safetensors: tensor 'b_enc'.*NaN/inf"):
        mmie.SparseAutoencoder.load(tmp_path / "lens")
    # a Gemma Scope params.npz (read with numpy, not safetensors) is checked too
    d = tmp_path / "layer_0" / "width_16" / "average_l0_5"
    d.mkdir(parents=True)
    params = {
        "W_enc": np.zeros((8, 16), np.float32),
        "W_dec": np.zeros((16, 8), np.float32),
        "b_enc": np.zeros(16, np.float32),
        "b_dec": np.zeros(8, np.float32),
        "threshold": np.full(16, np.nan, np.float32),
    }
    np.savez(d / "params.npz", **params)
    with pytest.raises(CheckpointError, match=r"params\.npz: tensor 'threshold' holds 16 NaN"):
        mmie.SparseAutoencoder.load(d / "params.npz")


def test_an_empty_config_file_says_model_is_required(tmp_path):
    for name, text in (("empty.toml", ""), ("empty.json", "{}"), ("seeds.toml", "seeds = [0]\n")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError, match=rf"{name}: model: is required"):
            load_config(path)
    (tmp_path / "demo.toml").write_text('model = "demo"\n')
    assert load_config(tmp_path / "demo.toml").model == "demo"


@pytest.mark.parametrize("threads", ["0", "-1", "two"])
def test_cli_threads_must_be_positive(threads, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--threads", threads])
    assert exc.value.code == 2
    assert "--threads: expected an integer >= 1" in capsys.readouterr().err


# ============================================================================ 6. library API
def _tiny_gate():
    from mmie.sae.config import SAEConfig

    model, tok = tiny()
    sae = mmie.SparseAutoencoder(SAEConfig(architecture="topk", d_in=32, d_sae=64, k=8))
    with torch.no_grad():
        sae.W_dec.normal_()
        sae.W_enc.copy_(sae.W_dec.t())
    return model, tok, sae


def test_a_nested_with_on_the_same_intervention_is_an_error():
    model, tok, sae = _tiny_gate()
    gate = mmie.SAEGate(model, {1: sae}, {1: list(range(64))}, alpha=1.0)
    ids = tok(["hello there"], return_tensors="pt")["input_ids"]
    plain = model(ids).logits
    with gate:
        gated = model(ids).logits
        with pytest.raises(InterventionError, match="already attached"), gate:
            pass
        assert gate.attached
        torch.testing.assert_close(model(ids).logits, gated)  # still gated after the attempt
    assert not gate.attached
    torch.testing.assert_close(model(ids).logits, plain)
    gate.attach()
    with pytest.raises(InterventionError, match="already attached"):
        gate.__enter__()
    gate.remove()


@pytest.mark.parametrize("features", ["12", [1.7], [1, "2"], [True]])
def test_feature_lists_are_not_coerced(features):
    model, _, sae = _tiny_gate()
    with pytest.raises(TypeError, match=r"features\[1\]"):
        mmie.SAEGate(model, {1: sae}, {1: features})
    assert mmie.SAEGate(model, {1: sae}, {1: np.array([1, 2])}).features == {1: (1, 2)}


def _nan_model(layer=1):
    model, tok = tiny()
    with torch.no_grad():
        model.model.layers[layer].mlp.down_proj.weight.fill_(float("nan"))
    return model, tok


def test_a_model_producing_nan_raises_numerical_error_naming_the_block():
    model, tok = _nan_model()
    texts = ["hello world", "नमस्ते दुनिया"]
    assert issubclass(NumericalError, MmieError)
    assert issubclass(NumericalError, FloatingPointError)
    with pytest.raises(NumericalError, match=r"perplexity: .*output of block 1"):
        mmie.perplexity(model, tok, texts)
    good, _ = tiny()
    with pytest.raises(NumericalError, match=r"token_kl \(the evaluated model\).*block 1"):
        mmie.token_kl(model, good, tok, texts)
    with pytest.raises(NumericalError, match=r"token_kl \(the reference model\).*block 1"):
        mmie.token_kl(good, model, tok, texts)
    for mode in ("next_token", "teacher_forced", "next_char"):
        with pytest.raises(NumericalError, match=r"script_mass.*block 1"):
            mmie.script_mass(model, tok, texts, "Latn", mode=mode)
    assert mmie.perplexity(good, tok, texts).perplexity > 0  # the check passes finite models


def test_hand_edited_shards_are_refused_with_the_reason(copy_of):
    out = copy_of()
    path = unit_shard_path(out, 0, "lora")
    edit_json(path, lambda d: d.update(seed=7))  # seed no longer matches the file name
    with pytest.raises(DataError, match=r"says seed 7, arm 'lora', but its file name"):
        load_shards([out])
    edit_json(path, lambda d: d.update(seed=0, arm="lora2"))
    path.rename(unit_shard_path(out, 0, "lora2"))
    with pytest.raises(DataError, match=r"arm 'lora2' is not in the study's config"):
        load_shards([out])
    path = unit_shard_path(out, 0, "lora2")
    edit_json(path, lambda d: d.update(arm="lora", arm_fingerprint="0" * 16))
    path.rename(unit_shard_path(out, 0, "lora"))
    with pytest.raises(DataError, match=r"arm 'lora' was computed with other options"):
        load_shards([out])


# ============================================================================ 7. data files
def test_unicode_line_separators_stay_inside_their_line(tmp_path):
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text(
        '{"text": "one\u2028two"}\r\n{"text": "three\u0085four"}\n{"text": "five\u2029"}\n',
        encoding="utf-8",
    )
    assert load_texts(jsonl) == ["one two", "three four", "five"]
    txt = tmp_path / "set.txt"
    txt.write_text("alpha\u2028beta\r\ngamma\x0cdelta\n\nlast", encoding="utf-8")
    assert load_texts(txt) == ["alpha beta", "gamma delta", "last"]


def test_duplicate_json_keys_are_refused_everywhere(tmp_path, copy_of):
    data = tmp_path / "set.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b", "text": "c"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"set\.jsonl:2: duplicate key 'text'"):
        load_texts(data)
    config = tmp_path / "study.json"
    config.write_text('{"model": "demo", "seeds": [0], "seeds": [1]}')
    with pytest.raises(ConfigError, match=r"study\.json: invalid JSON: duplicate key 'seeds'"):
        load_config(config)
    out = copy_of()
    path = unit_shard_path(out, 0, "lora")
    path.write_text(
        path.read_text().replace('"status": "ok"', '"status": "ok", "status": "failed"')
    )
    with pytest.raises(DataError, match=r"seed0__lora\.json: invalid JSON: duplicate key 'status'"):
        load_shards([out])
    ckpt = tmp_path / "ckpt.json"
    ckpt.write_text('{"format": "x", "format": "y"}')
    with pytest.raises(CheckpointError, match="duplicate key 'format'"):
        read_checkpoint_config(ckpt)


# ============================================================================ 8. permissions
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "x.json", {"a": 1})
        replaced = atomic_write_json(path, {"a": 2})  # replacing keeps the umask's mode too
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert replaced.stat().st_mode & 0o777 == mode


# ============================================================================ 9. interrupts
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, tiny_model_dir, capsys, monkeypatch):
    cfg = small_config(tmp_path / "out", model=str(tiny_model_dir))
    path = tmp_path / "study.json"
    path.write_text(json.dumps(cfg.to_dict()))
    original = runner._run_unit
    calls = []

    def interrupt_second(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "_run_unit", interrupt_second)
    argv = ["--log-level", "ERROR", "run", str(path), "--no-progress", "--threads", "1"]
    assert cli.main(argv) == 130
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    err = stderr.strip().splitlines()[-1]  # (transformers draws a loading bar above it)
    assert err.startswith("mmie: interrupted")
    assert "interrupted: 1 (seed, arm) unit(s) finished in this run (seed 0 sae_gate)" in err
    assert "rerun the same command to resume" in err
    monkeypatch.setattr(runner, "_run_unit", original)
    assert cli.main(argv) == 0  # and the same command resumes
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {(u["seed"], u["arm"], u["status"]) for u in report["units"]} == {
        (0, "sae_gate", "ok"),
        (0, "lora", "ok"),
    }


def test_leftover_temporary_files_are_removed_at_run_start(copy_of):
    out = copy_of()
    torn = [
        out / "shards" / ".seed0__lora.json.k2j3h4g5.tmp",
        out / ".report.json.abcdefgh.tmp",
        next(out.glob("artifacts/*/seed0/sae/layer0")) / ".sae.safetensors.x1y2z3w4.tmp",
    ]
    kept = [out / "shards" / ".my-notes.tmp", out / "shards" / "draft.tmp"]
    for path in torn + kept:
        path.write_text("partial")
    assert run(small_config(out)).computed == ()
    assert [p.exists() for p in torn] == [False] * len(torn)
    assert all(p.exists() for p in kept)
    assert remove_temp_files(out / "nope") == []


# ============================================================================ 10. linear ES
def _old_onset(words, detector, target):
    """The definition: the first k whose k-word prefix the detector labels target."""
    for k in range(len(words)):
        if detector.detect(" ".join(words[: k + 1])).label == target:
            return k
    return None


_WORDS = [
    "नमस्ते",
    "है",
    "hello",
    "mera",
    "hai",
    "kya",
    "the",
    "a",
    "ਅੱਜ",
    "Ωμέγα",
    "42",
    "।",
    "naam",
    "bahut",
    "ब",
    "is",
    "Straße",
    "ø",
    "راز",
    "অজ",
    "HAI",
    "Mein",
]


@pytest.mark.parametrize(
    "detector",
    [
        ScriptDetector(),
        EnsembleDetector(),
        EnsembleDetector(romanized=RomanizedHindiDetector(threshold=0.6)),
    ],
)
def test_prefix_scan_equals_the_definition_on_random_texts(detector):
    rng = random.Random(1)
    for _ in range(300):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(0, 20))]
        text = " ".join(words)
        for target in ("hi", "hi-Latn", "en", "pa", "ur", "und"):
            es = language_metrics.extraction_strength([text], detector, target, method="prefix")
            assert es.onsets == (_old_onset(words, detector, target),), (words, target)


def test_extraction_strength_examines_each_character_a_bounded_number_of_times(monkeypatch):
    examined = [0]

    def counting(module, name):
        real = getattr(module, name)

        def wrapper(text, *args, **kwargs):
            examined[0] += len(text)
            return real(text, *args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counting(language_metrics, "script_counts")
    counting(detectors, "script_counts")
    counting(detectors, "_fold")
    for n in (250, 1000, 4000):
        examined[0] = 0
        text = " ".join(["hello", "world"] * (n // 2))  # English throughout: a full scan
        es = language_metrics.extraction_strength([text], EnsembleDetector(), "hi")
        assert es.values == (0.0,)
        assert es.method == "prefix"
        assert examined[0] <= 3 * len(text)  # linear (the old scan examined ~n * len / 2)


# ============================================================================ 11. injection
def test_user_strings_cannot_inject_markdown_into_the_report(copy_of):
    out = copy_of()
    report = mmie.aggregate([out])
    data = json.loads(json.dumps(report.data))
    data["name"] = "[x](http://y) # not a heading"
    data["config"]["target"] = "hi` [t](http://y)"
    data["config"]["model"] = "m\n# Injected"
    key = "mixed_es.sets/[a](http://y)|x.jsonl"
    data["base"]["metrics"][key] = dict(data["base"]["metrics"]["forget_es"])
    for arm in data["arms"].values():
        arm["reasons"].append("set [b](http://y)\n# Injected")
        arm["label"] = "no effect\n# Injected"
    data["units"][0].update(status="failed", error="E: [c](http://y)\n# Injected | cell")
    data["languages"]["retain"]["name"] = "English [r](http://y)\n# Injected"
    md = render_markdown(data)
    outside_code = re.sub(r"`[^`\n]*`", "", md)  # code spans are literal text
    assert not re.search(r"(?<!\\)\]\(", outside_code)  # no link
    assert not re.search(r"(?<!\\)\[[^\]]*(?<!\\)\]\(", outside_code)
    assert not any(line.lstrip().startswith("# Injected") for line in md.splitlines())
    assert "\\[x\\](http://y)" in md
    rows = [line for line in md.splitlines() if "Hindi ES on sets/" in line]  # the target's name
    assert len(rows) == 2  # the metrics table and the change table
    for row in rows:
        header = next(
            h
            for h in md.splitlines()[: md.splitlines().index(row)][::-1]
            if h.startswith("| metric")
        )
        cells = len(re.findall(r"(?<!\\)\|", row))
        assert cells == len(re.findall(r"(?<!\\)\|", header))  # no cell was added
    with pytest.raises(ConfigError, match="name: must be one line"):
        ExperimentConfig(name="study\n# Injected")
    assert ExperimentConfig(name="[x](http://y)").name == "[x](http://y)"
