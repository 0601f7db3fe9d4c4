"""LoReFT adapters: low-rank linear subspace representation finetuning as block hooks.

LoReFT (Wu et al. 2024, "ReFT: Representation Finetuning for Language Models",
https://arxiv.org/abs/2404.03592) edits a hidden state ``h`` inside the ``rank``-dimensional
subspace spanned by the orthonormal rows of ``R``:

    ``Φ(h) = h + Rᵀ (W h + b − R h)``,   ``R ∈ ℝ^{rank × d_model}``, ``R Rᵀ = I``.

:class:`LoReFTIntervention` is that map as an ``nn.Module`` (``R`` through
:func:`torch.nn.utils.parametrizations.orthogonal`, so it stays orthonormal under any
optimiser); :class:`ReFTAdapter` applies one per chosen layer to the block outputs, at every
position or only at prompt positions, through the shared hook mechanism
(:class:`~mmie.BlockIntervention`). Adapters are saved as the *effective* ``R``, ``W``
and ``b`` in safetensors plus a JSON config, and reload to bit-identical logits.

Training an adapter (the base model stays frozen; the detached adapter *is* the reference
model, so no second copy is loaded)::

    adapter = ReFTAdapter(model, LoReFTConfig(layers=(4, 8), rank=4))
    model.requires_grad_(False)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-3)
    adapter.train()                      # enables dropout inside the interventions
    with adapter:                        # hooks attached only inside the block
        for batch in batches:
            loss = objective(model(**batch).logits, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    adapter.eval()
    adapter.save("runs/reft")

Dropout differs from pyreft's (see :class:`LoReFTIntervention`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from mmie._config import ConfigBase, require, validate_fields
from mmie._io import read_checkpoint_config, read_safetensors, write_checkpoint
from mmie._validation import positive_int
from mmie.errors import CheckpointError, IncompatibleModelError, InterventionError
from mmie.models.blocks import block_device, block_dtype, hidden_size, num_layers
from mmie.models.hooks import BlockIntervention, Edit

__all__ = ["LoReFTConfig", "LoReFTIntervention", "ReFTAdapter"]

logger = logging.getLogger(__name__)

Positions = Literal["all", "prompt"]
Init = Literal["random", "identity"]

_FORMAT = "mmie.reft"
_FORMAT_VERSION = 1
_CONFIG_FILE = "reft_config.json"
_WEIGHTS_FILE = "reft_weights.safetensors"
_TENSORS = ("rotation", "weight", "bias")
_ORTHO_TOL = 1e-4  # max |R Rᵀ - I| accepted as-is on load; larger deviations are QR-repaired
_ORTHO_REJECT = 1e-1  # beyond this the stored R is not a rotation at all


@dataclass(frozen=True, kw_only=True)
class LoReFTConfig(ConfigBase):
    """Configuration of a :class:`ReFTAdapter`.

    Attributes:
        layers: block indices to intervene on (stored sorted, unique).
        rank: dimension ``r`` of the edited subspace; must be ``<= d_model``.
        positions: ``"all"`` edits every position; ``"prompt"`` edits only the positions of
            the mask set with :meth:`ReFTAdapter.set_position_mask` (and nothing on cached
            decoding steps).
        dropout: dropout probability on the edit ``Rᵀ(Wh + b − Rh)`` in training mode
            (only the edit: pyreft drops out the whole output ``h + edit``; see
            :class:`LoReFTIntervention`).
        seed: seed of the parameter initialisation (a local generator; global RNG untouched).
        init: ``"random"`` (``W``, ``b`` like ``nn.Linear``'s default init, as in pyreft) or
            ``"identity"`` (``W = R``, ``b = 0``: the adapter starts as the identity map).

    Raises:
        ConfigError: on an invalid field (the message names it).
    """

    layers: tuple[int, ...]
    rank: int = 4  # LoReFT paper default for most tasks
    positions: Positions = "all"  # edit every position
    dropout: float = 0.0  # no dropout on the edit
    seed: int = 0  # initialisation seed
    init: Init = "random"  # pyreft-style random W, b

    def __post_init__(self) -> None:
        validate_fields(self)
        require(bool(self.layers), "layers", "must not be empty")
        for i, layer in enumerate(self.layers):
            require(layer >= 0, f"layers[{i}]", f"must be >= 0, got {layer}")
        require(
            len(set(self.layers)) == len(self.layers),
            "layers",
            f"must be unique, got {list(self.layers)}",
        )
        object.__setattr__(self, "layers", tuple(sorted(self.layers)))
        require(self.rank >= 1, "rank", f"must be >= 1, got {self.rank}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")


@contextlib.contextmanager
def _seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Seed the global CPU generator for a block and restore it afterwards.

    ``parametrizations.orthogonal`` completes a non-square ``R`` to a square orthogonal
    basis with ``torch.randn`` on the global generator; this makes that completion
    deterministic without leaving any trace on the caller's RNG state (CUDA untouched).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class LoReFTIntervention(nn.Module):
    """``Φ(h) = h + Rᵀ(W h + b − R h)`` with orthonormal rows of ``R``.

    Built on CPU; move it with ``.to(device)``. Parameters are ordinary ``nn.Parameter``
    objects: ``parametrizations.rotation.original`` (the unconstrained parameter behind
    ``R``), ``weight`` (``W``) and ``bias`` (``b``).

    Difference from the reference implementation: pyreft's ``LoreftIntervention`` applies its
    dropout to the whole output, ``dropout(h + Rᵀ(Wh + b − Rh))``, so in training it also zeroes
    (and rescales by ``1/(1 − p)``) coordinates of the frozen model's own hidden state; mmie
    applies it to the edit only, ``h + dropout(Rᵀ(Wh + b − Rh))``. Dropout is meant to
    regularise the adapter, and the base representation is not the adapter's to drop: with the
    whole output dropped, training sees a corrupted residual stream that inference never sees.
    With ``dropout = 0`` (the default here and in pyreft) the two are identical.

    Args:
        d_model: hidden size ``d``.
        rank: subspace dimension ``r`` (``1 <= r <= d``).
        dropout: dropout probability on the edit in training mode: ``h + dropout(edit)``,
            where pyreft computes ``dropout(h + edit)`` (see above).
        seed: initialisation seed (local generators only).
        init: ``"random"`` or ``"identity"`` (see :class:`LoReFTConfig`).
        dtype: parameter dtype (float32 recommended; hidden states are cast to it).

    Raises:
        ValueError: if ``rank`` is not in ``[1, d_model]``.
    """

    def __init__(
        self,
        d_model: int,
        rank: int,
        *,
        dropout: float = 0.0,
        seed: int = 0,
        init: Init = "random",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        _check_rank(rank, d_model)
        if init not in ("random", "identity"):
            raise ValueError(f"init must be 'random' or 'identity', got {init!r}")
        self.d_model = d_model
        self.rank = rank
        self._seed = seed
        g = torch.Generator().manual_seed(seed)
        gauss = torch.randn(d_model, rank, generator=g, dtype=torch.float64)
        rotation = _orthonormal_rows(gauss.T)  # (r, d)
        bound = 1.0 / d_model**0.5  # nn.Linear's default init range
        if init == "identity":
            weight = rotation.clone()
            bias = torch.zeros(rank, dtype=torch.float64)
        else:
            weight = (torch.rand(rank, d_model, generator=g, dtype=torch.float64) * 2 - 1) * bound
            bias = (torch.rand(rank, generator=g, dtype=torch.float64) * 2 - 1) * bound
        self.rotation = nn.Parameter(rotation.to(dtype))
        with _seeded_cpu_rng(seed):
            parametrizations.orthogonal(self, "rotation")
        self.set_rotation(rotation)  # pin R exactly (init="identity" relies on W == R)
        self.weight = nn.Parameter(weight.to(dtype))
        self.bias = nn.Parameter(bias.to(dtype))
        self.dropout = nn.Dropout(dropout)

    @property
    def R(self) -> Tensor:  # noqa: N802 (the paper's name)
        """The effective ``[rank, d_model]`` rotation (orthonormal rows)."""
        self._pin_reflector_signs()
        rotation: Tensor = self.rotation
        return rotation

    def _parametrization(self) -> Any:
        """The ``ParametrizationList`` behind ``rotation`` (``.original``, ``[0].base``)."""
        return cast(nn.ModuleDict, self.parametrizations)["rotation"]

    def _pin_reflector_signs(self) -> None:
        """Keep the diagonal of the Householder parametrization at exactly ±1.

        torch's Householder map reads the column signs of ``R`` as
        ``original.diagonal().int()``; the diagonal gets no gradient, but weight decay
        (AdamW's default ``0.01``) shrinks ``-1`` to ``-0.99999``, which truncates to ``0``
        and silently turns ``R`` into the zero matrix. Resetting the signs before ``R`` is
        materialised undoes only that decay.
        """
        diag = self._parametrization().original.diagonal()
        with torch.no_grad():
            diag.copy_(torch.where(diag < 0, -1.0, 1.0).to(diag.dtype))

    @torch.no_grad()
    def set_rotation(self, rotation: Tensor) -> None:
        """Set the effective ``R`` exactly (rows must already be orthonormal).

        Resets the orthogonal parametrization's base so that ``R`` equals ``rotation``
        bit for bit. Only valid while the module is on CPU (the base completion draws
        random numbers); move the module afterwards.

        Args:
            rotation: ``[rank, d_model]`` matrix with orthonormal rows.

        Raises:
            ValueError: on a wrong shape, a non-CPU module, or rows that are not
                orthonormal.
        """
        if tuple(rotation.shape) != (self.rank, self.d_model):
            raise ValueError(
                f"rotation must be [rank={self.rank}, d_model={self.d_model}], "
                f"got {tuple(rotation.shape)}"
            )
        param = self._parametrization()
        if param.original.device.type != "cpu":
            raise ValueError("set_rotation needs the module on CPU; call .to('cpu') first")
        rotation = rotation.detach().to(dtype=param.original.dtype, device="cpu")
        eye = torch.eye(self.rank, dtype=torch.float64)
        deviation = float((rotation.double() @ rotation.double().T - eye).abs().max())
        if deviation > _ORTHO_TOL:
            raise ValueError(
                f"rotation rows are not orthonormal (max |R Rᵀ - I| = {deviation:.2e})"
            )
        with _seeded_cpu_rng(self._seed):
            setattr(self, "rotation", rotation)  # noqa: B010 (right_inverse: base = completion)
        # The effective R is base[:, :r]ᵀ; pin it to the exact input, not its QR rounding.
        param[0].base[:, : self.rank].copy_(rotation.T)

    def forward(self, hidden: Tensor) -> Tensor:
        """Apply ``Φ`` to ``hidden`` ``[..., d_model]`` (cast to the parameter dtype).

        Args:
            hidden: hidden states, e.g. ``[batch, seq, d_model]``.

        Returns:
            ``Φ(hidden)`` in the parameter dtype, same shape.
        """
        h = hidden.to(self.weight.dtype)
        R = self.R  # (r, d); materialised once per call
        source = h @ self.weight.T + self.bias  # (..., r)
        delta = (source - h @ R.T) @ R  # (..., d)
        return h + self.dropout(delta)


class ReFTAdapter(BlockIntervention):
    """LoReFT interventions on the outputs of chosen blocks, applied as hooks.

    One :class:`LoReFTIntervention` per layer lives on that block's device with
    ``float32`` (or wider) parameters; the hook casts the hidden state to the parameter
    dtype, applies ``Φ`` and casts back. The adapter starts in eval mode (dropout off): call
    :meth:`train` before training and :meth:`eval` after. Its trainable parameters are
    ordinary ``nn.Parameter`` objects from :meth:`parameters`.

    With ``positions="prompt"`` the caller marks the positions to edit with
    :meth:`set_position_mask` (or the :meth:`position_mask` context manager) before the
    forward pass; a forward pass of the same sequence length edits exactly the masked
    positions. A longer input is read as the prompt followed by generated positions, which
    are left untouched, and so are cached decoding steps (``seq == 1``): cached and
    uncached generation agree. (A mask of length 1 cannot be told apart from a decoding step
    and is applied to it.) For generation, set the prompt's attention mask (left padding
    excluded); for teacher-forced training, set a full-length mask that is True on the
    prompt tokens. The mask is cleared when the adapter is removed.

    Args:
        model: the model (PEFT-wrapped models work); its weights are not modified.
        config: the adapter configuration.
        block_path: dotted path of the block list for architectures mmie does not know.

    Raises:
        ValueError: if ``config.rank > d_model`` or a layer does not exist.
        TypeError: if ``config`` is not a :class:`LoReFTConfig`.
    """

    def __init__(
        self,
        model: nn.Module,
        config: LoReFTConfig,
        *,
        block_path: str | None = None,
    ) -> None:
        super().__init__(model, block_path=block_path)
        if not isinstance(config, LoReFTConfig):
            raise TypeError(f"config must be a LoReFTConfig, got {type(config).__name__}")
        n_blocks = num_layers(model, block_path)
        bad = [layer for layer in config.layers if layer >= n_blocks]
        if bad:
            raise ValueError(
                f"config.layers {bad} out of range: the model's layers are 0..{n_blocks - 1}"
            )
        d_model = hidden_size(model)
        _check_rank(config.rank, d_model)
        self.config = config
        self.d_model = d_model
        g = torch.Generator().manual_seed(config.seed)
        layers: dict[str, nn.Module] = {}
        for layer in config.layers:
            layer_seed = int(torch.randint(0, 2**62, (1,), generator=g))
            dtype = torch.promote_types(block_dtype(model, layer, block_path), torch.float32)
            module = LoReFTIntervention(
                d_model,
                config.rank,
                dropout=config.dropout,
                seed=layer_seed,
                init=config.init,
                dtype=dtype,
            )
            layers[str(layer)] = module.to(block_device(model, layer, block_path))
        self.interventions = nn.ModuleDict(layers)
        self.interventions.eval()
        self._masks: dict[int, Tensor] = {}

    # ----------------------------------------------------------------- nn-like API
    @property
    def layers(self) -> tuple[int, ...]:
        """The layers intervened on, ascending."""
        return self.config.layers

    def intervention(self, layer: int) -> LoReFTIntervention:
        """The :class:`LoReFTIntervention` of ``layer``.

        Raises:
            KeyError: if the adapter has no intervention at ``layer``.
        """
        key = str(layer)
        if key not in self.interventions:
            raise KeyError(f"no LoReFT intervention at layer {layer}; layers are {self.layers}")
        module = self.interventions[key]
        assert isinstance(module, LoReFTIntervention)
        return module

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """Trainable parameters of every layer's intervention (for an optimiser)."""
        return self.interventions.parameters(recurse)

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        """Named trainable parameters (``"<layer>.weight"`` etc.)."""
        return self.interventions.named_parameters(prefix=prefix, recurse=recurse)

    def train(self, mode: bool = True) -> ReFTAdapter:
        """Set training mode (enables dropout on the edit); returns ``self``."""
        self.interventions.train(mode)
        return self

    def eval(self) -> ReFTAdapter:
        """Set eval mode (dropout off); returns ``self``."""
        return self.train(False)

    @property
    def training(self) -> bool:
        """Whether the interventions are in training mode."""
        return self.interventions.training

    def effective_state_dict(self) -> dict[str, Tensor]:
        """Effective tensors ``layers.<L>.rotation`` (``R``), ``.weight`` (``W``), ``.bias``.

        Returns:
            Detached, contiguous CPU copies.
        """
        out: dict[str, Tensor] = {}
        for layer in self.layers:
            module = self.intervention(layer)
            tensors = {"rotation": module.R, "weight": module.weight, "bias": module.bias}
            for name, tensor in tensors.items():
                out[f"layers.{layer}.{name}"] = tensor.detach().cpu().contiguous()
        return out

    # --------------------------------------------------------------- position mask
    def set_position_mask(self, mask: Tensor) -> None:
        """Mark the positions to edit (``positions="prompt"`` only).

        The mask is copied to every intervened block's device now, not inside the hook.

        Args:
            mask: ``[batch, seq]`` bool (or 0/1) tensor, True at the positions to edit. Its
                batch must match the next forward passes; its length is the prompt length
                (longer inputs are prompt + generated positions, see the class docs).

        Raises:
            ValueError: if the adapter edits all positions or the mask is not 2-D.
        """
        if self.config.positions != "prompt":
            raise ValueError(
                "set_position_mask only applies with positions='prompt'; this adapter "
                "edits every position"
            )
        if not isinstance(mask, Tensor) or mask.ndim != 2:
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a [batch, seq] tensor, got {shape}")
        mask = mask.detach().bool()
        self._masks = {
            layer: mask.to(block_device(self.model, layer, self.block_path))
            for layer in self.layers
        }

    def clear_position_mask(self) -> None:
        """Forget the position mask (idempotent)."""
        self._masks = {}

    @contextlib.contextmanager
    def position_mask(self, mask: Tensor) -> Iterator[ReFTAdapter]:
        """Set ``mask`` for the body of a ``with`` block and clear it afterwards."""
        self.set_position_mask(mask)
        try:
            yield self
        finally:
            self.clear_position_mask()

    # ------------------------------------------------------------------- hooks
    def _on_remove(self) -> None:
        self.clear_position_mask()

    def _build_edits(self) -> list[tuple[int, Edit]]:
        edits: list[tuple[int, Edit]] = []
        for layer in self.layers:
            module = self.intervention(layer)
            device = block_device(self.model, layer, self.block_path)
            if module.weight.device != device:
                module.to(device)  # attach time, keeps the Parameter objects
            edits.append((layer, self._make_edit(layer, module)))
        return edits

    def _make_edit(self, layer: int, module: LoReFTIntervention) -> Edit:
        prompt_only = self.config.positions == "prompt"

        def edit(hidden: Tensor) -> Tensor:
            if not prompt_only:
                return module(hidden).to(hidden.dtype)
            mask = self._masks.get(layer)
            if mask is None:
                raise InterventionError(
                    "ReFTAdapter has positions='prompt' but no position mask is set; call "
                    "adapter.set_position_mask(mask) (or use adapter.position_mask(mask)) "
                    "before the forward pass"
                )
            batch, seq = hidden.shape[0], hidden.shape[1]
            n_mask = mask.shape[1]
            if seq != n_mask:
                if seq == 1:
                    return hidden  # cached decoding step: a generated position
                if seq < n_mask:
                    raise InterventionError(
                        f"position mask has seq={n_mask} but layer {layer} sees the shorter "
                        f"seq={seq}; set a mask for this input"
                    )
                # uncached generation: prompt first, generated positions after it
                mask = torch.cat([mask, mask.new_zeros(mask.shape[0], seq - n_mask)], dim=1)
            if batch != mask.shape[0]:
                raise InterventionError(
                    f"position mask has batch={mask.shape[0]} but layer {layer} sees "
                    f"batch={batch}; expand the mask like the inputs (e.g. "
                    "mask.repeat_interleave(num_beams, dim=0))"
                )
            edited = module(hidden).to(hidden.dtype)
            return torch.where(mask.unsqueeze(-1), edited, hidden)  # (batch, seq, d)

        return edit

    def __repr__(self) -> str:
        c = self.config
        return (
            f"ReFTAdapter(layers={list(c.layers)}, rank={c.rank}, positions={c.positions!r}, "
            f"attached={self.attached})"
        )

    # --------------------------------------------------------------------- I/O
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``reft_config.json`` and ``reft_weights.safetensors`` into ``directory``.

        The weights file holds the *effective* ``R`` (materialised from the
        parametrization), ``W`` and ``b`` of every layer, so it does not depend on torch's
        parametrization internals.

        Args:
            directory: output directory (created).

        Returns:
            The directory path.
        """
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "d_model": self.d_model,
            "block_path": self.block_path,
            "config": self.config.to_dict(),
        }
        return write_checkpoint(
            directory,
            tensors=self.effective_state_dict(),
            weights_name=_WEIGHTS_FILE,
            config=meta,
            config_name=_CONFIG_FILE,
        )

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        model: nn.Module,
        *,
        block_path: str | None = None,
    ) -> ReFTAdapter:
        """Read an adapter written by :meth:`save` and bind it to ``model`` (not attached).

        ``R`` is used exactly as stored when its rows are orthonormal to within ``1e-4``
        (so logits are reproduced bit for bit) and is re-orthonormalised with a QR
        decomposition otherwise (e.g. after editing or a low-precision round trip).

        Args:
            directory: directory holding the two files.
            model: the model the adapter was trained on.
            block_path: overrides the block path stored in the config.

        Returns:
            The adapter, in eval mode.

        Raises:
            FileNotFoundError: if a file is missing.
            CheckpointError: if keys are missing or unexpected, shapes disagree with the
                config, or a stored ``R`` is far from orthonormal.
            IncompatibleModelError: if the model's hidden size differs from the adapter's.
        """
        path = Path(directory)
        meta = read_checkpoint_config(path / _CONFIG_FILE)
        if meta.get("format") != _FORMAT:
            raise CheckpointError(f"{path / _CONFIG_FILE} is not an mmie ReFT adapter config")
        config = LoReFTConfig.from_dict(meta.get("config", {}))
        d_model = hidden_size(model)
        if meta.get("d_model") != d_model:
            raise IncompatibleModelError(
                f"adapter at {path} was trained with d_model={meta.get('d_model')} but the "
                f"model's hidden size is {d_model}"
            )
        tensors = read_safetensors(path / _WEIGHTS_FILE)
        expected = {f"layers.{layer}.{name}" for layer in config.layers for name in _TENSORS}
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        if missing or unexpected:
            raise CheckpointError(
                f"{path / _WEIGHTS_FILE}: missing keys {missing}, unexpected keys {unexpected}"
            )
        r = config.rank
        rotations: dict[int, Tensor] = {}
        for layer in config.layers:
            shapes = {
                "rotation": (r, d_model),
                "weight": (r, d_model),
                "bias": (r,),
            }
            for name, shape in shapes.items():
                got = tuple(tensors[f"layers.{layer}.{name}"].shape)
                if got != shape:
                    raise CheckpointError(
                        f"{path / _WEIGHTS_FILE}: layers.{layer}.{name} has shape {got}, "
                        f"expected {shape}"
                    )
            rotations[layer] = _repair_rotation(
                tensors[f"layers.{layer}.rotation"], f"{path} layer {layer}"
            )
        stored_path = meta.get("block_path")
        adapter = cls(
            model, config, block_path=block_path if block_path is not None else stored_path
        )
        with torch.no_grad():
            for layer in config.layers:
                module = adapter.intervention(layer)
                device = module.weight.device
                module.to("cpu").set_rotation(rotations[layer])  # .to keeps the Parameters
                module.to(device)
                module.weight.copy_(tensors[f"layers.{layer}.weight"])
                module.bias.copy_(tensors[f"layers.{layer}.bias"])
        return adapter


def _check_rank(rank: int, d_model: int) -> None:
    rank = positive_int(rank, "rank")
    if rank > d_model:
        raise ValueError(
            f"rank={rank} exceeds d_model={d_model}: LoReFT's R has orthonormal rows, so "
            f"rank must be <= d_model; choose rank <= {d_model}"
        )


def _orthonormal_rows(matrix: Tensor) -> Tensor:
    """Orthonormalise the rows of ``matrix`` ``[r, d]`` by QR (signs fixed so that an
    already-orthonormal input comes back unchanged up to rounding)."""
    q, r = torch.linalg.qr(matrix.T.double())  # (d, r), (r, r)
    signs = torch.where(r.diagonal() < 0, -1.0, 1.0).to(q.dtype)
    return (q * signs).T.contiguous()  # (r, d)


def _repair_rotation(rotation: Tensor, source: str) -> Tensor:
    """Return ``rotation`` unchanged if its rows are orthonormal, else its QR repair."""
    r = rotation.shape[0]
    gram = rotation.double() @ rotation.double().T
    deviation = float((gram - torch.eye(r, dtype=torch.float64)).abs().max())
    if not deviation <= _ORTHO_REJECT:  # also catches NaN
        raise CheckpointError(
            f"{source}: stored R is not a rotation (max |R Rᵀ - I| = {deviation:.2e})"
        )
    if deviation <= _ORTHO_TOL:
        return rotation
    logger.info("%s: re-orthonormalising R (max |R Rᵀ - I| = %.2e)", source, deviation)
    return _orthonormal_rows(rotation).to(rotation.dtype)
