"""Job arrays that scale (DESIGN §5, issue 16 item 12): plans, task assignment, the SLURM
environment, prepare, tolerant aggregation, --set overrides, --workers and the submitit
launcher.

The flow test runs plan -> prepare -> three ``mmie run --task-index`` processes at once into
one directory -> aggregate, and checks the report equals a single-process run's.
"""

from __future__ import annotations

import doctest
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mmie
from mmie import cli
from mmie.errors import ConfigError, DataError
from mmie.study import arms as arms_module
from mmie.study import config as config_module
from mmie.study import jobs, plan, runner, shards
from mmie.study.config import apply_overrides, demo_config, parse_overrides
from mmie.study.plan import StudyUnit, array_task, assign_units, plan_study
from mmie.study.shards import base_shard_path, shard_differences, unit_shard_path
from mmie.testing import byte_tokenizer, tiny_causal_lm

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # the CLI sets the thread count; put it back


def small_config(out, model="tiny-llama", **overrides):
    """Two seeds, an SAE gate, a 1-step LoRA and one seed-invariant control: five units."""
    base = {
        "model": model,
        "seeds": (0, 1),
        "output_dir": str(out),
        "references": {"oracle": "", "retrain": ""},
        "controls": ("identity",),
        "metrics": ("forget_es", "retain_ppl"),
        "data": {"n_forget": 6, "n_retain": 6, "n_eval": 4, "max_length": 256, "batch_size": 8},
        "selection": {"n_layers": 1, "stability_seeds": 2, "n_texts": 6},
        "sae": {
            "steps": 5,
            "k": 4,
            "n_features": 4,
            "d_sae_multiple": 2,
            "max_retain_frequency": 1.0,
        },
        "generation": {"max_new_tokens": 4, "batch_size": 8},
        "arms": [{"kind": "sae_gate"}, {"kind": "lora", "steps": 1, "batch_size": 4}],
        "n_boot": 50,
        "gates": {"n_permutations": 50},
        "plots": False,
    }
    base.update(overrides)
    return demo_config(**base)


def tiny():
    return tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0), byte_tokenizer()


