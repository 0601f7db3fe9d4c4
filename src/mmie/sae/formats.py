"""Readers for pretrained SAE checkpoints, one per published format, and the sniffer.

:meth:`mmie.SparseAutoencoder.load` calls :func:`read_checkpoint`, which detects the layout
from the files present (:func:`detect`) -- or takes the one it is told -- and runs that
layout's reader. Every reader returns an :class:`SAECheckpoint`: an :class:`~mmie.SAEConfig`
and tensors under SAELens' names and shapes (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``)
whose :meth:`~mmie.SparseAutoencoder.encode` and :meth:`~mmie.SparseAutoencoder.decode` equal
the format's own maths on *raw* activations. Whatever a format does differently is folded
into the weights exactly, or the checkpoint is refused with the reason:

* ``mmie``: ``sae_config.json`` + ``sae.safetensors``.
* ``saelens``: ``cfg.json`` + ``sae_weights.safetensors`` (SAELens >= 6 and < 6); TopK
  ``rescale_acts_by_decoder_norm`` folded, ``expected_average_only_in`` folded given its
  factor, per-token input normalisations refused.
* ``gemma_scope``: ``params.npz`` (Gemma 2); JumpReLU without input centring.
* ``gemma_scope_2``: ``config.json`` + ``params.safetensors`` (Gemma 3); transcoders and
  affine skip connections refused.
* ``llama_scope``: ``hyperparams.json`` + ``checkpoints/final.safetensors``; the dataset
  activation norm folded.
* ``llama_scope_r1``: ``config.json`` + ``sae_weights.safetensors``; the same, with
  ``log_jumprelu_threshold``.
* ``sparsify``: ``<hookpoint>/cfg.json`` + ``sae.safetensors``; skip connections and
  transcoders refused.
* ``dictionary_learning``: ``trainer_N/config.json`` + ``ae.pt``; dict classes mapped to
  architectures.
* ``qwen_scope``: ``layerN.sae.pt``; transposed matrices, ``k`` supplied by the caller.
* ``openai_topk``: a ``torch.save`` state dict; refused (per-token LayerNorm of the input).

Pickles are never unpickled: ``.pt`` files are read with ``torch.load(weights_only=True)``
and must hold a plain dict of tensors, ``.npz`` files with ``numpy.load(allow_pickle=False)``.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from mmie._io import read_checkpoint_config
from mmie._validation import is_integer, is_real
from mmie.errors import CheckpointError, ConfigError, MmieWarning
from mmie.sae.config import SAEConfig, parse_hook
from mmie.sae.layouts import LAYOUTS, LayoutChoice
from mmie.sae.saelens import config_from_saelens, describe, normalization

__all__ = [
    "LAYOUTS",
    "LAYOUT_FILES",
    "Detected",
    "SAECheckpoint",
    "checkpoint_from_saelens",
    "detect",
    "read_checkpoint",
]

logger = logging.getLogger(__name__)

MMIE_CONFIG_FILE = "sae_config.json"
MMIE_WEIGHTS_FILE = "sae.safetensors"
MMIE_FORMAT = "mmie-sae"
MMIE_FORMAT_VERSION = 1
SAELENS_CONFIG_FILE = "cfg.json"
SAELENS_WEIGHTS_FILE = "sae_weights.safetensors"

#: What each layout's directory holds (shown when a directory cannot be read).
LAYOUT_FILES: dict[str, str] = {
    "mmie": "sae_config.json + sae.safetensors",
    "saelens": "cfg.json + sae_weights.safetensors",
    "gemma_scope": "params.npz (in layer_L/width_W/average_l0_N/)",
    "gemma_scope_2": "config.json (with hf_hook_point_in) + params.safetensors",
    "llama_scope": "hyperparams.json + checkpoints/final.safetensors",
    "llama_scope_r1": "config.json (with hook_point_in) + sae_weights.safetensors",
    "sparsify": "<hookpoint>/cfg.json (with num_latents or expansion_factor) + sae.safetensors",
    "dictionary_learning": "trainer_N/config.json (with trainer.dict_class) + ae.pt",
    "qwen_scope": "layerN.sae.pt",
    "openai_topk": "a torch.save state dict with pre_bias and latent_bias (always refused)",
}
assert set(LAYOUT_FILES) == set(LAYOUTS)

_NEVER_UNPICKLES = (
    "mmie never unpickles objects: it reads .pt files only as plain dicts of tensors, with "
    "torch.load(weights_only=True)"
)


@dataclass(frozen=True)
class Detected:
    """What :func:`detect` found.

    Attributes:
        layout: one of :data:`LAYOUTS`.
        description: the layout in words (``"SAELens >= 6 cfg.json (...)"``).
        directory: the SAE's directory.
        file: the weights file, for layouts named by a file (``params.npz``,
            ``layerN.sae.pt``); else ``None``.
    """

    layout: str
    description: str
    directory: Path
    file: Path | None = None


@dataclass(frozen=True)
class SAECheckpoint:
    """A checkpoint read into mmie's terms, ready for :meth:`mmie.SparseAutoencoder.from_tensors`.

    Attributes:
        config: the SAE's configuration.
        tensors: tensors under SAELens' names (the architecture's set; matrices may still be
            in the ``[out, in]`` layout for the ``mmie`` and ``saelens`` layouts, which
            ``allow_transposed`` governs).
        layout: the layout read.
        description: the layout in words, for logs and errors.
        source: the file or directory read.
        folded: what the reader folded or converted, in words (empty when nothing).
    """

    config: SAEConfig
    tensors: dict[str, Tensor]
    layout: str
    description: str
    source: Path
    folded: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Options:
    k: int | None = None
    input_scale: float | None = None
    allow_transposed: bool = False


# ----------------------------------------------------------------------------- helpers
def _found(directory: Path, limit: int = 20) -> list[str]:
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    return names[:limit] + ([f"... ({len(names) - limit} more)"] if len(names) > limit else [])


def _a(description: str) -> str:
    """``description`` with its indefinite article."""
    return ("an " if description[:1] in "AEIOU" else "a ") + description


def _missing(det: Detected, what: str, hint: str = "") -> CheckpointError:
    """The error for a directory whose layout is recognised but a file is missing."""
    return CheckpointError(
        f"{det.directory} looks like {_a(det.description)} (layout {det.layout!r}: "
        f"{LAYOUT_FILES[det.layout]}), but {what} is missing; found {_found(det.directory)}."
        + (f" {hint}" if hint else "")
    )


def _json(path: Path) -> dict[str, Any]:
    return read_checkpoint_config(path)


def _safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err


def _tensor_dict(path: Path) -> dict[str, Any]:
    """A ``.pt`` file's contents, loaded with ``weights_only=True`` (never an arbitrary pickle)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as err:
        reason = _reason(err)
        raise CheckpointError(
            f"{path}: torch.load(weights_only=True) refused it ({reason[:300]}). The file "
            f"holds Python objects, not a plain dict of tensors, and {_NEVER_UNPICKLES}. "
            "Re-save it as a dict of tensors (torch.save({name: tensor, ...})) or as "
            "safetensors."
        ) from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a dict of tensors; {_NEVER_UNPICKLES}"
        )
    return dict(obj)


