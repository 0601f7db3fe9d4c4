"""Sparse autoencoders (SAEs) on the residual stream: model, training, I/O and checks.

:class:`SparseAutoencoder` implements the four inference architectures of SAELens with the
same parameter names and layouts (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``):

============  ==============================================================================
topk          keep the ``k`` largest pre-activations (after ReLU), zero the rest
relu          ``ReLU(p)`` (SAELens "standard")
jumprelu      ``ReLU(p) * 1[p > threshold]`` (threshold kept in fp32)
gated         ``1[x' W_enc + b_gate > 0] * ReLU(x' (W_enc * exp(r_mag)) + b_mag)`` (no ``b_enc``)
============  ==============================================================================

with ``x' = x - b_dec`` when ``apply_b_dec_to_input`` (else ``x' = x``), the pre-activation
``p = x' W_enc + b_enc`` and the decoder ``x_hat = f W_dec + b_dec``.

Checkpoints are safetensors + JSON, never pickle. :meth:`SparseAutoencoder.load` reads
mmie's own layout and SAELens directories (``cfg.json`` of SAELens 6.x and of older
releases, ``sae_weights.safetensors``) and checks every tensor's shape against
``d_in``/``d_sae``. :func:`check_reconstruction` runs real activations through the SAE and
fails loudly when it cannot belong to the layer (a TopK SAE read as ReLU, transposed
weights, the wrong layer) -- the silent failure SAE users hit most often.

Example:
    >>> import torch
    >>> from mmie.sae import SAEConfig, SparseAutoencoder
    >>> sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=8, d_sae=32, k=4))
    >>> f = sae.encode(torch.randn(5, 8))
    >>> tuple(f.shape), int((f > 0).sum(-1).max()) <= 4
    ((5, 32), True)
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from mmie._io import read_checkpoint_config, write_checkpoint
from mmie.errors import CheckpointError, ConfigError, IncompatibleModelError, ReconstructionError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "ReconstructionReport",
    "SAEConfig",
    "SAEQuality",
    "SAETrainingStats",
    "SparseAutoencoder",
    "check_reconstruction",
    "sae_quality",
    "train_sae",
    "train_sae_on_model",
]

logger = logging.getLogger(__name__)

Architecture = Literal["topk", "relu", "jumprelu", "gated"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}

# Tensor names per architecture and the dimensions of their shapes.
_TENSOR_SHAPES: dict[str, dict[str, tuple[str, ...]]] = {
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

MMIE_CONFIG_FILE = "sae_config.json"
MMIE_WEIGHTS_FILE = "sae.safetensors"
SAELENS_CONFIG_FILE = "cfg.json"
SAELENS_WEIGHTS_FILE = "sae_weights.safetensors"
_FORMAT = "mmie-sae"
_FORMAT_VERSION = 1


def _dtype_name(dtype: str | torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return name


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class SAEConfig:
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
    normalize_activations: Literal["none"] = "none"  # scaling must be folded into weights
    hook_layer: int | None = None  # block index whose output the SAE reads (metadata)
    hook_name: str | None = None  # e.g. "blocks.6.hook_resid_post" (metadata)
    model_name: str | None = None  # model the SAE was trained on (metadata)
    dtype: str = "float32"  # parameter dtype

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"
            )
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.architecture == "topk":
            if not _is_int(self.k) or not 1 <= self.k <= self.d_sae:  # type: ignore[operator]
                raise ConfigError(
                    f"k must be an int in [1, d_sae={self.d_sae}] for a topk SAE, got {self.k!r}"
                )
        elif self.k is not None:
            raise ConfigError(
                f"k is only used by topk SAEs; got k={self.k!r} with "
                f"architecture={self.architecture!r}"
            )
        if not isinstance(self.apply_b_dec_to_input, bool):
            raise ConfigError(
                f"apply_b_dec_to_input must be a bool, got {self.apply_b_dec_to_input!r}"
            )
        if self.normalize_activations != "none":
            raise ConfigError(
                "normalize_activations must be 'none': fold the activation scaling factor s "
                "into the weights first (W_enc *= s, W_dec /= s, b_dec /= s); got "
                f"{self.normalize_activations!r}"
            )
        if self.hook_layer is not None and (not _is_int(self.hook_layer) or self.hook_layer < 0):
            raise ConfigError(
                f"hook_layer must be a non-negative int or None, got {self.hook_layer!r}"
            )
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))

    @property
    def torch_dtype(self) -> torch.dtype:
        """The parameter dtype as a :class:`torch.dtype`."""
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SAEConfig:
        """Build a config from :meth:`to_dict` output.

        Raises:
            ConfigError: unknown keys or invalid values.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown SAEConfig keys {unknown}; expected a subset of {sorted(known)}"
            )
        return cls(**dict(data))


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder over ``d_in``-wide activations (SAELens parameter layout).

    A fresh instance has unit-norm random decoder rows (from a local generator seeded with
    ``seed``), ``W_enc = W_decᵀ`` and zero biases/thresholds; use :func:`train_sae`,
    :meth:`load` or :meth:`from_tensors` to get a useful one. To change the dtype, prefer
    ``load(..., dtype=...)``: ``module.to(dtype)`` would also cast the fp32 JumpReLU
    threshold.

    Args:
        config: the :class:`SAEConfig`.
        seed: seed of the initial decoder directions (global RNG untouched).
        device: where to put the parameters.

    Attributes:
        config: the configuration.
        W_enc: ``[d_in, d_sae]`` encoder.
        W_dec: ``[d_sae, d_in]`` decoder (row ``i`` is latent ``i``'s direction).
        b_dec: ``[d_in]`` decoder bias.
        b_enc: ``[d_sae]`` encoder bias (not for gated SAEs).
        threshold: ``[d_sae]`` fp32 JumpReLU thresholds (jumprelu only).
        b_gate, r_mag, b_mag: ``[d_sae]`` gated-SAE parameters (gated only).
    """

    W_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def __init__(
        self,
        config: SAEConfig,
        *,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, SAEConfig):
            raise TypeError(f"config must be an SAEConfig, got {type(config).__name__}")
        self.config = config
        dtype = config.torch_dtype
        gen = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(config.d_sae, config.d_in, generator=gen)  # (d_sae, d_in)
        w_dec /= w_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        self.W_enc = nn.Parameter(w_dec.T.contiguous().to(dtype))  # (d_in, d_sae)
        self.b_dec = nn.Parameter(torch.zeros(config.d_in, dtype=dtype))
        arch = config.architecture
        if arch != "gated":
            self.b_enc = nn.Parameter(torch.zeros(config.d_sae, dtype=dtype))
        if arch == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(config.d_sae, dtype=torch.float32))
        if arch == "gated":
            self.b_gate = nn.Parameter(torch.zeros(config.d_sae, dtype=dtype))
            self.r_mag = nn.Parameter(torch.zeros(config.d_sae, dtype=dtype))
            self.b_mag = nn.Parameter(torch.zeros(config.d_sae, dtype=dtype))
        if device is not None:
            self.to(device)

    # ------------------------------------------------------------------ properties
    @property
    def architecture(self) -> str:
        """The activation family (``config.architecture``)."""
        return self.config.architecture

    @property
    def d_in(self) -> int:
        """Input width."""
        return self.config.d_in

    @property
    def d_sae(self) -> int:
        """Number of latents."""
        return self.config.d_sae

    @property
    def k(self) -> int | None:
        """Latents kept per token (topk) or ``None``."""
        return self.config.k

    def extra_repr(self) -> str:
        extra = f", k={self.k}" if self.k is not None else ""
        return f"architecture={self.architecture!r}, d_in={self.d_in}, d_sae={self.d_sae}{extra}"

    def tensors(self) -> dict[str, Tensor]:
        """The SAE's tensors by SAELens name (detached views, no copy)."""
        return {name: p.detach() for name, p in self.named_parameters()}

    # ------------------------------------------------------------------ maths
    def _sae_in(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"x must end in d_in={self.d_in}, got shape {tuple(x.shape)}")
        x = x.to(self.W_enc.dtype)
        return x - self.b_dec if self.config.apply_b_dec_to_input else x

    def pre_activations(self, x: Tensor) -> Tensor:
        """Pre-activations ``p = x' W_enc + b_enc``.

        For gated SAEs this is the magnitude path ``x' (W_enc * exp(r_mag)) + b_mag``.

        Args:
            x: ``[..., d_in]`` activations (cast to the SAE dtype).

        Returns:
            ``[..., d_sae]``.
        """
        x_in = self._sae_in(x)  # (..., d_in)
        if self.architecture == "gated":
            return x_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return x_in @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """Latent activations ``f(x)`` of the SAE's architecture.

        Args:
            x: ``[..., d_in]`` activations (cast to the SAE dtype).

        Returns:
            ``[..., d_sae]`` non-negative activations.
        """
        arch = self.architecture
        if arch == "gated":
            x_in = self._sae_in(x)
            gate = (x_in @ self.W_enc + self.b_gate) > 0  # (..., d_sae)
            mag = torch.relu(x_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag)
            return gate.to(mag.dtype) * mag
        p = self.pre_activations(x)  # (..., d_sae)
        if arch == "relu":
            return torch.relu(p)
        if arch == "jumprelu":
            keep = p.float() > self.threshold.float()  # fp32 comparison
            return torch.relu(p) * keep.to(p.dtype)
        assert self.k is not None  # topk; guaranteed by SAEConfig
        top = p.topk(self.k, dim=-1)
        return torch.zeros_like(p).scatter(-1, top.indices, torch.relu(top.values))

    def decode(self, f: Tensor) -> Tensor:
        """Reconstruction ``f W_dec + b_dec``.

        Args:
            f: ``[..., d_sae]`` latent activations.

        Returns:
            ``[..., d_in]``.
        """
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct ``x``: ``decode(encode(x))``, ``[..., d_in] -> [..., d_in]``."""
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ construction / I/O
    @classmethod
    def from_tensors(
        cls,
        config: SAEConfig,
        tensors: Mapping[str, Tensor],
        *,
        allow_transposed: bool = False,
        device: str | torch.device | None = None,
        source: str = "tensors",
    ) -> SparseAutoencoder:
        """Build an SAE from named tensors (SAELens names), checking every shape.

        Args:
            config: the configuration the tensors must match.
            tensors: ``W_enc``, ``W_dec``, ``b_dec`` and the architecture's other tensors
                (``b_enc``; ``threshold`` or ``log_threshold`` for jumprelu; ``b_gate``,
                ``r_mag``, ``b_mag`` for gated). Copied, never aliased.
            allow_transposed: accept ``W_enc``/``W_dec`` stored in the ``[out, in]``
                (``nn.Linear``) layout, i.e. ``W_enc [d_sae, d_in]``, and transpose them.
                Only detectable when ``d_in != d_sae``; for square SAEs
                :func:`check_reconstruction` catches transposed weights.
            device: where to put the parameters.
            source: name used in error messages (a path).

        Returns:
            The SAE, in eval mode.

        Raises:
            CheckpointError: a tensor is missing, unexpected or of the wrong shape.
        """
        arch = config.architecture
        expected = _TENSOR_SHAPES[arch]
        data = dict(tensors)
        if arch == "jumprelu" and "threshold" not in data and "log_threshold" in data:
            data["threshold"] = data.pop("log_threshold").float().exp()
        missing = sorted(set(expected) - set(data))
        unexpected = sorted(set(data) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{source}: a {arch} SAE needs tensors {sorted(expected)}; missing {missing}, "
                f"unexpected {unexpected}. Check that the config's architecture matches the "
                "checkpoint."
            )
        dims = {"d_in": config.d_in, "d_sae": config.d_sae}
        sae = cls(config)
        with torch.no_grad():
            for name, dim_names in expected.items():
                t = data[name]
                if not isinstance(t, Tensor):
                    raise CheckpointError(f"{source}: {name} is a {type(t).__name__}, not a tensor")
                want = tuple(dims[d] for d in dim_names)
                got = tuple(t.shape)
                if got != want:
                    if len(want) == 2 and got == want[::-1]:
                        if not allow_transposed:
                            raise CheckpointError(
                                f"{source}: {name} has shape {list(got)} but a "
                                f"[{', '.join(dim_names)}] = {list(want)} matrix was expected; it "
                                "looks stored in the [out, in] (nn.Linear) layout. Pass "
                                "allow_transposed=True to transpose it on load."
                            )
                        logger.info("%s: transposing %s from %s to %s", source, name, got, want)
                        t = t.T
                    else:
                        raise CheckpointError(
                            f"{source}: {name} has shape {list(got)}, expected "
                            f"[{', '.join(dim_names)}] = {list(want)} for d_in={config.d_in}, "
                            f"d_sae={config.d_sae}"
                        )
                target = getattr(sae, name)
                target.data = t.detach().to(dtype=target.dtype).clone().contiguous()
        if device is not None:
            sae.to(device)
        return sae.eval()

    def save(self, directory: str | Path, *, layout: Literal["mmie", "saelens"] = "mmie") -> Path:
        """Write the SAE to ``directory`` (created if needed) in safetensors + JSON.

        Args:
            directory: target directory.
            layout: ``"mmie"`` writes ``sae_config.json`` + ``sae.safetensors``;
                ``"saelens"`` writes a SAELens 6.x directory (``cfg.json`` +
                ``sae_weights.safetensors``) that SAELens and :meth:`load` both read.

        Returns:
            The directory.
        """
        tensors = self.tensors()
        if layout == "mmie":
            payload = {
                "format": _FORMAT,
                "format_version": _FORMAT_VERSION,
                "config": self.config.to_dict(),
            }
            return write_checkpoint(
                directory,
                tensors=tensors,
                weights_name=MMIE_WEIGHTS_FILE,
                config=payload,
                config_name=MMIE_CONFIG_FILE,
                metadata={"format": _FORMAT},
            )
        if layout == "saelens":
            return write_checkpoint(
                directory,
                tensors=tensors,
                weights_name=SAELENS_WEIGHTS_FILE,
                config=_config_to_saelens(self.config),
                config_name=SAELENS_CONFIG_FILE,
            )
        raise ValueError(f"layout must be 'mmie' or 'saelens', got {layout!r}")

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        allow_transposed: bool = False,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> SparseAutoencoder:
        """Load an SAE saved by :meth:`save` or a SAELens directory.

        The layout is detected from the files present: ``sae_config.json`` (mmie) or
        ``cfg.json`` + ``sae_weights.safetensors`` (SAELens). SAELens 6.x configs
        (``architecture``, ``k``, ``metadata.hook_name``) and older ones (``hook_point``,
        ``activation_fn_str``, ``activation_fn_kwargs.k``) are both understood; SAELens'
        ``"standard"`` architecture is ``"relu"``. A ``blocks.L.hook_resid_post`` hook name
        gives ``hook_layer = L``, ``blocks.L.hook_resid_pre`` gives ``L - 1``.

        Args:
            directory: the SAE directory.
            allow_transposed: accept ``[out, in]`` weight matrices (see :meth:`from_tensors`).
            dtype: parameter dtype (default: the config's).
            device: where to put the parameters.

        Returns:
            The SAE in eval mode.

        Raises:
            CheckpointError: no recognised layout, an unsupported SAELens setting, or tensors
                that do not match the config. Pickle files are never read.
        """
        path = Path(directory)
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a directory")
        if (path / MMIE_CONFIG_FILE).is_file():
            config, weights = _read_mmie_config(path), path / MMIE_WEIGHTS_FILE
        elif (path / SAELENS_CONFIG_FILE).is_file():
            raw = _read_json(path / SAELENS_CONFIG_FILE)
            config, weights = (
                _config_from_saelens(raw, source=str(path)),
                path / SAELENS_WEIGHTS_FILE,
            )
        else:
            found = sorted(p.name for p in path.iterdir())
            raise CheckpointError(
                f"{path} holds neither an mmie SAE ({MMIE_CONFIG_FILE}) nor a SAELens SAE "
                f"({SAELENS_CONFIG_FILE} + {SAELENS_WEIGHTS_FILE}); found {found}"
            )
        if not weights.is_file():
            pickles = sorted(p.name for p in [*path.glob("*.pt"), *path.glob("*.bin")])
            hint = (
                " (pickle files are never loaded; convert them to safetensors)" if pickles else ""
            )
            raise CheckpointError(f"missing weights file {weights}{hint}")
        if dtype is not None:
            config = _replace_config(config, dtype=_dtype_name(dtype))
        tensors = load_file(str(weights))
        if "scaling_factor" in tensors:
            scaling = tensors.pop("scaling_factor")
            if not torch.allclose(scaling, torch.ones_like(scaling)):
                raise CheckpointError(
                    f"{weights}: a fine-tuning scaling_factor other than 1 is not supported; "
                    "fold it into W_dec (W_dec *= scaling_factor[:, None]) first"
                )
        sae = cls.from_tensors(
            config, tensors, allow_transposed=allow_transposed, device=device, source=str(weights)
        )
        logger.info("loaded %r from %s", sae, path)
        return sae


def _replace_config(config: SAEConfig, **changes: Any) -> SAEConfig:
    return SAEConfig.from_dict({**config.to_dict(), **changes})


def _read_json(path: Path) -> dict[str, Any]:
    return read_checkpoint_config(path)


def _read_mmie_config(path: Path) -> SAEConfig:
    data = _read_json(path / MMIE_CONFIG_FILE)
    if data.get("format") != _FORMAT or "config" not in data:
        raise CheckpointError(f"{path / MMIE_CONFIG_FILE} is not an mmie SAE config")
    version = data.get("format_version")
    if version != _FORMAT_VERSION:
        raise CheckpointError(
            f"{path / MMIE_CONFIG_FILE}: format_version {version!r} is not supported "
            f"(this mmie reads {_FORMAT_VERSION})"
        )
    try:
        return SAEConfig.from_dict(data["config"])
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path / MMIE_CONFIG_FILE}: {err}") from err


_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def _config_from_saelens(cfg: Mapping[str, Any], *, source: str) -> SAEConfig:
    """Translate a SAELens ``cfg.json`` (6.x or older) into an :class:`SAEConfig`."""
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
        hook_layer = raw_layer if _is_int(raw_layer) and raw_layer >= 0 else None
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


def _config_to_saelens(config: SAEConfig) -> dict[str, Any]:
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


# ---------------------------------------------------------------------- training
@dataclass(frozen=True)
class SAETrainingStats:
    """What happened while training an SAE with :func:`train_sae`.

    Attributes:
        losses: total loss per optimizer step.
        mse_losses: reconstruction term per step, ``‖x − x̂‖² / d_in`` on normalised
            activations (about the batch FVU).
        final_fvu: FVU on (up to ``eval_tokens`` of) the training activations.
        final_l0: mean active latents per token on the same tokens.
        dead_fraction: fraction of latents never active on the same tokens.
        n_tokens: number of training activations.
        steps: optimizer steps taken.
        scale: the normalisation factor used during training (already folded into the
            returned SAE's biases).
    """

    losses: tuple[float, ...]
    mse_losses: tuple[float, ...]
    final_fvu: float
    final_l0: float
    dead_fraction: float
    n_tokens: int
    steps: int
    scale: float


def train_sae(
    activations: Tensor,
    *,
    architecture: Literal["relu", "topk"] = "topk",
    d_sae: int,
    k: int | None = None,
    l1_coefficient: float = 0.1,
    epochs: int = 1,
    steps: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    aux_k: int | None = None,
    aux_coefficient: float = 1 / 32,
    dead_after_tokens: int = 10_000,
    apply_b_dec_to_input: bool = True,
    hook_layer: int | None = None,
    hook_name: str | None = None,
    model_name: str | None = None,
    device: str | torch.device | None = None,
    eval_tokens: int = 65_536,
    show_progress: bool = False,
) -> tuple[SparseAutoencoder, SAETrainingStats]:
    """Train a ReLU (L1) or TopK SAE on token-level activations.

    The activations are normalised by one scalar so that their centred mean squared norm is
    ``d_in`` (so ``l1_coefficient`` and ``lr`` do not depend on the model's activation
    scale); the factor is folded into the biases afterwards, so the returned SAE works on
    raw activations. Tokens are shuffled every epoch with a local generator. Decoder rows
    stay unit-norm: the gradient component along each row is removed before every step
    and the rows are renormalised after it. ``b_dec`` starts at the activation mean and
    ``W_enc`` at ``W_decᵀ``.

    Losses, per token and averaged over the batch (``x`` normalised):

    * relu: ``‖x − x̂‖²/d_in + l1_coefficient · Σ_i f_i / sqrt(d_in)``.
    * topk: ``‖x − x̂‖²/d_in + aux_coefficient · Σ‖e − ê‖² / Σ‖e − ē‖²``, the auxiliary
      loss of Gao et al. (2024): the residual ``e = x − x̂`` is rebuilt (``ê``) from the
      ``aux_k`` largest pre-activations of the *dead* latents (not active on the last
      ``dead_after_tokens`` tokens). It is the only gradient dead latents get; it matters
      on long runs (millions of tokens), and on small data sets it seldom revives many.

    Args:
        activations: ``[n_tokens, d_in]`` residual-stream activations of single tokens (pad
            positions excluded, e.g. ``collect_activations(...).tokens[layer]``).
        architecture: ``"relu"`` or ``"topk"`` (train jumprelu/gated SAEs with SAELens and
            :meth:`SparseAutoencoder.load` them).
        d_sae: number of latents.
        k: latents per token (topk only, required).
        l1_coefficient: sparsity penalty (relu only).
        epochs: passes over the data (ignored when ``steps`` is given).
        steps: total optimizer steps; overrides ``epochs``.
        batch_size: tokens per step.
        lr: Adam learning rate.
        seed: seed of initialisation and shuffling (global RNG untouched).
        aux_k: dead latents used by the auxiliary loss (default ``d_in // 2``).
        aux_coefficient: weight of the auxiliary loss (topk).
        dead_after_tokens: a latent inactive for this many tokens counts as dead.
        apply_b_dec_to_input: SAE convention, see :class:`SAEConfig`.
        hook_layer: block the activations come from (stored in the config).
        hook_name: TransformerLens hook name (stored in the config).
        model_name: model the activations come from (stored in the config).
        device: where to train (default: the activations' device).
        eval_tokens: at most this many tokens (a random subset) for the final statistics.
        show_progress: show a tqdm progress bar.

    Returns:
        ``(sae, stats)``: the trained SAE in eval mode (fp32, on ``device``) and its
        :class:`SAETrainingStats`.

    Raises:
        ValueError: invalid arguments (named in the message).
    """
    if activations.ndim != 2 or activations.shape[0] < 2:
        raise ValueError(
            f"activations must be [n_tokens >= 2, d_in], got {tuple(activations.shape)}"
        )
    if architecture not in ("relu", "topk"):
        raise ValueError(
            f"architecture must be 'relu' or 'topk' for training, got {architecture!r}"
        )
    if architecture == "relu" and k is not None:
        raise ValueError("k is only used with architecture='topk'")
    for name, value in (
        ("batch_size", batch_size),
        ("epochs", epochs),
        ("dead_after_tokens", dead_after_tokens),
        ("eval_tokens", eval_tokens),
    ):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if steps is not None and (not _is_int(steps) or steps < 1):
        raise ValueError(f"steps must be a positive int or None, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if l1_coefficient < 0 or aux_coefficient < 0:
        raise ValueError("l1_coefficient and aux_coefficient must be >= 0")
    if not torch.isfinite(activations).all():
        raise ValueError("activations contain NaN or inf")
    n, d_in = activations.shape
    config = SAEConfig(
        architecture=architecture,
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        apply_b_dec_to_input=apply_b_dec_to_input,
        hook_layer=hook_layer,
        hook_name=hook_name,
        model_name=model_name,
    )
    dev = torch.device(device) if device is not None else activations.device
    k_aux = aux_k if aux_k is not None else max(1, d_in // 2)
    if not _is_int(k_aux) or not 1 <= k_aux <= d_sae:
        raise ValueError(f"aux_k must be an int in [1, d_sae={d_sae}], got {aux_k!r}")

    gen = torch.Generator().manual_seed(seed)
    mean, centred_sq = _mean_and_spread(activations)
    scale = math.sqrt(d_in / centred_sq) if centred_sq > 0 else 1.0

    sae = SparseAutoencoder(config, seed=seed, device=dev).train()
    with torch.no_grad():
        sae.b_dec.copy_((mean * scale).float())
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps if steps is not None else epochs * steps_per_epoch
    since_fired = torch.zeros(d_sae, dtype=torch.long, device=dev)
    losses: list[float] = []
    mse_losses: list[float] = []
    order = torch.randperm(n, generator=gen)
    cursor = 0
    for _ in tqdm(range(total_steps), desc=f"train {architecture} SAE", disable=not show_progress):
        if cursor >= n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        x = activations[idx].to(dev, torch.float32) * scale  # (b, d_in)
        f = sae.encode(x)  # (b, d_sae)
        x_hat = sae.decode(f)
        mse = (x_hat - x).pow(2).sum(-1).mean() / d_in
        loss = mse
        if architecture == "relu":
            loss = loss + l1_coefficient * f.sum(-1).mean() / math.sqrt(d_in)
        else:
            dead = since_fired >= dead_after_tokens
            n_dead = int(dead.sum())
            if n_dead > 0 and aux_coefficient > 0:
                loss = loss + aux_coefficient * _aux_loss(sae, x, x_hat, dead, min(k_aux, n_dead))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _project_decoder_grad(sae.W_dec)
        opt.step()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))
            fired = (f.detach() > 0).any(0)
            since_fired += x.shape[0]
            since_fired[fired] = 0
        losses.append(float(loss.detach()))
        mse_losses.append(float(mse.detach()))

    with torch.no_grad():  # fold the scale: f' = f / s keeps W_dec unit-norm
        sae.b_dec.div_(scale)
        sae.b_enc.div_(scale)
    sae.eval()
    n_eval = min(n, eval_tokens)
    eval_idx = torch.randperm(n, generator=gen)[:n_eval] if n_eval < n else slice(None)
    quality = sae_quality(sae, activations[eval_idx].float())
    stats = SAETrainingStats(
        losses=tuple(losses),
        mse_losses=tuple(mse_losses),
        final_fvu=quality.fvu,
        final_l0=quality.mean_l0,
        dead_fraction=quality.dead_fraction,
        n_tokens=n,
        steps=total_steps,
        scale=scale,
    )
    logger.info(
        "trained %s SAE d_sae=%d on %d tokens: FVU %.4f, L0 %.1f, dead %.1f%%",
        architecture,
        d_sae,
        n,
        stats.final_fvu,
        stats.final_l0,
        100 * stats.dead_fraction,
    )
    return sae, stats


def _mean_and_spread(activations: Tensor, chunk: int = 65_536) -> tuple[Tensor, float]:
    """Mean ``[d_in]`` (fp64, CPU) and mean centred squared norm, in chunks (no fp64 copy)."""
    n = activations.shape[0]
    total = torch.zeros(activations.shape[1], dtype=torch.float64)
    for start in range(0, n, chunk):
        total += activations[start : start + chunk].double().sum(0).cpu()
    mean = total / n
    sq = 0.0
    for start in range(0, n, chunk):
        part = activations[start : start + chunk].double().cpu() - mean
        sq += float(part.pow(2).sum())
    return mean, sq / n


def _aux_loss(sae: SparseAutoencoder, x: Tensor, x_hat: Tensor, dead: Tensor, k_aux: int) -> Tensor:
    """Normalised MSE of the residual rebuilt from the top ``k_aux`` dead latents (Gao et al.)."""
    residual = (x - x_hat).detach()  # (b, d_in)
    p = sae.pre_activations(x)  # (b, d_sae)
    top = p.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1)
    f_aux = torch.zeros_like(p).scatter(-1, top.indices, torch.relu(top.values))
    recon = f_aux @ sae.W_dec  # (b, d_in), no bias: it rebuilds a residual
    spread = (residual - residual.mean(0)).pow(2).sum().clamp_min(1e-12)
    return (recon - residual).pow(2).sum() / spread


def _project_decoder_grad(w_dec: nn.Parameter) -> None:
    """Remove the gradient component parallel to each (unit) decoder row."""
    if w_dec.grad is None:
        return
    with torch.no_grad():
        parallel = (w_dec.grad * w_dec).sum(-1, keepdim=True)  # (d_sae, 1)
        w_dec.grad -= parallel * w_dec


def train_sae_on_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    layer: int,
    *,
    batch_size: int = 8,
    max_length: int = 256,
    block_path: str | None = None,
    show_progress: bool = False,
    **train_kwargs: Any,
) -> tuple[SparseAutoencoder, SAETrainingStats]:
    """Collect ``layer``'s activations on ``texts`` once and train an SAE on them.

    Args:
        model: a causal LM (PEFT-wrapped models work).
        tokenizer: its tokenizer.
        texts: training texts; every non-pad token is one training example.
        layer: block whose output the SAE reads.
        batch_size: texts per forward pass while collecting.
        max_length: longer texts are truncated (with a warning).
        block_path: dotted path of the block list for unknown architectures.
        show_progress: progress bars for collection and training.
        **train_kwargs: passed to :func:`train_sae` (``d_sae`` is required).

    Returns:
        ``(sae, stats)`` as :func:`train_sae`, with ``hook_layer``, ``hook_name`` and
        ``model_name`` filled in.
    """
    from mmie.activations import collect_activations
    from mmie.models import unwrap_model

    acts = collect_activations(
        model,
        tokenizer,
        texts,
        [layer],
        batch_size=batch_size,
        max_length=max_length,
        block_path=block_path,
        show_progress=show_progress,
        desc=f"activations L{layer}",
    )
    config = getattr(unwrap_model(model), "config", None)
    name = getattr(config, "name_or_path", None) or None
    train_kwargs.setdefault("hook_layer", layer)
    train_kwargs.setdefault("hook_name", f"blocks.{layer}.hook_resid_post")
    train_kwargs.setdefault("model_name", name)
    train_kwargs.setdefault("show_progress", show_progress)
    return train_sae(acts.tokens[layer], **train_kwargs)


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
    from mmie.activations import collect_activations
    from mmie.models import hidden_size

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
            alt_cfg = _replace_config(config, architecture="topk", k=k)
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
