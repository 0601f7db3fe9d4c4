"""SAE feature pickers against hand-built SAEs and manual statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmie.sae.config import SAEConfig
from mmie.sae.features import (
    FeatureStats,
    contrast_features,
    feature_stats,
    script_invariant_features,
    threshold_features,
)
from mmie.sae.model import SparseAutoencoder

D = 6


def _identity_sae(decoder_norms=None):
    """A ReLU SAE with ``f(x) = relu(x)`` and decoder row norms ``decoder_norms``."""
    norms = torch.ones(D) if decoder_norms is None else torch.as_tensor(decoder_norms).float()
    cfg = SAEConfig(architecture="relu", d_in=D, d_sae=D, apply_b_dec_to_input=False)
    return SparseAutoencoder.from_tensors(
        cfg,
        {
            "W_enc": torch.eye(D),
            "W_dec": torch.diag(norms),
            "b_enc": torch.zeros(D),
            "b_dec": torch.zeros(D),
        },
    )


def _tokens(rates, magnitudes, n=200, seed=0):
    """``n`` tokens where latent ``i`` fires (value ``magnitudes[i]``) with ``rates[i]``."""
    g = torch.Generator().manual_seed(seed)
    fires = torch.rand(n, D, generator=g) < torch.tensor(rates)
    return torch.where(fires, torch.tensor(magnitudes).float(), -torch.ones(n, D))


def test_feature_stats_match_manual_topk():
    cfg = SAEConfig(architecture="topk", d_in=D, d_sae=10, k=2)
    sae = SparseAutoencoder(cfg, seed=1)
    x = torch.randn(50, D, generator=torch.Generator().manual_seed(0))
    stats = feature_stats(sae, x, batch_size=7)
    p = (x - sae.b_dec) @ sae.W_enc + sae.b_enc  # (50, 10)
    top = p.topk(2, dim=-1)
    f = torch.zeros_like(p).scatter(-1, top.indices, top.values.relu()).detach().double()
    torch.testing.assert_close(stats.frequency, (f > 0).double().mean(0))
    torch.testing.assert_close(stats.mean, f.mean(0))
    active = torch.where(f > 0, f, torch.nan)
    expected_active = torch.nan_to_num(torch.nanmean(active, 0), nan=0.0)
    torch.testing.assert_close(stats.mean_active, expected_active)
    assert stats.n_tokens == 50
    assert int((f > 0).sum(-1).max()) <= 2  # the real TopK activation, not ReLU


def test_contrast_picks_forget_features_and_filters_retain_firing():
    sae = _identity_sae(decoder_norms=[1, 1, 1, 2, 1, 1])
    #        latent:  0    1    2    3    4    5
    forget = _tokens([0.9, 0.9, 0.1, 0.5, 0.0, 0.3], [2, 1, 1, 1, 1, 5], seed=0)
    retain = _tokens([0.0, 0.5, 0.5, 0.0, 0.0, 0.0], [1, 1, 1, 1, 1, 1], seed=1)
    sel = contrast_features(sae, forget, retain, top_k=None, max_retain_frequency=0.01)
    sf, sr = feature_stats(sae, forget), feature_stats(sae, retain)
    scores = (sf.mean - sr.mean) * torch.tensor([1, 1, 1, 2, 1, 1]).double()
    keep = (sr.frequency <= 0.01) & (scores > 0) & (sf.frequency > 0)
    expected = sorted(keep.nonzero().flatten().tolist(), key=lambda i: -float(scores[i]))
    assert list(sel.indices) == expected
    assert 1 not in sel.indices
    assert 2 not in sel.indices
    np.testing.assert_allclose(sel.scores, scores[expected].numpy())
    assert list(sel.scores) == sorted(sel.scores, reverse=True)
    unfiltered = contrast_features(sae, forget, retain, top_k=None, max_retain_frequency=None)
    assert 1 in unfiltered.indices
    assert 2 not in unfiltered.indices
    top2 = contrast_features(sae, sf, sr, top_k=2)  # precomputed stats work too
    assert top2.indices == sel.indices[:2]
    assert top2.as_tensor().tolist() == list(top2.indices)
    assert top2.to_dict()["method"] == "contrast"


def test_threshold_picker_matches_manual_quantile():
    sae = _identity_sae()
    forget = _tokens([0.9, 0.6, 0.05, 0.5, 0.3, 0.0], [1] * D, seed=2)
    retain = _tokens([0.05, 0.6, 0.1, 0.0, 0.02, 0.0], [1] * D, seed=3)
    sel = threshold_features(sae, forget, retain, quantile=0.95)
    pf = feature_stats(sae, forget).frequency.numpy()
    pr = feature_stats(sae, retain).frequency.numpy()
    tau = np.quantile(pr, 0.95)
    assert sel.threshold == pytest.approx(tau)
    expected = [i for i in np.argsort(-(pf - pr), kind="stable") if pf[i] > tau and pr[i] <= tau]
    assert list(sel.indices) == expected
    assert 1 not in sel.indices  # above the retain percentile itself
    with pytest.raises(ValueError, match="quantile must be in"):
        threshold_features(sae, forget, retain, quantile=1.0)


def test_script_invariant_picker():
    sae = _identity_sae()
    #                   0    1    2    3    4    5
    native = _tokens([0.8, 0.8, 0.8, 0.0, 0.5, 0.6], [1] * D, seed=4)
    roman = _tokens([0.7, 0.0, 0.7, 0.8, 0.5, 0.6], [1] * D, seed=5)
    gib = _tokens([0.0, 0.0, 0.95, 0.0, 0.1, 0.0], [1] * D, seed=6)
    retain = _tokens([0.0, 0.0, 0.0, 0.0, 0.0, 0.3], [1] * D, seed=7)
    p = {
        name: feature_stats(sae, t).frequency
        for name, t in {"n": native, "r": roman, "g": gib, "e": retain}.items()
    }
    sel = script_invariant_features(sae, native, roman, gib, retain=retain, top_k=None)
    score = torch.minimum(p["n"], p["r"]) - torch.maximum(p["g"], p["e"])
    keep = (score > 0) & (p["e"] <= 0.01)
    expected = sorted(keep.nonzero().flatten().tolist(), key=lambda i: -float(score[i]))
    assert list(sel.indices) == expected
    assert 0 in sel.indices
    assert 4 in sel.indices
    assert not {1, 2, 3, 5} & set(sel.indices)  # one script only / script-only / retain
    no_retain = script_invariant_features(sae, native, roman, gib)
    assert 5 in no_retain.indices


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), top_k=st.integers(1, 6))
def test_pickers_invariant_to_token_order(seed, top_k):
    sae = _identity_sae()
    g = torch.Generator().manual_seed(seed)
    forget = torch.randn(60, D, generator=g) + 0.5
    retain = torch.randn(60, D, generator=g)
    perm = torch.randperm(60, generator=g)
    for pick in (
        lambda f, r: contrast_features(sae, f, r, top_k=top_k, max_retain_frequency=None),
        lambda f, r: threshold_features(sae, f, r, top_k=top_k),
    ):
        a, b = pick(forget, retain), pick(forget[perm], retain[perm])
        assert a.indices == b.indices
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
        assert len(a) <= top_k
        assert all(s > 0 for s in a.scores)


def test_validation():
    sae = _identity_sae()
    x = torch.randn(5, D)
    with pytest.raises(ValueError, match="activations must be"):
        feature_stats(sae, torch.randn(5, D + 1))
    with pytest.raises(TypeError, match="forget must be a tensor"):
        contrast_features(sae, [[0.0] * D], x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k must be"):
        contrast_features(sae, x, x, top_k=0)
    with pytest.raises(ValueError, match="max_retain_frequency"):
        contrast_features(sae, x, x, max_retain_frequency=2.0)
    bad = FeatureStats(torch.zeros(3), torch.zeros(3), torch.zeros(3), 1)
    with pytest.raises(ValueError, match="statistics for 3 latents"):
        contrast_features(sae, bad, x)
