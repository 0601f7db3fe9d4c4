"""Sparse autoencoders (SAEs) on the residual stream: the model and its checkpoints.

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

mmie writes safetensors + JSON and never unpickles. :meth:`SparseAutoencoder.load` reads
mmie's own layout, SAELens directories (``cfg.json`` of SAELens 6.x and of older
releases, ``sae_weights.safetensors``) and the other published formats through the readers
of :mod:`mmie.sae.formats`, and checks every tensor's shape against ``d_in``/``d_sae``.
SAELens config conversion lives in :mod:`mmie.sae.saelens`, training
(:func:`~mmie.train_sae`) in :mod:`mmie.sae.training`, and the quality metrics and
the reconstruction check (:func:`~mmie.check_reconstruction`, which fails loudly
when an SAE cannot belong to a layer) in :mod:`mmie.sae.quality`; those names are still
importable from here.

Example:
    >>> import torch
    >>> from mmie.sae.model import SAEConfig, SparseAutoencoder
    >>> sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=8, d_sae=32, k=4))
    >>> f = sae.encode(torch.randn(5, 8))
    >>> tuple(f.shape), int((f > 0).sum(-1).max()) <= 4
    ((5, 32), True)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from mmie._io import write_checkpoint
from mmie.errors import CheckpointError
from mmie.sae.architectures import TENSOR_SHAPES, activate, topk_select
from mmie.sae.config import SAEConfig, dtype_name
from mmie.sae.formats import (
    MMIE_CONFIG_FILE,
    MMIE_FORMAT,
    MMIE_FORMAT_VERSION,
    MMIE_WEIGHTS_FILE,
    SAELENS_CONFIG_FILE,
    SAELENS_WEIGHTS_FILE,
    checkpoint_from_saelens,
    read_checkpoint,
)
from mmie.sae.saelens import config_to_saelens

__all__ = ["SparseAutoencoder"]

logger = logging.getLogger(__name__)


_FORMAT = MMIE_FORMAT
_FORMAT_VERSION = MMIE_FORMAT_VERSION


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
        provenance: what :meth:`load` read (``source``, ``layout``, ``description`` and
            ``folded``, what it folded into the weights); empty for SAEs built otherwise.
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
        self.provenance: dict[str, Any] = {}
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
            gate = x_in @ self.W_enc + self.b_gate  # (..., d_sae)
            mag = x_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag
            return activate(arch, mag, gate_pre=gate)
        p = self.pre_activations(x)  # (..., d_sae)
        if arch == "topk":
            assert self.k is not None  # guaranteed by SAEConfig
            indices, values = topk_select(p, self.k)
            return torch.zeros_like(p).scatter(-1, indices, values)
        return activate(arch, p, threshold=getattr(self, "threshold", None))

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
        expected = TENSOR_SHAPES[arch]
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
                config=config_to_saelens(self.config),
                config_name=SAELENS_CONFIG_FILE,
            )
        raise ValueError(f"layout must be 'mmie' or 'saelens', got {layout!r}")

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        layout: str = "auto",
        allow_transposed: bool = False,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        k: int | None = None,
        input_scale: float | None = None,
    ) -> SparseAutoencoder:
        """Load an SAE saved by :meth:`save`, by SAELens or in another published format.

        The layout is detected from the files present (or forced with ``layout``); the
        readers of ``mmie.sae.formats`` know mmie's own layout, SAELens (6.x and older
        ``cfg.json``), Gemma Scope (``params.npz``), Gemma Scope 2, Llama Scope (and its
        R1-distill variant), EleutherAI sparsify, dictionary_learning and Qwen Scope, and
        recognise OpenAI's TopK autoencoders to refuse them. Whatever a format computes
        differently (decoder-norm rescaling, dataset activation norms, transposed or
        renamed tensors, input centring) is folded into the weights exactly, so that
        :meth:`encode` and :meth:`decode` equal the format's own maths on raw activations;
        settings that cannot be folded (per-token normalisation, skip connections,
        transcoders) are refused with the reason. The docs page "Bring your own model and
        SAEs" has the table. SAELens' ``"standard"`` architecture is ``"relu"``; a
        ``blocks.L.hook_resid_post`` hook name gives ``hook_layer = L``,
        ``blocks.L.hook_resid_pre`` gives ``L - 1``. Formats without a dtype in their config
        are read in fp32.

        Args:
            path: the SAE directory (or a weights file such as ``params.npz`` or
                ``layer5.sae.pt``).
            layout: ``"auto"`` or a layout name from ``mmie.sae.formats.LAYOUTS``
                (``"mmie"``, ``"saelens"``, ``"gemma_scope"``, ``"gemma_scope_2"``,
                ``"llama_scope"``, ``"llama_scope_r1"``, ``"sparsify"``,
                ``"dictionary_learning"``, ``"qwen_scope"``, ``"openai_topk"``).
            allow_transposed: accept ``[out, in]`` weight matrices in mmie and SAELens
                directories (see :meth:`from_tensors`).
            dtype: parameter dtype (default: the checkpoint's).
            device: where to put the parameters.
            k: latents per token, for formats that do not store it (Qwen Scope).
            input_scale: a dataset-wide input scaling factor the checkpoint does not store
                (SAELens ``normalize_activations="expected_average_only_in"``, Llama Scope
                R1 ``norm_activation="dataset-wise"``): ``sqrt(d_in)`` over the dataset's
                average activation norm, SAELens' ``norm_scaling_factor``.

        Returns:
            The SAE in eval mode; :attr:`provenance` says what was read and folded.

        Raises:
            CheckpointError: no recognised layout (the message lists what was found and
                what each layout needs), a missing file, an unsupported setting (with the
                reason), or tensors that do not match the config. Pickles are never
                unpickled: ``.pt`` files are read only as plain tensor dicts
                (``torch.load(weights_only=True)``).
            ValueError: an unknown ``layout``, an invalid ``k`` or ``input_scale``.
        """
        ckpt = read_checkpoint(
            path,
            layout=layout,
            k=k,
            input_scale=input_scale,
            allow_transposed=allow_transposed,
        )
        config = ckpt.config
        if dtype is not None:
            config = config.replace(dtype=dtype_name(dtype))
        sae = cls.from_tensors(
            config,
            ckpt.tensors,
            allow_transposed=allow_transposed,
            device=device,
            source=str(ckpt.source),
        )
        sae.provenance = {
            "source": str(path),
            "layout": ckpt.layout,
            "description": ckpt.description,
            "folded": list(ckpt.folded),
        }
        logger.info("loaded %r from %s (%s)", sae, path, ckpt.description)
        return sae

    # ------------------------------------------------------------------ SAELens objects
    @classmethod
    def from_saelens(cls, sae: Any) -> SparseAutoencoder:
        """Convert a loaded ``sae_lens.SAE`` (SAELens >= 6) into a :class:`SparseAutoencoder`.

        The same conversion as reading its directory: the config through SAELens'
        ``cfg.to_dict()``, the tensors from its ``state_dict()``, TopK
        ``rescale_acts_by_decoder_norm`` folded.

        Args:
            sae: the SAELens SAE.

        Returns:
            The SAE in eval mode.

        Raises:
            ImportError: SAELens is not installed (``pip install 'mmie[saelens]'``).
            CheckpointError: an architecture or setting mmie does not read.
        """
        _sae_lens()
        cfg = sae.cfg.to_dict()
        cfg.setdefault("architecture", sae.cfg.architecture())
        tensors = {name: t.detach().cpu() for name, t in sae.state_dict().items()}
        ckpt = checkpoint_from_saelens(cfg, tensors, source="sae_lens.SAE")
        out = cls.from_tensors(ckpt.config, ckpt.tensors, source="sae_lens.SAE")
        out.provenance = {
            "source": "sae_lens.SAE",
            "layout": "saelens",
            "description": ckpt.description,
            "folded": list(ckpt.folded),
        }
        return out

    def to_saelens(self) -> Any:
        """This SAE as a ``sae_lens.SAE`` (SAELens >= 6), built from :meth:`save`'s SAELens
        config and the same tensors.

        Raises:
            ImportError: SAELens is not installed (``pip install 'mmie[saelens]'``).
        """
        sae_lens = _sae_lens()
        sae = sae_lens.SAE.from_dict(config_to_saelens(self.config))
        sae.load_state_dict({name: t.clone() for name, t in self.tensors().items()})
        return sae


def _sae_lens() -> Any:
    """The ``sae_lens`` module, or an ImportError naming the extra that installs it."""
    try:
        import sae_lens
    except ImportError as err:
        raise ImportError(
            "SparseAutoencoder.from_saelens / to_saelens need SAELens >= 6, which is not "
            "installed: pip install 'mmie[saelens]'"
        ) from err
    return sae_lens
