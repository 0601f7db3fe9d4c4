"""Reconstruction quality of an SAE and the check that it belongs to a layer.

:func:`sae_quality` measures FVU, cosine, L0 and dead latents on given activations.
:func:`check_reconstruction` runs a model's real activations through an SAE and fails loudly
when it cannot belong to the layer (a TopK SAE read as ReLU, transposed weights, the wrong
layer) -- the silent failure SAE users hit most often.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mmie.errors import IncompatibleModelError, ReconstructionError
from mmie.models.activations import collect_activations
from mmie.models.blocks import hidden_size
from mmie.sae.model import SparseAutoencoder

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["ReconstructionReport", "SAEQuality", "check_reconstruction", "sae_quality"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- quality metrics
@dataclass(frozen=True)
class SAEQuality:
    """How well an SAE reconstructs a set of activations.

    Attributes:
        fvu: fraction of variance unexplained, ``Σ‖x − x̂‖² / Σ‖x − mean(x)‖²`` (0 is
            perfect; 1 is no better than predicting the mean).
        mean_cosine: mean cosine similarity between ``x`` and ``x̂``.
        mean_l0: mean number of active latents (``f > 0``) per token.
        dead_fraction: fraction of latents never active on these activations.
        n_tokens: number of activation vectors used.
    """

    fvu: float
    mean_cosine: float
    mean_l0: float
    dead_fraction: float
    n_tokens: int


@torch.no_grad()
def sae_quality(
    sae: SparseAutoencoder, activations: Tensor, *, batch_size: int = 4096
) -> SAEQuality:
    """FVU, cosine, L0 and dead-latent fraction of ``sae`` on ``activations``.

    Uses the SAE's real activation function (TopK, JumpReLU, ...). Computed in fp64
    accumulators; batches are moved to the SAE's device.

    Args:
        sae: the SAE.
        activations: ``[n_tokens, d_in]`` activations (pad positions already removed).
        batch_size: tokens per chunk.

    Returns:
        An :class:`SAEQuality`.

    Raises:
        ValueError: ``activations`` is not ``[n_tokens, d_in]`` with ``n_tokens >= 2``.
    """
    if activations.ndim != 2 or activations.shape[1] != sae.d_in or activations.shape[0] < 2:
        raise ValueError(
            f"activations must be [n_tokens >= 2, d_in={sae.d_in}], got {tuple(activations.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = sae.W_dec.device
    n = activations.shape[0]
    mean = torch.zeros(sae.d_in, dtype=torch.float64)
    for start in range(0, n, batch_size):
        mean += activations[start : start + batch_size].double().sum(0).cpu()
    mean /= n
    mean = mean.to(device)
    err_sq = total_sq = cos_sum = l0_sum = 0.0
    alive = torch.zeros(sae.d_sae, dtype=torch.bool, device=device)
    for start in range(0, n, batch_size):
        x = activations[start : start + batch_size].to(device)  # (b, d_in)
        f = sae.encode(x)  # (b, d_sae)
        x_hat = sae.decode(f).double()
        xd = x.double()
        err_sq += float((xd - x_hat).pow(2).sum())
        total_sq += float((xd - mean).pow(2).sum())
        cos_sum += float(torch.nn.functional.cosine_similarity(xd, x_hat, dim=-1).sum())
        active = f > 0
        l0_sum += float(active.sum())
        alive |= active.any(0)
    fvu = err_sq / total_sq if total_sq > 0 else math.inf
    return SAEQuality(
        fvu=fvu,
        mean_cosine=cos_sum / n,
        mean_l0=l0_sum / n,
        dead_fraction=float((~alive).float().mean()),
        n_tokens=n,
    )


# ---------------------------------------------------------------------- reconstruction check
@dataclass(frozen=True)
class ReconstructionReport:
    """Result of :func:`check_reconstruction`.

    Attributes:
        layer: the block whose outputs were reconstructed.
        fvu: fraction of variance unexplained.
        mean_cosine: mean cosine between activations and reconstructions.
        mean_l0: mean active latents per token.
        dead_fraction: fraction of latents never active on these texts.
        n_tokens: number of (non-pad) tokens used.
        passed: whether ``fvu <= max_fvu`` and ``mean_cosine >= min_cosine``.
        diagnosis: the likely cause when it did not pass (empty otherwise).
    """

    layer: int
    fvu: float
    mean_cosine: float
    mean_l0: float
    dead_fraction: float
    n_tokens: int
    passed: bool
    diagnosis: str = ""


@torch.no_grad()
def check_reconstruction(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sae: SparseAutoencoder,
    layer: int,
    texts: Sequence[str],
    *,
    max_fvu: float = 0.8,
    min_cosine: float = 0.5,
    batch_size: int = 8,
    max_length: int = 256,
    block_path: str | None = None,
    exclude_first_token: bool = True,
    raise_on_failure: bool = True,
) -> ReconstructionReport:
    """Check that ``sae`` reconstructs block ``layer``'s real activations on ``texts``.

    The thresholds flag SAEs that *clearly* do not fit (a good SAE has an FVU well below
    0.5); they are not quality targets. On failure the SAE is tried under the likely
    mistakes -- read as TopK with several ``k`` (a TopK SAE declared as ReLU), with
    ``W_enc``/``W_dec`` transposed (square SAEs, whose shapes cannot reveal it) -- and the
    message says which one fixes it, or else that the SAE probably belongs to another layer
    or model.

    Args:
        model: the model (PEFT-wrapped models work).
        tokenizer: its tokenizer.
        sae: the SAE to check.
        layer: block whose output the SAE should read.
        texts: texts to run (a few dozen are enough).
        max_fvu: largest acceptable fraction of variance unexplained.
        min_cosine: smallest acceptable mean cosine similarity.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated.
        block_path: dotted path of the block list for unknown architectures.
        exclude_first_token: leave out each text's first position. It is an attention
            sink (BOS) whose activation norm is often 10-100x the others'; SAEs are usually
            not trained on it and it would dominate the FVU of a good SAE.
        raise_on_failure: raise instead of returning a failed report.

    Returns:
        A :class:`ReconstructionReport`.

    Raises:
        IncompatibleModelError: ``sae.d_in`` differs from the model's hidden size.
        ValueError: the texts give fewer than 2 usable tokens.
        ReconstructionError: the check failed and ``raise_on_failure`` is true; the message
            gives the numbers and the likely cause.
    """
    d_model = hidden_size(model)
    if sae.d_in != d_model:
        raise IncompatibleModelError(
            f"the SAE has d_in={sae.d_in} but the model's hidden size is {d_model}"
        )
    collected = collect_activations(
        model,
        tokenizer,
        texts,
        [layer],
        batch_size=batch_size,
        max_length=max_length,
        block_path=block_path,
    )
    acts = collected.tokens[layer]  # (n_tokens, d_model)
    if exclude_first_token:
        text_index = collected.token_text_index
        first = torch.ones_like(text_index, dtype=torch.bool)
        first[1:] = text_index[1:] != text_index[:-1]
        acts = acts[~first]
    if acts.shape[0] < 2:
        raise ValueError("texts give fewer than 2 usable tokens; pass longer or more texts")
    q = sae_quality(sae, acts)
    passed = q.fvu <= max_fvu and q.mean_cosine >= min_cosine
    diagnosis = "" if passed else _diagnose(sae, acts, layer, q, max_fvu)
    report = ReconstructionReport(
        layer=layer,
        fvu=q.fvu,
        mean_cosine=q.mean_cosine,
        mean_l0=q.mean_l0,
        dead_fraction=q.dead_fraction,
        n_tokens=q.n_tokens,
        passed=passed,
        diagnosis=diagnosis,
    )
    if passed:
        logger.info("SAE reconstructs layer %d: FVU %.4f, cosine %.3f", layer, q.fvu, q.mean_cosine)
    elif raise_on_failure:
        raise ReconstructionError(
            f"the {sae.architecture} SAE does not reconstruct layer {layer}: FVU {q.fvu:.3g} "
            f"(max {max_fvu}), mean cosine {q.mean_cosine:.3f} (min {min_cosine}), mean L0 "
            f"{q.mean_l0:.1f} of {sae.d_sae} latents on {q.n_tokens} tokens. {diagnosis}"
        )
    return report


def _diagnose(
    sae: SparseAutoencoder, acts: Tensor, layer: int, q: SAEQuality, max_fvu: float
) -> str:
    """Try the usual mistakes on a sample and describe the one that explains the failure."""
    sample = acts[:4096].cpu()
    tensors = {name: t.detach().cpu() for name, t in sae.tensors().items()}
    config = sae.config
    candidates: list[tuple[float, str]] = []
    # 1. A TopK SAE declared as something else (configs older than SAELens 6.0 lose k easily).
    if config.architecture != "topk" and "b_enc" in tensors:
        plain = {n: t for n, t in tensors.items() if n != "threshold"}
        k = 1
        while k <= max(1, config.d_sae // 2):
            alt_cfg = config.replace(architecture="topk", k=k)
            fvu = sae_quality(SparseAutoencoder.from_tensors(alt_cfg, plain), sample).fvu
            candidates.append(
                (
                    fvu,
                    f"Likely cause: this is a TopK SAE read as {config.architecture} -- read as "
                    f"topk with k={k} it reaches FVU {fvu:.3g}. Set architecture='topk' and the "
                    "right k (SAELens configs older than 6.0 keep it in activation_fn_kwargs.k).",
                )
            )
            k *= 2
    # 2. Weights stored transposed; shapes cannot reveal it when the SAE is square.
    if config.d_in == config.d_sae:
        swapped = dict(tensors, W_enc=tensors["W_enc"].T, W_dec=tensors["W_dec"].T)
        fvu = sae_quality(SparseAutoencoder.from_tensors(config, swapped), sample).fvu
        candidates.append(
            (
                fvu,
                "Likely cause: W_enc and W_dec are stored transposed ([out, in] layout) -- "
                f"transposed they reach FVU {fvu:.3g}. Because d_in == d_sae their shapes "
                "cannot reveal this; build the SAE with SparseAutoencoder.from_tensors(config, "
                "{..., 'W_enc': W_enc.T, 'W_dec': W_dec.T}).",
            )
        )
    good = [c for c in candidates if c[0] <= max_fvu and c[0] < 0.5 * q.fvu]
    if good:
        return min(good, key=lambda c: c[0])[1]
    where = []
    if config.hook_layer is not None and config.hook_layer != layer:
        where.append(f"its config says layer {config.hook_layer}, not {layer}")
    if config.hook_name:
        where.append(f"hook_name={config.hook_name!r}")
    if config.model_name:
        where.append(f"model_name={config.model_name!r}")
    detail = f" ({'; '.join(where)})" if where else ""
    return (
        "Likely cause: the SAE was trained on another layer or model" + detail + ", or its "
        "architecture is wrong; neither reading it as TopK nor transposing its weights helps."
    )
