"""Linear probes against scipy's optimiser and separable/null data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch

from mmie.evaluation.probes import _fit_logistic, probe_auc


def test_logistic_fit_matches_scipy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(40, generator=g, dtype=torch.float64) > 0).double()
    w, b = _fit_logistic(x, y, l2=0.1, max_iter=200)
    xn, yn = x.numpy(), y.numpy()

    def objective(theta):
        z = xn @ theta[:5] + theta[5]
        nll = np.mean(np.logaddexp(0.0, z) - yn * z)
        return nll + 0.05 * np.sum(theta[:5] ** 2)

    ref = scipy.optimize.minimize(objective, np.zeros(6), method="BFGS", tol=1e-10).x
    np.testing.assert_allclose(w.numpy(), ref[:5], atol=1e-4)
    np.testing.assert_allclose(float(b), ref[5], atol=1e-4)


def test_probe_auc_separable_and_null():
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(40, 16, generator=g) + 2.0 * torch.eye(16)[0]
    neg = torch.randn(40, 16, generator=g) - 2.0 * torch.eye(16)[0]
    r = probe_auc(pos, neg, seed=0)
    assert r.auc > 0.95
    assert abs(r.control_auc - 0.5) < 0.3
    assert r.selectivity == pytest.approx(r.auc - r.control_auc)
    assert r.n_test == 24
    assert r.n_train == 56
    assert probe_auc(pos, neg, seed=0) == r  # deterministic given the seed
    null = probe_auc(torch.randn(40, 16, generator=g), torch.randn(40, 16, generator=g))
    assert null.auc < 0.8
    assert r.relative_to(null) == pytest.approx(r.auc - null.auc)
    assert math.isnan(probe_auc(pos, neg, control=False).control_auc)


def test_probe_auc_validation():
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match="same d_model"):
        probe_auc(x, torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2 examples per class"):
        probe_auc(x, torch.randn(1, 4))
    with pytest.raises(ValueError, match="test_fraction"):
        probe_auc(x, x, test_fraction=1.0)


def test_probe_scores_give_the_reported_auc():
    from mmie.evaluation.probes import fit_probe
    from mmie.stats import placement_values

    g = torch.Generator().manual_seed(3)
    pos = torch.randn(20, 4, generator=g) + 0.7
    neg = torch.randn(25, 4, generator=g)
    result, s_pos, s_neg = fit_probe(
        pos, neg, control=True, seed=5, test_fraction=0.3, l2=1e-2, max_iter=100
    )
    assert result == probe_auc(pos, neg, seed=5)  # the public function is this one
    assert (len(s_pos), len(s_neg)) == (6, 8)
    assert placement_values(s_pos, s_neg).mean() == pytest.approx(result.auc, abs=1e-12)


def test_study_probe_group_sees_a_scrubber_erase_the_language():
    """The ``probe`` metric group of a study, on the demo model: the scrubber's layer."""
    from mmie.edits.scrubber import fit_scrubber
    from mmie.study.config import demo_config
    from mmie.study.demo import load_demo_model
    from mmie.study.suite import evaluate_model, load_eval_sets

    config = demo_config(
        metrics=("probe",),
        data={"n_forget": 48, "n_retain": 48, "n_eval": 40, "n_eval_texts": 40},
    )
    sets = load_eval_sets(config)
    model, tok = load_demo_model()
    base, generations = evaluate_model(model, tok, sets, config, probe_layers=[1, 2])
    assert generations == {}  # nothing generated for a probe-only study
    assert sorted(base) == ["probe_auc.1", "probe_auc.2"]
    for record in base.values():
        assert record.value > 0.95  # Hindi and English are linearly separable
        assert len(record.per_item) == 12  # 30% of 40 held-out forget texts
        assert np.mean(record.per_item) == pytest.approx(record.value, abs=1e-12)
        assert 0.0 <= record.extra["control_auc"] <= 1.0
    scrubber = fit_scrubber(
        model, tok, {"retain": sets.retain_train, "forget": sets.forget_train}, [1]
    )
    with scrubber:
        scrubbed, _ = evaluate_model(model, tok, sets, config, probe_layers=[1, 2])
    assert scrubbed["probe_auc.1"].value < base["probe_auc.1"].value - 0.1  # 0.80 vs 1
    assert evaluate_model(model, tok, sets, config)[0] == {}  # no layers: the group is skipped
