"""A (seed, arm) unit gives the same shard alone, inside a full run, after a kill and resume,
and as a separate ``--arm`` job: everything an arm is built from comes from the clean base."""

from __future__ import annotations

import json

import pytest

import mmie
from mmie.errors import InterventionError
from mmie.study import runner
from mmie.study.arms import Study
from mmie.study.config import demo_config
from mmie.study.shards import stable_content, unit_shard_path
from mmie.study.suite import load_eval_sets
from mmie.testing import byte_tokenizer, tiny_causal_lm

ARMS = [
    {"kind": "lora", "steps": 3, "batch_size": 4, "lr": 5e-3},
    {"kind": "sae_gate"},
    {"kind": "lora+sae_gate", "steps": 3, "batch_size": 4, "lr": 5e-3},
    {"kind": "lora+scrub", "steps": 3, "batch_size": 4, "lr": 5e-3},
]


def config(out):
    return demo_config(
        model="tiny-llama",
        seeds=(0,),
        output_dir=str(out),
        references={"oracle": "", "retrain": ""},
        controls=(),
        metrics=("forget_es", "retain_ppl", "forget_ppl", "script_mass"),
        data={"n_forget": 6, "n_retain": 6, "n_eval": 4, "max_length": 256, "batch_size": 8},
        selection={"n_layers": 1, "stability_seeds": 2, "n_texts": 6},
        sae={
            "steps": 10,
            "k": 4,
            "n_features": 4,
            "d_sae_multiple": 2,
            "max_retain_frequency": 1.0,
        },
        generation={"max_new_tokens": 6, "batch_size": 8},
        arms=ARMS,
        n_boot=200,
        plots=False,
    )


@pytest.fixture(scope="module")
def tiny():
    return tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0), byte_tokenizer()


def shard(out, arm):
    return stable_content(json.loads(unit_shard_path(out, 0, arm).read_text()))


def test_a_combined_arm_is_the_same_alone_in_a_full_run_and_after_a_resume(
    tmp_path, tiny, monkeypatch
):
    model, tok = tiny
    full = tmp_path / "full"
    mmie.run_experiment(config(full), model=model, tokenizer=tok, show_progress=False)
    # alone, in a fresh directory: nothing ran before it in this process's Study
    alone = tmp_path / "alone"
    mmie.run_experiment(
        config(alone), arms=["lora+sae_gate"], model=model, tokenizer=tok, show_progress=False
    )
    assert shard(alone, "lora+sae_gate") == shard(full, "lora+sae_gate")
    # as a second job into the directory of a job that ran other arms (shared artifacts)
    job = tmp_path / "job"
    mmie.run_experiment(
        config(job), arms=["lora", "lora+scrub"], model=model, tokenizer=tok, show_progress=False
    )
    mmie.run_experiment(
        config(job),
        arms=["sae_gate", "lora+sae_gate"],
        model=model,
        tokenizer=tok,
        show_progress=False,
    )
    for arm in ("lora", "sae_gate", "lora+sae_gate", "lora+scrub"):
        assert shard(job, arm) == shard(full, arm), arm
    # killed after the first unit, then resumed
    killed = tmp_path / "killed"
    original = runner._run_unit
    calls = []

    class Killed(BaseException):
        pass

    def die_after_first(*args, **kwargs):
        if calls:
            raise Killed
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "_run_unit", die_after_first)
    with pytest.raises(Killed):
        mmie.run_experiment(config(killed), model=model, tokenizer=tok, show_progress=False)
    monkeypatch.setattr(runner, "_run_unit", original)
    mmie.run_experiment(config(killed), model=model, tokenizer=tok, show_progress=False)
    for arm in ("lora", "sae_gate", "lora+sae_gate", "lora+scrub"):
        assert shard(killed, arm) == shard(full, arm), arm
    # the combined arm gates the same features as the plain gate (one SAE per seed)
    assert (
        shard(full, "lora+sae_gate")["info"]["features"]
        == shard(full, "sae_gate")["info"]["features"]
    )


def test_ingredients_are_never_computed_from_a_model_carrying_an_arm(tiny):
    model, tok = tiny
    cfg = config("unused")
    sets = load_eval_sets(cfg)
    study = Study(model, tok, cfg, sets, (0,), artifacts=None)
    gate = mmie.SAEGate(model, {0: study.saes(0)[0][0]}, {0: [0]}, alpha=1.0)
    fresh = Study(model, tok, cfg, sets, (0,), artifacts=None)
    with gate, pytest.raises(InterventionError, match="carries mmie hooks"):
        fresh.token_activations()
    mmie.assert_no_mmie_hooks(model)


def test_arms_sharing_a_trained_part_train_it_once(tmp_path, tiny, monkeypatch):
    """``lora`` and ``lora+sae_gate`` (and ``lora+scrub``) share one adapter per seed."""
    model, tok = tiny
    trainings = []
    original = Study._train

    def counting(self, arm, seed, layers, **kwargs):
        trainings.append((seed, arm.trained_part))
        return original(self, arm, seed, layers, **kwargs)

    monkeypatch.setattr(Study, "_train", counting)
    mmie.run_experiment(config(tmp_path / "count"), model=model, tokenizer=tok, show_progress=False)
    assert trainings == [(0, "lora")]
