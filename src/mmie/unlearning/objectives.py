"""Unlearning objectives: per-token losses with padding masked out.

Every loss here is computed from teacher-forced logits ``[batch, seq, vocab]`` of a causal
LM and the batch's ``input_ids``/``attention_mask`` ``[batch, seq]`` through
:func:`mmie.token_logprobs`, the masking rule every teacher-forced metric uses too. Padding
never contributes: a token counts as *predicted* only when it and the token before it are
both real (``attention_mask`` 1 at positions ``t`` and ``t+1``), so a batch padded on the right
(what mmie's training uses) or on the left, and with any amount of extra padding, gives the
same loss. All reductions run in fp32 whatever the logits' dtype.

The objectives (Zhang et al. 2024, "Negative Preference Optimization"; Maini et al. 2024,
"TOFU" for GA and GradDiff):

* GA (gradient ascent): minimise ``−NLL(forget)``. Unbounded below; pair it with a retain
  term.
* GradDiff: ``−NLL(forget) + NLL(retain)``.
* NPO: ``−(2/β) · mean_i log σ(−β · (log p_θ(y_i) − log p_ref(y_i)))`` with *sequence*
  log-probabilities (sums over each sequence's predicted tokens). Bounded, and equal to
  GA's gradient scaled by a weight that vanishes once the model has moved away from the
  reference.
* KL retain term: the token-mean ``KL(p_ref ‖ p_θ)`` over the non-pad positions of retain
  texts, keeping the model's next-token distributions where the reference had them.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from mmie.models.logprobs import token_logprobs

__all__ = [
    "ga_loss",
    "graddiff_loss",
    "kl_retain_loss",
    "npo_loss",
    "sequence_logprobs",
    "token_nll",
]

logger = logging.getLogger(__name__)


def sequence_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Log-probability of each sequence: the sum over its predicted (non-pad) tokens.

    Args:
        logits: ``[batch, seq, vocab]`` teacher-forced logits.
        input_ids: ``[batch, seq]`` token ids.
        attention_mask: ``[batch, seq]``, 1 for real tokens and 0 for padding.

    Returns:
        ``[batch]`` fp32 sums ``Σ_t log p(y_{t+1} | y_{≤t})`` over predicted tokens (a sequence
        with a single real token gets 0).
    """
    logp, _ = token_logprobs(logits, input_ids, attention_mask)
    return logp.sum(dim=1)


