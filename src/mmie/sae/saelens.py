"""SAELens ``cfg.json`` conversion for :class:`~mmie.SAEConfig`.

:func:`config_from_saelens` reads SAELens 6.x configs (``architecture``, ``k``,
``metadata.hook_name``) and older ones (``hook_point``, ``activation_fn_str``,
``activation_fn_kwargs.k``); :func:`config_to_saelens` writes a SAELens 6.x config that both
SAELens and :meth:`mmie.SparseAutoencoder.load` read. The tensors of a SAELens directory
(and what has to be folded into them) are :mod:`mmie.sae.formats`' business.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mmie._validation import is_integer
from mmie.errors import CheckpointError, ConfigError
from mmie.sae.config import SAEConfig, parse_hook

__all__ = [
    "config_from_saelens",
    "config_to_saelens",
    "describe",
    "normalization",
    "saelens_version",
]

# Per-token input normalisations: the scale depends on the token, so no weight can absorb it.
_PER_TOKEN = {
    "layer_norm": "a per-token LayerNorm of the SAE input ((x - mean) / std, undone on the "
    "output with that token's mean and std)",
    "layernorm": "a per-token LayerNorm of the SAE input",
    "constant_norm_rescale": "a per-token rescaling of the SAE input to norm sqrt(d_in) "
    "(undone on the output with that token's norm)",
}


def saelens_version(cfg: Mapping[str, Any]) -> str | None:
    """The ``sae_lens_version`` a config was written by (top level or ``metadata``), if any."""
    meta = cfg.get("metadata")
    version = cfg.get("sae_lens_version") or (
        meta.get("sae_lens_version") if isinstance(meta, Mapping) else None
    )
    return str(version) if version else None


def _is_v6(cfg: Mapping[str, Any]) -> bool:
    """SAELens' own rule: a config without a version >= 6.0 is a pre-6.0 config."""
    version = saelens_version(cfg)
    match = re.match(r"^(\d+)", version or "")
    return match is not None and int(match.group(1)) >= 6


def normalization(cfg: Mapping[str, Any]) -> str:
    """The config's ``normalize_activations`` as a SAELens 6 string (pre-6.0 booleans
    mapped as SAELens maps them: ``True`` is ``"expected_average_only_in"``)."""
    norm = cfg.get("normalize_activations", "none")
    if norm is None or norm is False:
        return "none"
    if norm is True:
        return "expected_average_only_in"
    return str(norm)


