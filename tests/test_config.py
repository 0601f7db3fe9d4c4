"""ExperimentConfig: validation naming the field, TOML/JSON round trips, the demo default."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmie
from mmie.errors import ConfigError
from mmie.study.config import (
    ARM_PARTS,
    METRICS,
    ArmConfig,
    DataConfig,
    ExperimentConfig,
    GateConfig,
    GenerationConfig,
    LanguageConfig,
    SAETrainingConfig,
    SelectionConfig,
    demo_config,
    load_config,
)

SECTIONS = (
    LanguageConfig,
    DataConfig,
    SelectionConfig,
    SAETrainingConfig,
    ArmConfig,
    GateConfig,
    GenerationConfig,
    ExperimentConfig,
)


def test_defaults_are_valid_and_round_trip():
    cfg = ExperimentConfig()
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert [a.name for a in cfg.arms] == ["lora", "reft", "sae_gate", "scrub", "dynamic_gate"]
    assert cfg.metrics == METRICS
    demo = demo_config()
    assert ExperimentConfig.from_dict(demo.to_dict()) == demo
    assert demo.model == "demo"
    assert {a.parts[0] for a in demo.arms} >= set(ARM_PARTS)  # every method is in the demo
    assert any(len(a.parts) > 1 for a in demo.arms)  # and a combination


@pytest.mark.parametrize("cls", SECTIONS)
def test_every_field_has_a_default_with_a_one_line_comment(cls):
    source = inspect.getsource(cls)
    for f in dataclasses.fields(cls):
        if f.name == "kind":  # the one required field
            continue
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        line = next(ln for ln in source.splitlines() if re.match(rf"\s+{f.name}: ", ln))
        assert "=" in line, f"{cls.__name__}.{f.name} has no default"
        assert re.search(r"  # \S", line), f"{cls.__name__}.{f.name} has no comment: {line!r}"


def test_configs_are_frozen_and_keyword_only():
    cfg = demo_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seeds = (1,)  # type: ignore[misc]
    with pytest.raises(TypeError):
        DataConfig("hindi_train")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"arms": [{"kind": "lora"}, {"kind": "sae_gate", "alpha": 1.5}]}, r"arms\[1\]\.alpha"),
        ({"arms": [{"kind": "lora"}, {"kind": "lora"}]}, r"arms\[1\]\.name"),
        ({"arms": [{"kind": "lora+reft"}]}, r"arms\[0\]\.kind"),
        ({"arms": [{"kind": "sae_gate+dynamic_gate"}]}, r"arms\[0\]\.kind"),
        ({"arms": [{"kind": "gate"}]}, r"arms\[0\]\.kind"),
        (
            {"arms": [{"kind": "dynamic_gate", "alpha": 0.2, "base_alpha": 0.5}]},
            r"arms\[0\]\.base_alpha",
        ),
        ({"arms": [{"kind": "lora", "steps": 0}]}, r"arms\[0\]\.steps"),
        ({"arms": [{"kind": "lora", "objective": "dpo"}]}, r"arms\[0\]\.objective"),
        ({"arms": []}, r"^arms"),
        ({"data": {"n_eval": 1}}, r"data\.n_eval"),
        ({"data": {"n_forget": "many"}}, r"data\.n_forget"),
        ({"data": {"forget_eval": "hindi_train"}}, r"data\.forget_eval"),
        ({"selection": {"mode": "fixed"}}, r"selection\.layers"),
        ({"selection": {"layers": [1, 1]}}, r"selection\.layers"),
        ({"sae": {"architecture": "gated"}}, r"sae\.architecture"),
        ({"gates": {"retain_ppl_ratio": 0.9}}, r"gates\.retain_ppl_ratio"),
        ({"gates": {"alpha": True}}, r"gates\.alpha"),
        ({"seeds": [0, -1]}, r"seeds\[1\]"),
        ({"seeds": [3, 3]}, r"^seeds"),
        ({"metrics": ["forget_es", "nope"]}, r"metrics\[1\]"),
        ({"device": "gpu"}, r"^device"),
        ({"ci_method": "normal"}, r"^ci_method"),
        ({"generation": {"max_new_tokens": 0}}, r"generation\.max_new_tokens"),
    ],
)
def test_bad_values_name_the_field(data, field):
    with pytest.raises(ConfigError, match=field):
        ExperimentConfig.from_dict(data)


def test_unknown_keys_are_rejected_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"data\.n_forgt: unknown key; did you mean 'n_forget'"):
        ExperimentConfig.from_dict({"data": {"n_forgt": 3}})
    with pytest.raises(ConfigError, match=r"arms\[0\]\.alpah: unknown key; did you mean 'alpha'"):
        ExperimentConfig.from_dict({"arms": [{"kind": "sae_gate", "alpah": 0.5}]})
    with pytest.raises(ConfigError, match=r"did you mean 'forget_es'"):
        ExperimentConfig.from_dict({"metrics": ["forget_ess"]})


def test_python_construction_converts_sections_and_lists():
    cfg = ExperimentConfig(
        arms=[{"kind": "lora + sae_gate", "alpha": 0.5}],  # type: ignore[list-item]
        seeds=[4, 2],  # type: ignore[arg-type]
        data={"n_eval": 8},  # type: ignore[arg-type]
    )
    assert cfg.arms[0].kind == "lora+sae_gate"
    assert cfg.arms[0].name == "lora+sae_gate"
    assert cfg.arms[0].parts == ("lora", "sae_gate")
    assert cfg.arms[0].trained_part == "lora"
    assert cfg.arms[0].gate_part == "sae_gate"
    assert cfg.seeds == (4, 2)
    assert cfg.data == DataConfig(n_eval=8)
    assert isinstance(hash(cfg.seeds), int)


def test_demo_config_overrides_merge_sections():
    cfg = demo_config(data={"n_eval": 8}, seeds=(7,))
    assert cfg.data.n_eval == 8
    assert cfg.data.n_forget == DataConfig().n_forget
    assert cfg.arms == demo_config().arms
    assert cfg.seeds == (7,)
    quick = demo_config(quick=True)
    assert len(quick.seeds) == 2
    assert quick.data.n_forget < DataConfig().n_forget
    with pytest.raises(ConfigError, match="did you mean 'seeds'"):
        demo_config(sedes=(1,))


def test_arm_lookup():
    cfg = demo_config()
    assert cfg.arm("scrub").kind == "scrub"
    with pytest.raises(KeyError, match="arms are"):
        cfg.arm("nope")


def test_load_toml_and_json(tmp_path):
    toml = tmp_path / "study.toml"
    toml.write_text(
        """
