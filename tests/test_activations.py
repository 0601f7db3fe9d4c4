"""Activation collection: one forward pass per batch, pad positions excluded."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmie.models.activations import collect_activations
from mmie.models.blocks import get_block
from mmie.models.hooks import assert_no_mmie_hooks
from mmie.models.tokenization import tokenize
from mmie.testing import tiny_causal_lm

TEXTS = ["hello world", "नमस्ते", "a", "a much longer sentence than the others", "xyz"]


def _manual(model, tokenizer, text, layer):
    enc = tokenize(tokenizer, [text])
    out = {}
    h = get_block(model, layer).register_forward_hook(
        lambda _m, _a, o: out.__setitem__("h", o if isinstance(o, torch.Tensor) else o[0])
    )
    with torch.no_grad():
        model(**enc)
    h.remove()
    return out["h"][0]  # (seq, d_model)


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm("llama", num_layers=3)


def test_matches_single_text_forward_and_counts_passes(model, tokenizer):
    acts = collect_activations(model, tokenizer, TEXTS, [2, 0], batch_size=2)
    assert acts.layers == (0, 2)
    assert acts.n_forward == 3  # ceil(5 / 2), all layers at once
    assert acts.n_texts == 5
    lengths = [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    assert acts.n_tokens == sum(lengths)
    for layer in (0, 2):
        offset = 0
        for i, text in enumerate(TEXTS):
            ref = _manual(model, tokenizer, text, layer)
            got = acts.tokens[layer][offset : offset + lengths[i]]
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(acts.means[layer][i], ref.mean(0), atol=1e-5, rtol=1e-5)
            assert (acts.token_text_index[offset : offset + lengths[i]] == i).all()
            offset += lengths[i]
    assert_no_mmie_hooks(model)


@settings(max_examples=8, deadline=None)
@given(batch_size=st.integers(1, 6))
def test_batch_size_invariance(model, tokenizer, batch_size):
    ref = collect_activations(model, tokenizer, TEXTS, [1], batch_size=5)
    got = collect_activations(model, tokenizer, TEXTS, [1], batch_size=batch_size)
    torch.testing.assert_close(got.tokens[1], ref.tokens[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.means[1], ref.means[1], atol=1e-5, rtol=1e-5)


def test_forward_stops_after_deepest_layer(model, tokenizer):
    calls = []
    h = model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    try:
        collect_activations(model, tokenizer, TEXTS, [0], keep_tokens=False)
    finally:
        h.remove()
    assert calls == []


def test_validation(model, tokenizer):
    with pytest.raises(ValueError, match="texts must not be empty"):
        collect_activations(model, tokenizer, [], [0])
    with pytest.raises(ValueError, match="layers must not be empty"):
        collect_activations(model, tokenizer, TEXTS, [])
    with pytest.raises(ValueError, match=r"layer 5 out of range \[0, 2\]"):
        collect_activations(model, tokenizer, TEXTS, [5])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        collect_activations(model, tokenizer, TEXTS, [0], batch_size=0)
