"""Perplexity, token KL and detached() against manual sums and a second model copy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmie
from lm_reference import TEXTS, token_logprobs
from mmie.evaluation.scoring import perplexity, score_texts, token_kl
from mmie.models.hooks import BlockIntervention, assert_no_mmie_hooks, detached
from mmie.testing import byte_tokenizer, tiny_causal_lm


# ---------------------------------------------------------------------- perplexity
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_perplexity_matches_manual_sum_and_batch_size(arch, tokenizer):
    model = tiny_causal_lm(arch, seed=0)
    lps = [token_logprobs(model, tokenizer, t) for t in TEXTS]
    total_nll = -sum(float(lp.sum()) for lp in lps)
    total_tokens = sum(lp.numel() for lp in lps)
    r1 = perplexity(model, tokenizer, TEXTS, batch_size=1)
    r8 = perplexity(model, tokenizer, TEXTS, batch_size=8)
    assert r1.n_tokens == r8.n_tokens == tuple(lp.numel() for lp in lps)
    np.testing.assert_allclose(r1.perplexity, math.exp(total_nll / total_tokens), rtol=1e-5)
    np.testing.assert_allclose(r8.perplexity, r1.perplexity, rtol=1e-6)
    np.testing.assert_allclose(r8.nll, [-float(lp.sum()) for lp in lps], rtol=1e-5)
    np.testing.assert_allclose(r8.mean_nll, math.log(r8.perplexity), rtol=1e-12)
    np.testing.assert_allclose(
        r8.item_perplexity, [math.exp(-float(lp.mean())) for lp in lps], rtol=1e-5
    )


# The model is only read, never changed, so one instance may serve every example.
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    others=st.lists(st.text(alphabet="abcdefgh नमस्ते", min_size=1, max_size=30), max_size=5),
    position=st.integers(0, 5),
)
def test_perplexity_padding_invariance(model, tokenizer, others, position):
    text = "the quick brown fox"
    alone = perplexity(model, tokenizer, [text])
    batch = list(others)
    batch.insert(min(position, len(batch)), text)
    together = perplexity(model, tokenizer, batch, batch_size=len(batch))
    i = batch.index(text)
    assert together.n_tokens[i] == alone.n_tokens[0]
    np.testing.assert_allclose(together.nll[i], alone.nll[0], rtol=1e-5)


def test_perplexity_validation(model, tokenizer):
    with pytest.raises(ValueError, match="texts must not be empty"):
        perplexity(model, tokenizer, [])
    with pytest.raises(TypeError, match="not a single string"):
        perplexity(model, tokenizer, "hello")
    with pytest.raises(ValueError, match="batch_size"):
        perplexity(model, tokenizer, ["ab"], batch_size=0)
    with pytest.raises(ValueError, match="no predicted token"):
        perplexity(model, tokenizer, ["a", "b"])


# ---------------------------------------------------------------------- token KL
def _manual_kl(model, reference, tokenizer, text):
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        p = torch.log_softmax(reference(input_ids=ids).logits[0].double(), -1)
        q = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return [float((p[t].exp() * (p[t] - q[t])).sum()) for t in range(ids.shape[1])]


def test_token_kl_matches_manual_sum(model, other, tokenizer):
    per_text = [_manual_kl(model, other, tokenizer, t) for t in TEXTS]
    r = token_kl(model, other, tokenizer, TEXTS, batch_size=3)
    assert r.n_tokens == tuple(len(v) for v in per_text)
    np.testing.assert_allclose(r.values, [np.mean(v) for v in per_text], rtol=1e-4)
    flat = [x for v in per_text for x in v]
    np.testing.assert_allclose(r.kl, np.mean(flat), rtol=1e-4)
    # direction: KL(p_ref || p_model), not the reverse
    rev = token_kl(other, model, tokenizer, TEXTS)
    assert abs(rev.kl - r.kl) > 1e-6
    assert token_kl(model, model, tokenizer, TEXTS).kl == pytest.approx(0.0, abs=1e-7)


class _Shift(BlockIntervention):
    """Adds a constant vector to block 0's output (a stand-in for a hook-based arm)."""

    def _build_edits(self):
        shift = torch.linspace(-1.0, 1.0, 32)
        return [(0, lambda h: h + shift)]


