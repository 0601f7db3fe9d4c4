"""LoRA and ReFT unlearning: config validation, training effect, one model copy, adapter I/O."""

from __future__ import annotations

import contextlib
import json
import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from mmie.edits.reft import LoReFTConfig, ReFTAdapter
from mmie.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    IncompatibleModelError,
    TrainingError,
    TruncationWarning,
)
from mmie.models.blocks import get_block
from mmie.models.tokenization import collate_ids, tokenize
from mmie.testing import ARCHITECTURES, count_live_models, tiny_causal_lm
from mmie.unlearning.config import UnlearnConfig
from mmie.unlearning.lora_checkpoint import default_lora_targets, load_lora, save_lora
from mmie.unlearning.objectives import kl_retain_loss, sequence_logprobs, token_nll
from mmie.unlearning.train import unlearn_lora, unlearn_reft
from mmie.unlearning.trainer import Trainer, encode_texts

FORGET = [
    "नमस्ते दुनिया",
    "मेरा नाम राम है",
    "यह एक परीक्षण है",
    "हिंदी पाठ यहाँ",
    "आज मौसम अच्छा है",
    "मुझे चाय पसंद है",
]
RETAIN = [
    "hello world",
    "my name is ram",
    "this is a test",
    "english text here",
    "the weather is nice",
    "i like tea",
]
FAST = {"steps": 4, "lr": 1e-2}


def _scores(model, tokenizer, reference):
    """(forget NLL, reference forget NLL, retain KL) with ``reference()`` a context manager."""
    f = tokenize(tokenizer, FORGET, padding_side="right")
    r = tokenize(tokenizer, RETAIN, padding_side="right")
    with torch.no_grad():
        nll = float(token_nll(model(**f).logits, f["input_ids"], f["attention_mask"]))
        logits_r = model(**r).logits
        with reference():
            nll_ref = float(token_nll(model(**f).logits, f["input_ids"], f["attention_mask"]))
            ref_r = model(**r).logits
    return nll, nll_ref, float(kl_retain_loss(logits_r, ref_r, r["attention_mask"]))


def _logits(model, tokenizer, texts=FORGET + RETAIN):
    with torch.no_grad():
        return model(**tokenize(tokenizer, texts, padding_side="right")).logits


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _lora_names(model):
    return [n for n, _ in model.named_modules() if "lora_" in n]


# ----------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"objective": "dpo"}, "objective"),
        ({"schedule": "random"}, "schedule"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_length": 1}, "max_length"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"beta": -1.0}, "beta"),
        ({"kl_weight": -0.1}, "kl_weight"),
        ({"retain_nll_weight": -1.0}, "retain_nll_weight"),
        ({"steps": "8"}, "steps: expected an integer"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"warmup_steps": 200}, "warmup_steps"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"eval_every": 0}, "eval_every"),
        ({"patience": 0, "val_fraction": 0.2}, "patience"),
        ({"max_retain_kl": 0.0, "val_fraction": 0.2}, "max_retain_kl"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"gradient_checkpointing": 1}, "gradient_checkpointing"),
        ({"objective": "graddiff", "retain_nll_weight": 0.0}, "retain_nll_weight"),
        ({"schedule": "alternating", "kl_weight": 0.0}, "alternating"),
        ({"patience": 3}, "val_fraction"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        UnlearnConfig(**kwargs)


def test_config_accepts_numpy_integers_and_refuses_the_old_key():
    import numpy as np

    cfg = UnlearnConfig(steps=np.int64(8), lr=np.float32(0.5))
    assert (cfg.steps, type(cfg.steps)) == (8, int)
    with pytest.raises(
        ConfigError, match="retain_weight: this key was renamed; use 'retain_nll_weight'"
    ):
        UnlearnConfig.from_dict({"retain_weight": 1.0})


def test_config_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        UnlearnConfig("npo")  # type: ignore[misc]
    cfg = UnlearnConfig()
    with pytest.raises(AttributeError):
        cfg.steps = 3  # type: ignore[misc]


def test_effective_retain_nll_weight_defaults_by_objective():
    assert UnlearnConfig(objective="graddiff").effective_retain_nll_weight == 1.0
    assert UnlearnConfig(objective="npo").effective_retain_nll_weight == 0.0
    assert UnlearnConfig(objective="ga", retain_nll_weight=0.3).effective_retain_nll_weight == 0.3


@settings(max_examples=25, deadline=None)
@given(
    objective=st.sampled_from(["ga", "npo", "graddiff"]),
    steps=st.integers(1, 500),
    lr=st.floats(1e-6, 1.0),
    val_fraction=st.sampled_from([0.0, 0.1, 0.5]),
    schedule=st.sampled_from(["joint", "alternating"]),
    grad_clip=st.one_of(st.none(), st.floats(0.1, 10.0)),
)
def test_config_dict_round_trip(objective, steps, lr, val_fraction, schedule, grad_clip):
    cfg = UnlearnConfig(
        objective=objective,
        steps=steps,
        lr=lr,
        val_fraction=val_fraction,
        schedule=schedule,
        grad_clip=grad_clip,
        warmup_steps=steps // 2,
    )
    data = json.loads(json.dumps(cfg.to_dict()))
    assert UnlearnConfig.from_dict(data) == cfg


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="learning_rate: unknown key"):
        UnlearnConfig.from_dict({"steps": 3, "learning_rate": 0.1})


