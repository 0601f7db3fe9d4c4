"""SAE feature gating: attenuate chosen SAE latents in the residual stream.

At every gated block, every token's hidden state ``h`` becomes

    ``h ← h − α_b · Σ_{i∈S} f_i(h) · W_dec[i]``

where ``f`` is the SAE's *real* activation (TopK, ReLU, JumpReLU or gated) and ``α_b`` the
attenuation of batch row ``b`` (``α = 1`` removes the features' contribution to the SAE
reconstruction, ``α = 0`` changes nothing). Attenuation is linear in ``f``, so neither a full
decode nor an SAE error term is needed (REFERENCE.md). Cost per token: ``O(d_model · |S|)``
for relu/jumprelu/gated SAEs, which only compute the encoder columns of ``S``; a TopK SAE
needs all ``d_sae`` pre-activations to know which latents are in the top ``k``, but still
decodes only ``S``.

When the gate attaches, each layer gets a frozen *plan*: the fp32 slices of the SAE it needs
(``W_enc[:, S]``, ``b_enc[S]``, ``W_dec[S]``, ``b_dec``, ``threshold[S]``, ...) placed on that
block's own device, so the hook never moves data -- models split with ``device_map`` work.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmie._validation import boolean, integer_sequence, is_integer, unit_interval
from mmie.errors import IncompatibleModelError, InterventionError
from mmie.models.blocks import block_device, hidden_size, num_layers
from mmie.models.hooks import BlockIntervention, Edit
from mmie.sae.architectures import activate, topk_select
from mmie.sae.config import HOOK_SITES
from mmie.sae.model import SparseAutoencoder

__all__ = ["SAEGate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class _GatePlan:
    """Everything one layer's hook needs, fp32 on the block's device (built at attach)."""

    layer: int
    architecture: str
    device: torch.device
    n_features: int
    w_enc: Tensor  # (d_in, |S|); gated: (d_in, 2|S|) gate|magnitude; topk: (d_in, d_sae)
    b_enc: Tensor  # (|S|,); gated: (2|S|,) b_gate|b_mag; topk: (d_sae,)
    w_dec: Tensor  # (|S|, d_in)
    b_dec_in: Tensor | None  # (d_in,) subtracted from the input, or None
    threshold: Tensor | None  # jumprelu: (|S|,)
    k: int | None  # topk
    slot: Tensor | None  # topk: (d_sae,) long, position in S or |S| for latents outside S

    def feature_acts(self, x: Tensor) -> Tensor:
        """``f_S(x)``: ``[..., d_in]`` fp32 → ``[..., |S|]``, exactly the SAE's activation."""
        if self.b_dec_in is not None:
            x = x - self.b_dec_in
        p = x @ self.w_enc + self.b_enc  # (..., |S| or 2|S| or d_sae)
        if self.architecture == "gated":
            gate, mag = p.split(self.n_features, dim=-1)
            return activate("gated", mag, gate_pre=gate)
        if self.architecture != "topk":
            return activate(self.architecture, p, threshold=self.threshold)
        assert self.k is not None  # topk from here on
        assert self.slot is not None
        indices, values = topk_select(p, self.k)  # (..., k)
        slots = self.slot[indices]  # (..., k) in [0, |S|]; |S| is a discard slot
        out = p.new_zeros(*p.shape[:-1], self.n_features + 1)
        out.scatter_(-1, slots, values)
        return out[..., : self.n_features]