def _reason(err: BaseException) -> str:
    """The informative line of an exception (torch's weights-only errors bury it)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1]
            return reason.split(" Please use", 1)[0].strip()  # not torch's allowlisting advice
    return next((line for line in lines if line), type(err).__name__)


def _only_tensors(data: Mapping[str, Any], source: Path) -> dict[str, Tensor]:
    other = sorted(k for k, v in data.items() if not isinstance(v, Tensor))
    if other:
        raise CheckpointError(
            f"{source}: expected a plain dict of tensors, but {other} are not tensors "
            f"(keys: {sorted(data)}); {_NEVER_UNPICKLES}"
        )
    return dict(data)


def _expect_keys(
    tensors: Mapping[str, Any],
    required: set[str],
    source: Path,
    what: str,
    optional: set[str] | frozenset[str] = frozenset(),
) -> None:
    missing = sorted(required - set(tensors))
    unexpected = sorted(set(tensors) - required - set(optional))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: {what} has tensors {sorted(required)}; missing {missing}, "
            f"unexpected {unexpected} (found {sorted(tensors)})"
        )


def _shape(t: Tensor, want: tuple[int, ...], name: str, source: Path, dims: str) -> Tensor:
    if tuple(t.shape) != want:
        raise CheckpointError(
            f"{source}: {name} has shape {list(t.shape)}, expected {dims} = {list(want)}"
        )
    return t


def _int(value: Any, name: str, source: Path) -> int:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if not is_integer(value) or value < 1:
        raise CheckpointError(f"{source}: {name} must be a positive int, got {value!r}")
    return int(value)


def _number(value: Any, name: str, source: Path) -> float:
    if not is_real(value) or not math.isfinite(float(value)):
        raise CheckpointError(f"{source}: {name} must be a finite number, got {value!r}")
    return float(value)


def _config(source: Path, **fields: Any) -> SAEConfig:
    try:
        return SAEConfig(**fields)
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from err


def _orient(
    tensors: dict[str, Tensor], d_in: int, d_sae: int, allow_transposed: bool
) -> dict[str, Tensor]:
    """``W_enc``/``W_dec`` in SAELens' orientation when they are stored ``[out, in]`` and
    transposing is allowed (else left for ``from_tensors`` to report)."""
    out = dict(tensors)
    for name, want in (("W_enc", (d_in, d_sae)), ("W_dec", (d_sae, d_in))):
        t = out.get(name)
        if t is not None and allow_transposed and tuple(t.shape) == want[::-1] != want:
            out[name] = t.T
    return out


# ----------------------------------------------------------------------------- mmie
def _read_mmie(det: Detected, opts: _Options) -> SAECheckpoint:
    path = det.directory / MMIE_CONFIG_FILE
    data = _json(path)
    if data.get("format") != MMIE_FORMAT or "config" not in data:
        raise CheckpointError(f"{path} is not an mmie SAE config")
    version = data.get("format_version")
    if version != MMIE_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported "
            f"(this mmie reads {MMIE_FORMAT_VERSION})"
        )
    try:
        config = SAEConfig.from_dict(data["config"])
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: {err}") from err
    weights = det.directory / MMIE_WEIGHTS_FILE
    if not weights.is_file():
        raise _missing(det, MMIE_WEIGHTS_FILE)
    return SAECheckpoint(config, _safetensors(weights), det.layout, det.description, weights)


# ----------------------------------------------------------------------------- SAELens
def _read_saelens(det: Detected, opts: _Options) -> SAECheckpoint:
    cfg_path = det.directory / SAELENS_CONFIG_FILE
    cfg = _json(cfg_path)
    config_from_saelens(cfg, source=str(cfg_path), input_scale=opts.input_scale)  # check first
    weights = det.directory / SAELENS_WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(
            p.name for p in [*det.directory.glob("*.pt"), *det.directory.glob("*.bin")]
        )
        hint = (
            f"Found {pickles}: a SAELens directory keeps its weights in "
            f"{SAELENS_WEIGHTS_FILE}; {_NEVER_UNPICKLES}, and only for the formats that "
            "publish .pt files (dictionary_learning, Qwen Scope)."
            if pickles
            else ""
        )
        raise _missing(det, SAELENS_WEIGHTS_FILE, hint)
    return _saelens(
        cfg, _safetensors(weights), cfg_path, opts, det.description, det.directory, weights
    )


def checkpoint_from_saelens(
    cfg: Mapping[str, Any],
    tensors: Mapping[str, Tensor],
    *,
    source: str,
    input_scale: float | None = None,
    allow_transposed: bool = False,
) -> SAECheckpoint:
    """A SAELens config dict and state dict (a directory's or a live ``sae_lens.SAE``'s) in
    mmie's terms; see :func:`read_checkpoint`."""
    where = Path(source)
    opts = _Options(None, input_scale, allow_transposed)
    return _saelens(cfg, dict(tensors), where, opts, describe(cfg), where, where)


def _saelens(
    cfg: Mapping[str, Any],
    tensors: dict[str, Tensor],
    cfg_path: Path,
    opts: _Options,
    description: str,
    directory: Path,
    weights: Path,
) -> SAECheckpoint:
    config = config_from_saelens(cfg, source=str(cfg_path), input_scale=opts.input_scale)
    folded: list[str] = []
    if "scaling_factor" in tensors:
        scaling = tensors.pop("scaling_factor")
        if not torch.allclose(scaling, torch.ones_like(scaling)):
            raise CheckpointError(
                f"{weights}: a fine-tuning scaling_factor other than 1 is not supported; "
                "fold it into W_dec (W_dec *= scaling_factor[:, None]) first"
            )
    tensors = _orient(tensors, config.d_in, config.d_sae, opts.allow_transposed)
    if cfg.get("rescale_acts_by_decoder_norm", False):
        folded.append(_fold_decoder_norm(config, tensors, weights))
    if normalization(cfg) == "expected_average_only_in":
        assert opts.input_scale is not None  # config_from_saelens refuses it otherwise
        s = _positive_scale(opts.input_scale)
        for name, factor in (("W_enc", s), ("W_dec", 1 / s), ("b_dec", 1 / s)):
            if name in tensors:
                tensors[name] = tensors[name].float() * factor
        folded.append(
            f"the dataset-wide input scale s={s:g} (expected_average_only_in): W_enc *= s, "
            "W_dec /= s, b_dec /= s"
        )
    if config.architecture == "jumprelu":
        _warn_if_gemma_like(cfg, config, tensors, cfg_path)
    return SAECheckpoint(config, tensors, "saelens", description, directory, tuple(folded))