def comparable(data):
    data = {k: v for k, v in data.items() if k != "timings"}
    data["config"] = {k: v for k, v in data["config"].items() if k != "output_dir"}
    return data


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_model")
    model, tok = tiny()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def config_file(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    path = root / "study.json"
    path.write_text(
        json.dumps(small_config(root / "unused", model=str(model_dir)).to_dict()),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def single_run(config_file, tmp_path_factory):
    """The study in one process (the reference every parallel run must equal)."""
    out = tmp_path_factory.mktemp("single")
    assert cli.main(["--log-level", "WARNING", "run", str(config_file), "--out", str(out),
                     "--no-progress", "--threads", "1"]) == 0  # fmt: skip
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A finished small study run in-process (for aggregation tests)."""
    out = tmp_path_factory.mktemp("inproc")
    model, tok = tiny()
    result = mmie.run_experiment(small_config(out), model=model, tokenizer=tok, show_progress=False)
    assert result.ok
    return out


def _env():
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore"}
    for name in [k for k in env if k.startswith("SLURM_ARRAY")]:
        del env[name]
    return env


# ============================================================================ the plan
def test_plan_lists_each_unit_once_in_a_fixed_order():
    cfg = small_config("unused")
    units = plan_study(cfg)
    assert [(u.index, u.seed, u.arm) for u in units] == [
        (0, 0, "sae_gate"),
        (1, 0, "lora"),
        (2, 0, "control.identity"),  # seed-invariant: once, at the first seed
        (3, 1, "sae_gate"),
        (4, 1, "lora"),
    ]
    assert units[0].shard == "shards/seed0__sae_gate.json"
    assert Path(units[0].shard) == unit_shard_path("", 0, "sae_gate")  # the shards' own rule
    assert units[2].to_dict() == {
        "index": 2,
        "seed": 0,
        "arm": "control.identity",
        "shard": "shards/seed0__control.identity.json",
    }
    # a subset without the first seed leaves the seed-invariant arm to the run that has it
    assert [(u.seed, u.arm) for u in plan_study(cfg, seeds=[1])] == [(1, "sae_gate"), (1, "lora")]
    with pytest.raises(ConfigError, match=r"seeds: \[7\] not in the config's seeds"):
        plan_study(cfg, seeds=[7])
    with pytest.raises(ConfigError, match=r"arms: \['reft'\] not in the config's arms"):
        plan_study(cfg, arms=["reft"])
    assert doctest.testmod(plan).failed == 0
    assert doctest.testmod(shards).failed == 0


def test_cli_plan_is_machine_readable(tmp_path, capsys):
    cfg = demo_config(output_dir=str(tmp_path), seeds=(0, 1))  # arm names with @ and +
    path = tmp_path / "demo.toml"
    path.write_text('model = "demo"\nseeds = [0, 1]\n', encoding="utf-8")
    assert cli.main(["plan", str(path), "--set", "arms=[{kind = 'scrub'}]"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["arm"] for line in lines] == [
        "scrub",
        *(f"control.{c}" for c in ("identity", "script_ban", "eos", "noise")),
        "control.noise",  # the noise control is seeded: once per seed
    ]
    config_file = tmp_path / "full.json"
    config_file.write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    assert cli.main(["plan", str(config_file)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [u.to_dict() for u in plan_study(cfg)]
    assert {"sae_gate@0.5", "lora+sae_gate"} <= {r["arm"] for r in rows}
    assert cli.main(["plan", str(config_file), "--format", "tsv", "--task-index", "1",
                     "--num-tasks", "4"]) == 0  # fmt: skip
    tsv = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert tsv == [[str(u.index), str(u.seed), u.arm, u.shard] for u in plan_study(cfg)[1::4]]


@given(n_units=st.integers(0, 60), num_tasks=st.integers(1, 25), workers=st.integers(1, 6))
def test_every_unit_is_assigned_exactly_once_for_any_number_of_tasks(n_units, num_tasks, workers):
    units = [StudyUnit(i, i % 3, f"arm{i}") for i in range(n_units)]
    shares = [assign_units(units, i, num_tasks) for i in range(num_tasks)]
    flat = [u for share in shares for u in share]
    assert sorted(flat, key=lambda u: u.index) == units  # each unit once, none lost
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1  # balanced
    assert assign_units(units, 0, num_tasks) == assign_units(list(units), 0, num_tasks)
    # splitting a task over workers is the same as a larger array (what --workers relies on)
    for i in range(num_tasks):
        for k in range(workers):
            assert assign_units(shares[i], k, workers) == assign_units(
                units, i + num_tasks * k, num_tasks * workers
            )


def test_task_arguments_are_validated():
    units = plan_study(small_config("unused"))
    for index, count in ((3, 3), (-1, 2), (0, 0), (True, 2), (0.5, 2)):
        with pytest.raises(ConfigError, match=r"task_index|num_tasks"):
            assign_units(units, index, count)
    with pytest.raises(ConfigError, match="task_index and num_tasks go together"):
        mmie.run_experiment(small_config("unused"), task_index=0)


# ============================================================================ SLURM environment
def test_slurm_array_variables_are_the_fallback():
    assert array_task(environ={}) is None
    env = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "6"}
    assert array_task(environ=env) == (4, 6)
    assert array_task(2, 3, environ=env) == (2, 3)  # explicit values win
    assert array_task(2, environ=env) == (2, 6)
    # --array=1-8: ids start at 1; --array=0-20:4: a step
    assert array_task(environ={"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1",
                               "SLURM_ARRAY_TASK_COUNT": "8"}) == (0, 8)  # fmt: skip
    stepped = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "0",
               "SLURM_ARRAY_TASK_STEP": "4", "SLURM_ARRAY_TASK_MAX": "20"}  # fmt: skip
    assert array_task(environ=stepped) == (3, 6)  # count from MAX when COUNT is absent
    with pytest.raises(ConfigError, match="not on the array's grid"):
        array_task(environ={**stepped, "SLURM_ARRAY_TASK_ID": "13"})
    with pytest.raises(ConfigError, match=r"SLURM_ARRAY_TASK_ID='x' is not an integer"):
        array_task(environ={"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"})
    with pytest.raises(ConfigError, match="--num-tasks is required with --task-index"):
        array_task(1, environ={})
    with pytest.raises(ConfigError, match="--task-index is required with --num-tasks"):
        array_task(None, 4, environ={})
    with pytest.raises(ConfigError, match=r"task_index must be an integer in \[0, 2\)"):
        array_task(environ={"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "2"})


def test_cli_run_reads_the_slurm_task(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run(config, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "5")
    path = tmp_path / "s.toml"
    path.write_text('model = "demo"\n', encoding="utf-8")
    with pytest.raises(SystemExit):
        cli.main(["run", str(path), "--threads", "1"])
    assert (seen["task_index"], seen["num_tasks"]) == (3, 5)
    with pytest.raises(SystemExit):
        cli.main(["run", str(path), "--threads", "1", "--task-index", "0", "--num-tasks", "2"])
    assert (seen["task_index"], seen["num_tasks"]) == (0, 2)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "9")
    assert cli.main(["run", str(path), "--threads", "1"]) == 2
    assert "task_index must be an integer in [0, 5)" in capsys.readouterr().err


# ============================================================================ --set
def test_set_overrides_are_typed_toml_values():
    changes = parse_overrides(
        [
            "seeds=[0, 1]",
            "data.n_eval=8",
            "sae.lr=1e-3",
            "plots=false",
            'name="my study"',
            "model=Qwen/Qwen2-0.5B",
            "output_dir=results/run1",
            "target=hi",
            "gates.n_permutations = 200",
            'arms=[{kind = "lora", steps = 2}]',
            "note=2024-01-01",
        ]
    )
    assert changes == {
        "seeds": [0, 1],
        "data": {"n_eval": 8},
        "sae": {"lr": 0.001},
        "plots": False,
        "name": "my study",
        "model": "Qwen/Qwen2-0.5B",  # not TOML: the string as written
        "output_dir": "results/run1",
        "target": "hi",
        "gates": {"n_permutations": 200},
        "arms": [{"kind": "lora", "steps": 2}],
        "note": "2024-01-01",  # a TOML date stays the text
    }
    assert type(changes["data"]["n_eval"]) is int
    cfg = apply_overrides(
        demo_config(), ["seeds=[3]", "sae.steps=50", "arms=[{kind = 'lora', steps = 2}]"]
    )
    assert cfg.seeds == (3,)
    assert cfg.sae.steps == 50
    assert cfg.sae.k == demo_config().sae.k  # sections merge, the rest is kept
    assert [a.name for a in cfg.arms] == ["lora"]
    assert cfg.arms[0].steps == 2
    assert apply_overrides(cfg, []) is cfg
    for bad, message in (
        (["n_eval"], "expected KEY=VALUE"),
        (["data..n_eval=3"], "expected KEY=VALUE"),
        (["seeds=[0]", "seeds=[1]"], "seeds is already set"),
        (["data.n_eval=3", "data={n_eval = 4}"], "data is already set"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_overrides(bad)
    with pytest.raises(ConfigError, match=r"--set data\.n_evl=4: data\.n_evl: unknown key"):
        apply_overrides(demo_config(), ["data.n_evl=4"])
    with pytest.raises(ConfigError, match=r"data\.n_eval: expected an integer, got '4'"):
        apply_overrides(demo_config(), ['data.n_eval="4"'])
    with pytest.raises(TypeError):
        parse_overrides("seeds=[0]")
    assert doctest.testmod(config_module).failed == 0


def test_cli_set_goes_through_the_config_merge(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run(config, **kwargs):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    path = tmp_path / "s.toml"
    path.write_text('model = "demo"\n[data]\nn_forget = 20\n', encoding="utf-8")
    with pytest.raises(SystemExit):
        cli.main(["run", str(path), "--set", "data.n_eval=6", "--set", "seeds=[4]",
                  "--out", str(tmp_path / "o")])  # fmt: skip
    cfg = seen["config"]
    assert (cfg.data.n_forget, cfg.data.n_eval, cfg.seeds) == (20, 6, (4,))
    assert cfg.output_dir == str(tmp_path / "o")  # --out after --set
    with pytest.raises(SystemExit):
        cli.main(["demo", "--quick", "--set", "seeds=[0]", "--out", str(tmp_path / "d")])
    assert seen["config"] == demo_config(quick=True, seeds=(0,), output_dir=str(tmp_path / "d"))
    assert cli.main(["run", str(path), "--set", "data.n_evl=6"]) == 2
    assert "data.n_evl: unknown key; did you mean 'n_eval'?" in capsys.readouterr().err


# ============================================================================ tolerance
def _perturb(path, factor):
    data = json.loads(path.read_text())
    data["metrics"]["retain_ppl"]["value"] *= factor
    path.write_text(json.dumps(data))


def test_aggregate_compares_base_shards_within_a_documented_tolerance(study_dir, tmp_path):
    assert cli.DEFAULT_RTOL == shards.DEFAULT_RTOL
    assert cli.DEFAULT_ATOL == shards.DEFAULT_ATOL
    other = tmp_path / "other"
    shutil.copytree(study_dir, other)
    _perturb(base_shard_path(other), 1 + 1e-12)  # another GPU's last bits
    merged = mmie.aggregate([study_dir, other])
    assert merged.data["units"] == mmie.aggregate([study_dir]).data["units"]
    _perturb(base_shard_path(other), 1 + 1e-3)  # a real difference
    with pytest.raises(DataError) as exc:
        mmie.aggregate([study_dir, other])
    message = str(exc.value)
    assert "base results differ beyond rtol=1e-05, atol=1e-08" in message
    assert "metrics.retain_ppl.value: " in message  # which metric, and both values
    assert "--base-from" in message
    # a wider tolerance, or the base of one directory, accepts it
    mmie.aggregate([study_dir, other], rtol=1e-2)
    taken = mmie.aggregate([study_dir, other], base_from=other)
    base_ppl = json.loads(base_shard_path(other).read_text())["metrics"]["retain_ppl"]["value"]
    assert taken.data["base"]["metrics"]["retain_ppl"]["value"] == pytest.approx(base_ppl)
    # --base-from still refuses a base with other layers (the units would not be comparable)
    data = json.loads(base_shard_path(other).read_text())
    data["layers"] = [1 - data["layers"][0]]
    base_shard_path(other).write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"base results differ: layers\[0\]: "):
        mmie.aggregate([study_dir, other], base_from=study_dir)
    with pytest.raises(ValueError, match="rtol must be a finite number >= 0"):
        mmie.aggregate([study_dir], rtol=-1.0)


def test_unit_copies_are_compared_with_the_same_tolerance(study_dir, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(study_dir, other)
    shard = unit_shard_path(other, 0, "lora")
    _perturb(shard, 1 + 1e-12)
    mmie.aggregate([study_dir, other])
    _perturb(shard, 1 + 1e-3)
    with pytest.raises(DataError, match=r"conflicting results for seed 0, arm 'lora'.*"
                       r"metrics\.retain_ppl\.value"):  # fmt: skip
        mmie.aggregate([study_dir, other])
    out = tmp_path / "merged"
    assert cli.main(["aggregate", str(study_dir), str(other), "--out", str(out)]) == 2
    assert "metrics.retain_ppl.value" in capsys.readouterr().err
    assert cli.main(["aggregate", str(study_dir), str(other), "--out", str(out),
                     "--rtol", "0.01"]) == 0  # fmt: skip
    assert (out / "report.json").is_file()
    a = json.loads(shard.read_text())
    group = sorted(a["generations"])[0]
    b = {**a, "generations": {**a["generations"], group: ["other text"]}}
    assert any(d.startswith(f"generations.{group}") for d in shard_differences(a, b))
    assert shard_differences(a, {**a, "timings": {}, "environment": {}}) == []
    counts = {**a, "metrics": {**a["metrics"], "n": 3}}
    assert shard_differences(counts, {**counts, "metrics": {**a["metrics"], "n": 4}}) == [
        "metrics.n: 3 vs 4"  # integers are counts: exactly
    ]


# ============================================================================ prepare
def test_prepare_computes_the_shared_parts_once(tmp_path, monkeypatch):
    model, tok = tiny()
    cfg = small_config(tmp_path / "p", arms=[{"kind": "sae_gate"}, {"kind": "scrub"}])
    prepared = mmie.prepare_study(cfg, model=model, tokenizer=tok)
    assert prepared.computed == ("base",)
    assert prepared.artifacts == (
        f"SAEs of seed 0 (layers {list(prepared.layers)})",
        f"scrubber leace-retain (layers {list(prepared.layers)})",
        f"SAEs of seed 1 (layers {list(prepared.layers)})",
    )
    assert [(u.seed, u.arm) for u in prepared.units] == [
        (0, "sae_gate"),
        (0, "scrub"),
        (0, "control.identity"),
        (1, "sae_gate"),
    ]
    assert not list((tmp_path / "p" / "shards").glob("seed*"))  # no unit ran
    assert len(list((tmp_path / "p").glob("artifacts/*/seed*/sae/layer*/sae.safetensors"))) == 2
    # one task's share: only what its units use
    share = mmie.prepare_study(
        cfg.replace(output_dir=str(tmp_path / "q")),
        task_index=1,
        num_tasks=2,
        model=model,
        tokenizer=tok,
    )
    assert [(u.seed, u.arm) for u in share.units] == [(0, "scrub"), (1, "sae_gate")]
    assert [a.split(" (")[0] for a in share.artifacts] == [
        "scrubber leace-retain",
        "SAEs of seed 1",
    ]
    again = mmie.prepare_study(cfg, model=model, tokenizer=tok)
    assert again.computed == ()
    assert again.artifacts == prepared.artifacts
    # the units find everything: no base evaluation, no SAE training, no scrubber fit
    monkeypatch.setattr(runner, "_evaluate_base", lambda *a, **k: pytest.fail("base again"))
    monkeypatch.setattr(arms_module.Study, "_train_sae", lambda *a, **k: pytest.fail("SAE"))
    monkeypatch.setattr(arms_module, "fit_scrubber", lambda *a, **k: pytest.fail("scrubber"))
    result = mmie.run_experiment(cfg, model=model, tokenizer=tok, show_progress=False)
    assert result.ok
    assert len(result.computed) == 4


# ============================================================================ the whole flow
def test_plan_prepare_parallel_tasks_and_aggregate_equal_one_process(
    config_file, single_run, tmp_path, capsys
):
    out = tmp_path / "array"
    assert cli.main(["plan", str(config_file)]) == 0
    units = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(units) == 5
    assert cli.main(["--log-level", "WARNING", "prepare", str(config_file), "--out", str(out),
                     "--threads", "1"]) == 0  # fmt: skip
    assert "computed: base" in capsys.readouterr().out
    n = 3
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-m", "mmie", "--log-level", "WARNING", "run", str(config_file),
               "--out", str(out), "--threads", "1", "--no-progress"]  # fmt: skip
        env = _env()
        if i == 1:  # as a SLURM array task: the index from the environment
            env.update(SLURM_ARRAY_TASK_ID=str(i), SLURM_ARRAY_TASK_COUNT=str(n))
        else:
            cmd += ["--task-index", str(i), "--num-tasks", str(n)]
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    shards_written = sorted(p.name for p in (out / "shards").glob("seed*.json"))
    assert shards_written == sorted(Path(u["shard"]).name for u in units)
    merged = tmp_path / "merged"
    assert cli.main(["--log-level", "WARNING", "aggregate", str(out), "--out", str(merged)]) == 0
    report = json.loads((merged / "report.json").read_text())
    assert {u["status"] for u in report["units"]} == {"ok"}
    assert comparable(report) == comparable(single_run)
    decisions = {name: arm["decision"] for name, arm in report["arms"].items()}
    assert decisions == {name: arm["decision"] for name, arm in single_run["arms"].items()}
    assert set(decisions) == {"sae_gate", "lora", "control.identity"}


# ============================================================================ --workers
def test_workers_run_one_process_per_slot_and_equal_one_process(
    config_file, single_run, tmp_path, capsys
):
    out = tmp_path / "workers"
    code = cli.main(["--log-level", "WARNING", "run", str(config_file), "--out", str(out),
                     "--workers", "2", "--threads", "1", "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "worker 1" in printed
    logs = sorted(p.name for p in (out / "logs").glob("*.log"))
    assert logs == ["task0-prepare.log", "task0-worker0.log", "task0-worker1.log"]
    report = json.loads((out / "report.json").read_text())
    assert comparable(report) == comparable(single_run)
    frozen = list((out / ".mmie" / "jobs").glob("config-*.json"))
    assert len(frozen) == 1
    assert json.loads(frozen[0].read_text())["output_dir"] == str(out.resolve())
    assert cli.main(["run", str(config_file), "--out", str(out), "--workers", "2",
                     "--no-resume"]) == 2  # fmt: skip
    assert "--no-resume cannot be combined with --workers" in capsys.readouterr().err


class _FakeProcess:
    def __init__(self, cmd, env, **kwargs):
        self.cmd, self.env = cmd, env

    def wait(self, timeout=None):
        return 0

    def poll(self):
        return 0


def test_workers_get_their_own_gpu_or_their_share_of_the_cpus(tmp_path, monkeypatch):
    started = []

    def popen(cmd, env=None, **kwargs):
        started.append(_FakeProcess(cmd, env))
        return started[-1]

    monkeypatch.setattr(jobs.subprocess, "Popen", popen)
    cfg = small_config(tmp_path / "w")
    result = mmie.run_workers(cfg, 3, gpus=("0", "1"), task_index=1, num_tasks=2)
    assert result.ok
    assert result.report is None  # nothing was really run here
    prepare, *workers = started
    assert prepare.cmd[prepare.cmd.index("prepare") + 2 :][:4] == [
        "--task-index",
        "1",
        "--num-tasks",
        "2",
    ]
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in workers] == ["0", "1", "0"]
    tasks = [(w.cmd[w.cmd.index("--task-index") + 1], w.cmd[w.cmd.index("--num-tasks") + 1])
             for w in workers]  # fmt: skip
    assert tasks == [("1", "6"), ("3", "6"), ("5", "6")]  # task 1 of 2, split over 3
    started.clear()
    monkeypatch.setattr(jobs, "_cpus", lambda: 8)
    mmie.run_workers(cfg, 4, gpus=())
    threads = {w.cmd[w.cmd.index("--threads") + 1] for w in started[1:]}
    assert threads == {"2"}  # 8 CPUs over 4 workers
    assert {w.env["OMP_NUM_THREADS"] for w in started[1:]} == {"2"}
    assert all(w.env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
               for w in started)  # fmt: skip
    assert started[0].cmd[started[0].cmd.index("--threads") + 1] == "8"  # prepare: all
    with pytest.raises(ConfigError, match="workers must be an integer >= 1"):
        mmie.run_workers(cfg, 0)
    with pytest.raises(ConfigError, match=r"arms: \['reft'\] not in"):
        mmie.run_workers(cfg, 2, arms=["reft"])
    assert jobs.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == ("0", "1")
    assert jobs.visible_gpus({"CUDA_VISIBLE_DEVICES": "3, -1, 4"}) == ("3",)
    assert jobs.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == ()
    assert jobs.visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-1a2b"}) == ("GPU-1a2b",)


# ============================================================================ submitit launcher
class _FakeJob:
    def __init__(self, job_id):
        self.job_id = job_id


class FakeExecutor:
    """Records what submit_study asks of a submitit executor."""

    def __init__(self):
        self.calls = []
        self.params = {}

    def update_parameters(self, **kwargs):
        self.params = {**self.params, **kwargs}

    def submit(self, fn, *args):
        self.calls.append(("submit", dict(self.params), fn, args))
        return _FakeJob(str(100 + len(self.calls)))

    def map_array(self, fn, *iterables):
        items = list(zip(*iterables))
        self.calls.append(("map_array", dict(self.params), fn, items))
        return [_FakeJob(f"200_{i}") for i in range(len(items))]


def test_submit_sends_prepare_an_array_and_aggregate(tmp_path, monkeypatch):
    cfg = small_config(tmp_path / "s")
    ex = FakeExecutor()
    submitted = mmie.submit_study(
        cfg, partition="gpu", executor=ex, slurm_options={"account": "lab"}, mem_gb=16
    )
    (k1, p1, prep, _), (k2, p2, task, items), (k3, p3, agg, _) = ex.calls
    assert (k1, k2, k3) == ("submit", "map_array", "submit")
    assert submitted.prepare == "101"
    assert submitted.tasks == tuple(f"200_{i}" for i in range(5))  # one task per unit
    assert submitted.aggregate == "103"
    assert p1["slurm_partition"] == p2["slurm_partition"] == p3["slurm_partition"] == "gpu"
    assert p1["mem_gb"] == 16
    assert p2["slurm_additional_parameters"] == {"account": "lab", "dependency": "afterok:101"}
    assert p3["slurm_additional_parameters"] == {"account": "lab", "dependency": "afterany:200"}
    assert p3["gpus_per_node"] == 0
    assert items == [(i,) for i in range(5)]
    config_path = str(submitted.config)
    assert prep.argv[-2:] == ("prepare", config_path)
    assert agg.argv[-2:] == ("aggregate", str(submitted.output_dir))
    assert mmie.load_config(submitted.config) == cfg.replace(output_dir=str(submitted.output_dir))
    # a task runs `mmie run CONFIG --task-index i --num-tasks n` on its node
    ran = []
    monkeypatch.setattr(
        jobs.subprocess,
        "run",
        lambda argv, check: ran.append(argv) or subprocess.CompletedProcess(argv, 0),
    )
    assert task(3) == 0
    assert ran[0][-7:] == ["run", config_path, "--no-progress", "--task-index", "3",
                           "--num-tasks", "5"]  # fmt: skip
    monkeypatch.setattr(
        jobs.subprocess, "run", lambda argv, check: subprocess.CompletedProcess(argv, 2)
    )
    with pytest.raises(subprocess.CalledProcessError):
        task(0)
    # fewer tasks than units; more tasks than units are capped
    assert (
        len(mmie.submit_study(cfg, partition="p", num_tasks=2, executor=FakeExecutor()).tasks) == 2
    )
    assert (
        len(mmie.submit_study(cfg, partition="p", num_tasks=50, executor=FakeExecutor()).tasks) == 5
    )


def test_submit_arguments_are_checked_before_anything_is_submitted(tmp_path):
    cfg = small_config(tmp_path / "s")
    ex = FakeExecutor()
    for kwargs, message in (
        ({"partition": " "}, "partition must be a non-empty string"),
        ({"partition": "p", "timeout_min": 0}, "timeout_min must be an integer >= 1"),
        ({"partition": "p", "num_tasks": 0}, "num_tasks must be an integer >= 1"),
        ({"partition": "p", "gpus_per_task": -1}, "gpus_per_task must be an integer >= 0"),
        ({"partition": "p", "arms": ["reft"]}, r"arms: \['reft'\] not in"),
    ):
        with pytest.raises(ConfigError, match=message):
            mmie.submit_study(cfg, executor=ex, **kwargs)
    assert ex.calls == []


def test_submit_without_submitit_says_which_extra_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    cfg = small_config(tmp_path / "s")
    with pytest.raises(ImportError, match=r"pip install 'mmie\[slurm\]'"):
        mmie.submit_study(cfg, partition="gpu")
    path = tmp_path / "s.json"
    path.write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    assert cli.main(["submit", str(path), "--partition", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmie: error: mmie submit needs submitit")
    assert len(err.strip().splitlines()) == 1
