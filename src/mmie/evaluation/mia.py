"""Membership inference: per-example attack scores and their rank AUC.

Scores are oriented so that **higher means "more likely a member"** and are computed per
example (never per batch) with the teacher-forced scoring of :mod:`mmie.evaluation.scoring`; AUCs
come from ranks (Mann-Whitney U, ties counted half). Members are forget texts; non-members
must be held-out texts of the same language and distribution.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from mmie._validation import positive_int, text_list
from mmie.models.blocks import input_device
from mmie.models.logprobs import batch_logprobs, forward_logits, right_padded_batches
from mmie.stats import rank_auc

__all__ = [
    "MIAResult",
    "membership_inference",
    "mia_auc",
    "mia_scores",
]

MIAAttack = Literal["loss", "zlib", "min_k"]
_ATTACKS: tuple[str, ...] = ("loss", "zlib", "min_k")


@torch.no_grad()
def mia_scores(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    attack: MIAAttack = "loss",
    k: float = 0.4,
    batch_size: int = 8,
    max_length: int | None = 1024,
) -> npt.NDArray[np.float64]:
    """Per-example membership scores; **higher means more likely a training member**.

    * ``loss`` (Yeom et al. 2018): ``−mean NLL`` of the text's predicted tokens.
    * ``zlib`` (Carlini et al. 2021): ``−mean NLL / len(zlib.compress(text))`` (bytes,
      UTF-8): texts that are easy for the model but hard for zlib look memorised.
    * ``min_k`` (Min-K% Prob, Shi et al. 2024): mean of the lowest ``max(1, ⌊k·T⌋)``
      token log-probabilities of the ``T`` predicted tokens.

    Scores are per example (never per batch), pad positions excluded.

    Args:
        model: the evaluated model.
        tokenizer: its tokenizer.
        texts: the texts, each with at least two tokens.
        attack: ``"loss"``, ``"zlib"`` or ``"min_k"``.
        k: the fraction of tokens for ``min_k`` (in ``(0, 1]``).
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).

    Returns:
        ``[n_texts]`` float64 scores in input order.

    Raises:
        ValueError: empty texts, unknown attack, ``k`` outside ``(0, 1]``, or a text with
            fewer than two tokens.
    """
    texts = text_list(texts, "texts")
    if attack not in _ATTACKS:
        raise ValueError(f"attack must be one of {_ATTACKS}, got {attack!r}")
    if not 0.0 < float(k) <= 1.0:
        raise ValueError(f"k must be in (0, 1], got {k!r}")
    batch_size = positive_int(batch_size, "batch_size")
    scores = np.zeros(len(texts), dtype=np.float64)
    device = input_device(model)
    for idx, enc in right_padded_batches(
        tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device
    ):
        logp, mask = batch_logprobs(forward_logits(model, enc), enc)
        batch_scores(logp, mask, idx, texts, scores, attack=attack, k=k)
    return scores


def batch_scores(
    logp: torch.Tensor,
    mask: torch.Tensor,
    idx: Sequence[int],
    texts: Sequence[str],
    out: npt.NDArray[np.float64],
    *,
    attack: str = "loss",
    k: float = 0.4,
) -> None:
    """Write the scores of one right-padded batch into ``out[idx]`` (:func:`mia_scores`'s
    per-example rule; also read by the study's shared scoring pass).

    Raises:
        ValueError: a text with fewer than two tokens.
    """
    for row, i in enumerate(idx):
        lp = logp[row][mask[row]].double()  # (T,)
        if lp.numel() == 0:
            raise ValueError(f"texts[{i}] has fewer than two tokens; it cannot be scored")
        if attack == "min_k":
            n_low = max(1, int(k * lp.numel()))
            out[i] = float(lp.sort().values[:n_low].mean())
        elif attack == "zlib":
            out[i] = float(lp.mean()) / len(zlib.compress(texts[i].encode("utf-8")))
        else:
            out[i] = float(lp.mean())


@dataclass(frozen=True)
class MIAResult:
    """Membership-inference AUC and TPR at a low FPR.

    Attributes:
        auc: ``P(score(member) > score(non-member)) + ½ P(tie)`` (0.5 = chance; for an
            unlearned model, close to 0.5 or below is the goal).
        tpr_at_fpr: the largest true-positive rate of a threshold ``score ≥ τ`` whose
            false-positive rate is at most ``fpr``.
        fpr: the FPR budget (0.01). With fewer than ``1/fpr`` non-members it means "no
            false positive at all".
        n_members: number of member scores.
        n_nonmembers: number of non-member scores.
        member_scores: per-member scores (empty when built from :func:`mia_auc`).
        nonmember_scores: per-non-member scores (likewise).
        attack: the attack name, if known.
    """

    auc: float
    tpr_at_fpr: float
    fpr: float
    n_members: int
    n_nonmembers: int
    member_scores: tuple[float, ...] = ()
    nonmember_scores: tuple[float, ...] = ()
    attack: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def _scores_1d(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold finite numbers")
    return arr


def mia_auc(
    member_scores: npt.ArrayLike,
    nonmember_scores: npt.ArrayLike,
    *,
    fpr: float = 0.01,
) -> MIAResult:
    """AUC (from ranks) and TPR at ``fpr`` of per-example membership scores.

    Members are the forget texts; non-members must be held-out texts of the same language
    and distribution (never retain texts of another language, which any model separates).

    Args:
        member_scores: ``[n_members]`` scores of members (higher = more member-like).
        nonmember_scores: ``[n_nonmembers]`` scores of non-members.
        fpr: false-positive-rate budget for the TPR (in ``(0, 1)``).

    Returns:
        An :class:`MIAResult` (``member_scores``/``nonmember_scores`` left empty).

    Raises:
        ValueError: empty or non-finite scores, or ``fpr`` outside ``(0, 1)``.

    Example:
        >>> r = mia_auc([0.9, 0.8, 0.4], [0.1, 0.5, 0.3])
        >>> round(r.auc, 4)
        0.8889
    """
    pos = _scores_1d(member_scores, "member_scores")
    neg = _scores_1d(nonmember_scores, "nonmember_scores")
    if not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr!r}")
    # Thresholds: every distinct score (predict member iff score >= τ) plus +inf (nothing).
    thresholds = np.unique(np.concatenate([pos, neg]))
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    fprs = (neg.size - np.searchsorted(neg_sorted, thresholds, side="left")) / neg.size
    tprs = (pos.size - np.searchsorted(pos_sorted, thresholds, side="left")) / pos.size
    ok = fprs <= fpr + 1e-12
    tpr = float(tprs[ok].max()) if ok.any() else 0.0
    return MIAResult(
        auc=rank_auc(pos, neg),
        tpr_at_fpr=tpr,
        fpr=float(fpr),
        n_members=int(pos.size),
        n_nonmembers=int(neg.size),
    )


def membership_inference(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    members: Sequence[str],
    nonmembers: Sequence[str],
    *,
    attack: MIAAttack = "loss",
    k: float = 0.4,
    fpr: float = 0.01,
    batch_size: int = 8,
    max_length: int | None = 1024,
) -> MIAResult:
    """Score members and non-members with one attack and summarise with :func:`mia_auc`.

    Args:
        model: the evaluated model.
        tokenizer: its tokenizer.
        members: the forget texts.
        nonmembers: held-out texts of the same language (not retain texts); must not share
            a text with ``members``.
        attack: ``"loss"``, ``"zlib"`` or ``"min_k"`` (see :func:`mia_scores`).
        k: fraction for ``min_k``.
        fpr: FPR budget for the TPR.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).

    Returns:
        An :class:`MIAResult` including the per-example scores.

    Raises:
        ValueError: a text is both a member and a non-member, or any error of
            :func:`mia_scores` / :func:`mia_auc`.
    """
    mem = text_list(members, "members")
    non = text_list(nonmembers, "nonmembers")
    overlap = set(mem) & set(non)
    if overlap:
        raise ValueError(
            f"{len(overlap)} text(s) are both members and non-members, e.g. "
            f"{next(iter(overlap))[:60]!r}"
        )
    kw: dict[str, Any] = {
        "attack": attack,
        "k": k,
        "batch_size": batch_size,
        "max_length": max_length,
    }
    s_mem = mia_scores(model, tokenizer, mem, **kw)
    s_non = mia_scores(model, tokenizer, non, **kw)
    r = mia_auc(s_mem, s_non, fpr=fpr)
    return MIAResult(
        auc=r.auc,
        tpr_at_fpr=r.tpr_at_fpr,
        fpr=r.fpr,
        n_members=r.n_members,
        n_nonmembers=r.n_nonmembers,
        member_scores=tuple(s_mem.tolist()),
        nonmember_scores=tuple(s_non.tolist()),
        attack=attack,
    )
