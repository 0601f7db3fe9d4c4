"""Job arrays that scale (DESIGN §5, issue 16 item 12): tolerant aggregation."""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path

import pytest
import torch

import mmie
from mmie import cli
from mmie.errors import ConfigError, DataError
from mmie.study import config as config_module
from mmie.study import shards
from mmie.study.config import apply_overrides, demo_config, parse_overrides
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
def study_dir(tmp_path_factory):
    """A finished small study run in-process (for aggregation tests)."""
    out = tmp_path_factory.mktemp("inproc")
    model, tok = tiny()
    result = mmie.run_experiment(small_config(out), model=model, tokenizer=tok, show_progress=False)
    assert result.ok
    return out


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


def test_shard_differences_doctest():
    assert doctest.testmod(shards).failed == 0