def _fold_decoder_norm(config: SAEConfig, tensors: dict[str, Tensor], source: Path) -> str:
    """Fold SAELens' ``rescale_acts_by_decoder_norm`` into the weights, as SAELens does when
    it saves a TopK SAE for inference: ``W_enc[:, i] *= n_i``, ``b_enc[i] *= n_i``,
    ``W_dec[i] /= n_i`` with ``n_i = ‖W_dec[i]‖``.

    Unfolded, SAELens selects the top ``k`` of ``p_i · n_i`` and decodes ``(f_i / n_i) W_dec[i]``;
    folded, the pre-activations are ``p_i · n_i`` themselves and the decoder rows unit-norm,
    so encode and decode are unchanged.
    """
    if config.architecture != "topk":
        raise CheckpointError(
            f"{source}: rescale_acts_by_decoder_norm is a TopK setting (SAELens rescales the "
            f"TopK selection by the decoder norms); a {config.architecture} SAE with it set "
            "has no defined meaning, so mmie does not guess one"
        )
    w_dec = tensors["W_dec"].float()
    if tuple(w_dec.shape) != (config.d_sae, config.d_in):
        raise CheckpointError(
            f"{source}: W_dec has shape {list(w_dec.shape)}, expected [d_sae, d_in] = "
            f"{[config.d_sae, config.d_in]}; the decoder norms that "
            "rescale_acts_by_decoder_norm folds are those of its rows (pass "
            "allow_transposed=True for an [out, in] layout)"
        )
    norms = w_dec.norm(dim=-1)  # (d_sae,)
    zero = torch.nonzero(norms == 0).flatten().tolist()
    if zero:
        raise CheckpointError(
            f"{source}: rescale_acts_by_decoder_norm cannot be folded: decoder rows {zero[:10]} "
            "have norm 0, and SAELens divides each latent's activation by its decoder norm "
            "(0/0) -- this checkpoint is not usable as it is"
        )
    tensors["W_enc"] = tensors["W_enc"].float() * norms[None, :]
    tensors["b_enc"] = tensors["b_enc"].float() * norms
    tensors["W_dec"] = w_dec / norms[:, None]
    return (
        "rescale_acts_by_decoder_norm (SAELens' TopK training default): W_enc[:, i] *= n_i, "
        "b_enc[i] *= n_i, W_dec[i] /= n_i with n_i = |W_dec[i]|"
    )


def _warn_if_gemma_like(
    cfg: Mapping[str, Any], config: SAEConfig, tensors: Mapping[str, Tensor], source: Path
) -> None:
    """Warn when a JumpReLU ``cfg.json``'s ``apply_b_dec_to_input`` contradicts its weights.

    Hand-written configs for Gemma Scope and other converted SAEs often omit
    ``apply_b_dec_to_input``, which SAELens then takes as ``True``; Gemma Scope's SAEs need
    ``False``. The weights give a hint: ``b_dec`` is close to the activations' mean, where a
    sparse code fires few latents -- under the right reading. When the configured reading
    fires at least a quarter of the latents there and the other reading at most a quarter
    as many, the config is probably wrong.
    """
    claimed = config.apply_b_dec_to_input
    try:
        w_enc = tensors["W_enc"].float()
        b_enc, b_dec = tensors["b_enc"].float(), tensors["b_dec"].float()
        threshold = tensors["threshold"].float()
    except KeyError:
        return
    if tuple(w_enc.shape) != (config.d_in, config.d_sae) or tuple(b_dec.shape) != (config.d_in,):
        return
    centred = int((b_enc > threshold).sum())  # x = b_dec, b_dec subtracted
    raw = int((b_dec @ w_enc + b_enc > threshold).sum())  # x = b_dec as it is
    mine, other = (centred, raw) if claimed else (raw, centred)
    if mine < 0.25 * config.d_sae or 4 * other > mine:
        return
    said = (
        f"says apply_b_dec_to_input={str(claimed).lower()}"
        if "apply_b_dec_to_input" in cfg
        else "does not say apply_b_dec_to_input, so SAELens' default (true: subtract b_dec from "
        "the input) applies"
    )
    warnings.warn(
        f"{source} {said}, but its weights look like apply_b_dec_to_input="
        f"{str(not claimed).lower()}: at x = b_dec (about the activations' mean) {mine} of "
        f"{config.d_sae} latents fire as configured and {other} the other way. Gemma Scope "
        "SAEs (and hand-converted ones) do not subtract b_dec (apply_b_dec_to_input = false). "
        "Set it explicitly in cfg.json, or read the original params.npz with "
        "layout='gemma_scope'; mmie.check_reconstruction tells which reading fits the model.",
        MmieWarning,
        stacklevel=5,
    )


def _positive_scale(value: float) -> float:
    if not is_real(value) or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"input_scale must be a finite number > 0, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- Gemma Scope
_WIDTH_RE = re.compile(r"^width_(\d+)([km])$")
_GEMMA_RELEASE_RE = re.compile(r"gemma-scope-(2b|9b|27b)-(pt|it)-(res|mlp|att)")


def _gemma_path_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for part in path.parts:
        if match := re.fullmatch(r"layer_(\d+)", part):
            info["layer"] = int(match.group(1))
        elif match := _WIDTH_RE.fullmatch(part):
            info["width"] = int(match.group(1)) * (1024 if match.group(2) == "k" else 1 << 20)
            info["width_name"] = part
        elif match := re.fullmatch(r"average_l0_(\d+)", part):
            info["average_l0"] = int(match.group(1))
        elif part == "embedding":
            info["embedding"] = True
    if match := _GEMMA_RELEASE_RE.search(str(path)):
        info["size"], info["variant"], info["site"] = match.groups()
    return info