def _build_plan(
    sae: SparseAutoencoder, layer: int, features: tuple[int, ...], device: torch.device
) -> _GatePlan:
    def place(t: Tensor) -> Tensor:
        return t.detach().to(device=device, dtype=torch.float32).contiguous()

    with torch.no_grad():
        t = sae.tensors()
        idx = torch.tensor(features, dtype=torch.long, device=t["W_dec"].device)
        arch = sae.architecture
        slot = None
        threshold = None
        if arch == "topk":
            w_enc, b_enc = place(t["W_enc"]), place(t["b_enc"])
            slot = torch.full((sae.d_sae,), len(features), dtype=torch.long)
            slot[idx.cpu()] = torch.arange(len(features))
            slot = slot.to(device)
        elif arch == "gated":
            w = t["W_enc"][:, idx]
            w_mag = w * t["r_mag"][idx].exp()
            w_enc = place(torch.cat([w, w_mag], dim=1))
            b_enc = place(torch.cat([t["b_gate"][idx], t["b_mag"][idx]]))
        else:
            w_enc, b_enc = place(t["W_enc"][:, idx]), place(t["b_enc"][idx])
            if arch == "jumprelu":
                threshold = place(t["threshold"][idx])
        return _GatePlan(
            layer=layer,
            architecture=arch,
            device=device,
            n_features=len(features),
            w_enc=w_enc,
            b_enc=b_enc,
            w_dec=place(t["W_dec"][idx]),
            b_dec_in=place(t["b_dec"]) if sae.config.apply_b_dec_to_input else None,
            threshold=threshold,
            k=sae.k,
            slot=slot,
        )


