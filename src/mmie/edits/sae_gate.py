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
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mmie._validation import boolean, choice, integer_sequence, is_integer, unit_interval
from mmie.errors import IncompatibleModelError, InterventionError
from mmie.models.blocks import block_device, block_dtype, hidden_size, num_layers
from mmie.models.hooks import BlockIntervention, Edit
from mmie.sae.architectures import activate, topk_select
from mmie.sae.config import HOOK_SITES
from mmie.sae.model import SparseAutoencoder

__all__ = ["SAEGate"]

logger = logging.getLogger(__name__)

TopKPrecision = Literal["auto", "fp32", "mixed"]
"""How a TopK gate finds each token's top ``k`` latents (see :class:`SAEGate`)."""

_TOPK_PRECISIONS: tuple[TopKPrecision, ...] = ("auto", "fp32", "mixed")
_PAD_COLUMNS = 64  # candidate columns are padded to a multiple of this (see _MixedTopK)
_AUTO_MAX_ROWS = 64  # "auto" uses the candidate pass for calls of at most this many tokens


@dataclass(frozen=True, eq=False)
class _MixedTopK:
    """The low-precision candidate pass of an exact TopK gate (built at attach).

    For a token ``x`` (``b_dec`` already subtracted, fp32) the fp32 gate computes
    ``p_j = fl32(x·w_j + b_j)`` for every latent ``j`` and keeps the ``k`` largest. This
    pass finds the same ``k`` latents, with the same values, at the cost of a low-precision
    (``dtype``) matmul plus an fp32 matmul over the few candidate columns:

    1. ``c = x̂ @ Ŵ`` with ``x̂, Ŵ`` rounded to ``dtype`` (unit roundoff ``u``: 2⁻⁸ for
       bf16, 2⁻¹¹ for fp16), accumulated in fp32, rounded to ``dtype``; ``p̃ = fl32(c + b)``.
    2. A rigorous bound ``|p_j − p̃_j| ≤ B_j``. With ``t_j = x·w_j + b_j`` exact, ``n`` the
       inner dimension, ``γ_m(u) = m·u / (1 − m·u)``, ``u₃₂ = 2⁻²⁴`` and
       ``d_j = |x|·|w_j| ≤ ‖x‖₂‖w_j‖₂`` (Cauchy-Schwarz, so no second matmul is needed):

       * the fp32 gate, whatever its summation order (FMA included), is a dot product of
         length ``n + 1`` (the bias is a term): ``|p_j − t_j| ≤ γ_{n+1}(u₃₂)·(d_j + |b_j|)``
         (with TF32 allowed on CUDA its inputs are rounded to 11 bits first: add
         ``(2u_t + u_t²)·d_j``, ``u_t = 2⁻¹¹``, and scale the first term by ``(1+u_t)²``);
       * rounding the inputs: ``|x̂_i ŵ_i − x_i w_i| ≤ (2u + u²)|x_i||w_i|`` (plus an
         absolute underflow term ``η`` per rounding, ``η`` = the smallest normal number of
         ``dtype``, which also covers flushed denormals);
       * the products of two bf16 (or fp16) numbers are exact in fp32, so accumulating them
         in fp32 errs by ``≤ γ_n(u₃₂)·Σ|x̂_i||ŵ_i| ≤ γ_n(u₃₂)(1+u)²·d_j``;
       * rounding the sum to ``dtype``: ``≤ u/(1−u)·|c_j|``; adding the bias in fp32:
         ``≤ u₃₂/(1−u₃₂)·|p̃_j|``.

       ``B_j`` is their sum, with ``‖x‖₂`` scaled by ``1 + γ_n(u₃₂)`` (its own fp32
       error), one more ``u₃₂·|p̃_j|`` for rounding ``p̃_j ± B_j``, and a factor
       ``1 + 2⁻⁸`` for the few fp32 operations that evaluate ``B`` itself.
    3. ``τ`` = the ``k``-th largest lower bound ``p̃_j − B_j``: the fp32 gate's ``k``-th
       value is ``≥ τ``, so a latent with ``p̃_j + B_j < τ`` cannot be active (nor tie with
       the ``k``-th value). The others are *candidates*.
    4. The union of the call's candidates, padded to a multiple of 64 columns, is
       recomputed in fp32 with the fp32 gate's own operation (``x @ W[:, U] + b[U]``, every
       token of the call, so the matmul has the same rows): the ``k`` largest of those are
       the fp32 gate's active set, with its values.

    Exactness rests on two properties of the matmul backend, both stated here and checked:
    the low-precision matmul accumulates in fp32 (oneDNN/MKL bf16 GEMMs on CPU; on CUDA the
    pass requests an fp32 output, and refuses to run when neither that nor a cuBLAS without
    reduced-precision reductions is available), and a column of an fp32 matmul does not
    depend on the other columns computed with it (``(x @ W)[:, U] == x @ W[:, U]``
    bitwise), which :func:`_columns_consistent` probes on the plan's device when the plan is
    built (MKL on x86 CPUs: true for column counts that are multiples of 16, hence the
    padding). Where a probe fails the gate uses its fp32 pass. A call falls back to the
    full fp32 pass (the default path, bit for bit) when an input is not finite, the
    candidates cover more than half of the latents, two candidates tie exactly at the
    ``k``-th value (which of them ``topk`` keeps is its own choice), or, in ``"auto"`` mode,
    the call has more than 64 tokens (a prefill, where the candidates of many tokens cover
    most latents anyway).
    """

    dtype: torch.dtype  # the candidate pass's dtype
    w_lp: Tensor  # (d_in, d_sae) W_enc in dtype
    w_norm: Tensor  # (d_sae,) fp32 upper bounds of ||W_enc[:, j]||_2
    b_abs: Tensor  # (d_sae,) |b_enc|
    coef_dot: float  # multiplies ||x||_2 ||w_j||_2
    coef_b: float  # multiplies |b_j|
    coef_c: float  # multiplies |c_j|
    coef_p: float  # multiplies |p~_j|
    coef_x: float  # multiplies ||x||_2 (underflow)
    coef_w: float  # multiplies ||w_j||_2 (underflow)
    coef_const: float  # absolute (underflow)
    fp32_output: bool  # request an fp32 output from the low-precision matmul (CUDA)
    max_rows: int | None  # calls with more tokens use the fp32 pass ("auto")
    max_union: int  # candidate columns above which the fp32 pass runs

    def bounds(self, rows: Tensor, b_enc: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(p̃, B)`` ``[tokens, d_sae]`` for the tokens ``rows`` ``[tokens, d_in]``: the
        fp32 gate's pre-activations lie in ``[p̃ − B, p̃ + B]``; ``None`` if not finite."""
        x_lp = rows.to(self.dtype)
        if self.fp32_output:
            c = torch.mm(x_lp, self.w_lp, out_dtype=torch.float32)
        else:
            c = (x_lp @ self.w_lp).float()
        approx = c + b_enc
        xn = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
        bound = (self.coef_dot * xn + self.coef_w) * self.w_norm
        bound = bound + self.coef_c * c.abs() + self.coef_p * approx.abs()
        bound = bound + (self.coef_b * self.b_abs + (self.coef_x * xn + self.coef_const))
        if not bool(torch.isfinite(bound).all()):  # also catches non-finite inputs
            return None
        return approx, bound

    def candidates(self, x: Tensor, b_enc: Tensor, k: int) -> Tensor | None:
        """Sorted candidate columns of every token of ``x`` (padded), or ``None``."""
        d_sae = self.w_lp.shape[1]
        rows = x.reshape(-1, x.shape[-1])
        if self.max_rows is not None and rows.shape[0] > self.max_rows:
            return None
        found = self.bounds(rows, b_enc)
        if found is None:
            return None
        approx, bound = found
        tau = (approx - bound).topk(k, dim=-1).values[:, -1:]
        union = (approx + bound >= tau).any(dim=0)
        n = int(union.sum())
        padded = min(d_sae, -(-n // _PAD_COLUMNS) * _PAD_COLUMNS)
        if padded > self.max_union:
            return None
        if padded > n:  # fill with the first columns that are not candidates
            extra = (~union).nonzero().flatten()[: padded - n]
            union[extra] = True
        return union.nonzero().flatten()


def _unit_roundoff(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) / 2  # eps = 2^(1-p), u = 2^-p


def _gamma(m: int, u: float) -> float:
    return m * u / (1.0 - m * u)


def _tf32_allowed(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    return bool(torch.backends.cuda.matmul.allow_tf32) or (
        torch.get_float32_matmul_precision() != "highest"
    )


#: ``(device type, d_in, d_sae) -> bool``: results of _columns_consistent.
_CONSISTENT: dict[tuple[str, int, int], bool] = {}


def _columns_consistent(w_enc: Tensor, b_enc: Tensor) -> bool:
    """Whether ``(x @ W + b)[:, U] == x @ W[:, U] + b[U]`` bit for bit on ``W``'s device for
    several row counts and padded column sets (the property the candidate pass needs)."""
    key = (w_enc.device.type, int(w_enc.shape[0]), int(w_enc.shape[1]))
    if key in _CONSISTENT:
        return _CONSISTENT[key]
    gen = torch.Generator(device="cpu").manual_seed(0)
    d_in, d_sae = w_enc.shape
    ok = True
    for rows in (1, 2, 3, 8, 37):
        x = torch.randn(rows, d_in, generator=gen).to(w_enc.device)
        full = x @ w_enc + b_enc
        for width in (_PAD_COLUMNS, 3 * _PAD_COLUMNS, 10 * _PAD_COLUMNS):
            if width > d_sae:
                continue
            cols = torch.randperm(d_sae, generator=gen)[:width].sort().values.to(w_enc.device)
            sub = x @ w_enc.index_select(1, cols) + b_enc.index_select(0, cols)
            if not torch.equal(full[:, cols], sub):
                ok = False
    _CONSISTENT[key] = ok
    if not ok:
        logger.info(
            "the fp32 matmul on %s is not column-consistent for W_enc %s: the exact TopK "
            "gate's candidate pass is off there (fp32 pass)",
            w_enc.device,
            tuple(w_enc.shape),
        )
    return ok


def _lp_dtype(device: torch.device, block: torch.dtype) -> torch.dtype:
    if block in (torch.bfloat16, torch.float16):
        return block
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _mixed_topk(
    w_enc: Tensor, b_enc: Tensor, precision: TopKPrecision, block: torch.dtype
) -> _MixedTopK | None:
    """The candidate pass for a TopK plan, or ``None`` where the gate uses its fp32 pass."""
    device = w_enc.device
    if precision == "fp32":
        return None
    if precision == "auto" and (
        device.type != "cuda" or block not in (torch.bfloat16, torch.float16)
    ):
        return None  # CPU: the fp32 pass (docs/benchmarks.md: not faster there)
    dtype = _lp_dtype(device, block)
    fp32_output = False
    if device.type == "cuda":
        try:
            probe = torch.ones(2, 2, device=device, dtype=dtype)
            torch.mm(probe, probe, out_dtype=torch.float32)
            fp32_output = True
        except (TypeError, RuntimeError):
            matmul = torch.backends.cuda.matmul
            reduced = (
                matmul.allow_bf16_reduced_precision_reduction
                if dtype == torch.bfloat16
                else matmul.allow_fp16_reduced_precision_reduction
            )
            if reduced:
                logger.info(
                    "no fp32-output %s matmul and reduced-precision reductions allowed: the "
                    "exact TopK gate uses its fp32 pass",
                    dtype,
                )
                return None
    if not _columns_consistent(w_enc, b_enc):
        return None
    n = int(w_enc.shape[0])
    u, u32 = _unit_roundoff(dtype), _unit_roundoff(torch.float32)
    eta = float(torch.finfo(dtype).tiny)  # smallest normal: covers flushed denormals too
    u_t = 2.0**-11 if _tf32_allowed(device) else 0.0
    ref = _gamma(n + 1, u32) * (1 + u_t) ** 2
    dot = ref + (2 * u_t + u_t**2) + (2 * u + u**2) + _gamma(n, u32) * (1 + u) ** 2
    # Evaluating the bound: ||x||_2 in fp32 errs by at most γ_n relatively; p~ ± B rounds
    # by u32·(|p~| + B) (the |p~| part is the second u32 of coef_p); the few fp32 operations
    # of B itself stay far below the 2^-8 margin.
    margin = 1 + 2.0**-8
    norm = 1 + _gamma(n, u32)
    root_n = math.sqrt(n)
    with torch.no_grad():
        w64 = w_enc.double()
        w_norm = (torch.linalg.vector_norm(w64, dim=0) * (1 + 2.0**-20)).float()
        w_lp = w_enc.to(dtype).contiguous()
    return _MixedTopK(
        dtype=dtype,
        w_lp=w_lp,
        w_norm=w_norm,
        b_abs=b_enc.abs(),
        coef_dot=margin * dot * norm,
        coef_b=margin * ref,
        coef_c=0.0 if fp32_output else margin * u / (1 - u),  # the output rounding
        coef_p=margin * 2 * u32 / (1 - u32),
        coef_x=margin * 2 * eta * root_n * norm,
        coef_w=margin * 2 * eta * root_n,
        coef_const=margin * (n * eta * (2 + eta) + (0.0 if fp32_output else eta)),
        fp32_output=fp32_output,
        max_rows=_AUTO_MAX_ROWS if precision == "auto" else None,
        max_union=int(w_enc.shape[1]) // 2,
    )


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
    mixed: _MixedTopK | None = None  # topk: the exact low-precision candidate pass

    def feature_acts(self, x: Tensor) -> Tensor:
        """``f_S(x)``: ``[..., d_in]`` fp32 → ``[..., |S|]``, exactly the SAE's activation."""
        if self.b_dec_in is not None:
            x = x - self.b_dec_in
        if self.mixed is not None:
            out = self._topk_mixed(x)
            if out is not None:
                return out
        p = x @ self.w_enc + self.b_enc  # (..., |S| or 2|S| or d_sae)
        if self.architecture == "gated":
            gate, mag = p.split(self.n_features, dim=-1)
            return activate("gated", mag, gate_pre=gate)
        if self.architecture != "topk":
            return activate(self.architecture, p, threshold=self.threshold)
        assert self.k is not None  # topk from here on
        assert self.slot is not None
        indices, values = topk_select(p, self.k)  # (..., k)
        return self._scatter(indices, values)

    def _scatter(self, indices: Tensor, values: Tensor) -> Tensor:
        """The active latents' values at their positions in ``S`` (others dropped)."""
        assert self.slot is not None
        slots = self.slot[indices]  # (..., k) in [0, |S|]; |S| is a discard slot
        out = values.new_zeros(*values.shape[:-1], self.n_features + 1)
        out.scatter_(-1, slots, values)
        return out[..., : self.n_features]

    def _topk_mixed(self, x: Tensor) -> Tensor | None:
        """The fp32 TopK activation through the candidate pass (:class:`_MixedTopK`), or
        ``None`` where the call needs the fp32 pass."""
        assert self.mixed is not None
        assert self.k is not None
        cols = self.mixed.candidates(x, self.b_enc, self.k)
        if cols is None:
            return None
        # the fp32 gate's values, bit for bit (index_select: ~10x faster than w_enc[:, cols])
        q = x @ self.w_enc.index_select(1, cols) + self.b_enc.index_select(0, cols)
        width = min(self.k + 1, cols.numel())
        top = q.topk(width, dim=-1)
        if width > self.k and bool((top.values[..., self.k - 1] == top.values[..., self.k]).any()):
            return None  # an exact tie at the k-th value: topk's own choice decides
        indices = cols[top.indices[..., : self.k]]
        return self._scatter(indices, torch.relu(top.values[..., : self.k]))


def _build_plan(
    sae: SparseAutoencoder,
    layer: int,
    features: tuple[int, ...],
    device: torch.device,
    *,
    topk_precision: TopKPrecision = "fp32",
    block: torch.dtype = torch.float32,
) -> _GatePlan:
    def place(t: Tensor) -> Tensor:
        return t.detach().to(device=device, dtype=torch.float32).contiguous()

    with torch.no_grad():
        t = sae.tensors()
        idx = torch.tensor(features, dtype=torch.long, device=t["W_dec"].device)
        arch = sae.architecture
        slot = None
        threshold = None
        mixed = None
        if arch == "topk":
            w_enc, b_enc = place(t["W_enc"]), place(t["b_enc"])
            slot = torch.full((sae.d_sae,), len(features), dtype=torch.long)
            slot[idx.cpu()] = torch.arange(len(features))
            slot = slot.to(device)
            mixed = _mixed_topk(w_enc, b_enc, topk_precision, block)
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
            mixed=mixed,
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
    ``topk_precision="mixed"`` finds the top ``k`` with a low-precision matmul and
    recomputes in fp32 only the latents a rigorous error bound cannot rule out: the active
    set and the edit are exactly the fp32 gate's (``_MixedTopK`` states the bound and the
    backend properties it rests on). ``"auto"`` (default) uses it on CUDA for bf16/fp16
    blocks and calls of at most 64 tokens (decoding steps) and the fp32 pass elsewhere
    (on a CPU it was not faster: see the benchmarks page); ``"fp32"`` never uses it.

    Args:
        model: the model to gate (PEFT-wrapped models work).
        saes: ``layer -> SparseAutoencoder`` reading that block's output.
        features: ``layer -> latent indices S`` to attenuate; every layer must have an SAE.
        alpha: attenuation in ``[0, 1]`` used when no per-sequence alpha is set.
        block_path: dotted path of the block list for unknown architectures.
        topk_precision: ``"auto"``, ``"fp32"`` or ``"mixed"``: how TopK SAEs find their
            top ``k`` latents (same result, different cost; ignored by other SAEs).
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
        topk_precision: TopKPrecision = "auto",
        allow_other_sites: bool = False,
    ) -> None:
        super().__init__(model, block_path=block_path)
        self._topk_precision = choice(topk_precision, "topk_precision", _TOPK_PRECISIONS)
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
                self._saes[layer],
                layer,
                feats,
                block_device(self.model, layer, self.block_path),
                topk_precision=self._topk_precision,
                block=block_dtype(self.model, layer, self.block_path),
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
