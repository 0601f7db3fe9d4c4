"""Pick the SAE latents that carry a language: contrast, script-invariant and threshold pickers.

All pickers work on token-level activations (pad positions already removed, e.g.
:meth:`mmie.ActivationCache.tokens`) encoded with the SAE's *real* activation function
(TopK, JumpReLU, gated, ReLU — :meth:`mmie.SparseAutoencoder.encode`), and return a
:class:`FeatureSelection`: latent indices ranked best first, with their scores, ready for
:class:`mmie.SAEGate`. A latent *fires* on a token when its activation is ``> 0``.

Summary statistics are computed once per text set by :func:`~mmie.feature_stats`; every picker
also accepts a precomputed :class:`FeatureStats` in place of activations, so several pickers
can share one encoding pass.

SAE reconstruction quality (FVU, mean L0, dead fraction) is :func:`mmie.sae_quality`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor

from mmie._validation import positive_int
from mmie.sae.model import SparseAutoencoder

__all__ = [
    "FeatureSelection",
    "FeatureStats",
    "contrast_features",
    "feature_stats",
    "script_invariant_features",
    "threshold_features",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Per-latent firing statistics of an SAE on a set of tokens.

    Attributes:
        frequency: ``[d_sae]`` fraction of tokens on which the latent fires (``f > 0``).
        mean: ``[d_sae]`` mean activation over all tokens (``E[f]``, zeros included).
        mean_active: ``[d_sae]`` mean activation over the tokens where it fires (0 if never).
        n_tokens: number of tokens.
    """

    frequency: Tensor
    mean: Tensor
    mean_active: Tensor
    n_tokens: int


Activity: TypeAlias = Tensor | FeatureStats
"""Token activations ``[n_tokens, d_in]`` or their precomputed :class:`FeatureStats`."""


@dataclass(frozen=True)
class FeatureSelection:
    """Latents chosen by a picker, best first.

    Attributes:
        indices: latent indices, ranked by decreasing score.
        scores: the score of each selected latent (same order).
        method: the picker's name.
        threshold: the firing-rate threshold used (threshold picker) or ``None``.
    """

    indices: tuple[int, ...]
    scores: tuple[float, ...]
    method: str
    threshold: float | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def as_tensor(self) -> Tensor:
        """The indices as a ``LongTensor``."""
        return torch.tensor(self.indices, dtype=torch.long)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {
            "indices": list(self.indices),
            "scores": list(self.scores),
            "method": self.method,
            "threshold": self.threshold,
        }


