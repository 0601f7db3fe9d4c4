"""Activation cache, layer similarity scores and stability-selected layer choice.

:class:`ActivationCache` runs each distinct text set through the model once — one forward
pass per batch for every requested layer — and serves token-level and mean-pooled views to
layer selection, SAE training, feature picking and probes (review item 7: the original
recomputed the same activations per call and per seed).

Similarity scores compare **paired rows**: row ``i`` of ``x`` and row ``i`` of ``y`` must
describe the same item, e.g. the mean-pooled activations of a forget sentence and of its
translation in the retain language (parallel texts), or of the same text under two models
or two conditions. Comparing unpaired rows (random tokens of two text sets) measures
nothing; the original script did exactly that.

* :func:`~mmie.linear_cka` — CKA with the unbiased HSIC estimator (Song et al. 2012; Nguyen et
  al. 2021 "debiased CKA"), invariant to orthogonal transforms and isotropic scaling.
* :func:`~mmie.procrustes_distance` — squared orthogonal Procrustes distance between centred,
  unit-Frobenius-norm representations (Ding et al. 2021), in ``[0, 2]``.
* :func:`~mmie.mean_difference_cosine` — how consistently the paired differences ``x_i − y_i``
  point along their (leave-one-out) mean direction.

:func:`~mmie.select_layers` scores every candidate layer on ``stability_seeds`` random subsamples
of the cached mean activations and keeps the layers chosen most often (``"vote"``) or with
the best mean score (``"mean"``). Subsamples index the cache, so the number of model forward
passes does not depend on the number of seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from mmie._validation import integer, positive_int
from mmie.models.activations import Activations, collect_activations
from mmie.models.blocks import num_layers

__all__ = [
    "ActivationCache",
    "LayerSelection",
    "linear_cka",
    "mean_difference_cosine",
    "procrustes_distance",
    "select_layers",
]

logger = logging.getLogger(__name__)

SelectionMode = Literal["contrast", "similarity", "semantic"]
_MODES: tuple[str, ...] = ("contrast", "similarity", "semantic")


class ActivationCache:
    """Activations of text sets at several layers, each set collected once.

    The first request for a text set runs :func:`mmie.collect_activations` for *all* the
    cache's layers (one forward pass per batch, pad positions excluded); later requests for
    the same texts (same strings, same order) are served from memory. The cache assumes the
    model does not change: call :meth:`clear` after training it or attaching an
    intervention.

    Token-level activations take ``n_tokens × d_model × 4`` bytes per layer; pass
    ``keep_tokens=False`` when only mean-pooled views are needed (layer selection, probes),
    or restrict ``layers``.

    Args:
        model: a causal LM (PEFT-wrapped models work).
        tokenizer: its tokenizer (with a pad token).
        layers: block indices to collect; default every block.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).
        keep_tokens: keep token-level activations.
        block_path: dotted path of the block list for unknown architectures.

    Example:
        >>> cache = ActivationCache(model, tokenizer, layers=[4, 8])  # doctest: +SKIP
        >>> cache.means(forget_texts, 8).shape  # doctest: +SKIP
        torch.Size([200, 2048])
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        layers: Sequence[int] | None = None,
        batch_size: int = 8,
        max_length: int = 256,
        keep_tokens: bool = True,
        block_path: str | None = None,
    ) -> None:
        n_blocks = num_layers(model, block_path)
        wanted = range(n_blocks) if layers is None else layers
        chosen = tuple(sorted({int(layer) for layer in wanted}))
        if not chosen:
            raise ValueError("layers must not be empty")
        bad = [layer for layer in chosen if not 0 <= layer < n_blocks]
        if bad:
            raise ValueError(f"layers {bad} out of range [0, {n_blocks - 1}]")
        batch_size = positive_int(batch_size, "batch_size")
        self.model = model
        self.tokenizer = tokenizer
        self.layers = chosen
        self.batch_size = batch_size
        self.max_length = max_length
        self.keep_tokens = keep_tokens
        self.block_path = block_path
        self._store: dict[tuple[str, ...], Activations] = {}

    @staticmethod
    def _key(texts: Sequence[str]) -> tuple[str, ...]:
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string")
        key = tuple(texts)
        if not key:
            raise ValueError("texts must not be empty")
        return key

    def activations(self, texts: Sequence[str]) -> Activations:
        """The :class:`~mmie.Activations` of ``texts``, collected on first use."""
        key = self._key(texts)
        acts = self._store.get(key)
        if acts is None:
            acts = collect_activations(
                self.model,
                self.tokenizer,
                key,
                self.layers,
                batch_size=self.batch_size,
                max_length=self.max_length,
                keep_tokens=self.keep_tokens,
                block_path=self.block_path,
            )
            self._store[key] = acts
        return acts

    def _check_layer(self, layer: int) -> None:
        if layer not in self.layers:
            raise ValueError(f"layer {layer} is not cached; this cache holds layers {self.layers}")

    def means(self, texts: Sequence[str], layer: int) -> Tensor:
        """``[n_texts, d_model]`` mean over each text's non-pad tokens at ``layer``."""
        self._check_layer(layer)
        return self.activations(texts).means[layer]

    def tokens(self, texts: Sequence[str], layer: int) -> Tensor:
        """``[n_tokens, d_model]`` activations of every non-pad token at ``layer``.

        Raises:
            ValueError: the cache was built with ``keep_tokens=False`` or ``layer`` is not
                cached.
        """
        self._check_layer(layer)
        if not self.keep_tokens:
            raise ValueError("this cache keeps no token-level activations (keep_tokens=False)")
        return self.activations(texts).tokens[layer]

    @property
    def n_forward(self) -> int:
        """Model forward passes run by this cache so far."""
        return sum(acts.n_forward for acts in self._store.values())

    def __contains__(self, texts: object) -> bool:
        return isinstance(texts, Sequence) and tuple(texts) in self._store

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Forget every cached text set (after the model changed)."""
        self._store.clear()


# ---------------------------------------------------------------------- similarity scores
def _paired(x: Tensor, y: Tensor, *, min_rows: int) -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be tensors")
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"x and y must be 2-D [n, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have paired rows (same n), got {x.shape[0]} and {y.shape[0]} rows"
        )
    if x.shape[0] < min_rows:
        raise ValueError(f"need at least {min_rows} paired rows, got {x.shape[0]}")
    return x.detach().double().cpu(), y.detach().double().cpu()


def _hsic_unbiased(k: Tensor, l_: Tensor) -> Tensor:
    """Unbiased HSIC (Song et al. 2012, eq. 5) of two ``[n, n]`` Gram matrices."""
    n = k.shape[0]
    k = k - torch.diag(torch.diag(k))  # zero diagonal
    l_ = l_ - torch.diag(torch.diag(l_))
    trace_kl = (k * l_).sum()  # tr(K L) for symmetric K, L
    sums = k.sum() * l_.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (k.sum(0) @ l_.sum(1))  # 1ᵀ K L 1
    return (trace_kl + sums - cross) / (n * (n - 3))


def linear_cka(x: Tensor, y: Tensor, *, debiased: bool = True) -> float:
    """Linear CKA between paired representations ``x`` and ``y``.

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels ``K = x xᵀ``,
    ``L = y yᵀ`` (after centring the features). With ``debiased=True`` HSIC is the unbiased
    estimator of Song et al. (2012) — "debiased CKA" (Nguyen et al. 2021), which does not
    drift towards 1 when ``d_model ≫ n`` as the biased one does; it can fall slightly
    below 0 for unrelated representations. Invariant to orthogonal transforms and isotropic
    scaling of either side; the widths of ``x`` and ``y`` may differ. Computed in float64.

    Args:
        x: ``[n, d1]``; row ``i`` describes item ``i`` (e.g. a sentence's mean activation).
        y: ``[n, d2]``; row ``i`` describes the *same* item ``i`` (its translation, or the
            same sentence under another model/condition).
        debiased: unbiased HSIC (needs ``n >= 4``) instead of the biased ``tr(KHLH)``.

    Returns:
        The CKA (``nan`` if either side is constant).

    Raises:
        ValueError: not 2-D, different numbers of rows, or too few rows.

    Example:
        >>> x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
        >>> round(linear_cka(x, 3 * x @ torch.linalg.qr(torch.randn(8, 8))[0]), 6)
        1.0
    """
    x, y = _paired(x, y, min_rows=4 if debiased else 2)
    x = x - x.mean(0)
    y = y - y.mean(0)
    k, l_ = x @ x.T, y @ y.T  # (n, n)
    if debiased:
        xy, xx, yy = _hsic_unbiased(k, l_), _hsic_unbiased(k, k), _hsic_unbiased(l_, l_)
    else:  # features already centred, so K and L are centred Gram matrices
        xy, xx, yy = (k * l_).sum(), (k * k).sum(), (l_ * l_).sum()
    denom = torch.sqrt(xx * yy)
    if not bool(denom > 0):
        return float("nan")
    return float(xy / denom)


def procrustes_distance(x: Tensor, y: Tensor) -> float:
    """Squared orthogonal Procrustes distance between paired representations.

    Both sides are centred and scaled to unit Frobenius norm; the distance is
    ``min_Q ‖x − y Q‖²_F = 2 − 2 ‖xᵀ y‖_*`` over (semi-)orthogonal ``Q`` (Ding et al. 2021),
    in ``[0, 2]``: 0 when ``y`` is a rotation/reflection and scaling of ``x``.

    Args:
        x: ``[n, d1]`` paired with ``y`` row by row.
        y: ``[n, d2]``.

    Returns:
        The distance (``nan`` if either side is constant).

    Raises:
        ValueError: not 2-D, different numbers of rows, or fewer than 2 rows.
    """
    x, y = _paired(x, y, min_rows=2)
    x = x - x.mean(0)
    y = y - y.mean(0)
    nx, ny = torch.linalg.norm(x), torch.linalg.norm(y)
    if not bool(nx > 0 and ny > 0):
        return float("nan")
    x, y = x / nx, y / ny
    n = x.shape[0]
    if n < min(x.shape[1], y.shape[1]):
        # Singular values of xᵀy equal those of r_x r_yᵀ (thin QR of xᵀ and yᵀ): n×n work.
        r_x = torch.linalg.qr(x.T, mode="r")[1]  # (n, n)
        r_y = torch.linalg.qr(y.T, mode="r")[1]
        nuclear = torch.linalg.svdvals(r_x @ r_y.T).sum()
    else:
        nuclear = torch.linalg.svdvals(x.T @ y).sum()
    return float((2.0 - 2.0 * nuclear).clamp(0.0, 2.0))


def mean_difference_cosine(x: Tensor, y: Tensor) -> float:
    """Mean cosine between each paired difference and the mean of the others.

    With ``d_i = x_i − y_i`` this is ``mean_i cos(d_i, mean_{j≠i} d_j)`` (leave-one-out, so
    a single large difference does not agree with itself). Near 1: the shift from ``y`` to
    ``x`` is one direction shared by all items (e.g. a language direction that does not
    depend on the sentence's meaning); near 0: item-specific shifts.

    Args:
        x: ``[n, d]`` paired with ``y`` row by row (same width).
        y: ``[n, d]``.

    Returns:
        The mean cosine in ``[-1, 1]``.

    Raises:
        ValueError: shapes differ or fewer than 2 rows.
    """
    x, y = _paired(x, y, min_rows=2)
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    d = x - y  # (n, d)
    loo = (d.sum(0, keepdim=True) - d) / (d.shape[0] - 1)  # (n, d) leave-one-out means
    cos = torch.nn.functional.cosine_similarity(d, loo, dim=1, eps=1e-12)
    return float(cos.mean())


def _contrast(f: Tensor, r: Tensor) -> float:
    """Between-set over within-set spread: ``‖μ_f − μ_r‖² / ½(tr Σ_f + tr Σ_r)``."""
    gap = (f.mean(0) - r.mean(0)).pow(2).sum()
    spread = 0.5 * (f.var(0).sum() + r.var(0).sum())
    return float(gap / spread.clamp_min(1e-12))


# ---------------------------------------------------------------------- layer selection
@dataclass(frozen=True)
class LayerSelection:
    """The layers :func:`~mmie.select_layers` chose and the evidence for them.

    Attributes:
        layers: the selected layers, best first (``top_k`` of them).
        mode: the scoring mode.
        stability: ``"vote"`` or ``"mean"``.
        candidates: the layers that were scored, ascending.
        scores: per candidate, its score averaged over seeds (higher = better).
        votes: per candidate, the fraction of seeds whose top ``top_k`` contained it.
        per_seed_scores: ``[seeds][candidates]`` scores.
        n_forward: model forward passes this call ran (0 when the cache was warm).
    """

    layers: tuple[int, ...]
    mode: str
    stability: str
    candidates: tuple[int, ...]
    scores: dict[int, float]
    votes: dict[int, float]
    per_seed_scores: tuple[tuple[float, ...], ...]
    n_forward: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (layer keys as strings)."""
        out = asdict(self)
        out["scores"] = {str(k): v for k, v in self.scores.items()}
        out["votes"] = {str(k): v for k, v in self.votes.items()}
        return out


def _layer_score(mode: str, metric: str, f: Tensor, r: Tensor) -> float:
    if mode == "contrast":
        return _contrast(f, r)
    if mode == "semantic":
        return mean_difference_cosine(f, r)
    if metric == "cka":
        return 1.0 - linear_cka(f, r)
    return procrustes_distance(f, r)


def select_layers(
    source: ActivationCache | nn.Module,
    forget_texts: Sequence[str],
    retain_texts: Sequence[str],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    layers: Sequence[int] | None = None,
    mode: SelectionMode = "contrast",
    top_k: int = 1,
    stability_seeds: int = 5,
    stability: Literal["vote", "mean"] = "vote",
    subsample: float = 0.8,
    seed: int = 0,
    metric: Literal["cka", "procrustes"] = "cka",
    batch_size: int = 8,
    max_length: int = 256,
) -> LayerSelection:
    """Choose the layers where the forget language is most distinct, with stability selection.

    Every candidate layer gets a score (higher = better candidate) from the mean-pooled
    activations of the two text sets:

    * ``"contrast"`` (unpaired sets): ``‖μ_forget − μ_retain‖² / ½(tr Σ_forget + tr Σ_retain)``
      — how far apart the sets are relative to their spread (scale-free, so layers with
      larger residual norms are not favoured).
    * ``"similarity"`` (paired, parallel texts: ``forget_texts[i]`` translates
      ``retain_texts[i]``): ``1 − linear_cka`` (or the Procrustes distance with
      ``metric="procrustes"``) — where the geometry of the two languages differs most.
    * ``"semantic"`` (paired): :func:`~mmie.mean_difference_cosine` — where the shift between a
      sentence and its translation is one shared direction, i.e. language is a linear
      feature separable from meaning (what gates and erasers need).

    Stability selection: for each of ``stability_seeds`` seeds a fraction ``subsample`` of
    the items (of the pairs, in paired modes) is drawn without replacement with
    ``numpy.random.default_rng([seed, s])`` and every layer is scored on it. ``"vote"``
    ranks layers by how often they are in a seed's top ``top_k`` (ties: mean score), and
    ``"mean"`` by the mean score. The activations come from an :class:`ActivationCache`
    and subsamples only index them, so the model runs once per batch of each text set
    whatever ``stability_seeds`` is.

    Args:
        source: an :class:`ActivationCache` (reused and warmed), or a model (a cache with
            ``keep_tokens=False`` is built; ``tokenizer`` is then required).
        forget_texts: texts in the language to unlearn.
        retain_texts: texts to keep (parallel to ``forget_texts`` in paired modes).
        tokenizer: the tokenizer when ``source`` is a model.
        layers: candidate layers (default: every cached layer).
        mode: ``"contrast"``, ``"similarity"`` or ``"semantic"``.
        top_k: how many layers to select.
        stability_seeds: number of subsamples (>= 1).
        stability: ``"vote"`` or ``"mean"``.
        subsample: fraction of items per subsample, in ``(0, 1]``.
        seed: base seed of the subsamples.
        metric: ``"cka"`` or ``"procrustes"`` for ``mode="similarity"``.
        batch_size: texts per forward pass when ``source`` is a model.
        max_length: truncation length when ``source`` is a model.

    Returns:
        A :class:`LayerSelection`.

    Raises:
        TypeError: ``source`` is a model and ``tokenizer`` is missing.
        ValueError: unknown ``mode``/``stability``/``metric``, ``top_k`` larger than the
            number of candidates, paired modes with unequal set sizes, a subsample too
            small for the score, or a layer that is not cached.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if stability not in ("vote", "mean"):
        raise ValueError(f"stability must be 'vote' or 'mean', got {stability!r}")
    if metric not in ("cka", "procrustes"):
        raise ValueError(f"metric must be 'cka' or 'procrustes', got {metric!r}")
    stability_seeds = positive_int(stability_seeds, "stability_seeds")
    if not 0.0 < subsample <= 1.0:
        raise ValueError(f"subsample must be in (0, 1], got {subsample!r}")
    if isinstance(source, ActivationCache):
        cache = source
    elif isinstance(source, nn.Module):
        if tokenizer is None:
            raise TypeError("tokenizer is required when source is a model")
        cache = ActivationCache(
            source,
            tokenizer,
            layers=layers,
            batch_size=batch_size,
            max_length=max_length,
            keep_tokens=False,
        )
    else:
        raise TypeError(
            f"source must be an ActivationCache or a model, got {type(source).__name__}"
        )
    candidates = tuple(sorted({int(layer) for layer in (layers or cache.layers)}))
    missing = [layer for layer in candidates if layer not in cache.layers]
    if missing:
        raise ValueError(f"layers {missing} are not cached; the cache holds {cache.layers}")
    top_k = integer(top_k, "top_k", minimum=1, maximum=len(candidates))
    paired = mode != "contrast"
    n_f, n_r = len(forget_texts), len(retain_texts)
    if paired and n_f != n_r:
        raise ValueError(
            f"mode={mode!r} compares parallel texts: forget_texts and retain_texts must have "
            f"the same length (pair i with i), got {n_f} and {n_r}"
        )
    min_items = 4 if (mode == "similarity" and metric == "cka") else 2
    m_f, m_r = max(1, round(subsample * n_f)), max(1, round(subsample * n_r))
    if min(m_f, m_r) < min_items:
        raise ValueError(
            f"subsample={subsample} of {min(n_f, n_r)} texts leaves {min(m_f, m_r)} per set; "
            f"mode={mode!r} needs at least {min_items}"
        )

    before = cache.n_forward
    forget = {layer: cache.means(forget_texts, layer) for layer in candidates}
    retain = {layer: cache.means(retain_texts, layer) for layer in candidates}
    n_forward = cache.n_forward - before

    table = np.zeros((stability_seeds, len(candidates)))  # (seeds, layers)
    for s in range(stability_seeds):
        rng = np.random.default_rng([seed, s])
        idx_f = torch.from_numpy(np.sort(rng.choice(n_f, m_f, replace=False)))
        idx_r = idx_f if paired else torch.from_numpy(np.sort(rng.choice(n_r, m_r, replace=False)))
        for j, layer in enumerate(candidates):
            f = forget[layer][idx_f].double()
            r = retain[layer][idx_r].double()
            table[s, j] = _layer_score(mode, metric, f, r)
    table = np.nan_to_num(table, nan=-np.inf)
    mean_scores = table.mean(0)
    votes = np.zeros(len(candidates))
    for row in table:
        votes[np.argsort(-row, kind="stable")[:top_k]] += 1
    votes /= stability_seeds
    if stability == "vote":
        order = sorted(range(len(candidates)), key=lambda j: (-votes[j], -mean_scores[j], j))
    else:
        order = sorted(range(len(candidates)), key=lambda j: (-mean_scores[j], j))
    chosen = tuple(candidates[j] for j in order[:top_k])
    logger.info(
        "select_layers(mode=%s, %d seeds): %s (%d forward passes)",
        mode,
        stability_seeds,
        chosen,
        n_forward,
    )
    return LayerSelection(
        layers=chosen,
        mode=mode,
        stability=stability,
        candidates=candidates,
        scores={layer: float(mean_scores[j]) for j, layer in enumerate(candidates)},
        votes={layer: float(votes[j]) for j, layer in enumerate(candidates)},
        per_seed_scores=tuple(tuple(float(v) for v in row) for row in table),
        n_forward=n_forward,
    )
