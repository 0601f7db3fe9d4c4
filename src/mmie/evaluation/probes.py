"""Linear probes: held-out AUC of a logistic-regression probe with a shuffled-label control.

The probe is L2-regularised logistic regression fitted by L-BFGS in float64 torch (no
scikit-learn); its AUC comes from ranks like the membership-inference AUC
(:func:`mmie.mia_auc`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmie.stats import rank_auc

__all__ = [
    "ProbeResult",
    "probe_auc",
]


@dataclass(frozen=True)
class ProbeResult:
    """Held-out AUC of a logistic-regression probe, with a shuffled-label control.

    Attributes:
        auc: test AUC of the probe on the true labels.
        control_auc: test AUC of the same pipeline trained on shuffled labels (``nan``
            without a control); near 0.5 unless the probe memorises.
        selectivity: ``auc − control_auc`` (Hewitt & Liang 2019).
        n_train: training examples.
        n_test: test examples.
    """

    auc: float
    control_auc: float
    selectivity: float
    n_train: int
    n_test: int

    def relative_to(self, base: ProbeResult) -> float:
        """``auc − base.auc``: change versus the same probe on the base model's activations.

        Erasing a language should bring this towards ``0.5 − base.auc`` (chance); a probe
        that separates Hindi from English on both models says nothing about erasure.
        """
        return self.auc - base.auc

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def _fit_logistic(x: Tensor, y: Tensor, *, l2: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """L2-regularised logistic regression by L-BFGS from zero (deterministic)."""
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _probe_test_scores(
    x: Tensor, y: Tensor, train: Tensor, test: Tensor, *, l2: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fit on ``train``; return the probe's logits on the positive and negative test items."""
    xtr = x[train]
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)  # standardise with train statistics
    w, b = _fit_logistic((xtr - mu) / sd, y[train], l2=l2, max_iter=max_iter)
    s = (((x[test] - mu) / sd) @ w + b).numpy()
    yt = y[test].numpy().astype(bool)
    return s[yt], s[~yt]


def probe_auc(
    acts_pos: Tensor,
    acts_neg: Tensor,
    *,
    control: bool = True,
    seed: int = 0,
    test_fraction: float = 0.3,
    l2: float = 1e-2,
    max_iter: int = 100,
) -> ProbeResult:
    """Held-out AUC of a logistic-regression probe separating two sets of activations.

    The data are split per class (stratified) with ``numpy.random.default_rng(seed)``;
    features are standardised with training statistics; the probe is L2-regularised
    logistic regression fitted by L-BFGS in float64 torch (no scikit-learn). The control
    task refits the same pipeline on labels shuffled with the same generator and the same
    split, so ``selectivity = auc − control_auc`` discounts what a probe of this capacity
    gets from memorising.

    Use it on mean-pooled activations (``Activations.means``, pad positions excluded). An
    absolute AUC says little about erasure: Hindi and English activations are separable on
    any model because their tokens differ. Run the same probe (same texts, same seed) on the
    base model's and on the arm's activations and report the change with
    :meth:`ProbeResult.relative_to`, next to the control; erasure at a layer shows as a
    drop of ``auc`` towards ``control_auc``.

    Args:
        acts_pos: ``[n_pos, d_model]`` activations of the positive class.
        acts_neg: ``[n_neg, d_model]`` activations of the negative class.
        control: also run the shuffled-label control.
        seed: seed of the split and the shuffle.
        test_fraction: fraction of each class held out (at least one per class).
        l2: L2 penalty on the weights (on standardised features).
        max_iter: L-BFGS iterations.

    Returns:
        A :class:`ProbeResult`.

    Raises:
        ValueError: not 2-D, different widths, fewer than 2 examples per class, or
            ``test_fraction`` outside ``(0, 1)``.
    """
    result, _, _ = fit_probe(
        acts_pos,
        acts_neg,
        control=control,
        seed=seed,
        test_fraction=test_fraction,
        l2=l2,
        max_iter=max_iter,
    )
    return result


def fit_probe(
    acts_pos: Tensor,
    acts_neg: Tensor,
    *,
    control: bool,
    seed: int,
    test_fraction: float,
    l2: float,
    max_iter: int,
) -> tuple[ProbeResult, np.ndarray, np.ndarray]:
    """:func:`probe_auc` plus the probe's logits on the held-out positive and negative items
    (in input order within each class), from which the AUC is computed."""
    if acts_pos.ndim != 2 or acts_neg.ndim != 2 or acts_pos.shape[1] != acts_neg.shape[1]:
        raise ValueError(
            "acts_pos and acts_neg must be [n, d_model] with the same d_model, got "
            f"{tuple(acts_pos.shape)} and {tuple(acts_neg.shape)}"
        )
    if min(acts_pos.shape[0], acts_neg.shape[0]) < 2:
        raise ValueError("probe_auc needs at least 2 examples per class")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    x = torch.cat([acts_pos, acts_neg]).detach().double().cpu()  # (n, d_model)
    n_pos, n = acts_pos.shape[0], x.shape[0]
    y = torch.cat([torch.ones(n_pos), torch.zeros(n - n_pos)]).double()
    test_idx: list[int] = []
    for members in (np.arange(n_pos), np.arange(n_pos, n)):
        n_test = min(len(members) - 1, max(1, round(test_fraction * len(members))))
        test_idx.extend(rng.permutation(members)[:n_test].tolist())
    is_test = torch.zeros(n, dtype=torch.bool)
    is_test[test_idx] = True
    train, test = (~is_test).nonzero().flatten(), is_test.nonzero().flatten()
    s_pos, s_neg = _probe_test_scores(x, y, train, test, l2=l2, max_iter=max_iter)
    auc = rank_auc(s_pos, s_neg)
    control_auc = math.nan
    if control:
        # Shuffle labels within the training and within the test split: the labels are
        # then independent of x, and each split keeps its class counts (both classes in test).
        y_shuffled = y.clone()
        for part in (train, test):
            y_shuffled[part] = y[part][torch.from_numpy(rng.permutation(part.numel()))]
        control_auc = rank_auc(
            *_probe_test_scores(x, y_shuffled, train, test, l2=l2, max_iter=max_iter)
        )
    result = ProbeResult(
        auc=auc,
        control_auc=control_auc,
        selectivity=auc - control_auc,
        n_train=int(train.numel()),
        n_test=int(test.numel()),
    )
    return result, s_pos, s_neg
