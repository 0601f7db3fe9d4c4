"""Per-seed arms: built on the one base model, released exactly, memory flat over seeds."""

from __future__ import annotations

import gc
import os
import weakref

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from mmie.edits.reft import LoReFTConfig
from mmie.errors import CheckpointError, TrainingError
from mmie.models.hooks import mmie_hooks
from mmie.models.tokenization import tokenize
from mmie.testing import count_live_models, tiny_causal_lm
from mmie.unlearning.config import UnlearnConfig
from mmie.unlearning.lifecycle import lora_arm, reft_arm, restored_lora_arm
from mmie.unlearning.lora_checkpoint import save_lora
from mmie.unlearning.trainer import Trainer

FORGET = ["नमस्ते दुनिया", "मेरा नाम राम है", "यह एक परीक्षण है", "हिंदी पाठ यहाँ"]
RETAIN = ["hello world", "my name is ram", "this is a test", "english text here"]
CONFIG = UnlearnConfig(steps=3, lr=1e-2, batch_size=4)
REFT = LoReFTConfig(layers=(0, 1), rank=2)


def _logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenize(tokenizer, FORGET + RETAIN, padding_side="right")).logits


def _snapshot(model):
    """Everything an arm could leave behind on the base model."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": model.training,
        "modules": [(n, type(m)) for n, m in model.named_modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
        "attrs": set(vars(model)),
    }


def _assert_restored(model, snap):
    now = _snapshot(model)
    assert now["modules"] == snap["modules"]
    assert now["requires_grad"] == snap["requires_grad"]
    assert now["training"] == snap["training"]
    assert now["hooks"] == snap["hooks"]
    assert now["attrs"] == snap["attrs"]
    assert now["state"].keys() == snap["state"].keys()
    assert all(torch.equal(now["state"][k], v) for k, v in snap["state"].items())
    assert not mmie_hooks(model)
    assert all(p.grad is None for p in model.parameters())


def test_lora_arm_trains_then_restores_the_base_exactly(tokenizer, model):
    snap = _snapshot(model)
    base_logits = _logits(model, tokenizer)
    with lora_arm(model, tokenizer, FORGET, RETAIN, config=CONFIG.replace(seed=1)) as arm:
        assert arm.config.seed == 1
        assert not torch.equal(_logits(arm.model, tokenizer), base_logits)
        with arm.model.disable_adapter():
            assert torch.equal(_logits(arm.model, tokenizer), base_logits)
        lora_ref = weakref.ref(next(p for n, p in arm.model.named_parameters() if "lora_B" in n))
    del arm
    gc.collect()
    assert lora_ref() is None  # the adapter weights are gone
    _assert_restored(model, snap)
    assert torch.equal(_logits(model, tokenizer), base_logits)


def test_reft_arm_trains_then_detaches(tokenizer, model):
    snap = _snapshot(model)
    base_logits = _logits(model, tokenizer)
    with reft_arm(
        model,
        tokenizer,
        FORGET,
        RETAIN,
        reft_config=REFT.replace(seed=2),
        config=CONFIG.replace(seed=2),
    ) as arm:
        assert arm.adapter.attached
        assert arm.adapter.config.seed == 2
        assert not torch.equal(_logits(model, tokenizer), base_logits)
        param_ref = weakref.ref(next(iter(arm.adapter.parameters())))
    del arm
    gc.collect()
    assert param_ref() is None
    _assert_restored(model, snap)
    assert torch.equal(_logits(model, tokenizer), base_logits)


@pytest.mark.parametrize("kind", ["lora", "reft"])
def test_arm_is_released_when_the_body_raises(kind, tokenizer, model):
    snap = _snapshot(model)
    arm_cm = (
        lora_arm(model, tokenizer, FORGET, RETAIN, config=CONFIG.replace(seed=0))
        if kind == "lora"
        else reft_arm(
            model,
            tokenizer,
            FORGET,
            RETAIN,
            reft_config=REFT.replace(seed=0),
            config=CONFIG.replace(seed=0),
        )
    )
    with pytest.raises(KeyError, match="boom"), arm_cm:
        raise KeyError("boom")
    _assert_restored(model, snap)


def test_arm_is_released_when_training_fails(tokenizer, model):
    snap = _snapshot(model)
    with (
        pytest.raises(ValueError, match="forget must contain"),
        lora_arm(model, tokenizer, [], RETAIN, config=CONFIG),
    ):
        pass
    _assert_restored(model, snap)


def _fail_training(*args, **kwargs):
    raise TrainingError("injected failure after the adapter was attached")


def test_lora_error_after_attaching_leaves_no_peft_config(tokenizer, model, monkeypatch):
    # peft < 0.19 leaves ``peft_config`` on the base after unload(); a failed arm must not,
    # or the next LoRA arm is refused ("model already carries a PEFT adapter").
    snap = _snapshot(model)
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "run", _fail_training)
        with (
            pytest.raises(TrainingError, match="injected"),
            lora_arm(model, tokenizer, FORGET, RETAIN, config=CONFIG),
        ):
            pass
    assert "peft_config" not in vars(model)
    _assert_restored(model, snap)
    with lora_arm(model, tokenizer, FORGET, RETAIN, config=CONFIG) as arm:
        _logits(arm.model, tokenizer)
    del arm
    _assert_restored(model, snap)


def test_lora_error_while_attaching_leaves_the_base_clean(tokenizer, model, monkeypatch):
    from peft.tuners.lora import LoraModel

    original = LoraModel._create_and_replace
    calls = []

    def fail_on_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure half-way through injection")
        return original(self, *args, **kwargs)

    snap = _snapshot(model)
    with monkeypatch.context() as patch:
        patch.setattr(LoraModel, "_create_and_replace", fail_on_second)
        with (
            pytest.raises(RuntimeError, match="half-way"),
            lora_arm(model, tokenizer, FORGET, RETAIN, config=CONFIG),
        ):
            pass
    assert len(calls) == 2  # one layer was wrapped before the failure
    _assert_restored(model, snap)
    with lora_arm(model, tokenizer, FORGET, RETAIN, config=CONFIG) as arm:
        _logits(arm.model, tokenizer)
    del arm
    _assert_restored(model, snap)


def test_failed_adapter_load_leaves_the_base_clean(tokenizer, model, tmp_path):
    with lora_arm(model, tokenizer, FORGET, RETAIN, config=CONFIG) as arm:
        save_lora(arm.model, tmp_path / "lora")
    del arm
    snap = _snapshot(model)
    state = load_file(str(tmp_path / "lora" / "adapter_model.safetensors"))
    save_file(dict(list(state.items())[1:]), str(tmp_path / "lora" / "adapter_model.safetensors"))
    with (
        pytest.raises(CheckpointError, match="does not match"),
        restored_lora_arm(model, tmp_path / "lora"),
    ):
        pass
    _assert_restored(model, snap)
    with lora_arm(model, tokenizer, FORGET, RETAIN, config=CONFIG) as arm:
        _logits(arm.model, tokenizer)
    del arm
    _assert_restored(model, snap)


def test_arms_differ_by_seed(tokenizer, model):
    outs = []
    for seed in (0, 1, 0):
        with lora_arm(model, tokenizer, FORGET, RETAIN, config=CONFIG.replace(seed=seed)) as arm:
            outs.append(_logits(arm.model, tokenizer))
    assert torch.equal(outs[0], outs[2])
    assert not torch.equal(outs[0], outs[1])


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _live_model_ids() -> set[int]:
    gc.collect()
    return {id(o) for o in gc.get_objects() if issubclass(type(o), PreTrainedModel)}


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_ten_seeds_keep_one_model_and_flat_memory(tokenizer):
    others = count_live_models()  # models other tests may still hold
    model = tiny_causal_lm("llama", hidden_size=64, num_layers=2)
    live_before = _live_model_ids()
    assert count_live_models() == others + 1
    snap = _snapshot(model)
    base_logits = _logits(model, tokenizer)
    rss = []
    for seed in range(10):
        with lora_arm(model, tokenizer, FORGET, RETAIN, config=CONFIG.replace(seed=seed)) as arm:
            _logits(arm.model, tokenizer)  # evaluate
            if seed == 0:  # counting runs the garbage collector: once per kind is enough
                assert count_live_models() == others + 1
        del arm
        with reft_arm(
            model,
            tokenizer,
            FORGET,
            RETAIN,
            reft_config=REFT.replace(seed=seed),
            config=CONFIG.replace(seed=seed),
        ) as arm:
            _logits(model, tokenizer)
            if seed == 0:
                assert count_live_models() == others + 1
        del arm
        rss.append(_rss_bytes())  # the release already ran the garbage collector
    assert count_live_models() == others + 1  # exactly one model of ours: the base
    assert _live_model_ids() == live_before  # not even a replaced copy
    growth = (rss[-1] - rss[0]) / rss[0]
    assert growth < 0.05, f"RSS grew {growth:.1%} from seed 1 to seed 10: {rss}"
    _assert_restored(model, snap)
    assert torch.equal(_logits(model, tokenizer), base_logits)