# ------------------------------------------------------------------ LoRA targets


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_default_targets_exist_in_every_supported_architecture(arch, tokenizer):
    model = tiny_causal_lm(arch)
    targets = default_lora_targets(model)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert set(targets) <= names
    result = unlearn_lora(model, tokenizer, FORGET[:2], RETAIN[:2], steps=1, lr=1e-2, rank=2)
    wrapped = {n.rsplit(".", 2)[0].rsplit(".", 1)[-1] for n in _lora_names(result.model)}
    assert set(targets) <= wrapped
    lora_cfg = result.model.peft_config["default"]
    assert lora_cfg.fan_in_fan_out is (arch == "gpt2")
    result.model.unload()


def test_missing_target_lists_available_modules(tokenizer, model):
    with pytest.raises(IncompatibleModelError, match=r"\['w_q'\] not found.*available: .*q_proj"):
        unlearn_lora(model, tokenizer, FORGET, RETAIN, target_modules=["w_q"], **FAST)
    assert not _lora_names(model)


def test_unknown_architecture_asks_for_target_modules(model):
    model.config.model_type = "mystery"
    with pytest.raises(IncompatibleModelError, match=r"model_type='mystery'.*o_proj"):
        default_lora_targets(model)


# -------------------------------------------------------------------- training


@pytest.mark.parametrize("objective", ["npo", "ga", "graddiff"])
def test_lora_unlearns_forget_keeps_retain_and_base_is_untouched(objective, tokenizer):
    model = tiny_causal_lm("llama", seed=3)
    before = _state(model)
    live = count_live_models()
    seen_live: list[int] = []
    emb = model.get_input_embeddings()
    handle = emb.register_forward_hook(
        lambda *_: seen_live.append(count_live_models()) if not seen_live else None
    )
    try:
        result = unlearn_lora(
            model,
            tokenizer,
            FORGET,
            RETAIN,
            objective=objective,
            steps=25,
            lr=1e-2,
            config=UnlearnConfig(batch_size=6, kl_weight=1.0),
        )
    finally:
        handle.remove()
    peft_model = result.model
    nll, nll_ref, kl = _scores(peft_model, tokenizer, peft_model.disable_adapter)
    assert nll > nll_ref + 0.2, (nll, nll_ref)  # forget likelihood went down
    assert kl < 0.5 * (nll - nll_ref), (kl, nll - nll_ref)  # retain moved much less
    assert seen_live == [live]  # no second model while training (reference included)
    assert count_live_models() == live
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b
    assert all(bool(p.abs().sum() > 0) for p in lora_b)
    base_after = peft_model.unload().state_dict()
    assert all(torch.equal(before[k], v) for k, v in base_after.items())
    assert result.steps_run == 25
    assert not result.early_stopped
    assert result.best_step is None