def token_nll(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Token-mean negative log-likelihood over every predicted (non-pad) token of the batch.

    Tokens are weighted equally, so a batch gives the same value however it is split or
    padded.

    Args:
        logits: ``[batch, seq, vocab]`` teacher-forced logits.
        input_ids: ``[batch, seq]`` token ids.
        attention_mask: ``[batch, seq]``, 1 for real tokens and 0 for padding.

    Returns:
        A scalar fp32 tensor ``−Σ log p / n_predicted``.

    Raises:
        ValueError: no token of the batch is predicted (every text has fewer than two real
            tokens).
    """
    logp, mask = token_logprobs(logits, input_ids, attention_mask)
    n = int(mask.sum())
    if n == 0:
        raise ValueError(
            "attention_mask leaves no predicted token: every text has fewer than 2 real tokens"
        )
    return -logp.sum() / n


def ga_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Gradient-ascent loss on forget texts: ``−NLL(forget)`` (token mean).

    Minimising it raises the forget NLL without bound; combine it with a retain term.

    Args:
        logits: ``[batch, seq, vocab]`` logits of the trained model on forget texts.
        input_ids: ``[batch, seq]`` forget token ids.
        attention_mask: ``[batch, seq]``, 1 for real tokens and 0 for padding.

    Returns:
        A scalar fp32 tensor.
    """
    return -token_nll(logits, input_ids, attention_mask)


def graddiff_loss(
    forget_logits: torch.Tensor,
    forget_ids: torch.Tensor,
    forget_mask: torch.Tensor,
    retain_logits: torch.Tensor,
    retain_ids: torch.Tensor,
    retain_mask: torch.Tensor,
    *,
    retain_nll_weight: float = 1.0,
) -> torch.Tensor:
    """Gradient difference: ``−NLL(forget) + retain_nll_weight · NLL(retain)`` (token means).

    Args:
        forget_logits: ``[batch, seq, vocab]`` logits on forget texts.
        forget_ids: ``[batch, seq]`` forget token ids.
        forget_mask: ``[batch, seq]`` forget attention mask.
        retain_logits: ``[batch', seq', vocab]`` logits on retain texts.
        retain_ids: ``[batch', seq']`` retain token ids.
        retain_mask: ``[batch', seq']`` retain attention mask.
        retain_nll_weight: weight of the retain NLL.

    Returns:
        A scalar fp32 tensor.
    """
    return ga_loss(forget_logits, forget_ids, forget_mask) + retain_nll_weight * token_nll(
        retain_logits, retain_ids, retain_mask
    )


def npo_loss(logp_model: torch.Tensor, logp_ref: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Negative preference optimisation loss on forget sequences.

    ``−(2/β) · mean_i log σ(−β · (logp_model_i − logp_ref_i))``, computed as
    ``(2/β) · softplus(β · Δ_i)`` for numerical stability. At ``logp_model == logp_ref`` each
    sequence contributes ``(2/β) · log 2``; the loss falls towards 0 as the model assigns the
    forget sequences less probability than the reference.

    Args:
        logp_model: ``[batch]`` sequence log-probabilities under the trained model (see
            :func:`sequence_logprobs`).
        logp_ref: ``[batch]`` the same under the reference (no gradient needed).
        beta: inverse temperature ``β > 0`` (0.1 in the NPO paper).

    Returns:
        A scalar fp32 tensor.

    Raises:
        ValueError: shapes differ, are not 1-D, or ``beta <= 0``.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if logp_model.dim() != 1 or logp_model.shape != logp_ref.shape:
        raise ValueError(
            "logp_model and logp_ref must both be [batch], got "
            f"{tuple(logp_model.shape)} and {tuple(logp_ref.shape)}"
        )
    delta = logp_model.float() - logp_ref.float().detach()
    return (2.0 / beta) * F.softplus(beta * delta).mean()


def kl_retain_loss(
    logits: torch.Tensor, ref_logits: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Token-mean ``KL(p_ref ‖ p_θ)`` of next-token distributions over non-pad positions.

    Direction: the reference distribution weights the log-ratio,
    ``KL = Σ_v p_ref(v) (log p_ref(v) − log p_θ(v))``, so the model is penalised most where
    the reference puts its mass (mode-covering, like the distillation loss). Every real
    position counts (also the last one: its next-token distribution is still the model's
    behaviour on retain text); padded positions never do.

    Args:
        logits: ``[batch, seq, vocab]`` logits of the trained model on retain texts.
        ref_logits: ``[batch, seq, vocab]`` the reference's logits (no gradient needed).
        attention_mask: ``[batch, seq]``, 1 for real tokens and 0 for padding.

    Returns:
        A scalar fp32 tensor ``≥ 0``.

    Raises:
        ValueError: shapes differ or the mask has no real position.
    """
    if logits.dim() != 3 or logits.shape != ref_logits.shape:
        raise ValueError(
            "logits and ref_logits must both be [batch, seq, vocab], got "
            f"{tuple(logits.shape)} and {tuple(ref_logits.shape)}"
        )
    if attention_mask.shape != logits.shape[:2]:
        raise ValueError(
            f"attention_mask must be [batch, seq] = {tuple(logits.shape[:2])}, got "
            f"{tuple(attention_mask.shape)}"
        )
    mask = attention_mask.bool()
    n = int(mask.sum())
    if n == 0:
        raise ValueError("attention_mask has no real position")
    logq = F.log_softmax(logits[mask].float(), dim=-1)  # (n, vocab)
    logp_ref = F.log_softmax(ref_logits[mask].float().detach(), dim=-1)  # (n, vocab)
    kl = (logp_ref.exp() * (logp_ref - logq)).sum(dim=-1)  # (n,)
    return kl.mean()