def test_token_kl_reference_context_uses_same_weights(model, tokenizer):
    arm = _Shift(model)
    with arm:
        got = token_kl(model, lambda: detached(arm), tokenizer, TEXTS[:4])
        assert arm.attached  # re-attached after every reference pass
        shifted = [perplexity(model, tokenizer, [t]).nll[0] for t in TEXTS[:2]]  # with the edit
    assert_no_mmie_hooks(model)
    unshifted = [perplexity(model, tokenizer, [t]).nll[0] for t in TEXTS[:2]]
    assert shifted != unshifted  # the intervention does something

    class _Hooked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, **kw):
            with _Shift(model):
                return model(**kw)

    expected = [_manual_kl(_Hooked(), model, tokenizer, t) for t in TEXTS[:4]]
    np.testing.assert_allclose(got.values, [np.mean(v) for v in expected], rtol=1e-4)


def test_token_kl_peft_disable_adapter(tokenizer):
    peft = pytest.importorskip("peft")
    base = tiny_causal_lm("llama", seed=3)
    copy = tiny_causal_lm("llama", seed=3)
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    arm = peft.get_peft_model(base, config).eval()
    got = token_kl(arm, arm.disable_adapter, tokenizer, TEXTS[:3])
    expected = token_kl(arm, copy, tokenizer, TEXTS[:3])
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-5)
    assert got.kl > 0


def test_token_kl_rejects_bad_reference(model, tokenizer):
    with pytest.raises(TypeError, match=r"reference must be an nn\.Module"):
        token_kl(model, 42, tokenizer, TEXTS)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must return a context manager"):
        token_kl(model, lambda: 3, tokenizer, TEXTS)  # type: ignore[arg-type,return-value]
    bigger = tiny_causal_lm("llama", vocab_size=300)
    with pytest.raises(ValueError, match="share a vocabulary"):
        token_kl(model, bigger, tokenizer, TEXTS[:2])


# ---------------------------------------------------------------------- one pass, several readings
SCORED = [
    "नमस्ते दुनिया",
    "a",
    "The quick brown fox jumps over the lazy dog.",
    "hello",
    "यह एक लंबा वाक्य है जो कई शब्दों से बना है",
    "ok then",
]


@settings(max_examples=10)
@given(
    order=st.permutations(range(len(SCORED))),
    batch_size=st.integers(1, 7),
    layers=st.sets(st.integers(0, 1)),
)
def test_one_scoring_pass_equals_the_separate_passes(order, batch_size, layers):
    model, tok = tiny_causal_lm("llama", seed=0), byte_tokenizer()
    texts = [SCORED[i] for i in order if SCORED[i] != "a"]  # every text has two tokens
    kw = {"batch_size": batch_size, "max_length": 256}
    got = score_texts(model, tok, texts, loss_scores=True, layers=sorted(layers), **kw)
    # perplexity and MIA loss scores: the same batches and rules, bit for bit
    assert got.perplexity == mmie.perplexity(model, tok, texts, **kw)
    assert got.loss_scores is not None
    assert got.loss_scores.tolist() == mmie.mia_scores(model, tok, texts, **kw).tolist()
    assert got.n_forward == -(-len(texts) // batch_size)
    # hidden states: collect_activations batches in input order, so equal up to rounding
    assert set(got.means) == set(layers)
    if layers:
        acts = mmie.collect_activations(model, tok, texts, sorted(layers), keep_tokens=False, **kw)
        for layer in layers:
            torch.testing.assert_close(got.means[layer], acts.means[layer], rtol=1e-5, atol=1e-6)


def test_score_texts_validates_its_layers(tokenizer):
    model, tok = tiny_causal_lm("llama", seed=0), tokenizer
    with pytest.raises(ValueError, match="out of range"):
        score_texts(model, tok, ["hello"], layers=[5])
