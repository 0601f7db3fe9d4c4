"""Activation cache, similarity scores and stability-selected layer choice."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmie.evaluation.layer_selection import (
    ActivationCache,
    linear_cka,
    mean_difference_cosine,
    procrustes_distance,
    select_layers,
)
from mmie.models.activations import Activations, collect_activations
from mmie.models.hooks import assert_no_mmie_hooks
from mmie.testing import tiny_causal_lm

FORGET = ["नमस्ते दुनिया", "मेरा नाम राम है", "यह किताब है", "आज मौसम अच्छा है", "घर चलो", "पानी दो"]
RETAIN = [
    "hello world",
    "my name is Ram",
    "this is a book",
    "the weather is nice",
    "go home",
    "water",
]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------- CKA
def _hsic_u_statistic(k, l_):
    """Unbiased HSIC as the U-statistic of Song et al. (2012) over distinct 4-tuples."""
    n = k.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l_[i, j] + k[i, j] * l_[q, r] - 2 * k[i, j] * l_[i, q]
        count += 1
    return total / count


def test_debiased_cka_matches_u_statistic():
    x, y = _randn(7, 5, seed=1), _randn(7, 3, seed=2)
    y = y + 0.5 * x[:, :3]
    k, l_ = (x @ x.T).numpy(), (y @ y.T).numpy()
    expected = _hsic_u_statistic(k, l_) / math.sqrt(
        _hsic_u_statistic(k, k) * _hsic_u_statistic(l_, l_)
    )
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-9)


def test_biased_cka_matches_centred_hsic():
    x, y = _randn(9, 4, seed=3), _randn(9, 6, seed=4)
    h = np.eye(9) - 1 / 9
    k, l_ = h @ (x @ x.T).numpy() @ h, h @ (y @ y.T).numpy() @ h
    expected = np.trace(k @ l_) / math.sqrt(np.trace(k @ k) * np.trace(l_ @ l_))
    assert linear_cka(x, y, debiased=False) == pytest.approx(expected, rel=1e-9)


matrices = st.integers(0, 10_000).map(lambda s: _randn(12, 6, seed=s))


@settings(max_examples=20, deadline=None)
@given(x=matrices, seed=st.integers(0, 1000), scale=st.floats(0.01, 100.0))
def test_cka_invariances(x, seed, scale):
    y = x @ _randn(6, 4, seed=seed) + 0.3 * _randn(12, 4, seed=seed + 1)
    q = torch.linalg.qr(_randn(6, 6, seed=seed + 2))[0]
    base = linear_cka(x, y)
    assert linear_cka(scale * x @ q, y) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x, y * scale) == pytest.approx(base, abs=1e-9)
    assert linear_cka(y, x) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x + 3.0, y) == pytest.approx(base, abs=1e-9)  # translation
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert -0.5 <= base <= 1.0 + 1e-9


def test_debiased_cka_is_near_zero_for_unrelated_wide_data():
    x, y = _randn(40, 500, seed=5), _randn(40, 500, seed=6)
    assert abs(linear_cka(x, y)) < 0.1
    assert linear_cka(x, y, debiased=False) > 0.8  # the biased estimator drifts to 1


def test_similarity_validation():
    with pytest.raises(ValueError, match="paired rows"):
        linear_cka(_randn(5, 3), _randn(6, 3))
    with pytest.raises(ValueError, match="at least 4 paired rows"):
        linear_cka(_randn(3, 3), _randn(3, 3))
    with pytest.raises(ValueError, match="2-D"):
        procrustes_distance(_randn(5), _randn(5))
    with pytest.raises(ValueError, match="same shape"):
        mean_difference_cosine(_randn(5, 3), _randn(5, 4))
    assert math.isnan(linear_cka(torch.ones(6, 3), _randn(6, 3)))


# ---------------------------------------------------------------------- Procrustes, cosine
@settings(max_examples=20, deadline=None)
@given(x=matrices, seed=st.integers(0, 1000), scale=st.floats(0.01, 100.0))
def test_procrustes_matches_scipy_and_invariances(x, seed, scale):
    y = x + 0.5 * _randn(12, 6, seed=seed)
    xc = (x - x.mean(0)).numpy()
    yc = (y - y.mean(0)).numpy()
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    r, _ = scipy.linalg.orthogonal_procrustes(yc, xc)  # min ||yc r - xc||
    expected = np.linalg.norm(xc - yc @ r) ** 2
    d = procrustes_distance(x, y)
    assert d == pytest.approx(expected, abs=1e-9)
    q = torch.linalg.qr(_randn(6, 6, seed=seed + 1))[0]
    assert procrustes_distance(scale * x @ q, y) == pytest.approx(d, abs=1e-9)
    assert procrustes_distance(x, scale * x @ q) == pytest.approx(0.0, abs=1e-9)
    assert 0.0 <= d <= 2.0


def test_procrustes_wide_uses_small_svd_and_agrees():
    x, y = _randn(6, 50, seed=7), _randn(6, 30, seed=8)
    xc, yc = (x - x.mean(0)), (y - y.mean(0))
    xc, yc = xc / xc.norm(), yc / yc.norm()
    expected = 2 - 2 * torch.linalg.svdvals(xc.T @ yc).sum()
    assert procrustes_distance(x, y) == pytest.approx(float(expected), abs=1e-9)


def test_mean_difference_cosine_matches_loop():
    x, y = _randn(8, 5, seed=9), _randn(8, 5, seed=10)
    d = (x - y).numpy()
    cos = []
    for i in range(8):
        other = np.delete(d, i, axis=0).mean(0)
        cos.append(d[i] @ other / (np.linalg.norm(d[i]) * np.linalg.norm(other)))
    assert mean_difference_cosine(x, y) == pytest.approx(np.mean(cos), rel=1e-9)
    shift = _randn(1, 5, seed=11)
    assert mean_difference_cosine(y + shift, y) == pytest.approx(1.0)


# ---------------------------------------------------------------------- activation cache
@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm("llama", num_layers=4, seed=0)


class ForwardCounter:
    """A forward pre-hook on the model that counts full-model forward passes."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, *_args):
        self.n += 1

    def remove(self):
        self.handle.remove()


