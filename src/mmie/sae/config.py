"""Configuration of a sparse autoencoder: architecture, shape, dtype and provenance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from mmie._config import ConfigBase, FieldError, require, validate_fields

__all__ = ["ARCHITECTURES", "Architecture", "SAEConfig"]

Architecture = Literal["topk", "relu", "jumprelu", "gated"]
#: The activation families :class:`~mmie.SparseAutoencoder` implements.
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def dtype_name(dtype: object, name: str = "dtype") -> str:
    """The config name of a parameter dtype (``torch.bfloat16`` or ``"bfloat16"``).

    Raises:
        FieldError: not one of :data:`DTYPES`.
    """
    text = str(dtype).removeprefix("torch.")
    if text not in DTYPES:
        raise FieldError(name, f"must be one of {sorted(DTYPES)}, got {dtype!r}")
    return text


@dataclass(frozen=True, kw_only=True)
class SAEConfig(ConfigBase):
    """Shape, architecture and provenance of a :class:`SparseAutoencoder`.

    Attributes:
        architecture: activation family: ``"topk"``, ``"relu"``, ``"jumprelu"`` or ``"gated"``.
        d_in: input width (the model's ``d_model``).
        d_sae: number of latents.
        k: active latents per token; required for ``"topk"``, must be ``None`` otherwise.
        apply_b_dec_to_input: subtract ``b_dec`` from the input before encoding.
        normalize_activations: only ``"none"``. SAEs trained on rescaled activations
            (SAELens ``expected_average_only_in``) must have the scaling factor ``s`` folded
            into their weights first (``W_enc *= s``, ``W_dec /= s``, ``b_dec /= s``).
        hook_layer: block whose *output* the SAE reads (``model.layers[hook_layer]``,
            TransformerLens ``blocks.{hook_layer}.hook_resid_post``); metadata only.
        hook_name: TransformerLens hook name the SAE was trained on; metadata only.
        model_name: model the SAE was trained on; metadata only.
        dtype: parameter dtype name (``"float32"``, ``"bfloat16"``, ...). A jumprelu
            threshold is kept in fp32 whatever this says.

    Raises:
        ConfigError: a field is invalid or inconsistent with another.
    """

    architecture: Architecture  # activation family, see the module docstring
    d_in: int  # input width = model d_model
    d_sae: int  # number of latents
    k: int | None = None  # topk only: latents kept per token
    apply_b_dec_to_input: bool = True  # x' = x - b_dec before encoding (SAELens default)
    normalize_activations: str = "none"  # only "none": fold any scaling into the weights
    hook_layer: int | None = None  # block index whose output the SAE reads (metadata)
    hook_name: str | None = None  # e.g. "blocks.6.hook_resid_post" (metadata)
    model_name: str | None = None  # model the SAE was trained on (metadata)
    dtype: str = "float32"  # parameter dtype

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        validate_fields(self)
        require(self.d_in >= 1, "d_in", f"must be >= 1, got {self.d_in}")
        require(self.d_sae >= 1, "d_sae", f"must be >= 1, got {self.d_sae}")
        if self.architecture == "topk":
            require(
                self.k is not None and 1 <= self.k <= self.d_sae,
                "k",
                f"must be an int in [1, d_sae={self.d_sae}] for a topk SAE, got {self.k!r}",
            )
        else:
            require(
                self.k is None,
                "k",
                f"is only used by topk SAEs; got k={self.k!r} with "
                f"architecture={self.architecture!r}",
            )
        norm = self.normalize_activations
        if norm in ("layer_norm", "layernorm"):
            raise FieldError(
                "normalize_activations",
                "a per-token LayerNorm of the SAE input cannot be folded into the weights; "
                "mmie reads SAEs on the raw residual stream only",
            )
        require(
            norm == "none",
            "normalize_activations",
            "must be 'none': fold a dataset-wide activation scaling factor s into the "
            f"weights first (W_enc *= s, W_dec /= s, b_dec /= s); got {norm!r}",
        )
        require(
            self.hook_layer is None or self.hook_layer >= 0,
            "hook_layer",
            f"must be >= 0 or None, got {self.hook_layer!r}",
        )

    @property
    def torch_dtype(self) -> torch.dtype:
        """The parameter dtype as a :class:`torch.dtype`."""
        return DTYPES[self.dtype]