def test_reference_under_disable_adapter_is_the_base_model(tokenizer, model):
    base_logits = _logits(model, tokenizer)
    result = unlearn_lora(model, tokenizer, FORGET, RETAIN, **FAST)
    with result.model.disable_adapter():
        assert torch.equal(_logits(result.model, tokenizer), base_logits)
    assert not torch.equal(_logits(result.model, tokenizer), base_logits)
    result.model.unload()


def test_training_is_seeded_and_leaves_global_rng_alone(tokenizer):
    weights = []
    for _ in range(2):
        model = tiny_causal_lm("llama")
        state = torch.random.get_rng_state()
        result = unlearn_lora(
            model, tokenizer, FORGET, RETAIN, config=UnlearnConfig(seed=7, **FAST)
        )
        assert torch.equal(torch.random.get_rng_state(), state)
        weights.append(
            {n: p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n}
        )
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_unchanged_adapter_raises_and_cleans_up(tokenizer, model, monkeypatch):
    # Simulate the known trap (no gradient reaches the adapter): the optimizer never moves.
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    with pytest.raises(TrainingError, match="did not change"):
        unlearn_lora(model, tokenizer, FORGET, RETAIN, **FAST)
    assert not _lora_names(model)
    assert not hasattr(model, "peft_config")
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_checkpointing_trains_the_same_and_is_undone(tokenizer):
    weights = []
    for checkpointing in (False, True):
        model = tiny_causal_lm("llama")
        cfg = UnlearnConfig(gradient_checkpointing=checkpointing, **FAST)
        result = unlearn_lora(model, tokenizer, FORGET, RETAIN, config=cfg)
        weights.append(
            [p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n]
        )
        base = result.model.unload()
        # transformers 5 renamed is_gradient_checkpointing (which now warns)
        flag = (
            "is_activation_checkpointing"
            if hasattr(type(base), "is_activation_checkpointing")
            else "is_gradient_checkpointing"
        )
        assert not getattr(base, flag)
        assert not getattr(base, "_require_grads_hooks", [])
        assert all(not m._forward_hooks for m in base.modules())
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b)
    assert any(bool(b.abs().sum() > 0) for b in weights[1])


def test_learning_rate_schedule_warmup_then_cosine(tokenizer, model):
    cfg = UnlearnConfig(steps=6, lr=1e-2, warmup_steps=2, lr_schedule="cosine")
    result = unlearn_lora(model, tokenizer, FORGET, RETAIN, config=cfg)
    expected = [1 / 3, 2 / 3] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert [r.lr for r in result.history] == pytest.approx([1e-2 * e for e in expected])
    result.model.unload()


def test_grad_clip_bounds_the_update(tokenizer, model):
    cfg = UnlearnConfig(objective="ga", steps=3, lr=1e-2, grad_clip=1e-3)
    result = unlearn_lora(model, tokenizer, FORGET, RETAIN, config=cfg)
    assert all(r.grad_norm > 1e-3 for r in result.history)  # recorded before clipping
    result.model.unload()


def test_alternating_schedule_uses_one_term_per_step(tokenizer, model):
    cfg = UnlearnConfig(objective="graddiff", schedule="alternating", steps=4, lr=1e-2)
    result = unlearn_lora(model, tokenizer, FORGET, RETAIN, config=cfg)
    kinds = [(r.forget_loss is not None, r.retain_loss is not None) for r in result.history]
    assert kinds == [(True, False), (False, True)] * 2
    joint = result.history[0]
    assert joint.loss == joint.forget_loss
    result.model.unload()


