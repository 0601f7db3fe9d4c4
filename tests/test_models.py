"""Model plumbing: block resolution, devices, tokenisation, loading and release."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import mmie
from mmie.errors import IncompatibleModelError, TruncationWarning
from mmie.models.blocks import (
    block_device,
    block_dtype,
    get_block,
    get_blocks,
    hidden_size,
    input_device,
    num_layers,
    unwrap_model,
)
from mmie.models.loading import load_causal_lm, loaded_model, prepare_tokenizer
from mmie.models.tokenization import tokenize
from mmie.testing import ARCHITECTURES, byte_tokenizer, count_live_models, tiny_causal_lm

EXPECTED_PATH = {
    "llama": "model.layers",
    "qwen2": "model.layers",
    "mistral": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "phi": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_blocks_resolved_for_every_architecture(arch):
    model = tiny_causal_lm(arch, num_layers=3)
    blocks = get_blocks(model)
    expected = model.get_submodule(EXPECTED_PATH[arch])
    assert blocks is expected
    assert num_layers(model) == 3
    assert get_block(model, 2) is expected[2]
    assert hidden_size(model) == 32
    assert block_device(model, 0) == torch.device("cpu")
    assert block_dtype(model, 1) == torch.float32


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_blocks_resolved_through_peft(arch):
    from peft import LoraConfig, get_peft_model

    model = tiny_causal_lm(arch)
    targets = {"llama": ["q_proj"], "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"]}[arch]
    expected = get_blocks(model)
    peft_model = get_peft_model(
        model, LoraConfig(r=2, target_modules=targets, fan_in_fan_out=arch == "gpt2")
    )
    assert unwrap_model(peft_model) is model
    assert get_blocks(peft_model) is expected


def test_unknown_architecture_error_names_class_and_fix():
    class Weird(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stack = nn.ModuleList([nn.Linear(2, 2)])

    with pytest.raises(IncompatibleModelError, match=r"Weird.*block_path="):
        get_blocks(Weird())
    assert len(get_blocks(Weird(), "stack")) == 1
    with pytest.raises(IncompatibleModelError, match="block_path='nope'"):
        get_blocks(Weird(), "nope")


def test_layer_out_of_range_names_range(model):
    with pytest.raises(ValueError, match=r"layer must be in \[0, 1\]"):
        get_block(model, 2)
    with pytest.raises(ValueError, match=r"layer must be in \[0, 1\]"):
        get_block(model, -1)
    with pytest.raises(TypeError, match="layer must be an int"):
        get_block(model, True)


def test_input_device(model):
    assert input_device(model) == torch.device("cpu")


def test_tokenize_padding_sides_and_truncation_warning(tokenizer):
    texts = ["ab", "abcdef"]
    right = tokenize(tokenizer, texts, padding_side="right")
    left = tokenize(tokenizer, texts, padding_side="left")
    assert right["attention_mask"][0].tolist() == [1, 1, 0, 0, 0, 0]
    assert left["attention_mask"][0].tolist() == [0, 0, 0, 0, 1, 1]
    assert tokenizer.padding_side == "left"  # restored
    with pytest.warns(TruncationWarning, match="1 of 2 texts"):
        cut = tokenize(tokenizer, texts, max_length=4)
    assert cut["input_ids"].shape == (2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize(tokenizer, texts, max_length=6)
    with pytest.raises(TypeError, match="not a single string"):
        tokenize(tokenizer, "abc")
    with pytest.raises(ValueError, match="texts must not be empty"):
        tokenize(tokenizer, [])


def _eos_appending_tokenizer():
    """The byte tokenizer with ``<s> … </s>`` around every text (a trailing special token,
    which truncation must keep)."""
    from tokenizers.processors import TemplateProcessing

    tok = byte_tokenizer()
    backend = tok.backend_tokenizer
    backend.post_processor = TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 257), ("</s>", 258)]
    )
    return tok


@settings(max_examples=30, deadline=None)
@given(
    texts=st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=5),
    max_length=st.integers(2, 14),
    side=st.sampled_from(["left", "right"]),
    special=st.booleans(),
    which=st.sampled_from(["bytes", "eos"]),
)
def test_tokenize_with_max_length_equals_one_truncating_call(
    texts, max_length, side, special, which
):
    tok = byte_tokenizer() if which == "bytes" else _EOS_TOK
    want = tok(
        texts,
        padding=True,
        truncation=True,
        max_length=max_length,
        add_special_tokens=special,
        padding_side=side,
        return_tensors="pt",
    )
    n_long = sum(
        len(ids) > max_length for ids in tok(texts, add_special_tokens=special)["input_ids"]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = tokenize(
            tok, texts, max_length=max_length, padding_side=side, add_special_tokens=special
        )
    assert set(got.keys()) == set(want.keys())
    for key in want:
        assert torch.equal(got[key], want[key]), key
    cut = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(cut) == (1 if n_long else 0)
    if n_long:
        assert f"{n_long} of {len(texts)} texts" in str(cut[0].message)


_EOS_TOK = _eos_appending_tokenizer()


def test_prepare_tokenizer_reuses_eos_and_sets_generation_config():
    tok = byte_tokenizer()
    tok.pad_token = None
    model = tiny_causal_lm("llama")
    model.generation_config.pad_token_id = None
    prepare_tokenizer(tok, model)
    assert tok.pad_token == tok.eos_token
    assert tok.padding_side == "left"
    assert model.generation_config.pad_token_id == tok.eos_token_id
    with pytest.raises(ValueError, match="padding_side"):
        prepare_tokenizer(tok, padding_side="middle")  # type: ignore[arg-type]


def _save_tiny(tmp_path):
    model = tiny_causal_lm("llama", seed=3)
    tok = byte_tokenizer()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return model


def test_load_causal_lm_roundtrip_and_loaded_model_frees(tmp_path):
    ref = _save_tiny(tmp_path)
    model, tok = load_causal_lm(tmp_path, dtype="float32")
    assert not model.training
    batch = tokenize(tok, ["hello"])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, ref(**batch).logits)
    del model
    before = count_live_models()
    with loaded_model(tmp_path) as (m2, _tok2):
        assert count_live_models() == before + 1
        assert isinstance(m2, nn.Module)
        del m2
    gc.collect()
    assert count_live_models() == before
    with pytest.raises(ValueError, match="either device or device_map"):
        load_causal_lm(tmp_path, device="cpu", device_map="auto")
    with pytest.raises(ValueError, match="not a torch dtype"):
        load_causal_lm(tmp_path, dtype="float77")


def test_public_names_exported():
    for name in ("load_causal_lm", "get_blocks", "interventions", "collect_activations"):
        assert callable(getattr(mmie, name))


def test_free_memory_collects_only_with_cuda_or_when_asked(monkeypatch):
    from mmie.models import loading

    calls: list[int] = []
    monkeypatch.setattr(loading.gc, "collect", lambda: calls.append(1) or 0)
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    mmie.free_memory()
    assert len(calls) == (1 if cuda else 0)
    mmie.free_memory(collect=True)
    mmie.free_memory(collect=False)
    assert len(calls) == (2 if cuda else 1)
