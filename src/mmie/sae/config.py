"""Configuration of a sparse autoencoder: architecture, shape, dtype and provenance.

The *hook site* of an SAE -- which activations it was trained on -- comes from its
``hook_name`` (:func:`parse_hook`): TransformerLens names (``blocks.6.hook_resid_post``,
``blocks.6.hook_mlp_out``, ``blocks.6.attn.hook_z``), Hugging Face module paths
(``model.layers.6.output``, ``layers.6.mlp``) and the names the pretrained formats use.
Only ``"resid_post"`` -- the residual stream at a block output, which is what
``model.layers[L]`` returns -- is what :class:`mmie.SAEGate` edits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch

from mmie._config import ConfigBase, FieldError, require, validate_fields

__all__ = [
    "ARCHITECTURES",
    "HOOK_SITES",
    "Architecture",
    "HookPoint",
    "HookSite",
    "SAEConfig",
    "parse_hook",
]

Architecture = Literal["topk", "relu", "jumprelu", "gated"]
#: The activation families :class:`~mmie.SparseAutoencoder` implements.
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


HookSite = Literal[
    "resid_post", "resid_mid", "embed", "attn_out", "attn_z", "mlp_in", "mlp_out", "unknown"
]
#: The hook sites :func:`parse_hook` tells apart, with what each one is.
HOOK_SITES: dict[str, str] = {
    "resid_post": "the residual stream at a block output",
    "resid_mid": "the residual stream between a block's attention and its MLP",
    "embed": "the token embeddings (the input of the first block)",
    "attn_out": "an attention layer's output",
    "attn_z": "the attention heads' outputs before the output projection (hook_z)",
    "mlp_in": "an MLP's (normalised) input",
    "mlp_out": "an MLP's output",
    "unknown": "a hook name mmie does not recognise",
}


class HookPoint(NamedTuple):
    """Where a hook name points: its site and its block.

    Attributes:
        site: one of :data:`HOOK_SITES`.
        layer: for ``"resid_post"`` the block whose output it is (TransformerLens'
            ``blocks.L.hook_resid_pre`` is block ``L - 1``'s output); for the other sites the
            block the hook belongs to; ``None`` when there is none.
    """

    site: str
    layer: int | None


_LAYER = r"(?:^|.*\.)(?:layers|h|blocks)[._](\d+)"  # model.layers.6, transformer.h.6, layers_6
_TL_SITES: tuple[tuple[str, str], ...] = (
    (r"hook_resid_post", "resid_post"),
    (r"hook_resid_mid", "resid_mid"),
    (r"hook_attn_out", "attn_out"),
    (r"attn\.hook_z|hook_z", "attn_z"),
    (r"hook_mlp_in|ln2\.hook_normalized", "mlp_in"),
    (r"hook_mlp_out", "mlp_out"),
)
_HF_SITES: tuple[tuple[str, str], ...] = (
    (r"(?:\.output)?", "resid_post"),  # the block module itself
    (r"\.(?:self_attn|attn|attention)\.(?:o_proj|c_proj|dense|out_proj)\.input", "attn_z"),
    (
        r"\.(?:self_attn|attn|attention)(?:\.(?:o_proj|c_proj|dense|out_proj))?(?:\.output)?",
        "attn_out",
    ),
    (r"\.pre_feedforward_layernorm(?:\.output)?", "mlp_in"),
    (
        r"\.(?:mlp|post_feedforward_layernorm)(?:\.(?:down_proj|c_proj|dense_4h_to_h))?(?:\.output)?",
        "mlp_out",
    ),
)


def parse_hook(hook_name: str | None) -> HookPoint | None:
    """The site and block of a hook name, or ``None`` when there is no name.

    Understands TransformerLens hook names (``blocks.L.hook_resid_post``,
    ``blocks.L.hook_resid_pre``, ``blocks.L.hook_mlp_out``, ``blocks.L.hook_attn_out``,
    ``blocks.L.attn.hook_z``, ``hook_embed``), Hugging Face module paths
    (``model.layers.L``, ``model.layers.L.output``, ``layers.L.mlp``,
    ``model.layers.L.self_attn.o_proj.input``, Gemma's ``post_feedforward_layernorm``) and
    dictionary_learning's ``resid_post_layer_L``. Anything else is site ``"unknown"``.

    Example:
        >>> parse_hook("blocks.4.hook_resid_pre")
        HookPoint(site='resid_post', layer=3)
        >>> parse_hook("model.layers.17.output")
        HookPoint(site='resid_post', layer=17)
        >>> parse_hook("layers.6.mlp").site
        'mlp_out'
    """
    if hook_name is None:
        return None
    name = hook_name.strip()
    if name in ("hook_embed", "embed", "embed_tokens") or re.fullmatch(
        r"(?:.*\.)?(?:embed_tokens|wte|embed_in)(?:\.output)?", name
    ):
        return HookPoint("embed", None)
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", name)
    if match:
        layer = int(match.group(1))
        return HookPoint("resid_post", layer - 1) if layer > 0 else HookPoint("embed", None)
    for pattern, site in _TL_SITES:
        match = re.fullmatch(rf"blocks\.(\d+)\.(?:{pattern})", name)
        if match:
            return HookPoint(site, int(match.group(1)))
    match = re.fullmatch(r"(resid_post|resid_pre|mlp_out|attn_out)_layer_(\d+)", name)
    if match:  # dictionary_learning submodule names
        kind, layer = match.group(1), int(match.group(2))
        if kind == "resid_pre":
            return HookPoint("resid_post", layer - 1) if layer > 0 else HookPoint("embed", None)
        return HookPoint(kind, layer)
    for pattern, site in _HF_SITES:
        match = re.fullmatch(_LAYER + pattern, name)
        if match:
            return HookPoint(site, int(match.group(1)))
    match = re.fullmatch(_LAYER + r"\..*", name)
    return HookPoint("unknown", int(match.group(1)) if match else None)


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
            TransformerLens ``blocks.{hook_layer}.hook_resid_post``); for an SAE of another
            site (:attr:`hook_site`), the block its hook belongs to. Metadata only.
        hook_name: hook name the SAE was trained on (TransformerLens names such as
            ``blocks.6.hook_resid_post`` or Hugging Face module paths such as
            ``model.layers.6.output``); gives :attr:`hook_site`.
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
    def hook_site(self) -> str | None:
        """Which activations the SAE reads, from :attr:`hook_name`:
        ``"resid_post"`` (the residual stream at a block output), ``"resid_mid"``,
        ``"embed"``, ``"attn_out"``, ``"attn_z"``, ``"mlp_in"``, ``"mlp_out"`` or
        ``"unknown"``; ``None`` when the SAE has no hook name."""
        point = parse_hook(self.hook_name)
        return None if point is None else point.site

    @property
    def torch_dtype(self) -> torch.dtype:
        """The parameter dtype as a :class:`torch.dtype`."""
        return DTYPES[self.dtype]