def test_early_stopping_restores_the_best_step(tokenizer):
    common = {"steps": 20, "lr": 1e-2, "val_fraction": 0.34, "eval_every": 2, "batch_size": 2}
    stopped = unlearn_lora(
        tiny_causal_lm("llama"),
        tokenizer,
        FORGET,
        RETAIN,
        config=UnlearnConfig(patience=1, min_delta=1e9, **common),
    )
    assert stopped.early_stopped
    assert stopped.steps_run == 4
    assert stopped.best_step == 2
    assert [v.step for v in stopped.validation] == [2, 4]
    for v in stopped.validation:
        assert v.forget_margin == pytest.approx(v.forget_nll - v.forget_nll_ref)
        assert v.score == pytest.approx(v.forget_margin - v.retain_kl)
    # The restored weights are those of an identical run that ends after step 2.
    short = unlearn_lora(
        tiny_causal_lm("llama"),
        tokenizer,
        FORGET,
        RETAIN,
        config=UnlearnConfig(**{**common, "steps": 2}),
    )
    a = {n: p for n, p in stopped.model.named_parameters() if "lora_" in n}
    b = {n: p for n, p in short.model.named_parameters() if "lora_" in n}
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_retain_kl_budget_stops_training(tokenizer, model, caplog):
    cfg = UnlearnConfig(
        objective="ga", steps=10, lr=1e-2, val_fraction=0.34, eval_every=2, max_retain_kl=1e-12
    )
    result = unlearn_lora(model, tokenizer, FORGET, RETAIN, config=cfg)
    assert result.early_stopped
    assert result.steps_run == 2
    assert result.best_step is None
    assert result.validation[0].retain_kl > 1e-12
    assert "keeping the last weights" in caplog.text
    result.model.unload()


def test_input_validation(tokenizer, model):
    with pytest.raises(ValueError, match="forget must contain"):
        unlearn_lora(model, tokenizer, [], RETAIN, **FAST)
    with pytest.raises(TypeError, match="retain must be a sequence"):
        unlearn_lora(model, tokenizer, FORGET, "hello", **FAST)
    with pytest.raises(DataError, match="fewer than 2 tokens"):
        unlearn_lora(model, tokenizer, ["a", "bc"], RETAIN, **FAST)
    with pytest.raises(ValueError, match="rank"):
        unlearn_lora(model, tokenizer, FORGET, RETAIN, rank=0, **FAST)
    with pytest.raises(DataError, match="too few"):
        unlearn_lora(
            model,
            tokenizer,
            FORGET[:1],
            RETAIN,
            config=UnlearnConfig(val_fraction=0.5, **FAST),
        )
    assert not _lora_names(model)
    result = unlearn_lora(model, tokenizer, FORGET, RETAIN, **FAST)
    with pytest.raises(TypeError, match="already carries a PEFT adapter"):
        unlearn_lora(result.model, tokenizer, FORGET, RETAIN, **FAST)
    result.model.unload()


def test_long_texts_warn_once(tokenizer, model):
    with pytest.warns(TruncationWarning, match="2 of 6 forget texts"):
        result = unlearn_lora(
            model,
            tokenizer,
            [*FORGET[:4], "x" * 70, "y" * 80],
            RETAIN,
            config=UnlearnConfig(max_length=60, **FAST),
        )
    result.model.unload()


# ------------------------------------------------------------------- LoRA I/O


def test_lora_save_load_reproduces_logits_exactly(tokenizer, tmp_path):
    model = tiny_causal_lm("llama")
    result = unlearn_lora(model, tokenizer, FORGET, RETAIN, **FAST)
    trained = _logits(result.model, tokenizer)
    save_lora(result.model, tmp_path / "lora")
    files = set(os.listdir(tmp_path / "lora"))
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    base = result.model.unload()
    reloaded = load_lora(base, tmp_path / "lora")
    assert torch.equal(_logits(reloaded, tokenizer), trained)
    assert not any(p.requires_grad for p in reloaded.parameters())
    reloaded.unload()
    # Into a fresh copy of the same base weights: identical too.
    fresh = load_lora(tiny_causal_lm("llama"), tmp_path / "lora")
    assert torch.equal(_logits(fresh, tokenizer), trained)