def config_from_saelens(
    cfg: Mapping[str, Any], *, source: str, input_scale: float | None = None
) -> SAEConfig:
    """Translate a SAELens ``cfg.json`` (6.x or older) into an :class:`~mmie.SAEConfig`.

    SAELens' ``"standard"`` architecture is ``"relu"`` (or ``"topk"`` when a pre-6.0
    config names it in ``activation_fn_str``); ``k`` is read from ``k`` or, for configs older
    than SAELens 6.0, ``activation_fn_kwargs.k``. The hook name (``metadata.hook_name``,
    ``hook_name`` or pre-6.0 ``hook_point``) gives ``hook_layer``: ``blocks.L.hook_resid_post``
    is ``L``, ``blocks.L.hook_resid_pre`` is ``L - 1``.

    Args:
        cfg: the parsed ``cfg.json``.
        source: name used in error messages (a path).
        input_scale: the dataset-wide input scaling factor of an
            ``"expected_average_only_in"`` SAE, which the caller folds into the weights;
            without it such a config is refused.

    Returns:
        The equivalent :class:`~mmie.SAEConfig`.

    Raises:
        CheckpointError: an unsupported architecture, activation function or activation
            normalisation, a topk config without ``k``, missing or invalid ``d_in``/``d_sae``.
    """
    meta = cfg.get("metadata") or cfg.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{source}: 'metadata' must be an object")
    for key in ("d_in", "d_sae"):
        if key not in cfg:
            raise CheckpointError(
                f"{source}: a SAELens cfg.json names d_in and d_sae, but this one has no "
                f"{key!r} (keys: {sorted(cfg)}); it is probably another format. Pass "
                "layout=... to SparseAutoencoder.load to say which (see "
                "mmie.sae.formats.LAYOUTS)."
            )
    raw_arch = cfg.get("architecture", "standard")
    act_fn = cfg.get("activation_fn_str", cfg.get("activation_fn"))
    if raw_arch == "standard":
        if act_fn in (None, "relu"):
            arch = "relu"
        elif act_fn == "topk":
            arch = "topk"
        else:
            raise CheckpointError(f"{source}: activation function {act_fn!r} is not supported")
    elif raw_arch in ("topk", "jumprelu", "gated"):
        arch = raw_arch
    else:
        raise CheckpointError(
            f"{source}: SAELens architecture {raw_arch!r} is not supported; mmie reads "
            "standard, topk, jumprelu and gated SAEs (SAELens saves BatchTopK and Matryoshka "
            "SAEs for inference as jumprelu: use save_inference_model)"
        )
    k: int | None = None
    if arch == "topk":
        kwargs = cfg.get("activation_fn_kwargs") or {}
        k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, Mapping) else None)
        if k is None:
            raise CheckpointError(
                f"{source}: a topk SAE config needs 'k' (or activation_fn_kwargs.k for "
                "configs older than SAELens 6.0)"
            )
    norm = normalization(cfg)
    if norm in _PER_TOKEN:
        raise CheckpointError(
            f"{source}: normalize_activations={norm!r} is {_PER_TOKEN[norm]}. Its scale "
            "changes from token to token, so no fixed weights can absorb it and it is not "
            "representable as a plain SAE on the raw residual stream; mmie cannot read this "
            "SAE."
        )
    if norm == "expected_average_only_in":
        if input_scale is None:
            raise CheckpointError(
                f"{source}: normalize_activations='expected_average_only_in' multiplies every "
                "input by a dataset-wide factor s that cfg.json does not store. Pass "
                "SparseAutoencoder.load(path, input_scale=s) (SAELens lists s as the SAE's "
                "norm_scaling_factor; s = sqrt(d_in) / average activation norm) and mmie folds "
                "it into the weights (W_enc *= s, W_dec /= s, b_dec /= s)."
            )
    elif norm != "none":
        raise CheckpointError(
            f"{source}: normalize_activations={norm!r} is not a SAELens setting mmie knows"
        )
    hook_name = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    point = parse_hook(hook_name)
    hook_layer = point.layer if point is not None else None
    if hook_layer is None and (point is None or point.site not in ("embed",)):
        raw_layer = meta.get("hook_layer", cfg.get("hook_layer", cfg.get("hook_point_layer")))
        hook_layer = raw_layer if is_integer(raw_layer) and raw_layer >= 0 else None
    model_name = meta.get("model_name") or cfg.get("model_name")
    try:
        return SAEConfig(
            architecture=arch,  # type: ignore[arg-type]
            d_in=cfg["d_in"],
            d_sae=cfg["d_sae"],
            k=k,
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
            hook_layer=hook_layer,
            hook_name=hook_name,
            model_name=model_name,
            dtype=cfg.get("dtype") or "float32",
        )
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from err


def describe(cfg: Mapping[str, Any]) -> str:
    """``"SAELens >= 6 cfg.json (sae_lens_version 6.12.0)"`` or ``"SAELens < 6 cfg.json"``."""
    version = saelens_version(cfg)
    if _is_v6(cfg):
        return f"SAELens >= 6 cfg.json (sae_lens_version {version})"
    return "SAELens < 6 cfg.json" + (f" (version {version})" if version else "")


def config_to_saelens(config: SAEConfig) -> dict[str, Any]:
    """A SAELens 6.x ``cfg.json`` dict for ``config``; :func:`config_from_saelens` inverts it.

    Args:
        config: the SAE configuration.

    Returns:
        A JSON-serialisable dict (``"relu"`` is written as SAELens' ``"standard"``).
    """
    out: dict[str, Any] = {
        "architecture": "standard" if config.architecture == "relu" else config.architecture,
        "d_in": config.d_in,
        "d_sae": config.d_sae,
        "dtype": config.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": config.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": config.model_name,
            "hook_name": config.hook_name
            or (
                f"blocks.{config.hook_layer}.hook_resid_post"
                if config.hook_layer is not None
                else None
            ),
            "hook_layer": config.hook_layer,
            # SAELens treats configs without a >= 6.0 version as pre-6.0 and would drop k.
            "sae_lens_version": "6.0.0",
        },
    }
    if config.k is not None:
        out["k"] = config.k
    if config.architecture == "topk":
        out["rescale_acts_by_decoder_norm"] = False  # the weights are (already) folded
    return out
