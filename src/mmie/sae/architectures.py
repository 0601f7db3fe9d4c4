"""The one table of SAE architectures: their tensors and their activation functions.

Both :meth:`mmie.SparseAutoencoder.encode` and the :class:`mmie.SAEGate`'s per-layer plan
compute latent activations with :func:`activate` (and :func:`topk_select` for TopK), so the
gate can never disagree with the SAE it gates. For the element-wise architectures (relu,
jumprelu, gated) :func:`activate` may be applied to any subset of the latents' columns,
which is what lets the gate compute only the latents it attenuates.

============  =====================================================  ==================
architecture  activation ``f`` of pre-activation ``p``                extra tensors
============  =====================================================  ==================
topk          the ``k`` largest entries of ``p`` after ReLU, else 0  --
relu          ``ReLU(p)``                                            --
jumprelu      ``ReLU(p) · 1[p > θ]`` (compared in fp32)               ``threshold`` θ
gated         ``ReLU(p_mag) · 1[p_gate > 0]``                         ``b_gate, r_mag,
                                                                     b_mag``
============  =====================================================  ==================
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ELEMENTWISE", "TENSOR_SHAPES", "activate", "topk_select"]

#: Architectures whose activation acts on each latent separately (any column subset works).
ELEMENTWISE: tuple[str, ...] = ("relu", "jumprelu", "gated")

#: Tensor names per architecture (SAELens names) and the dimensions of their shapes.
TENSOR_SHAPES: dict[str, dict[str, tuple[str, ...]]] = {
    "relu": {
        "W_enc": ("d_in", "d_sae"),
        "b_enc": ("d_sae",),
        "W_dec": ("d_sae", "d_in"),
        "b_dec": ("d_in",),
    },
    "topk": {
        "W_enc": ("d_in", "d_sae"),
        "b_enc": ("d_sae",),
        "W_dec": ("d_sae", "d_in"),
        "b_dec": ("d_in",),
    },
    "jumprelu": {
        "W_enc": ("d_in", "d_sae"),
        "b_enc": ("d_sae",),
        "W_dec": ("d_sae", "d_in"),
        "b_dec": ("d_in",),
        "threshold": ("d_sae",),
    },
    "gated": {
        "W_enc": ("d_in", "d_sae"),
        "b_gate": ("d_sae",),
        "r_mag": ("d_sae",),
        "b_mag": ("d_sae",),
        "W_dec": ("d_sae", "d_in"),
        "b_dec": ("d_in",),
    },
}


def activate(
    architecture: str,
    pre: Tensor,
    *,
    threshold: Tensor | None = None,
    gate_pre: Tensor | None = None,
) -> Tensor:
    """Latent activations of an element-wise architecture from its pre-activations.

    Args:
        architecture: ``"relu"``, ``"jumprelu"`` or ``"gated"`` (TopK: :func:`topk_select`).
        pre: ``[..., n]`` pre-activations (for gated SAEs the magnitude path).
        threshold: ``[n]`` JumpReLU thresholds (compared in fp32).
        gate_pre: ``[..., n]`` gated SAEs' gate-path pre-activations.

    Returns:
        ``[..., n]`` non-negative activations in ``pre``'s dtype.

    Raises:
        ValueError: an unknown architecture or a missing extra tensor.
    """
    if architecture == "relu":
        return torch.relu(pre)
    if architecture == "jumprelu":
        if threshold is None:
            raise ValueError("a jumprelu activation needs threshold")
        keep = pre.float() > threshold.float()  # fp32 comparison whatever the dtype
        return torch.relu(pre) * keep.to(pre.dtype)
    if architecture == "gated":
        if gate_pre is None:
            raise ValueError("a gated activation needs gate_pre")
        return torch.relu(pre) * (gate_pre > 0).to(pre.dtype)
    raise ValueError(
        f"activate() handles the element-wise architectures {ELEMENTWISE}, got "
        f"{architecture!r} (use topk_select for topk)"
    )


def topk_select(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The TopK SAE's active latents: indices of the ``k`` largest pre-activations and their
    ReLU values.

    Args:
        pre: ``[..., d_sae]`` pre-activations.
        k: latents kept per token.

    Returns:
        ``(indices [..., k] long, values [..., k])``; every other latent is 0.
    """
    top = pre.topk(k, dim=-1)
    return top.indices, torch.relu(top.values)
