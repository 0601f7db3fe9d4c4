"""SAELens ``cfg.json`` conversion for :class:`~mmie.SAEConfig`.

:func:`config_from_saelens` reads SAELens 6.x configs (``architecture``, ``k``,
``metadata.hook_name``) and older ones (``hook_point``, ``activation_fn_str``,
``activation_fn_kwargs.k``); :func:`config_to_saelens` writes a SAELens 6.x config that both
SAELens and :meth:`mmie.SparseAutoencoder.load` read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mmie._validation import is_integer
from mmie.errors import CheckpointError, ConfigError
from mmie.sae.config import SAEConfig

__all__ = ["config_from_saelens", "config_to_saelens"]

_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def config_from_saelens(cfg: Mapping[str, Any], *, source: str) -> SAEConfig:
    """Translate a SAELens ``cfg.json`` (6.x or older) into an :class:`~mmie.SAEConfig`.

    SAELens' ``"standard"`` architecture is ``"relu"`` (or ``"topk"`` when a pre-6.0
    config names it in ``activation_fn_str``); ``k`` is read from ``k`` or, for configs older
    than SAELens 6.0, ``activation_fn_kwargs.k``. A ``blocks.L.hook_resid_post`` hook name
    gives ``hook_layer = L``, ``blocks.L.hook_resid_pre`` gives ``L - 1``.

    Args:
        cfg: the parsed ``cfg.json``.
        source: name used in error messages (a path).

    Returns:
        The equivalent :class:`~mmie.SAEConfig`.

    Raises:
        CheckpointError: an unsupported architecture, activation function, activation
            normalisation or attention (``hook_z``) SAE, a topk config without ``k``, or
            invalid values.
    """
    meta = cfg.get("metadata") or cfg.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{source}: 'metadata' must be an object")
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
            "standard, topk, jumprelu and gated SAEs"
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
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, False, "none"):
        raise CheckpointError(
            f"{source}: normalize_activations={norm!r} is not supported. Fold the dataset "
            "scaling factor s into the weights (W_enc *= s, W_dec /= s, b_dec /= s), set "
            "normalize_activations to 'none' and load again."
        )
    if cfg.get("reshape_activations", "none") not in (None, "none"):
        raise CheckpointError(
            f"{source}: attention (hook_z) SAEs are not supported; mmie gates the residual stream"
        )
    hook_name = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    hook_layer = _layer_from_hook(hook_name)
    if hook_layer is None:
        raw_layer = meta.get("hook_layer", cfg.get("hook_layer", cfg.get("hook_point_layer")))
        hook_layer = raw_layer if is_integer(raw_layer) and raw_layer >= 0 else None
    model_name = meta.get("model_name") or cfg.get("model_name")
    try:
        return SAEConfig(
            architecture=arch,  # type: ignore[arg-type]
            d_in=cfg.get("d_in"),  # type: ignore[arg-type]
            d_sae=cfg.get("d_sae"),  # type: ignore[arg-type]
            k=k,
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
            hook_layer=hook_layer,
            hook_name=hook_name,
            model_name=model_name,
            dtype=cfg.get("dtype") or "float32",
        )
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from err


def _layer_from_hook(hook_name: object) -> int | None:
    if not isinstance(hook_name, str):
        return None
    match = _HOOK_RE.match(hook_name)
    if match is None:
        return None
    layer = int(match.group(1))
    if match.group(2) == "post":
        return layer
    return layer - 1 if layer > 0 else None


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
    return out
