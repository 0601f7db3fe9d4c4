"""Nothing is trained or scored twice in a study: shared trained parts, one scoring pass per
text set, and base records reused by arms that score as the base model -- with results equal
to computing everything."""

from __future__ import annotations

import contextlib
import json
from collections import Counter

import pytest
import torch

import mmie
from mmie.edits.controls import NoiseIntervention
from mmie.study import arms as study_arms
from mmie.study import suite
from mmie.study.arms import ArmState, Study
from mmie.study.config import demo_config
from mmie.study.shards import base_shard_path, unit_shard_path
from mmie.study.suite import evaluate_model, load_eval_sets
from mmie.testing import byte_tokenizer, tiny_causal_lm


def config(out, arms, **overrides):
    base = {
        "model": "tiny-llama",
        "seeds": (0, 1),
        "output_dir": str(out),
        "references": {"oracle": "", "retrain": ""},
        "data": {"n_forget": 6, "n_retain": 6, "n_eval": 4, "max_length": 256, "batch_size": 4},
        "selection": {"n_layers": 1, "stability_seeds": 2, "n_texts": 6},
        "sae": {
            "steps": 10,
            "k": 4,
            "n_features": 4,
            "d_sae_multiple": 2,
            "max_retain_frequency": 1.0,
        },
        "generation": {"max_new_tokens": 4, "batch_size": 8},
        "arms": arms,
        "controls": (),
        "n_boot": 100,
        "gates": {"n_permutations": 100},
        "plots": False,
    }
    base.update(overrides)
    return demo_config(**base)


@pytest.fixture(scope="module")
def tiny():
    return tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0), byte_tokenizer()


def as_dicts(records):
    return {k: r.to_dict() for k, r in records.items()}


# ------------------------------------------------------------------ which arms score as the base
def test_scores_as_base_is_true_only_for_the_identity_on_teacher_forced_scoring(tmp_path, tiny):
    model, tok = tiny
    cfg = config(tmp_path, [{"kind": "sae_gate"}])
    study = Study(model, tok, cfg, load_eval_sets(cfg), (1,))
    saes, features, _ = study.saes(0)
    assert ArmState(model=model).scores_as_base
    assert ArmState(model=model).generates_as_base
    with mmie.SAEGate(model, saes, features, alpha=0.0) as gate:
        state = ArmState(model=model, hooks=[gate], logits_processors=[object()])
        assert state.scores_as_base
        assert not state.generates_as_base  # a processor changes what is generated
        gate.alpha = 0.5
        assert not state.scores_as_base
        gate.alpha = 0.0
        with gate.sequence_alpha(torch.zeros(2)):
            assert not state.scores_as_base  # a per-sequence alpha replaces the scalar
    with NoiseIntervention(model, 0, scale=0.0, seed=0) as noise:
        assert not ArmState(model=model, hooks=[noise]).scores_as_base
    assert not ArmState(model=model, adapter_off=contextlib.nullcontext).scores_as_base


def test_base_records_reused_by_a_gate_at_alpha_zero_equal_recomputing_them(tmp_path, tiny):
    model, tok = tiny
    cfg = config(tmp_path, [{"kind": "sae_gate"}])
    sets = load_eval_sets(cfg)
    base, base_generations = evaluate_model(model, tok, sets, cfg, probe_layers=(1,))
    study = Study(model, tok, cfg, sets, (1,))
    saes, features, _ = study.saes(0)
    with mmie.SAEGate(model, saes, features, alpha=0.0) as gate:
        fresh, fresh_generations = evaluate_model(model, tok, sets, cfg, probe_layers=(1,))
        assert ArmState(model=model, hooks=[gate]).scores_as_base
        reused, generations = evaluate_model(
            model, tok, sets, cfg, probe_layers=(1,), base_records=base
        )
        everything, _ = evaluate_model(
            model,
            tok,
            sets,
            cfg,
            probe_layers=(1,),
            base_records=base,
            base_generations=base_generations,
        )
    assert as_dicts(fresh) == as_dicts(base)  # alpha 0 is the identity: nothing changes
    assert fresh_generations == base_generations
    assert list(reused) == list(fresh)  # the same records, in the same order
    assert as_dicts(reused) == as_dicts(fresh)
    assert generations == fresh_generations
    assert as_dicts(everything) == as_dicts(fresh)
    for key in ("retain_ppl", "forget_ppl", "mia_auc", "forget_script_mass", "probe_auc.1"):
        assert reused[key] is base[key]