@pytest.fixture(scope="module")
def saved_lora(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("lora")
    result = unlearn_lora(tiny_causal_lm("llama"), tokenizer, FORGET, RETAIN, **FAST)
    save_lora(result.model, path)
    return path


def test_load_lora_rejects_renamed_keys(saved_lora, tmp_path):
    # The original resume used strict=False and silently loaded nothing when names differed.
    state = load_file(str(saved_lora / "adapter_model.safetensors"))
    renamed = {k.replace("self_attn", "attention"): v for k, v in state.items()}
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(renamed, str(bad / "adapter_model.safetensors"))
    (bad / "adapter_config.json").write_text((saved_lora / "adapter_config.json").read_text())
    model = tiny_causal_lm("llama")
    with pytest.raises(CheckpointError, match="missing from the file"):
        load_lora(model, bad)
    assert not _lora_names(model)
    assert not hasattr(model, "peft_config")
    assert all(p.requires_grad for p in model.parameters())


def test_load_lora_rejects_a_model_with_more_layers(saved_lora):
    model = tiny_causal_lm("llama", num_layers=3)
    with pytest.raises(CheckpointError, match="missing from the file"):
        load_lora(model, saved_lora)
    assert not _lora_names(model)


def test_load_lora_rejects_wrong_shapes(saved_lora):
    with pytest.raises(CheckpointError, match="do not fit"):
        load_lora(tiny_causal_lm("llama", hidden_size=48), saved_lora)


def test_load_lora_rejects_missing_files_and_foreign_targets(saved_lora, tmp_path):
    with pytest.raises(CheckpointError, match=r"adapter_config\.json"):
        load_lora(tiny_causal_lm("llama"), tmp_path)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_lora(tiny_causal_lm("gpt2"), saved_lora)


# ------------------------------------------------------------------------ ReFT


@pytest.mark.parametrize("positions", ["all", "prompt"])
def test_reft_unlearns_with_detached_reference_and_frozen_base(positions, tokenizer):
    model = tiny_causal_lm("llama", seed=3)
    before = _state(model)
    base_logits = _logits(model, tokenizer)
    reft_config = LoReFTConfig(layers=(0, 1), rank=4, positions=positions)
    result = unlearn_reft(
        model,
        tokenizer,
        FORGET,
        RETAIN,
        reft_config=reft_config,
        steps=25,
        lr=1e-2,
        config=UnlearnConfig(batch_size=6),
    )
    adapter = result.adapter
    assert adapter.attached
    f = tokenize(tokenizer, FORGET + RETAIN, padding_side="right")
    if positions == "prompt":
        adapter.set_position_mask(f["attention_mask"].bool())

    def detached():
        class _Ctx:
            def __enter__(self):
                adapter.remove()

            def __exit__(self, *exc):
                adapter.attach()
                if positions == "prompt":
                    adapter.set_position_mask(f["attention_mask"].bool())

        return _Ctx()

    if positions == "prompt":
        # Scores below use batches of forget or retain only; mask every real token of each.
        nll_scores = []
        for texts in (FORGET, RETAIN):
            enc = tokenize(tokenizer, texts, padding_side="right")
            adapter.set_position_mask(enc["attention_mask"].bool())
            with torch.no_grad():
                nll_scores.append(model(**enc).logits)
        adapter.remove()
        with torch.no_grad():
            ref = [
                model(**tokenize(tokenizer, t, padding_side="right")).logits
                for t in (FORGET, RETAIN)
            ]
        fe = tokenize(tokenizer, FORGET, padding_side="right")
        re_ = tokenize(tokenizer, RETAIN, padding_side="right")
        nll = float(token_nll(nll_scores[0], fe["input_ids"], fe["attention_mask"]))
        nll_ref = float(token_nll(ref[0], fe["input_ids"], fe["attention_mask"]))
        kl = float(kl_retain_loss(nll_scores[1], ref[1], re_["attention_mask"]))
    else:
        nll, nll_ref, kl = _scores(model, tokenizer, detached)
        adapter.remove()
    assert nll > nll_ref + 0.2, (nll, nll_ref)
    assert kl < 0.5 * (nll - nll_ref), (kl, nll - nll_ref)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert torch.equal(_logits(model, tokenizer), base_logits)  # detached == base


def test_reft_save_load_reproduces_logits_exactly(tokenizer, tmp_path):
    model = tiny_causal_lm("llama")
    result = unlearn_reft(
        model, tokenizer, FORGET, RETAIN, reft_config=LoReFTConfig(layers=(1,), rank=2), **FAST
    )
    trained = _logits(model, tokenizer)
    result.adapter.save(tmp_path / "reft")
    result.adapter.remove()
    with ReFTAdapter.load(tmp_path / "reft", model):
        assert torch.equal(_logits(model, tokenizer), trained)
    fresh = tiny_causal_lm("llama")
    with ReFTAdapter.load(tmp_path / "reft", fresh):
        assert torch.equal(_logits(fresh, tokenizer), trained)


def test_reft_failure_detaches_the_adapter(tokenizer, model, monkeypatch):
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    with pytest.raises(TrainingError, match="ReFT adapter"):
        unlearn_reft(
            model, tokenizer, FORGET, RETAIN, reft_config=LoReFTConfig(layers=(0,)), **FAST
        )
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert get_block(model, 0) is not None


# ------------------------------------------------------------ the cached reference


def _train_lora(tokenizer, cache_mb, config, *, dropout=0.0):
    model = tiny_causal_lm("llama", seed=3)
    result = unlearn_lora(
        model,
        tokenizer,
        FORGET,
        RETAIN,
        config=config,
        dropout=dropout,
        reference_cache_mb=cache_mb,
    )
    weights = [p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n]
    return result, weights


def _train_reft(tokenizer, cache_mb, config):
    model = tiny_causal_lm("llama", seed=3)
    reft_config = LoReFTConfig(layers=(0, 1), rank=4)
    result = unlearn_reft(
        model,
        tokenizer,
        FORGET,
        RETAIN,
        reft_config=reft_config,
        config=config,
        reference_cache_mb=cache_mb,
    )
    weights = [p.detach().clone() for p in result.adapter.parameters()]
    return result, weights


@pytest.mark.parametrize(
    ("arm", "dropout", "extra"),
    [
        ("lora", 0.0, {}),
        ("lora", 0.2, {}),  # the reference runs in eval mode: no dropout, no RNG draws
        ("lora", 0.0, {"val_fraction": 0.34, "eval_every": 3}),
        ("lora", 0.0, {"schedule": "alternating"}),
        ("reft", 0.0, {}),
    ],
)
def test_cached_reference_trains_like_the_per_step_reference(tokenizer, arm, dropout, extra):
    # Documented tolerance: the cached values come from other batches (rows, padding), so
    # they may differ from the per-step ones in the last fp32 bits (the reference values
    # agree to 1e-6, the test below); 12 steps of training carry that into losses and
    # weights that agree to 1e-5.
    config = UnlearnConfig(objective="npo", steps=12, lr=1e-2, batch_size=4, kl_weight=1.0, **extra)
    runs = []
    for cache_mb in (0.0, 256.0):
        if arm == "lora":
            runs.append(_train_lora(tokenizer, cache_mb, config, dropout=dropout))
        else:
            runs.append(_train_reft(tokenizer, cache_mb, config))
    (plain, w_plain), (cached, w_cached) = runs
    assert [h.step for h in plain.history] == [h.step for h in cached.history]
    for a, b in zip(plain.history, cached.history):
        assert b.loss == pytest.approx(a.loss, rel=1e-5, abs=1e-5)
    for a, b in zip(plain.validation, cached.validation):
        assert b.score == pytest.approx(a.score, rel=1e-5, abs=1e-5)
    assert len(w_plain) == len(w_cached)
    for a, b in zip(w_plain, w_cached):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_cached_reference_values_equal_the_per_batch_ones(tokenizer):
    model = tiny_causal_lm("llama", seed=3)
    config = UnlearnConfig(objective="npo", batch_size=4, kl_weight=1.0)
    forget = encode_texts(tokenizer, FORGET, 64, "forget")
    retain = encode_texts(tokenizer, RETAIN, 64, "retain")
    trainer = Trainer(model, [], contextlib.nullcontext, tokenizer, forget, retain, config)
    trainer._cache_references()
    assert trainer.cache_info == {"forget": True, "retain": True, "validation": False}
    for batch in ([5, 0, 2], [1, 3], [4]):
        ids, mask = collate_ids([forget[i] for i in batch], trainer.pad_id, trainer.device)
        with torch.no_grad():
            direct = sequence_logprobs(model(input_ids=ids, attention_mask=mask).logits, ids, mask)
        torch.testing.assert_close(trainer._forget_ref[batch], direct, rtol=1e-6, atol=0)
        ids, mask = collate_ids([retain[i] for i in batch], trainer.pad_id, trainer.device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        cached = trainer._padded([trainer._retain_ref[i] for i in batch], ids.shape[1])
        real = mask.bool()
        torch.testing.assert_close(cached[real], logits[real], rtol=1e-6, atol=1e-6)


def test_cached_validation_reference_is_bit_identical(tokenizer):
    # GradDiff without a KL term uses no reference in training: only validation does, over
    # the same chunks every time, so its cached reference is exactly the recomputed one.
    config = UnlearnConfig(
        objective="graddiff",
        kl_weight=0.0,
        steps=6,
        lr=1e-2,
        batch_size=4,
        val_fraction=0.34,
        eval_every=2,
    )
    (plain, w_plain), (cached, w_cached) = (
        _train_lora(tokenizer, cache_mb, config) for cache_mb in (0.0, 256.0)
    )
    assert plain.validation == cached.validation
    assert plain.history == cached.history
    assert all(torch.equal(a, b) for a, b in zip(w_plain, w_cached))


def test_lora_reference_toggle_equals_disable_adapter(tokenizer, monkeypatch):
    import mmie.unlearning.train as train_module

    config = UnlearnConfig(objective="npo", steps=5, lr=1e-2, batch_size=4, val_fraction=0.34)
    toggled, w_toggled = _train_lora(tokenizer, 0.0, config)
    monkeypatch.setattr(
        train_module, "_lora_reference", lambda peft_model: peft_model.disable_adapter
    )
    peft_way, w_peft = _train_lora(tokenizer, 0.0, config)
    assert toggled.history == peft_way.history
    assert toggled.validation == peft_way.validation
    assert all(torch.equal(a, b) for a, b in zip(w_toggled, w_peft))
    # the toggle restores the layers: the trained model is the adapter again
    model = toggled.model
    with train_module._lora_reference(model)():
        off = _logits(model, tokenizer)
    with model.disable_adapter():
        assert torch.equal(_logits(model, tokenizer), off)
    assert not torch.equal(_logits(model, tokenizer), off)
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_retain_logits_over_the_budget_are_recomputed(tokenizer, caplog):
    config = UnlearnConfig(objective="npo", steps=6, lr=1e-2, batch_size=4, kl_weight=1.0)
    with caplog.at_level("DEBUG", logger="mmie.unlearning.trainer"):
        over, w_over = _train_lora(tokenizer, 1e-3, config)  # 1 KiB: the logits do not fit
    assert "'forget': True, 'retain': False" in caplog.text
    plain, w_plain = _train_lora(tokenizer, 0.0, config)
    for a, b in zip(plain.history, over.history):
        assert b.loss == pytest.approx(a.loss, rel=1e-5, abs=1e-5)
    for a, b in zip(w_plain, w_over):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="reference_cache_mb"):
        unlearn_lora(tiny_causal_lm("llama"), tokenizer, FORGET, RETAIN, reference_cache_mb=-1)