model = "demo"
seeds = [0, 1]
metrics = ["forget_es", "retain_ppl"]

[data]
n_eval = 8

[gates]
retain_ppl_ratio = 1.5

[[arms]]
kind = "lora"
steps = 5

[[arms]]
kind = "sae_gate"
name = "gate@0.5"
alpha = 0.5
""",
        encoding="utf-8",
    )
    cfg = load_config(toml)
    assert cfg.seeds == (0, 1)
    assert cfg.data.n_eval == 8
    assert cfg.gates.retain_ppl_ratio == 1.5
    assert [a.name for a in cfg.arms] == ["lora", "gate@0.5"]
    assert cfg.arms[1].alpha == 0.5
    js = tmp_path / "study.json"
    js.write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    assert load_config(js) == cfg


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('seeds = [0, 1\nmodel = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML.*line"):
        load_config(bad_toml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"seeds": [0,\n  1,]}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.json: invalid JSON at line 2"):
        load_config(bad_json)
    yaml = tmp_path / "study.yaml"
    yaml.write_text("seeds: [0]", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"use \.toml or \.json"):
        load_config(yaml)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[[arms]]\nkind = 'lora'\nalpha = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"wrong\.toml: arms\[0\]\.alpha: must be in \[0, 1\]"):
        load_config(wrong)


def test_exported_from_package():
    assert mmie.ExperimentConfig is ExperimentConfig
    assert mmie.load_config is load_config
    assert mmie.demo_config is demo_config


_arm = st.builds(
    ArmConfig,
    kind=st.sampled_from(
        [*ARM_PARTS, "lora+sae_gate", "reft+scrub", "lora+scrub+dynamic_gate", "scrub+sae_gate"]
    ),
    alpha=st.floats(0.0, 1.0),
    steps=st.integers(1, 1000),
    rank=st.integers(1, 64),
    lr=st.floats(1e-6, 1.0),
    objective=st.sampled_from(["npo", "ga", "graddiff"]),
    layers=st.lists(st.integers(0, 40), max_size=3, unique=True).map(tuple),
)


@settings(max_examples=30, deadline=None)
@given(
    arms=st.lists(_arm, min_size=1, max_size=4, unique_by=lambda a: a.name),
    seeds=st.lists(st.integers(0, 10_000), min_size=1, max_size=6, unique=True),
    metrics=st.lists(st.sampled_from(METRICS), min_size=1, unique=True),
    n_eval=st.integers(2, 500),
    ratio=st.floats(1.0, 10.0),
    ci=st.sampled_from(["auto", "t", "percentile", "basic", "bca"]),
)
def test_round_trip_property(arms, seeds, metrics, n_eval, ratio, ci):
    cfg = ExperimentConfig(
        arms=tuple(arms),
        seeds=tuple(seeds),
        metrics=tuple(metrics),
        data=DataConfig(n_eval=n_eval),
        gates=GateConfig(retain_ppl_ratio=ratio),
        ci_method=ci,
    )
    plain = cfg.to_dict()
    assert json.loads(json.dumps(plain)) == plain  # JSON-ready
    assert ExperimentConfig.from_dict(plain) == cfg
    assert ExperimentConfig.from_dict(json.loads(json.dumps(plain))) == cfg
    assert cfg.replace() == cfg


def test_shipped_example_config_loads_and_round_trips():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "study.toml"
    cfg = load_config(path)
    assert cfg.model == "Qwen/Qwen2-1.5B"
    assert [arm.kind for arm in cfg.arms] == ["lora", "reft", "sae_gate", "scrub", "dynamic_gate"]
    assert cfg.seeds == (0, 1, 2, 3, 4)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_renamed_arm_key_names_the_new_key(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('[[arms]]\nkind = "lora"\nretain_weight = 2.0\n', encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"arms\[0\]\.retain_weight: this key was renamed; use 'kl_weight'"
    ):
        load_config(path)
    assert ArmConfig(kind="lora", kl_weight=2.0).kl_weight == 2.0