def test_the_noise_control_keeps_separate_passes(tmp_path, tiny, monkeypatch):
    """Noise draws fresh values at every forward pass: sharing passes would change them."""
    model, tok = tiny
    cfg = config(
        tmp_path, [{"kind": "sae_gate"}], metrics=("forget_ppl", "mia", "probe", "script_mass")
    )
    sets = load_eval_sets(cfg)
    calls = Counter()
    mass = suite.script_mass

    def counted_mass(*args, **kw):
        calls[f"script_mass(kv_cache={kw['kv_cache']})"] += 1
        return mass(*args, **kw)

    monkeypatch.setattr(suite, "script_mass", counted_mass)
    for name in ("score_texts", "perplexity", "mia_scores", "collect_activations"):
        original = getattr(suite, name)

        def counted(*args, _name=name, _original=original, **kw):
            calls[_name] += 1
            return _original(*args, **kw)

        monkeypatch.setattr(suite, name, counted)
    evaluate_model(model, tok, sets, cfg, probe_layers=(0,))
    # forget + retain pass; MIA members; script mass from the prompts' KV cache
    assert calls == {"score_texts": 2, "mia_scores": 1, "script_mass(kv_cache=True)": 1}
    calls.clear()
    with NoiseIntervention(model, 0, scale=0.5, seed=0):
        evaluate_model(model, tok, sets, cfg, probe_layers=(0,))
    assert calls == {
        "perplexity": 1,
        "mia_scores": 2,
        "collect_activations": 2,
        "script_mass(kv_cache=False)": 1,
    }


# ------------------------------------------------------------------ counting over a whole study
class Counts:
    """Adapter trainings and teacher-forced forward passes of the base model in a study."""

    def __init__(self, model, monkeypatch):
        self.trainings = Counter()
        self.scoring = 0  # forward passes outside generation and outside fluency scoring
        self._outside = 0
        for name in ("lora_arm", "reft_arm"):
            original = getattr(study_arms, name)

            def counted(*args, _name=name, _original=original, **kw):
                self.trainings[_name] += 1
                return _original(*args, **kw)

            monkeypatch.setattr(study_arms, name, counted)
        generate = model.generate

        def generating(*args, **kw):
            self._outside += 1
            try:
                return generate(*args, **kw)
            finally:
                self._outside -= 1

        monkeypatch.setattr(model, "generate", generating)
        nll = suite.continuation_nll

        def fluency(*args, **kw):
            self._outside += 1
            try:
                return nll(*args, **kw)
            finally:
                self._outside -= 1

        monkeypatch.setattr(suite, "continuation_nll", fluency)
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, _module, _args):
        if not self._outside:
            self.scoring += 1


def run_counted(tmp_path, tiny, monkeypatch, arms, name):
    model, tok = tiny
    with monkeypatch.context() as patch:
        counts = Counts(model, patch)
        try:
            result = mmie.run_experiment(
                config(tmp_path / name, arms), model=model, tokenizer=tok, show_progress=False
            )
        finally:
            counts.handle.remove()
    assert result.ok
    return counts, result


TRAINED = [
    {"kind": "lora", "steps": 2, "batch_size": 4},
    {"kind": "reft", "steps": 2, "batch_size": 4},
]
SHARING_TRAINED = [
    *TRAINED,
    {"kind": "lora+sae_gate", "steps": 2, "batch_size": 4},
    {"kind": "reft+sae_gate", "steps": 2, "batch_size": 4},
    {"kind": "lora+scrub", "steps": 2, "batch_size": 4},
]