def _read_gemma_scope(det: Detected, opts: _Options) -> SAECheckpoint:
    npz = det.file or det.directory / "params.npz"
    if not npz.is_file():
        raise _missing(det, "params.npz")
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {name: np.array(data[name]) for name in data.files}
    except ValueError as err:  # object arrays need pickle
        raise CheckpointError(
            f"{npz}: numpy.load(allow_pickle=False) refused it ({err}); mmie never unpickles "
            "objects -- a Gemma Scope params.npz holds plain float arrays"
        ) from err
    except (OSError, EOFError) as err:
        raise CheckpointError(f"{npz} is not a readable .npz file: {err}") from err
    tensors = {
        ("W_" + name[2:] if name.startswith("w_") else name): torch.from_numpy(a)
        for name, a in arrays.items()
    }
    _expect_keys(
        tensors,
        {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"},
        npz,
        "a Gemma Scope (JumpReLU) params.npz",
    )
    if tensors["W_enc"].ndim != 2:
        raise CheckpointError(f"{npz}: W_enc must be a [d_in, d_sae] matrix")
    d_in, d_sae = (int(n) for n in tensors["W_enc"].shape)
    info = _gemma_path_info(npz.parent)
    if "width" in info and info["width"] != d_sae:
        raise CheckpointError(
            f"{npz}: the path says {info['width_name']} ({info['width']} latents) but W_enc "
            f"has {d_sae}; is this the right file?"
        )
    layer = info.get("layer")
    hook_name = None
    site = info.get("site")
    if info.get("embedding"):
        hook_name, layer = "hook_embed", None
    elif layer is not None and site is not None:
        hook_name = {
            "res": f"blocks.{layer}.hook_resid_post",
            "mlp": f"blocks.{layer}.hook_mlp_out",
            "att": f"blocks.{layer}.attn.hook_z",
        }[site]
    else:
        logger.info(
            "%s: the path does not name a Gemma Scope release (gemma-scope-*-res/mlp/att), so "
            "the hook site is unknown; check the SAE with mmie.check_reconstruction",
            npz,
        )
    model_name = None
    if "size" in info:
        model_name = f"google/gemma-2-{info['size']}" + ("-it" if info["variant"] == "it" else "")
    config = _config(
        npz,
        architecture="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        hook_layer=layer,
        hook_name=hook_name,
        model_name=model_name,
        dtype="float32",
    )
    return SAECheckpoint(
        config,
        {n: t.float() for n, t in tensors.items()},
        det.layout,
        det.description,
        npz,
        ("apply_b_dec_to_input = False (Gemma Scope does not centre the input)",),
    )


def _read_gemma_scope_2(det: Detected, opts: _Options) -> SAECheckpoint:
    cfg_path = det.directory / "config.json"
    weights = det.file or det.directory / "params.safetensors"
    if not cfg_path.is_file():
        raise _missing(det, "config.json", "Gemma Scope 2 describes each SAE in config.json.")
    if not weights.is_file():
        raise _missing(det, weights.name)
    cfg = _json(cfg_path)
    arch = cfg.get("architecture", "jump_relu")
    if arch not in ("jump_relu", "jumprelu"):
        raise CheckpointError(
            f"{cfg_path}: architecture {arch!r} is not a Gemma Scope 2 SAE mmie reads "
            "(only 'jump_relu')"
        )
    hook_in = cfg.get("hf_hook_point_in")
    hook_out = cfg.get("hf_hook_point_out", hook_in)
    kind = str(cfg.get("type", "sae"))
    if kind != "sae" or hook_out != hook_in:
        raise CheckpointError(
            f"{cfg_path}: a Gemma Scope 2 {kind} reading {hook_in!r} and writing {hook_out!r}: "
            "a transcoder predicts another activation, it does not reconstruct its input, so "
            "it is not an SAE mmie can gate with"
        )
    if cfg.get("affine_connection"):
        raise CheckpointError(
            f"{cfg_path}: affine_connection is set: the output adds a dense affine map of the "
            "input (a skip connection), which a plain SAE cannot represent"
        )
    raw = _safetensors(weights)
    _expect_keys(
        raw,
        {"w_enc", "w_dec", "b_enc", "b_dec", "threshold"},
        weights,
        "a Gemma Scope 2 params.safetensors",
    )
    tensors = {("W_" + n[2:] if n.startswith("w_") else n): t.float() for n, t in raw.items()}
    if tensors["W_enc"].ndim != 2:
        raise CheckpointError(f"{weights}: w_enc must be a [d_in, d_sae] matrix")
    d_in, d_sae = (int(n) for n in tensors["W_enc"].shape)
    width = cfg.get("width")
    if width is not None and width != d_sae:
        raise CheckpointError(f"{cfg_path}: width is {width} but w_enc has {d_sae} latents")
    point = parse_hook(hook_in) if isinstance(hook_in, str) else None
    config = _config(
        cfg_path,
        architecture="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        hook_layer=point.layer if point is not None else None,
        hook_name=hook_in if isinstance(hook_in, str) else None,
        model_name=cfg.get("model_name"),
        dtype="float32",
    )
    return SAECheckpoint(
        config,
        tensors,
        det.layout,
        det.description,
        det.directory,
        ("lower-case w_enc/w_dec renamed; apply_b_dec_to_input = False",),
    )


# ----------------------------------------------------------------------------- Llama Scope
def _lm_saes_norms(
    cfg: Mapping[str, Any], raw: Mapping[str, Tensor], hook_in: str, hook_out: str
) -> tuple[float, float] | None:
    """``(norm_in, norm_out)`` from the config or the weights file, if stored."""
    stored = cfg.get("dataset_average_activation_norm")
    if isinstance(stored, Mapping):
        norm_in = stored.get("in", stored.get(hook_in))
        norm_out = stored.get("out", stored.get(hook_out, norm_in))
        if norm_in is not None and norm_out is not None:
            return float(norm_in), float(norm_out)
    key_in, key_out = (f"dataset_average_activation_norm.{h}" for h in (hook_in, hook_out))
    if key_in in raw:
        norm_in = float(raw[key_in].item())
        return norm_in, float(raw[key_out].item()) if key_out in raw else norm_in
    return None


def _read_lm_saes(
    det: Detected,
    opts: _Options,
    cfg_path: Path,
    weights: Path,
    *,
    scalar_threshold: bool,
) -> SAECheckpoint:
    """Llama Scope (``hyperparams.json``) and its R1-distill variant (``config.json``), both
    written by OpenMOSS' ``lm_saes``.

    Their maths, on activations normalised to norm ``sqrt(d_model)`` on average
    (``x_n = s_in · x``, ``s_in = sqrt(d_model) / norm_in``)::

        p   = (x_n − [b_dec if apply_decoder_bias_to_pre_encoder]) encoder.weightᵀ + encoder.bias
        f   = p · 1[p · c > θ]          c = ‖decoder.weight[:, i]‖ if
                                        sparsity_include_decoder_norm, else 1
        x̂_n = f decoder.weightᵀ + decoder.bias,   x̂ = x̂_n / s_out  (s_out = sqrt(d_model)/norm_out)

    Folded for raw activations with ``f`` unchanged: ``W_enc = s_in · encoder.weightᵀ``,
    ``b_enc = encoder.bias − decoder.bias · encoder.weightᵀ`` (only when the decoder bias is
    subtracted first), ``threshold_i = θ / c_i``, ``W_dec = decoder.weightᵀ / s_out``,
    ``b_dec = decoder.bias / s_out``, ``apply_b_dec_to_input = False``.
    """
    cfg = _json(cfg_path)
    raw = _safetensors(weights)
    d_model = _int(cfg.get("d_model"), "d_model", cfg_path)
    d_sae = cfg.get("d_sae")
    if d_sae is None and cfg.get("expansion_factor") is not None:
        d_sae = d_model * _int(cfg.get("expansion_factor"), "expansion_factor", cfg_path)
    d_sae = _int(d_sae, "d_sae (or d_model * expansion_factor)", cfg_path)
    hook_in = cfg.get("hook_point_in")
    if not isinstance(hook_in, str):
        raise CheckpointError(f"{cfg_path}: hook_point_in is missing")
    hook_out = cfg.get("hook_point_out", hook_in)
    if hook_out != hook_in:
        raise CheckpointError(
            f"{cfg_path}: hook_point_in {hook_in!r} differs from hook_point_out {hook_out!r}: "
            "a transcoder predicts another activation, it does not reconstruct its input, so "
            "it is not an SAE mmie can gate with"
        )
    sae_type = cfg.get("sae_type", "sae")
    if sae_type != "sae":
        raise CheckpointError(f"{cfg_path}: sae_type {sae_type!r} is not a plain SAE")
    if cfg.get("use_glu_encoder"):
        raise CheckpointError(
            f"{cfg_path}: use_glu_encoder multiplies the pre-activations by a sigmoid gate of "
            "the input, which a plain SAE cannot represent"
        )
    act_fn = str(cfg.get("act_fn", "jumprelu")).lower()
    if scalar_threshold:
        theta_raw = cfg.get("jump_relu_threshold", 0.0)
        theta = torch.full((d_sae,), _number(theta_raw, "jump_relu_threshold", cfg_path))
        required = {"encoder.weight", "encoder.bias", "decoder.weight"}
    else:
        required = {"encoder.weight", "encoder.bias", "decoder.weight", "log_jumprelu_threshold"}
    use_dec_bias = bool(cfg.get("use_decoder_bias", True))
    optional = {"decoder.bias"} | {
        k for k in raw if k.startswith("dataset_average_activation_norm.")
    }
    _expect_keys(
        raw,
        required | ({"decoder.bias"} if use_dec_bias else set()),
        weights,
        "an lm_saes SAE",
        optional,
    )
    enc_w = _shape(
        raw["encoder.weight"].float(),
        (d_sae, d_model),
        "encoder.weight",
        weights,
        "[d_sae, d_model]",
    )
    enc_b = _shape(raw["encoder.bias"].float(), (d_sae,), "encoder.bias", weights, "[d_sae]")
    dec_w = _shape(
        raw["decoder.weight"].float(),
        (d_model, d_sae),
        "decoder.weight",
        weights,
        "[d_model, d_sae]",
    )
    dec_b = (
        _shape(raw["decoder.bias"].float(), (d_model,), "decoder.bias", weights, "[d_model]")
        if use_dec_bias
        else torch.zeros(d_model)
    )
    if not scalar_threshold:
        theta = _shape(
            raw["log_jumprelu_threshold"].float(),
            (d_sae,),
            "log_jumprelu_threshold",
            weights,
            "[d_sae]",
        ).exp()
    if act_fn == "topk" and float(theta.max()) > 0:
        act_fn = "jumprelu"  # lm_saes' own inference conversion (latents independent)
    if act_fn not in ("jumprelu", "relu"):
        raise CheckpointError(
            f"{cfg_path}: act_fn {act_fn!r} is not read (Llama Scope SAEs are JumpReLU; a TopK "
            "one needs its jump_relu_threshold)"
        )
    if act_fn == "jumprelu" and float(theta.min()) < 0:
        raise CheckpointError(
            f"{cfg_path}: a negative JumpReLU threshold lets negative pre-activations through "
            "(lm_saes does not clamp them), which mmie's JumpReLU cannot represent"
        )
    folded: list[str] = []
    norm = str(cfg.get("norm_activation", "dataset-wise"))
    if norm == "dataset-wise":
        norms = _lm_saes_norms(cfg, raw, hook_in, hook_out)
        if norms is not None and opts.input_scale is not None:
            raise CheckpointError(
                f"{cfg_path}: the checkpoint stores its dataset activation norms {norms}; do "
                "not pass input_scale as well"
            )
        if norms is not None:
            norm_in, norm_out = norms
            if norm_in <= 0 or norm_out <= 0:
                raise CheckpointError(f"{cfg_path}: dataset norms must be > 0, got {norms}")
            s_in, s_out = math.sqrt(d_model) / norm_in, math.sqrt(d_model) / norm_out
        elif opts.input_scale is not None:
            s_in = s_out = _positive_scale(opts.input_scale)
        else:
            raise CheckpointError(
                f"{cfg_path}: norm_activation is 'dataset-wise' (the SAE reads activations "
                "scaled by s = sqrt(d_model) / dataset-average norm) but neither the config "
                "nor the weights store dataset_average_activation_norm. Pass "
                "SparseAutoencoder.load(path, input_scale=s) (SAELens lists s as the SAE's "
                "norm_scaling_factor) and mmie folds it into the weights."
            )
        folded.append(
            f"dataset activation norm: input scaled by sqrt(d_model)/norm_in = {s_in:.6g} "
            f"(into W_enc), output by norm_out/sqrt(d_model) = {1 / s_out:.6g} "
            "(into W_dec, b_dec)"
        )
    elif norm in ("inference", "none"):
        s_in = s_out = 1.0
    else:
        raise CheckpointError(
            f"{cfg_path}: norm_activation {norm!r} rescales every token (or batch) by its own "
            "norm; the scale changes from token to token, so no fixed weights can absorb it"
        )
    b_enc = enc_b
    if use_dec_bias and cfg.get("apply_decoder_bias_to_pre_encoder", False):
        b_enc = enc_b - enc_w @ dec_b  # (x_n - b_dec) Wᵀ + b = x_n Wᵀ + (b - W b_dec)
        folded.append("decoder bias subtracted before encoding: folded into b_enc")
    tensors: dict[str, Tensor] = {
        "W_enc": (enc_w * s_in).T.contiguous(),
        "b_enc": b_enc,
        "W_dec": (dec_w / s_out).T.contiguous(),
        "b_dec": dec_b / s_out,
    }
    arch = act_fn
    if arch == "jumprelu":
        if cfg.get("sparsity_include_decoder_norm", False):
            dec_norm = dec_w.norm(dim=0)  # (d_sae,)
            theta = torch.where(dec_norm > 0, theta / dec_norm, torch.full_like(theta, math.inf))
            folded.append("sparsity_include_decoder_norm: threshold_i = θ / |decoder column i|")
        tensors["threshold"] = theta
    point = parse_hook(hook_in)
    config = _config(
        cfg_path,
        architecture=arch,
        d_in=d_model,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        hook_layer=point.layer if point is not None else None,
        hook_name=hook_in,
        model_name=cfg.get("model_name"),
        dtype="float32",
    )
    return SAECheckpoint(config, tensors, det.layout, det.description, det.directory, tuple(folded))


def _read_llama_scope(det: Detected, opts: _Options) -> SAECheckpoint:
    cfg_path = det.directory / "hyperparams.json"
    weights = det.directory / "checkpoints" / "final.safetensors"
    if not weights.is_file():
        pts = sorted(p.name for p in (det.directory / "checkpoints").glob("*.pt"))
        raise _missing(
            det,
            "checkpoints/final.safetensors",
            f"Found checkpoints/{pts}; {_NEVER_UNPICKLES}." if pts else "",
        )
    return _read_lm_saes(det, opts, cfg_path, weights, scalar_threshold=True)


def _read_llama_scope_r1(det: Detected, opts: _Options) -> SAECheckpoint:
    cfg_path = det.directory / "config.json"
    weights = det.directory / SAELENS_WEIGHTS_FILE
    if not cfg_path.is_file():
        raise _missing(det, "config.json")
    if not weights.is_file():
        raise _missing(det, SAELENS_WEIGHTS_FILE)
    return _read_lm_saes(det, opts, cfg_path, weights, scalar_threshold=False)


# ----------------------------------------------------------------------------- sparsify
def _read_sparsify(det: Detected, opts: _Options) -> SAECheckpoint:
    cfg_path = det.directory / SAELENS_CONFIG_FILE
    cfg = _json(cfg_path)
    weights = det.directory / "sae.safetensors"
    if not weights.is_file():
        raise _missing(det, "sae.safetensors")
    d_in = _int(cfg.get("d_in"), "d_in", cfg_path)
    num_latents = cfg.get("num_latents") or 0
    if not num_latents:
        num_latents = d_in * _int(cfg.get("expansion_factor"), "expansion_factor", cfg_path)
    d_sae = _int(num_latents, "num_latents", cfg_path)
    if cfg.get("transcode"):
        raise CheckpointError(
            f"{cfg_path}: transcode is set: a sparsify transcoder predicts a module's output "
            "from its input instead of reconstructing its input, so it is not an SAE mmie can "
            "gate with"
        )
    raw = _safetensors(weights)
    if cfg.get("skip_connection") or "W_skip" in raw:
        raise CheckpointError(
            f"{cfg_path}: skip_connection is set: the output adds x W_skipᵀ, a dense linear "
            "map of the input, which a plain SAE cannot represent"
        )
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise CheckpointError(
            f"{cfg_path}: activation {activation!r} is not read (mmie's TopK keeps the k "
            "largest latents of the whole code; 'groupmax' keeps one per group)"
        )
    if cfg.get("signed"):
        raise CheckpointError(f"{cfg_path}: signed activations are not representable")
    k = _int(cfg.get("k"), "k", cfg_path)
    _expect_keys(
        raw, {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}, weights, "a sparsify SAE"
    )
    enc_w = _shape(
        raw["encoder.weight"].float(),
        (d_sae, d_in),
        "encoder.weight",
        weights,
        "[num_latents, d_in]",
    )
    tensors = {
        "W_enc": enc_w.T.contiguous(),
        "b_enc": raw["encoder.bias"].float(),
        "W_dec": raw["W_dec"].float(),
        "b_dec": raw["b_dec"].float(),
    }
    hookpoint = det.directory.name
    point = parse_hook(hookpoint)
    model_name = None
    parent_cfg = det.directory.parent / "config.json"
    if parent_cfg.is_file():
        try:
            model_name = _json(parent_cfg).get("model")
        except CheckpointError:
            model_name = None
    config = _config(
        cfg_path,
        architecture="topk",
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        apply_b_dec_to_input=True,
        hook_layer=point.layer if point is not None else None,
        hook_name=hookpoint,
        model_name=model_name if isinstance(model_name, str) else None,
        dtype="float32",
    )
    notes = ["encoder.weight transposed to W_enc"]
    if cfg.get("multi_topk"):
        notes.append("multi_topk only changes sparsify's training loss; inference uses k")
    return SAECheckpoint(config, tensors, det.layout, det.description, det.directory, tuple(notes))


# ----------------------------------------------------------------------------- dictionary_learning
def _dl_topk_threshold(t: Mapping[str, Tensor], source: Path) -> tuple[str, Tensor | None]:
    """BatchTopK SAEs encode with their learned threshold θ: ``ReLU(p) · 1[ReLU(p) > θ]``,
    which is JumpReLU with threshold θ when θ >= 0 and ReLU when θ < 0 (never learned)."""
    theta = t["threshold"].float()
    if theta.numel() != 1:
        raise CheckpointError(f"{source}: threshold must be a scalar, got {list(theta.shape)}")
    value = float(theta.item())
    return ("relu", None) if value < 0 else ("jumprelu", theta.reshape(()))


def _read_dictionary_learning(det: Detected, opts: _Options) -> SAECheckpoint:
    cfg_path = det.directory / "config.json"
    weights = det.file or det.directory / "ae.pt"
    if not cfg_path.is_file():
        raise _missing(det, "config.json", "dictionary_learning writes it next to ae.pt.")
    if not weights.is_file():
        raise _missing(det, "ae.pt")
    trainer = _json(cfg_path).get("trainer")
    if not isinstance(trainer, Mapping):
        raise CheckpointError(f"{cfg_path}: expected a 'trainer' object (dictionary_learning)")
    data = _tensor_dict(weights)
    if "ae" in data and "optimizer" in data:
        raise CheckpointError(
            f"{weights} is a dictionary_learning training backup (keys {sorted(data)}), not a "
            "final ae.pt: its biases are not yet rescaled to raw activations. Use the ae.pt "
            "written at the end of training."
        )
    t = _only_tensors(data, weights)
    dict_class = trainer.get("dict_class")
    d_in = _int(trainer.get("activation_dim"), "trainer.activation_dim", cfg_path)
    d_sae = _int(trainer.get("dict_size"), "trainer.dict_size", cfg_path)
    k: int | None = None
    apply_b_dec = True
    what = f"a dictionary_learning {dict_class}"
    out: dict[str, Tensor]
    if dict_class == "AutoEncoder":
        _expect_keys(t, {"bias", "encoder.weight", "encoder.bias", "decoder.weight"}, weights, what)
        arch = "relu"
        out = {
            "W_enc": t["encoder.weight"].T,
            "b_enc": t["encoder.bias"],
            "W_dec": t["decoder.weight"].T,
            "b_dec": t["bias"],
        }
    elif dict_class == "AutoEncoderNew":
        _expect_keys(
            t, {"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"}, weights, what
        )
        arch, apply_b_dec = "relu", False
        out = {
            "W_enc": t["encoder.weight"].T,
            "b_enc": t["encoder.bias"],
            "W_dec": t["decoder.weight"].T,
            "b_dec": t["decoder.bias"],
        }
    elif dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        _expect_keys(
            t,
            {"encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k"},
            weights,
            what,
            {"threshold"},
        )
        out = {
            "W_enc": t["encoder.weight"].T,
            "b_enc": t["encoder.bias"],
            "W_dec": t["decoder.weight"].T,
            "b_dec": t["b_dec"],
        }
        if dict_class == "AutoEncoderTopK":
            arch = "topk"  # its default encode ignores the (inference-only) threshold
            k = _int(t["k"], "k", weights)
            if trainer.get("k") is not None and trainer["k"] != k:
                raise CheckpointError(
                    f"{cfg_path}: trainer.k = {trainer['k']} but {weights.name} stores k = {k}"
                )
        else:
            if "threshold" not in t:
                raise CheckpointError(f"{weights}: a BatchTopKSAE needs its threshold")
            arch, theta = _dl_topk_threshold(t, weights)
            if theta is not None:
                out["threshold"] = theta.expand(d_sae)
    elif dict_class == "MatryoshkaBatchTopKSAE":
        _expect_keys(
            t,
            {"W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold"},
            weights,
            what,
            {"group_sizes"},
        )
        out = {name: t[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        arch, theta = _dl_topk_threshold(t, weights)
        if theta is not None:
            out["threshold"] = theta.expand(d_sae)
    elif dict_class == "JumpReluAutoEncoder":
        _expect_keys(t, {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}, weights, what)
        arch, apply_b_dec = "jumprelu", False  # its apply_b_dec_to_input defaults to False
        out = dict(t)
    elif dict_class == "GatedAutoEncoder":
        _expect_keys(
            t,
            {"decoder_bias", "encoder.weight", "r_mag", "gate_bias", "mag_bias", "decoder.weight"},
            weights,
            what,
        )
        arch = "gated"
        out = {
            "W_enc": t["encoder.weight"].T,
            "b_gate": t["gate_bias"],
            "r_mag": t["r_mag"],
            "b_mag": t["mag_bias"],
            "W_dec": t["decoder.weight"].T,
            "b_dec": t["decoder_bias"],
        }
    else:
        raise CheckpointError(
            f"{cfg_path}: dictionary_learning dict_class {dict_class!r} is not read; mmie maps "
            "AutoEncoder and AutoEncoderNew (relu), AutoEncoderTopK (topk), BatchTopKSAE and "
            "MatryoshkaBatchTopKSAE (jumprelu with their threshold), JumpReluAutoEncoder "
            "(jumprelu) and GatedAutoEncoder (gated)"
        )
    raw_layer = trainer.get("layer")
    layer = int(raw_layer) if is_integer(raw_layer) and int(raw_layer) >= 0 else None  # type: ignore[arg-type]
    submodule = trainer.get("submodule_name")
    point = parse_hook(submodule) if isinstance(submodule, str) else None
    hook_name = None
    if point is not None and point.site != "unknown" and point.layer is not None:
        suffix = {
            "resid_post": "hook_resid_post",
            "mlp_out": "hook_mlp_out",
            "attn_out": "hook_attn_out",
        }.get(point.site)
        hook_name = f"blocks.{point.layer}.{suffix}" if suffix else submodule
        layer = point.layer
    elif layer is not None:
        hook_name = f"blocks.{layer}.hook_resid_post"  # dictionary_learning's default site
    lm_name = trainer.get("lm_name")
    config = _config(
        cfg_path,
        architecture=arch,
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        apply_b_dec_to_input=apply_b_dec,
        hook_layer=layer,
        hook_name=hook_name,
        model_name=lm_name if isinstance(lm_name, str) else None,
        dtype="float32",
    )
    out = {name: tensor.float().contiguous() for name, tensor in out.items()}
    return SAECheckpoint(
        config,
        out,
        det.layout,
        det.description,
        weights,
        (f"{dict_class} read as {arch}",),
    )


# ----------------------------------------------------------------------------- Qwen Scope
def _qwen_k(directory: Path, opts: _Options, source: Path) -> int:
    side: int | None = None
    side_file = None
    for name in ("config.json", "cfg.json"):
        path = directory / name
        if path.is_file():
            cfg = _json(path)
            for key in ("k", "top_k", "topk"):
                if cfg.get(key) is not None:
                    side, side_file = _int(cfg[key], key, path), path
                    break
        if side is not None:
            break
    if opts.k is not None and side is not None and opts.k != side:
        raise CheckpointError(f"{source}: k={opts.k} was passed but {side_file} says k={side}")
    k = opts.k if opts.k is not None else side
    if k is None:
        raise CheckpointError(
            f"{source}: a Qwen Scope checkpoint does not store k (the latents kept per token). "
            "Pass SparseAutoencoder.load(path, k=...) with the value published for this SAE, "
            f'or write {{"k": ...}} into config.json next to {source.name}.'
        )
    return k


def _read_qwen_scope(det: Detected, opts: _Options) -> SAECheckpoint:
    weights = det.file
    if weights is None:
        candidates = sorted(det.directory.glob("*.sae.pt"))
        if len(candidates) != 1:
            raise CheckpointError(
                f"{det.directory} holds {len(candidates)} Qwen Scope files "
                f"{[p.name for p in candidates][:10]}; pass the path of one layerN.sae.pt"
            )
        weights = candidates[0]
    if not weights.is_file():
        raise _missing(det, weights.name)
    t = _only_tensors(_tensor_dict(weights), weights)
    _expect_keys(t, {"W_enc", "W_dec", "b_enc", "b_dec"}, weights, "a Qwen Scope SAE")
    if t["W_enc"].ndim != 2:
        raise CheckpointError(f"{weights}: W_enc must be a [d_sae, d_in] matrix")
    d_sae, d_in = (int(n) for n in t["W_enc"].shape)
    k = _qwen_k(det.directory, opts, weights)
    _shape(t["W_dec"], (d_in, d_sae), "W_dec", weights, "[d_in, d_sae] (Qwen Scope layout)")
    match = re.search(r"layer_?(\d+)", weights.name)
    config = _config(
        weights,
        architecture="topk",
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        apply_b_dec_to_input=False,
        hook_layer=int(match.group(1)) if match else None,
        dtype="float32",
    )
    tensors = {
        "W_enc": t["W_enc"].float().T.contiguous(),
        "W_dec": t["W_dec"].float().T.contiguous(),
        "b_enc": t["b_enc"].float(),
        "b_dec": t["b_dec"].float(),
    }
    return SAECheckpoint(
        config,
        tensors,
        det.layout,
        det.description,
        weights,
        ("W_enc [d_sae, d_in] and W_dec [d_in, d_sae] transposed; apply_b_dec_to_input = False",),
    )


# ----------------------------------------------------------------------------- OpenAI
def _openai_refusal(source: Path) -> CheckpointError:
    return CheckpointError(
        f"{source} is an OpenAI TopK autoencoder (openai/sparse_autoencoder: pre_bias, "
        "latent_bias, encoder.weight, decoder.weight). It normalises every input token with "
        "a LayerNorm ((x - mean) / std, per token) before encoding and multiplies the "
        "reconstruction back by that token's std and mean. That scale changes from token to "
        "token, so no fixed weights can absorb it: it is not representable as a plain SAE on "
        "the raw residual stream, and mmie refuses it rather than read it without its "
        "normalisation (which would reconstruct badly and silently)."
    )


def _read_openai_topk(det: Detected, opts: _Options) -> SAECheckpoint:
    files = [det.file] if det.file is not None else sorted(det.directory.glob("*.pt"))
    for file in files:
        keys = set(_tensor_dict(file))
        if {"pre_bias", "latent_bias"} <= keys:
            raise _openai_refusal(file)
    raise CheckpointError(
        f"{det.file or det.directory}: no OpenAI TopK state dict (with pre_bias and "
        f"latent_bias) found among {[f.name for f in files]}"
    )


_READERS: dict[str, Callable[[Detected, _Options], SAECheckpoint]] = {
    "mmie": _read_mmie,
    "saelens": _read_saelens,
    "gemma_scope": _read_gemma_scope,
    "gemma_scope_2": _read_gemma_scope_2,
    "llama_scope": _read_llama_scope,
    "llama_scope_r1": _read_llama_scope_r1,
    "sparsify": _read_sparsify,
    "dictionary_learning": _read_dictionary_learning,
    "qwen_scope": _read_qwen_scope,
    "openai_topk": _read_openai_topk,
}
assert set(_READERS) == set(LAYOUTS)

_DESCRIPTIONS = {
    "mmie": "mmie SAE directory",
    "saelens": "SAELens directory",
    "gemma_scope": "Gemma Scope (Gemma 2) params.npz",
    "gemma_scope_2": "Gemma Scope 2 (Gemma 3) directory",
    "llama_scope": "Llama Scope directory",
    "llama_scope_r1": "Llama Scope R1-distill directory",
    "sparsify": "EleutherAI sparsify hookpoint directory",
    "dictionary_learning": "dictionary_learning trainer directory",
    "qwen_scope": "Qwen Scope layerN.sae.pt",
    "openai_topk": "OpenAI TopK autoencoder",
}


# ----------------------------------------------------------------------------- sniffing
def _is_sparsify_cfg(cfg: Mapping[str, Any], names: set[str]) -> bool:
    if "sae.safetensors" in names and SAELENS_WEIGHTS_FILE not in names:
        return True
    return ("num_latents" in cfg or "expansion_factor" in cfg) and "d_sae" not in cfg


def _read_json_quietly(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sniff_dir(directory: Path) -> Detected | None:
    """The layout of a directory from its files, or ``None``."""
    try:
        names = {p.name for p in directory.iterdir()}
    except OSError:
        return None

    def found(layout: str, description: str | None = None, file: Path | None = None) -> Detected:
        return Detected(layout, description or _DESCRIPTIONS[layout], directory, file)

    if MMIE_CONFIG_FILE in names:
        return found("mmie")
    if SAELENS_CONFIG_FILE in names:
        cfg = _read_json_quietly(directory / SAELENS_CONFIG_FILE)
        if _is_sparsify_cfg(cfg, names):
            return found("sparsify")
        return found("saelens", describe(cfg))
    if "params.npz" in names:
        return found("gemma_scope", file=directory / "params.npz")
    config = _read_json_quietly(directory / "config.json") if "config.json" in names else {}
    if "params.safetensors" in names or "hf_hook_point_in" in config:
        return found("gemma_scope_2")
    if "hyperparams.json" in names:
        return found("llama_scope")
    if "ae.pt" in names or "trainer" in config:
        return found("dictionary_learning")
    if "hook_point_in" in config or (SAELENS_WEIGHTS_FILE in names and "config.json" in names):
        return found("llama_scope_r1")
    if SAELENS_WEIGHTS_FILE in names:
        return found("saelens")  # cfg.json missing: the reader says so
    qwen = sorted(n for n in names if n.endswith(".sae.pt"))
    if qwen:
        return found("qwen_scope", file=directory / qwen[0] if len(qwen) == 1 else None)
    pts = sorted(n for n in names if n.endswith((".pt", ".pth")))
    if len(pts) == 1:
        return _sniff_pt(directory / pts[0])
    return None


def _sniff_pt(path: Path) -> Detected | None:
    """A lone ``.pt`` file: recognised by its keys (read with ``weights_only=True``)."""
    try:
        keys = set(_tensor_dict(path))
    except CheckpointError:
        return None
    if {"pre_bias", "latent_bias"} <= keys:
        return Detected("openai_topk", _DESCRIPTIONS["openai_topk"], path.parent, path)
    if {"W_enc", "W_dec", "b_enc", "b_dec"} == keys:
        return Detected(
            "qwen_scope", "Qwen Scope-style .pt (W_enc [d_sae, d_in])", path.parent, path
        )
    return None


def _sniff_file(path: Path) -> Detected | None:
    name = path.name
    if name == "params.npz":
        return Detected("gemma_scope", _DESCRIPTIONS["gemma_scope"], path.parent, path)
    if name == "params.safetensors":
        return Detected("gemma_scope_2", _DESCRIPTIONS["gemma_scope_2"], path.parent, path)
    if name.endswith(".sae.pt"):
        return Detected("qwen_scope", _DESCRIPTIONS["qwen_scope"], path.parent, path)
    if name == "ae.pt":
        return Detected(
            "dictionary_learning", _DESCRIPTIONS["dictionary_learning"], path.parent, path
        )
    if name == "final.safetensors" and path.parent.name == "checkpoints":
        return _sniff_dir(path.parent.parent)
    if name.endswith((".json", ".safetensors")):
        return _sniff_dir(path.parent)
    if name.endswith((".pt", ".pth")):
        return _sniff_pt(path)
    return None


def _candidates(directory: Path, depth: int = 3, budget: int = 500) -> list[str]:
    """Subdirectories (up to ``depth`` levels) whose files a layout recognises."""
    out: list[str] = []
    frontier = [directory]
    seen = 0
    for _ in range(depth):
        nxt = []
        for parent in frontier:
            try:
                children = sorted(p for p in parent.iterdir() if p.is_dir())
            except OSError:
                continue
            for child in children:
                seen += 1
                if seen > budget:
                    return out
                det = _sniff_dir(child)
                if det is not None:
                    out.append(f"{child.relative_to(directory)} ({det.layout})")
                else:
                    nxt.append(child)
        frontier = nxt
    return out


def detect(path: str | Path) -> Detected:
    """The layout of an SAE directory (or weights file), from the files present.

    Args:
        path: a directory, or a file naming its layout (``params.npz``,
            ``layerN.sae.pt``, ``ae.pt``, a ``.pt`` state dict).

    Returns:
        What was found.

    Raises:
        CheckpointError: nothing recognisable; the message lists the files found, any
            subdirectories that do hold SAEs, and what each layout expects.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p} does not exist")
    det = _sniff_file(p) if p.is_file() else _sniff_dir(p)
    if det is not None:
        return det
    where = p if p.is_dir() else p.parent
    below = _candidates(where) if p.is_dir() else []
    if below:
        shown = below[:12] + ([f"... ({len(below) - 12} more)"] if len(below) > 12 else [])
        raise CheckpointError(
            f"{p} holds no SAE itself, but these subdirectories do: {shown}. Pass one of them."
        )
    expected = "; ".join(f"{name}: {files}" for name, files in LAYOUT_FILES.items())
    raise CheckpointError(
        f"{p}: no SAE layout recognised (found {_found(where)}). mmie reads {expected}. Pass "
        "layout=... to force one (its reader then says what is missing)."
    )


def read_checkpoint(
    path: str | Path,
    *,
    layout: LayoutChoice | str = "auto",
    k: int | None = None,
    input_scale: float | None = None,
    allow_transposed: bool = False,
) -> SAECheckpoint:
    """Read an SAE checkpoint of any layout in :data:`LAYOUTS` into mmie's terms.

    Args:
        path: the SAE's directory or weights file.
        layout: ``"auto"`` (detect it) or one of :data:`LAYOUTS` to force it.
        k: latents per token for formats that do not store it (Qwen Scope).
        input_scale: a dataset-wide input scaling factor the checkpoint does not store
            (SAELens ``expected_average_only_in``, Llama Scope R1 ``dataset-wise``), folded
            into the weights.
        allow_transposed: accept ``[out, in]`` matrices in mmie and SAELens directories.

    Returns:
        The checkpoint, with what was folded listed in ``folded``.

    Raises:
        CheckpointError: no recognisable layout, a missing file, an unsupported setting
            (the message gives the reason), or tensors that do not fit the format.
        ValueError: an unknown layout name or an invalid ``k``/``input_scale``.
    """
    p = Path(path)
    if layout == "auto":
        det = detect(p)
    elif layout in LAYOUTS:
        if not p.exists():
            raise CheckpointError(f"{p} does not exist")
        directory = p if p.is_dir() else p.parent
        file = None if p.is_dir() else p
        det = Detected(layout, _DESCRIPTIONS[layout], directory, file)
        if layout == "saelens" and (directory / SAELENS_CONFIG_FILE).is_file():
            det = Detected(
                layout, describe(_read_json_quietly(directory / SAELENS_CONFIG_FILE)), directory
            )
    else:
        raise ValueError(f"layout must be 'auto' or one of {list(LAYOUTS)}, got {layout!r}")
    if k is not None and (not is_integer(k) or k < 1):
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if input_scale is not None:
        input_scale = _positive_scale(input_scale)
    needed = {
        "saelens": SAELENS_CONFIG_FILE,
        "sparsify": SAELENS_CONFIG_FILE,
        "llama_scope": "hyperparams.json",
        "mmie": MMIE_CONFIG_FILE,
    }.get(det.layout)
    if needed is not None and not (det.directory / needed).is_file():
        raise _missing(det, needed)
    logger.info("%s: reading %s (layout %r)", p, _a(det.description), det.layout)
    ckpt = _READERS[det.layout](det, _Options(k, input_scale, allow_transposed))
    for note in ckpt.folded:
        logger.info("%s: %s", p, note)
    return ckpt