class SAEGate(BlockIntervention):
    """Attenuate SAE features ``S`` at chosen layers: ``h ← h − α_b Σ_{i∈S} f_i(h) W_dec[i]``.

    A context manager (``with SAEGate(...) as gate:``) that also offers explicit, idempotent
    :meth:`~mmie.BlockIntervention.attach`/:meth:`~mmie.BlockIntervention.remove`. ``f`` is the SAE's real activation; the edit is computed in
    fp32 and the delta cast to the block's dtype. ``alpha == 0`` returns the hidden state
    itself, so logits are bit-identical to the ungated model. Works on PEFT-wrapped models,
    on models split with ``device_map`` and during cached generation (``[batch, 1, d_model]``
    steps).

    Per-sequence attenuation: :meth:`set_sequence_alpha` stores a ``[batch]`` fp32 tensor on
    each gated block's device; while set, it replaces the scalar ``alpha`` (row ``b`` of
    every gated hidden state uses ``alpha[b]``), with no Python loop over rows. Setting it
    again with the same batch size copies into the existing buffers (no allocation), which
    is what a generation-time processor does every decoding step; an α written after step
    ``t``'s forward pass acts from step ``t + 1`` on. :meth:`clear_sequence_alpha`, the
    :meth:`sequence_alpha` context manager and :meth:`~mmie.BlockIntervention.remove` drop it.

    Cost: ReLU, JumpReLU and gated SAEs compute only the encoder columns of ``S``
    (``O(d_model · |S|)`` per token). A TopK SAE needs all ``d_sae`` pre-activations to know
    its top ``k``, one fp32 ``d_model × d_sae`` matmul per token; on a GPU that matmul runs
    without tensor cores unless TF32 is allowed
    (``torch.set_float32_matmul_precision("high")``), which makes it several times faster
    at the price of ties within TF32's precision (see the benchmarks page).

    Args:
        model: the model to gate (PEFT-wrapped models work).
        saes: ``layer -> SparseAutoencoder`` reading that block's output.
        features: ``layer -> latent indices S`` to attenuate; every layer must have an SAE.
        alpha: attenuation in ``[0, 1]`` used when no per-sequence alpha is set.
        block_path: dotted path of the block list for unknown architectures.
        allow_other_sites: gate with SAEs whose hook site
            (:attr:`mmie.SAEConfig.hook_site`) is not the residual stream at a block output
            -- an SAE trained on ``hook_mlp_out``, an attention output or ``hook_z``. The
            gate reads and edits block outputs, so such an SAE's latents would be computed
            from the wrong activations; only pass it knowing they are the same. SAEs without
            a hook name are accepted either way.

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]``, an empty or out-of-range feature list,
            duplicate features, a layer that does not exist, or an SAE of another hook
            site without ``allow_other_sites``.
        TypeError: arguments of the wrong type.
        IncompatibleModelError: an SAE's ``d_in`` differs from the model's hidden size.

    Example:
        >>> with SAEGate(model, {6: sae}, {6: [12, 407]}, alpha=0.8):  # doctest: +SKIP
        ...     out = model.generate(**batch)
    """

    def __init__(
        self,
        model: nn.Module,
        saes: Mapping[int, SparseAutoencoder],
        features: Mapping[int, Sequence[int]],
        *,
        alpha: float = 1.0,
        block_path: str | None = None,
        allow_other_sites: bool = False,
    ) -> None:
        super().__init__(model, block_path=block_path)
        if not isinstance(saes, Mapping) or not isinstance(features, Mapping):
            raise TypeError("saes and features must be mappings keyed by layer index")
        if not features:
            raise ValueError("features must name at least one layer")
        allow_other_sites = boolean(allow_other_sites, "allow_other_sites")
        n_blocks = num_layers(model, block_path)
        d_model = hidden_size(model)
        chosen: dict[int, tuple[int, ...]] = {}
        chosen_saes: dict[int, SparseAutoencoder] = {}
        for layer, feats in features.items():
            if not is_integer(layer):
                raise TypeError(f"features keys must be int layers, got {layer!r}")
            if not 0 <= layer < n_blocks:
                raise ValueError(
                    f"features[{layer}]: layer must be in [0, {n_blocks - 1}] for this "
                    f"{n_blocks}-block model"
                )
            sae = saes.get(layer)
            if sae is None:
                raise ValueError(f"features[{layer}] has no SAE: saes has layers {sorted(saes)}")
            if not isinstance(sae, SparseAutoencoder):
                raise TypeError(
                    f"saes[{layer}] must be a SparseAutoencoder, got {type(sae).__name__}"
                )
            if sae.d_in != d_model:
                raise IncompatibleModelError(
                    f"saes[{layer}] has d_in={sae.d_in} but the model's hidden size is {d_model}"
                )
            site = sae.config.hook_site
            if site not in (None, "resid_post") and not allow_other_sites:
                raise ValueError(
                    f"saes[{layer}] was trained on {sae.config.hook_name!r}, hook site {site!r} "
                    f"({HOOK_SITES[site]}), but an SAEGate reads and edits the residual stream "
                    "at block outputs (blocks.L.hook_resid_post, the output of model.layers[L]); "
                    "its latents would be computed from the wrong activations. Use an SAE of "
                    "the residual stream, or pass allow_other_sites=True if you know the "
                    "activations are the same."
                )
            if sae.config.hook_layer is not None and sae.config.hook_layer != layer:
                logger.warning(
                    "saes[%d] was trained on layer %d (hook_name=%r) but gates layer %d",
                    layer,
                    sae.config.hook_layer,
                    sae.config.hook_name,
                    layer,
                )
            idx = integer_sequence(feats, f"features[{layer}]")  # "12" is not (1, 2)
            if not idx:
                raise ValueError(f"features[{layer}] is empty")
            bad = [i for i in idx if not 0 <= i < sae.d_sae]
            if bad:
                raise ValueError(f"features[{layer}] has indices outside [0, {sae.d_sae}): {bad}")
            if len(set(idx)) != len(idx):
                raise ValueError(f"features[{layer}] has duplicate indices")
            chosen[layer] = idx
            chosen_saes[layer] = sae
        self._features = chosen
        self._saes = chosen_saes
        self._alpha = unit_interval(alpha, "alpha")
        self._plans: dict[int, _GatePlan] = {}
        self._seq_alpha: dict[torch.device, Tensor] = {}

    # ------------------------------------------------------------------ public state
    @property
    def alpha(self) -> float:
        """Scalar attenuation in ``[0, 1]`` (used when no per-sequence alpha is set)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = unit_interval(value, "alpha")

    @property
    def layers(self) -> tuple[int, ...]:
        """Gated layers, ascending."""
        return tuple(sorted(self._features))

    @property
    def features(self) -> dict[int, tuple[int, ...]]:
        """``layer -> attenuated latent indices`` (a copy)."""
        return dict(self._features)

    @property
    def sequence_alpha_set(self) -> bool:
        """Whether a per-sequence alpha is currently set."""
        return bool(self._seq_alpha)

    def __repr__(self) -> str:
        feats = ", ".join(f"{layer}: {len(s)}" for layer, s in sorted(self._features.items()))
        return f"SAEGate(layers={{{feats}}}, alpha={self._alpha}, attached={self.attached})"

    # ------------------------------------------------------------------ per-sequence alpha
    def set_sequence_alpha(self, alpha: Tensor, *, check: bool = True) -> None:
        """Use ``alpha[b]`` for batch row ``b`` until cleared.

        The values are copied (never aliased) into one fp32 buffer per gated block device;
        when the batch size is unchanged the existing buffers are reused (``copy_``), so
        calling this every decoding step is cheap. With beam search or
        ``num_return_sequences`` the batch has ``batch × num_beams`` rows.

        Args:
            alpha: ``[batch]`` values in ``[0, 1]``, on any device.
            check: validate the range (a device sync on GPU); callers whose values are
                already valid (a processor mixing two validated alphas) may skip it.

        Raises:
            TypeError: ``alpha`` is not a floating tensor.
            ValueError: ``alpha`` is not 1-D and non-empty, or (``check``) has values
                outside ``[0, 1]`` or NaN.
        """
        if not isinstance(alpha, Tensor) or not alpha.is_floating_point():
            raise TypeError("alpha must be a floating-point torch.Tensor of shape [batch]")
        if alpha.ndim != 1 or alpha.numel() == 0:
            raise ValueError(f"alpha must have shape [batch], got {tuple(alpha.shape)}")
        if check:
            a = alpha.detach()
            if not bool(((a >= 0) & (a <= 1)).all()):
                raise ValueError(
                    f"sequence alpha values must be in [0, 1] (no clamping is done), got "
                    f"min {float(a.min())}, max {float(a.max())}"
                )
        devices = {plan.device for plan in self._plans.values()} or {torch.device("cpu")}
        for device in devices:
            buf = self._seq_alpha.get(device)
            if buf is not None and buf.shape == alpha.shape:
                buf.copy_(alpha.detach(), non_blocking=True)
            else:
                self._seq_alpha[device] = alpha.detach().to(
                    device=device, dtype=torch.float32, copy=True
                )
        for device in set(self._seq_alpha) - devices:
            del self._seq_alpha[device]

    def clear_sequence_alpha(self) -> None:
        """Drop the per-sequence alpha; the scalar :attr:`alpha` applies again."""
        self._seq_alpha = {}

    @contextlib.contextmanager
    def sequence_alpha(self, alpha: Tensor, *, check: bool = True) -> Iterator[SAEGate]:
        """Context manager: :meth:`set_sequence_alpha` on entry, cleared on exit (also on
        exceptions)."""
        self.set_sequence_alpha(alpha, check=check)
        try:
            yield self
        finally:
            self.clear_sequence_alpha()

    # ------------------------------------------------------------------ hook plumbing
    def _build_edits(self) -> list[tuple[int, Edit]]:
        plans = {
            layer: _build_plan(
                self._saes[layer], layer, feats, block_device(self.model, layer, self.block_path)
            )
            for layer, feats in sorted(self._features.items())
        }
        self._plans = plans
        if self._seq_alpha:  # set before attaching: place it on the blocks' devices
            current = next(iter(self._seq_alpha.values()))
            self._seq_alpha = {}
            self.set_sequence_alpha(current, check=False)
        return [(layer, functools.partial(self._edit, plan)) for layer, plan in plans.items()]

    def _on_remove(self) -> None:
        self._plans = {}
        self.clear_sequence_alpha()

    def _edit(self, plan: _GatePlan, hidden: Tensor) -> Tensor:
        rows: Tensor | None = None
        if self._seq_alpha:
            rows = self._seq_alpha.get(plan.device)
            if rows is None:
                raise InterventionError(
                    f"SAEGate: no sequence alpha on {plan.device} for layer {plan.layer}"
                )
            if rows.shape[0] != hidden.shape[0]:
                raise InterventionError(
                    f"SAEGate: the sequence alpha has {rows.shape[0]} rows but layer "
                    f"{plan.layer}'s hidden state has batch {hidden.shape[0]}; set one alpha "
                    "per row (batch × num_beams / num_return_sequences when generating)"
                )
        elif self._alpha == 0.0:
            return hidden
        f = plan.feature_acts(hidden.float())  # (batch, seq, |S|)
        if rows is not None:
            f = f * rows.view(-1, *([1] * (f.ndim - 1)))  # (batch, 1, 1)
        elif self._alpha != 1.0:
            f = f * self._alpha
        delta = f @ plan.w_dec  # (batch, seq, d_model)
        return hidden - delta.to(hidden.dtype)
