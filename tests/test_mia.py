"""Membership inference against manual log-probabilities, scipy and brute force."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_reference import TEXTS, token_logprobs
from mmie.evaluation.mia import membership_inference, mia_auc, mia_scores


# ---------------------------------------------------------------------- membership inference
def test_mia_scores_match_manual(model, tokenizer):
    texts = TEXTS[:6]
    lps = [token_logprobs(model, tokenizer, t).numpy() for t in texts]
    loss = mia_scores(model, tokenizer, texts, attack="loss", batch_size=4)
    np.testing.assert_allclose(loss, [lp.mean() for lp in lps], rtol=1e-5)
    z = mia_scores(model, tokenizer, texts, attack="zlib", batch_size=4)
    np.testing.assert_allclose(
        z, [lp.mean() / len(zlib.compress(t.encode())) for lp, t in zip(lps, texts)], rtol=1e-5
    )
    mk = mia_scores(model, tokenizer, texts, attack="min_k", k=0.4)
    expected = [np.sort(lp)[: max(1, int(0.4 * lp.size))].mean() for lp in lps]
    np.testing.assert_allclose(mk, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="attack must be one of"):
        mia_scores(model, tokenizer, texts, attack="ratio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be in"):
        mia_scores(model, tokenizer, texts, attack="min_k", k=0.0)
    with pytest.raises(ValueError, match="fewer than two tokens"):
        mia_scores(model, tokenizer, ["a", "abc"])


finite = st.floats(-5, 5, allow_nan=False).map(lambda v: round(v, 1))  # rounding makes ties


@settings(max_examples=40, deadline=None)
@given(a=st.lists(finite, min_size=1, max_size=30), b=st.lists(finite, min_size=1, max_size=30))
def test_mia_auc_matches_mannwhitney_and_is_antisymmetric(a, b):
    r = mia_auc(a, b)
    u = scipy.stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    np.testing.assert_allclose(r.auc, u / (len(a) * len(b)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mia_auc(b, a).auc, 1.0 - r.auc, atol=1e-12)
    # TPR at FPR: brute force over every threshold (predict member iff score >= t)
    best = 0.0
    for t in [*a, *b, math.inf]:
        fpr = np.mean(np.asarray(b) >= t)
        if fpr <= 0.01:
            best = max(best, float(np.mean(np.asarray(a) >= t)))
    assert r.tpr_at_fpr == pytest.approx(best)
    assert (r.n_members, r.n_nonmembers) == (len(a), len(b))


def test_mia_auc_tpr_at_one_percent():
    rng = np.random.default_rng(0)
    non = rng.normal(size=1000)
    mem = rng.normal(loc=2.0, size=500)
    r = mia_auc(mem, non)
    eleventh = np.sort(non)[-11]  # any threshold above it has at most 10 false positives
    assert r.tpr_at_fpr == pytest.approx(np.mean(mem > eleventh))
    with pytest.raises(ValueError, match="fpr must be in"):
        mia_auc(mem, non, fpr=1.0)
    with pytest.raises(ValueError, match="member_scores must be a non-empty"):
        mia_auc([], non)
    with pytest.raises(ValueError, match="finite"):
        mia_auc([np.nan], non)


def test_membership_inference_per_example_and_disjoint(model, tokenizer):
    r = membership_inference(model, tokenizer, TEXTS[:4], TEXTS[4:8], attack="loss")
    assert len(r.member_scores) == 4
    assert len(r.nonmember_scores) == 4
    assert r.auc == pytest.approx(mia_auc(r.member_scores, r.nonmember_scores).auc)
    assert r.attack == "loss"
    with pytest.raises(ValueError, match="both members and non-members"):
        membership_inference(model, tokenizer, TEXTS[:4], TEXTS[3:6])