def test_cache_collects_once_and_matches_collect_activations(model, tokenizer):
    cache = ActivationCache(model, tokenizer, layers=[3, 1], batch_size=4)
    counter = ForwardCounter(model)
    try:
        m1 = cache.means(FORGET, 1)
        t3 = cache.tokens(FORGET, 3)
        cache.means(FORGET, 3)
        assert counter.n == 2 == cache.n_forward  # ceil(6 / 4) passes, both layers at once
        assert FORGET in cache
        assert len(cache) == 1
    finally:
        counter.remove()
    ref = collect_activations(model, tokenizer, FORGET, [1, 3], batch_size=4)
    torch.testing.assert_close(m1, ref.means[1])
    torch.testing.assert_close(t3, ref.tokens[3])
    with pytest.raises(ValueError, match="not cached"):
        cache.means(FORGET, 0)
    cache.clear()
    assert len(cache) == 0
    means_only = ActivationCache(model, tokenizer, layers=[1], keep_tokens=False)
    with pytest.raises(ValueError, match="keep_tokens=False"):
        means_only.tokens(FORGET, 1)
    with pytest.raises(ValueError, match="out of range"):
        ActivationCache(model, tokenizer, layers=[7])
    assert_no_mmie_hooks(model)


@pytest.mark.parametrize("mode", ["contrast", "similarity", "semantic"])
def test_select_layers_forward_passes_do_not_grow_with_seeds(model, tokenizer, mode):
    passes = {}
    for seeds in (1, 5):
        counter = ForwardCounter(model)
        try:
            sel = select_layers(
                model,
                FORGET,
                RETAIN,
                tokenizer=tokenizer,
                mode=mode,
                top_k=2,
                stability_seeds=seeds,
                subsample=0.8,
                batch_size=4,
            )
        finally:
            counter.remove()
        passes[seeds] = counter.n
        assert sel.n_forward == counter.n
        assert len(sel.per_seed_scores) == seeds
        assert len(sel.layers) == 2
    assert passes[1] == passes[5] == 4  # ceil(6/4) for each text set


def test_select_layers_reuses_a_warm_cache(model, tokenizer):
    cache = ActivationCache(model, tokenizer, batch_size=3)
    first = select_layers(cache, FORGET, RETAIN, stability_seeds=3)
    counter = ForwardCounter(model)
    try:
        again = select_layers(cache, FORGET, RETAIN, mode="semantic", stability_seeds=7)
    finally:
        counter.remove()
    assert first.n_forward == 4
    assert again.n_forward == 0 == counter.n


