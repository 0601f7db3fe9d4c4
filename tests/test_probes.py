"""Linear probes against scipy's optimiser and separable/null data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch

from mmie.probes import _fit_logistic, probe_auc


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