def test_arms_sharing_a_trained_part_train_it_once_per_seed(tmp_path, tiny, monkeypatch):
    alone, _ = run_counted(tmp_path, tiny, monkeypatch, TRAINED, "alone")
    shared, result = run_counted(tmp_path, tiny, monkeypatch, SHARING_TRAINED, "shared")
    assert alone.trainings == {"lora_arm": 2, "reft_arm": 2}  # one per seed
    assert shared.trainings == alone.trainings
    info = {
        r["arm"]: r["info"]["training"] for r in result.report.data["records"] if r["seed"] == 0
    }
    assert info["lora"] == info["lora+sae_gate"] == info["lora+scrub"]
    assert info["reft"] == info["reft+sae_gate"]


def test_a_study_without_artifacts_still_trains_a_shared_part_once(tmp_path, tiny, monkeypatch):
    model, tok = tiny
    cfg = config(tmp_path, SHARING_TRAINED)
    study = Study(model, tok, cfg, load_eval_sets(cfg), (1,))  # no artifacts directory
    counts = Counts(model, monkeypatch)
    counts.handle.remove()
    losses = []
    for name in ("lora", "lora+sae_gate", "lora+scrub"):
        with study.arm(cfg.arm(name), 0) as state:
            losses.append(state.info["training"])
    assert counts.trainings == {"lora_arm": 1}
    assert losses[0] == losses[1] == losses[2]


GATES_ONLY = [{"kind": "sae_gate"}]
SCORING_AS_BASE = [
    *GATES_ONLY,
    {"kind": "dynamic_gate"},  # base_alpha 0: teacher-forced scoring is the base model's
    {"kind": "sae_gate", "name": "sae_gate@0", "alpha": 0.0},
]


def test_arms_scoring_as_the_base_add_no_scoring_pass(tmp_path, tiny, monkeypatch):
    controls = ("identity", "script_ban", "eos")
    model, tok = tiny
    few, _ = run_counted(tmp_path, tiny, monkeypatch, GATES_ONLY, "few")
    with monkeypatch.context() as patch:
        counts = Counts(model, patch)
        try:
            result = mmie.run_experiment(
                config(tmp_path / "many", SCORING_AS_BASE, controls=controls),
                model=model,
                tokenizer=tok,
                show_progress=False,
            )
        finally:
            counts.handle.remove()
    assert result.ok
    assert counts.scoring == few.scoring
    out = result.output_dir
    base = json.loads(base_shard_path(out).read_text())["metrics"]
    probes = [k for k in base if k.startswith("probe_auc.")]
    assert probes
    teacher_forced = ["retain_ppl", "forget_ppl", "mia_auc", "forget_script_mass", *probes]
    for seed, arm in result.computed:
        unit = json.loads(unit_shard_path(out, seed, arm).read_text())
        if arm == "sae_gate":
            assert unit["reused"] == {"records": [], "generations": False}
            continue
        for key in teacher_forced:
            assert unit["metrics"][key] == base[key], (arm, key)
        reused = unit["reused"]
        assert set(teacher_forced) <= set(reused["records"])
        no_processor = arm in ("control.identity", "sae_gate@0")
        assert reused["generations"] == no_processor
        if no_processor:  # generation is the base model's too: every record is
            assert unit["metrics"] == base
            assert unit["generations"] == unit_generations(out)
    # the seed-invariant controls ran once, and the report says so
    arms = result.report.data["arms"]
    assert [s for s, a in result.computed if a == "control.identity"] == [0]
    assert arms["control.identity"]["seed_invariant"]
    assert not arms["dynamic_gate"]["seed_invariant"]


def unit_generations(out):
    return json.loads(base_shard_path(out).read_text())["generations"]