@torch.no_grad()
def feature_stats(
    sae: SparseAutoencoder, activations: Tensor, *, batch_size: int = 4096
) -> FeatureStats:
    """Firing frequency and mean activations of every latent on ``activations``.

    Args:
        sae: the SAE.
        activations: ``[n_tokens, d_in]`` token activations (pad positions removed).
        batch_size: tokens encoded at once (moved to the SAE's device).

    Returns:
        A :class:`FeatureStats` (fp64 CPU tensors).

    Raises:
        ValueError: ``activations`` is not ``[n_tokens >= 1, d_in]`` or ``batch_size < 1``.
    """
    if not isinstance(activations, Tensor):
        raise TypeError(f"activations must be a tensor, got {type(activations).__name__}")
    if activations.ndim != 2 or activations.shape[1] != sae.d_in or activations.shape[0] < 1:
        raise ValueError(
            f"activations must be [n_tokens >= 1, d_in={sae.d_in}], got {tuple(activations.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = sae.W_dec.device
    fires = torch.zeros(sae.d_sae, dtype=torch.float64)
    total = torch.zeros(sae.d_sae, dtype=torch.float64)
    for start in range(0, activations.shape[0], batch_size):
        f = sae.encode(activations[start : start + batch_size].to(device))  # (b, d_sae)
        fires += (f > 0).sum(0).double().cpu()
        total += f.double().sum(0).cpu()
    n = activations.shape[0]
    return FeatureStats(
        frequency=fires / n,
        mean=total / n,
        mean_active=torch.where(fires > 0, total / fires.clamp_min(1.0), torch.zeros_like(total)),
        n_tokens=n,
    )


def _stats(sae: SparseAutoencoder, acts: Activity, name: str, batch_size: int) -> FeatureStats:
    if isinstance(acts, FeatureStats):
        if acts.frequency.shape != (sae.d_sae,):
            raise ValueError(
                f"{name} has statistics for {acts.frequency.numel()} latents, SAE has {sae.d_sae}"
            )
        return acts
    if isinstance(acts, Tensor):
        return feature_stats(sae, acts, batch_size=batch_size)
    raise TypeError(
        f"{name} must be a tensor [n_tokens, d_in] or FeatureStats, got {type(acts).__name__}"
    )


def _top(
    scores: Tensor, keep: Tensor, top_k: int | None
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Indices with ``keep`` and a positive score, by decreasing score (ties: lower index)."""
    if top_k is not None:
        top_k = positive_int(top_k, "top_k")
    ok = keep & (scores > 0)
    idx = ok.nonzero().flatten()
    vals = scores[idx]
    order = np.lexsort((idx.numpy(), -vals.numpy()))  # primary: -score, secondary: index
    if top_k is not None:
        order = order[:top_k]
    return tuple(int(idx[i]) for i in order), tuple(float(vals[i]) for i in order)


def _rate(value: float | None, name: str) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] or None, got {value!r}")
    return value


def contrast_features(
    sae: SparseAutoencoder,
    forget: Activity,
    retain: Activity,
    *,
    top_k: int | None = 32,
    max_retain_frequency: float | None = 0.01,
    min_forget_frequency: float = 0.0,
    batch_size: int = 4096,
) -> FeatureSelection:
    """Latents that write more to the residual stream on forget tokens than on retain tokens.

    ``score_i = (E_forget[f_i] − E_retain[f_i]) · ‖W_dec[i]‖``: the mean activation
    combines firing frequency and magnitude (``E[f] = P(f > 0) · E[f | f > 0]``), and the
    decoder norm turns it into the norm of what the latent adds to the residual stream.
    Retain-firing filter: latents firing on more than ``max_retain_frequency`` of retain
    tokens are dropped (gating them would damage the retained language), as are latents
    firing on at most ``min_forget_frequency`` of forget tokens. Only positive scores are
    kept.

    Args:
        sae: the SAE of the layer.
        forget: forget-language token activations ``[n_tokens, d_in]`` or their stats.
        retain: retain-language token activations or their stats.
        top_k: keep at most this many (``None``: all that pass).
        max_retain_frequency: retain firing-rate ceiling (``None``: no filter).
        min_forget_frequency: forget firing-rate floor (exclusive).
        batch_size: tokens encoded at once.

    Returns:
        A :class:`FeatureSelection` (``method="contrast"``).

    Raises:
        ValueError: bad shapes, rates outside ``[0, 1]`` or ``top_k < 1``.
    """
    _rate(max_retain_frequency, "max_retain_frequency")
    _rate(min_forget_frequency, "min_forget_frequency")
    sf = _stats(sae, forget, "forget", batch_size)
    sr = _stats(sae, retain, "retain", batch_size)
    dec_norm = sae.W_dec.detach().double().norm(dim=1).cpu()  # (d_sae,)
    scores = (sf.mean - sr.mean) * dec_norm
    keep = sf.frequency > min_forget_frequency
    if max_retain_frequency is not None:
        keep &= sr.frequency <= max_retain_frequency
    indices, vals = _top(scores, keep, top_k)
    logger.info(
        "contrast_features: %d latents (of %d passing)",
        len(indices),
        int((keep & (scores > 0)).sum()),
    )
    return FeatureSelection(indices=indices, scores=vals, method="contrast")


def script_invariant_features(
    sae: SparseAutoencoder,
    native: Activity,
    romanised: Activity,
    gibberish: Activity,
    *,
    retain: Activity | None = None,
    top_k: int | None = 32,
    max_retain_frequency: float | None = 0.01,
    batch_size: int = 4096,
) -> FeatureSelection:
    """Latents that fire on the language in either script but not on the script alone.

    ``score_i = min(p_native, p_romanised) − max(p_gibberish, p_retain)`` where ``p`` are
    firing frequencies on: the language in its native script (Devanagari Hindi), the same
    language romanised (Latin-script Hindi), script-only gibberish (random Devanagari
    characters without Hindi words) and, optionally, retain-language text. High scores
    mean "Hindi, whatever the script" rather than "Devanagari characters": gating such
    latents also affects romanised Hindi and spares other Devanagari-script text.

    Args:
        sae: the SAE of the layer.
        native: token activations (or stats) of native-script text.
        romanised: token activations (or stats) of romanised text.
        gibberish: token activations (or stats) of script-only gibberish.
        retain: optional retain-language activations (or stats).
        top_k: keep at most this many (``None``: all with a positive score).
        max_retain_frequency: with ``retain``, drop latents firing on more than this
            fraction of retain tokens (``None``: no filter).
        batch_size: tokens encoded at once.

    Returns:
        A :class:`FeatureSelection` (``method="script_invariant"``).

    Raises:
        ValueError: bad shapes, rates outside ``[0, 1]`` or ``top_k < 1``.
    """
    _rate(max_retain_frequency, "max_retain_frequency")
    p_nat = _stats(sae, native, "native", batch_size).frequency
    p_rom = _stats(sae, romanised, "romanised", batch_size).frequency
    p_gib = _stats(sae, gibberish, "gibberish", batch_size).frequency
    against = p_gib
    keep = torch.ones(sae.d_sae, dtype=torch.bool)
    if retain is not None:
        p_ret = _stats(sae, retain, "retain", batch_size).frequency
        against = torch.maximum(p_gib, p_ret)
        if max_retain_frequency is not None:
            keep &= p_ret <= max_retain_frequency
    scores = torch.minimum(p_nat, p_rom) - against
    indices, vals = _top(scores, keep, top_k)
    return FeatureSelection(indices=indices, scores=vals, method="script_invariant")


def threshold_features(
    sae: SparseAutoencoder,
    forget: Activity,
    retain: Activity,
    *,
    quantile: float = 0.95,
    top_k: int | None = None,
    batch_size: int = 4096,
) -> FeatureSelection:
    """DSG-style threshold picker: forget firing rate above a retain-rate percentile.

    The threshold ``τ`` is the ``quantile`` (default: 95th percentile, NumPy ``linear``
    interpolation) of the retain firing rates of all ``d_sae`` latents. A latent is selected
    when it fires on more than ``τ`` of forget tokens while its own retain rate is at most
    ``τ``: it is as active on the forget language as the busiest 5% of latents are on the
    retain language, without being one of them (after the feature-selection step of
    Dynamic SAE Guardrails, Muhamed et al. 2025). Scores are ``p_forget − p_retain``.

    Args:
        sae: the SAE of the layer.
        forget: forget-language token activations (or stats).
        retain: retain-language token activations (or stats).
        quantile: the retain-rate quantile, in ``(0, 1)``.
        top_k: keep at most this many (``None``: every latent above the threshold).
        batch_size: tokens encoded at once.

    Returns:
        A :class:`FeatureSelection` (``method="threshold"``, ``threshold=τ``).

    Raises:
        ValueError: bad shapes, ``quantile`` outside ``(0, 1)`` or ``top_k < 1``.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
    sf = _stats(sae, forget, "forget", batch_size)
    sr = _stats(sae, retain, "retain", batch_size)
    tau = float(np.quantile(sr.frequency.numpy(), quantile))
    keep = (sf.frequency > tau) & (sr.frequency <= tau)
    indices, vals = _top(sf.frequency - sr.frequency, keep, top_k)
    return FeatureSelection(indices=indices, scores=vals, method="threshold", threshold=tau)
