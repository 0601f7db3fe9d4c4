"""The mmie command line: help, demo wiring, run/aggregate on a tiny saved model, exit codes."""

from __future__ import annotations

import json

import pytest
import torch

import mmie
from mmie import cli
from mmie.study.config import ExperimentConfig, demo_config, load_config
from mmie.testing import byte_tokenizer, tiny_causal_lm


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # the CLI sets the thread count; put it back


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


def write_config(path, model_dir, out):
    cfg = demo_config(
        model=str(model_dir),
        seeds=(0, 1),
        output_dir=str(out),
        data={"n_forget": 6, "n_retain": 6, "n_eval": 4, "max_length": 256},
        selection={"n_layers": 1, "stability_seeds": 2, "n_texts": 6},
        sae={
            "steps": 10,
            "k": 4,
            "n_features": 4,
            "d_sae_multiple": 2,
            "max_retain_frequency": 1.0,
        },
        generation={"max_new_tokens": 6},
        arms=[{"kind": "sae_gate"}, {"kind": "scrub"}],
        metrics=("forget_es", "retain_ppl", "mia"),
        n_boot=200,
        gates={"n_permutations": 200},
        plots=False,
    )
    path.write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    return cfg


def test_help_documents_every_command_and_option(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    top = capsys.readouterr().out
    for word in (
        "demo",
        "run",
        "plan",
        "prepare",
        "aggregate",
        "submit",
        "version",
        "--log-level",
        "Exit status",
    ):
        assert word in top
    for command, options in (
        ("demo", ("--quick", "--out", "--seed", "--arm", "--no-resume", "--threads", "--set")),
        (
            "run",
            (
                "CONFIG",
                "--out",
                "--seed",
                "--arm",
                "--no-resume",
                "--no-progress",
                "--set",
                "--task-index",
                "--num-tasks",
                "SLURM_ARRAY_TASK_ID",
                "--workers",
            ),
        ),
        ("plan", ("CONFIG", "--set", "--format", "--task-index", "--num-tasks")),
        ("prepare", ("CONFIG", "--set", "--out", "--task-index", "--no-resume", "--threads")),
        ("aggregate", ("DIR", "--out", "--no-plots", "--rtol", "--atol", "--base-from")),
        ("submit", ("CONFIG", "--partition", "--num-tasks", "--time", "--gpus", "--set")),
    ):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        for option in options:
            assert option in text, (command, option)


def test_demo_runs_the_embedded_config(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run(config, **kwargs):
        seen["config"], seen["kwargs"] = config, kwargs
        raise SystemExit(0)

    monkeypatch.setattr("mmie.study.runner.run_experiment", fake_run)
    with pytest.raises(SystemExit):
        cli.main(
            [
                "demo",
                "--quick",
                "--out",
                str(tmp_path),
                "--seed",
                "1",
                "--no-progress",
                "--threads",
                "1",
            ]
        )
    assert seen["config"] == demo_config(quick=True, output_dir=str(tmp_path))
    assert seen["kwargs"] == {
        "seeds": [1],
        "arms": None,
        "resume": True,
        "show_progress": False,
        "task_index": None,
        "num_tasks": None,
    }
    assert torch.get_num_threads() == 1  # the demo's tiny model runs fastest on one thread


def test_run_resume_and_aggregate(tmp_path, tiny_model_dir, capsys):
    config_path = tmp_path / "study.json"
    write_config(config_path, tiny_model_dir, tmp_path / "unused")
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        cli.main(
            [
                "--log-level",
                "WARNING",
                "run",
                str(config_path),
                "--seed",
                "0",
                "--out",
                str(a),
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "report.md" in out
    assert "sae_gate" in out
    assert (
        cli.main(
            [
                "run",
                str(config_path),
                "--seed",
                "1",
                "--out",
                str(b),
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    # resuming: nothing left to compute in a
    assert (
        cli.main(
            [
                "run",
                str(config_path),
                "--seed",
                "0",
                "--out",
                str(a),
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    merged = tmp_path / "merged"
    assert cli.main(["aggregate", str(a), str(b), "--out", str(merged), "--no-plots"]) == 0
    data = json.loads((merged / "report.json").read_text())
    mmie.validate_report(data)
    assert {(u["seed"], u["status"]) for u in data["units"]} == {(0, "ok"), (1, "ok")}
    assert (merged / "report.md").is_file()
    assert load_config(config_path).replace(output_dir=str(a)) == ExperimentConfig.from_dict(
        json.loads((a / "config.json").read_text())
    )


def test_failed_run_exits_1(tmp_path, tiny_model_dir, monkeypatch, capsys):
    config_path = tmp_path / "study.json"
    write_config(config_path, tiny_model_dir, tmp_path / "out")

    def broken(self, arm, seed, layers):
        raise RuntimeError("injected")

    monkeypatch.setattr("mmie.study.arms.Study._trained", broken)
    code = cli.main(
        [
            "run",
            str(config_path),
            "--seed",
            "0",
            "--arm",
            "scrub",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert code == 1
    assert "seed 0, scrub: RuntimeError: injected" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"arms": [{"kind": "sae_gate", "alpha": 2}]}', r"arms\[0\]\.alpha: must be in \[0, 1\]"),
        ('{"data": {"n_evl": 3}}', "did you mean 'n_eval'"),
        ('{"seeds": [0,', "invalid JSON at line 1"),
    ],
)
def test_bad_config_exits_2_naming_the_field(tmp_path, capsys, content, message):
    import re

    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmie: error: ")
    assert re.search(message, err)


def test_missing_inputs_exit_2(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["aggregate", str(tmp_path)]) == 2
    assert "no shards/base.json" in capsys.readouterr().err
    cfg = demo_config(output_dir=str(tmp_path / "x"))
    path = tmp_path / "study.json"
    path.write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    assert cli.main(["run", str(path), "--seed", "9"]) == 2
    assert "seeds: [9] not in the config's seeds" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: mmie" in capsys.readouterr().out