class _SyntheticCache(ActivationCache):
    """An ActivationCache whose activations are given (no model forward at all)."""

    def __init__(self, means_by_text_set):
        self.layers = (0, 1, 2)
        self.keep_tokens = False
        self._sets = means_by_text_set
        self._store = {}

    def activations(self, texts):
        means = self._sets[tuple(texts)]
        n = next(iter(means.values())).shape[0]
        return Activations(
            layers=self.layers,
            tokens={},
            means=means,
            token_text_index=torch.arange(n),
            n_texts=n,
            n_forward=0,
        )


def _contrast(f, r):
    return float(((f.mean(0) - r.mean(0)) ** 2).sum() / (0.5 * (f.var(0).sum() + r.var(0).sum())))


def test_select_layers_scores_and_votes_match_manual():
    n, d = 20, 8
    forget_texts = tuple(f"f{i}" for i in range(n))
    retain_texts = tuple(f"r{i}" for i in range(n))
    f = {layer: _randn(n, d, seed=layer) for layer in range(3)}
    r = {layer: _randn(n, d, seed=10 + layer) for layer in range(3)}
    f[2] = f[2] + 3.0  # layer 2 separates the sets
    f[1] = f[1] + 1.0
    cache = _SyntheticCache({forget_texts: f, retain_texts: r})
    sel = select_layers(cache, forget_texts, retain_texts, top_k=1, stability_seeds=4, seed=3)
    assert sel.layers == (2,)
    assert sel.votes[2] == 1.0
    for s in range(4):
        rng = np.random.default_rng([3, s])
        i_f = np.sort(rng.choice(n, 16, replace=False))
        i_r = np.sort(rng.choice(n, 16, replace=False))
        manual = [_contrast(f[layer][i_f], r[layer][i_r]) for layer in range(3)]
        np.testing.assert_allclose(sel.per_seed_scores[s], manual, rtol=1e-10)
    np.testing.assert_allclose(
        [sel.scores[layer] for layer in range(3)], np.mean(sel.per_seed_scores, axis=0)
    )
    by_mean = select_layers(cache, forget_texts, retain_texts, top_k=2, stability="mean")
    assert by_mean.layers == (2, 1)
    # paired modes: 1 - CKA is largest where retain is unrelated to forget
    paired = {layer: f[0] @ _randn(d, d, seed=20 + layer) for layer in range(3)}
    paired[1] = _randn(n, d, seed=99)
    cache2 = _SyntheticCache({forget_texts: {k: f[0] for k in range(3)}, retain_texts: paired})
    sim = select_layers(cache2, forget_texts, retain_texts, mode="similarity", stability_seeds=3)
    assert sim.layers == (1,)
    proc = select_layers(cache2, forget_texts, retain_texts, mode="similarity", metric="procrustes")
    assert proc.layers == (1,)
    assert set(sim.to_dict()["scores"]) == {"0", "1", "2"}


def test_select_layers_validation(model, tokenizer):
    cache = ActivationCache(model, tokenizer, layers=[0, 1], keep_tokens=False)
    with pytest.raises(ValueError, match="mode must be one of"):
        select_layers(cache, FORGET, RETAIN, mode="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same length"):
        select_layers(cache, FORGET, RETAIN[:5], mode="similarity")
    with pytest.raises(ValueError, match="top_k"):
        select_layers(cache, FORGET, RETAIN, top_k=3)
    with pytest.raises(ValueError, match="not cached"):
        select_layers(cache, FORGET, RETAIN, layers=[2])
    with pytest.raises(ValueError, match="stability_seeds"):
        select_layers(cache, FORGET, RETAIN, stability_seeds=0)
    with pytest.raises(ValueError, match="subsample"):
        select_layers(cache, FORGET, RETAIN, subsample=0.0)
    with pytest.raises(ValueError, match="needs at least 4"):
        select_layers(cache, FORGET, RETAIN, mode="similarity", subsample=0.5)
    with pytest.raises(TypeError, match="tokenizer is required"):
        select_layers(model, FORGET, RETAIN)
    assert cache.n_forward == 0  # validation happens before any forward pass
