"""Concept scrubbing: LEACE erasers applied to a model's residual stream as hooks.

:func:`fit_scrubber` runs labelled texts through a model, fits one
:class:`~mmie.LeaceEraser` per chosen layer on token-level block outputs (pad positions
excluded) and returns a :class:`Scrubber`, a :class:`~mmie.BlockIntervention` that
erases the concept from those blocks' outputs at every position while attached.

With ``sequential=True`` (the default, as in "LEACE: Perfect linear concept erasure in closed
form", §6) layers are fitted in increasing order and each layer's statistics are collected
with the erasers of the layers below already attached, so every eraser is fit on the
representation it will actually see at inference time.

Example:
    >>> scrubber = fit_scrubber(  # doctest: +SKIP
    ...     model, tokenizer, {"english": en_texts, "hindi": hi_texts}, layers=[4, 8]
    ... )
    >>> with scrubber:  # doctest: +SKIP
    ...     logits = model(**batch).logits
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from mmie._io import read_checkpoint_config, read_safetensors, write_checkpoint
from mmie._validation import integer, is_integer
from mmie.edits.leace import ErasureMethod, LeaceEraser, LeaceFitter
from mmie.errors import CheckpointError, IncompatibleModelError
from mmie.models.activations import collect_activations
from mmie.models.blocks import block_device, block_dtype, hidden_size, num_layers
from mmie.models.hooks import BlockIntervention, Edit

__all__ = ["Scrubber", "fit_scrubber"]

logger = logging.getLogger(__name__)

_FORMAT = "mmie.scrubber"
_FORMAT_VERSION = 1
_CONFIG_FILE = "scrubber.json"
_WEIGHTS_FILE = "erasers.safetensors"
_TEXTS_PER_COLLECT = 256  # texts per collect_activations call: bounds host memory when fitting


class Scrubber(BlockIntervention):
    """Applies LEACE erasers to the outputs of chosen transformer blocks.

    Each eraser acts on every position of its block's output hidden state
    ``[batch, seq, d_model]``. When the scrubber attaches, each eraser is copied to its
    block's device in float32 (the edit computes in at least float32 and casts the result
    back to the block's dtype), so it works on models split with ``device_map``. It is a
    context manager; :func:`mmie.interventions` composes it with other interventions.

    Args:
        model: the model to scrub (PEFT-wrapped models work).
        erasers: layer index -> eraser fitted on that block's outputs.
        block_path: dotted path of the block list for architectures mmie does not know.

    Raises:
        ValueError: if ``erasers`` is empty or a layer is out of range.
        TypeError: if a value is not a :class:`~mmie.LeaceEraser`.
        IncompatibleModelError: if an eraser's ``d_model`` differs from the model's.
    """

    def __init__(
        self,
        model: nn.Module,
        erasers: Mapping[int, LeaceEraser],
        *,
        block_path: str | None = None,
    ) -> None:
        super().__init__(model, block_path=block_path)
        if not isinstance(erasers, Mapping) or len(erasers) == 0:
            raise ValueError("erasers must be a non-empty mapping of layer -> LeaceEraser")
        n_blocks = num_layers(model, block_path)
        d_model = _model_width(model)
        checked: dict[int, LeaceEraser] = {}
        for layer, eraser in erasers.items():
            if not is_integer(layer):
                raise TypeError(f"erasers keys must be int layers, got {layer!r}")
            if not 0 <= layer < n_blocks:
                raise ValueError(
                    f"erasers has layer {layer}, but the model's layers are 0..{n_blocks - 1}"
                )
            if not isinstance(eraser, LeaceEraser):
                raise TypeError(
                    f"erasers[{layer}] must be a LeaceEraser, got {type(eraser).__name__}"
                )
            if d_model is not None and eraser.d_model != d_model:
                raise IncompatibleModelError(
                    f"erasers[{layer}] has d_model={eraser.d_model} but the model's hidden "
                    f"size is {d_model}"
                )
            checked[layer] = eraser
        self._erasers = dict(sorted(checked.items()))

    @property
    def erasers(self) -> Mapping[int, LeaceEraser]:
        """Read-only view of layer -> eraser (as fitted, not the per-device copies)."""
        return MappingProxyType(self._erasers)

    @property
    def layers(self) -> tuple[int, ...]:
        """The scrubbed layers, ascending."""
        return tuple(self._erasers)

    def __repr__(self) -> str:
        ranks = {layer: e.rank for layer, e in self._erasers.items()}
        return f"Scrubber(layers={list(self.layers)}, ranks={ranks}, attached={self.attached})"

    def _build_edits(self) -> list[tuple[int, Edit]]:
        edits: list[tuple[int, Edit]] = []
        for layer, eraser in self._erasers.items():
            device = block_device(self.model, layer, self.block_path)
            dtype = torch.promote_types(
                block_dtype(self.model, layer, self.block_path), torch.float32
            )
            # Placed once per attach; the edit (LeaceEraser.__call__) never moves data.
            edits.append((layer, eraser.to(device=device, dtype=dtype)))
        return edits

    # -------------------------------------------------------------------------- I/O
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``scrubber.json`` and ``erasers.safetensors`` into ``directory`` (created).

        Args:
            directory: output directory.

        Returns:
            The directory path.
        """
        tensors: dict[str, Tensor] = {}
        for layer, eraser in self._erasers.items():
            for name, tensor in eraser.state_dict().items():
                tensors[f"layers.{layer}.{name}"] = tensor
        config = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "layers": list(self.layers),
            "d_model": next(iter(self._erasers.values())).d_model,
            "ranks": {str(layer): e.rank for layer, e in self._erasers.items()},
            "block_path": self.block_path,
        }
        return write_checkpoint(
            directory,
            tensors=tensors,
            weights_name=_WEIGHTS_FILE,
            config=config,
            config_name=_CONFIG_FILE,
        )

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        model: nn.Module,
        *,
        block_path: str | None = None,
    ) -> Scrubber:
        """Read a scrubber written by :meth:`save` and bind it to ``model`` (not attached).

        Args:
            directory: directory holding ``scrubber.json`` and ``erasers.safetensors``.
            model: the model to scrub.
            block_path: overrides the block path stored in the config.

        Returns:
            The scrubber (call :meth:`~mmie.BlockIntervention.attach` or use it as a context manager).

        Raises:
            FileNotFoundError: if a file is missing.
            CheckpointError: if the config is not a scrubber config, or tensors are missing,
                unexpected or of inconsistent shapes.
        """
        path = Path(directory)
        config = read_checkpoint_config(path / _CONFIG_FILE)
        if config.get("format") != _FORMAT:
            raise CheckpointError(f"{path / _CONFIG_FILE} is not an mmie scrubber config")
        layers = config.get("layers")
        if not isinstance(layers, list) or not all(isinstance(x, int) for x in layers):
            raise CheckpointError(f"{path / _CONFIG_FILE}: 'layers' must be a list of ints")
        tensors = read_safetensors(path / _WEIGHTS_FILE)
        erasers: dict[int, LeaceEraser] = {}
        for layer in layers:
            prefix = f"layers.{layer}."
            part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            erasers[layer] = LeaceEraser.from_state_dict(
                part, source=f"{path / _WEIGHTS_FILE} layer {layer}"
            )
        expected = {
            f"layers.{layer}.{name}" for layer in layers for name in erasers[layer].state_dict()
        }
        unexpected = sorted(set(tensors) - expected)
        if unexpected:
            raise CheckpointError(f"{path / _WEIGHTS_FILE}: unexpected keys {unexpected}")
        stored_path = config.get("block_path")
        return cls(
            model,
            erasers,
            block_path=block_path if block_path is not None else stored_path,
        )


def _model_width(model: nn.Module) -> int | None:
    try:
        return hidden_size(model)
    except IncompatibleModelError:
        logger.debug(
            "hidden size unknown for %s; eraser widths checked at run time", type(model).__name__
        )
        return None


def _labelled_texts(
    data: Mapping[str, Sequence[str]] | Sequence[str],
    labels: Sequence[int] | Tensor | None,
) -> tuple[list[str], Tensor, int]:
    """Flatten the two input forms into (texts, per-text labels, number of classes)."""
    if isinstance(data, Mapping):
        if labels is not None:
            raise ValueError("labels must be None when texts are given as a concept mapping")
        if len(data) < 2:
            raise ValueError(
                f"texts_by_concept needs at least 2 concepts, got {len(data)}: {list(data)}"
            )
        texts: list[str] = []
        ids: list[int] = []
        for i, (name, group) in enumerate(data.items()):
            if isinstance(group, str) or len(group) == 0:
                raise ValueError(
                    f"texts_by_concept[{name!r}] must be a non-empty sequence of strings"
                )
            texts.extend(group)
            ids.extend([i] * len(group))
        return texts, torch.tensor(ids, dtype=torch.long), len(data)
    if isinstance(data, str):
        raise TypeError("texts must be a sequence of strings or a mapping, not a single string")
    if labels is None:
        raise ValueError("labels are required when texts are a plain sequence")
    label_t = torch.as_tensor(labels)
    if label_t.ndim != 1 or label_t.is_floating_point() or label_t.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D sequence of int class ids, got {label_t.dtype}")
    if len(label_t) != len(data):
        raise ValueError(f"labels has {len(label_t)} entries but there are {len(data)} texts")
    if len(label_t) and int(label_t.min()) < 0:
        raise ValueError(f"labels must be >= 0, got min {int(label_t.min())}")
    n_classes = int(label_t.max()) + 1 if len(label_t) else 0
    if len(torch.unique(label_t)) < 2:
        raise ValueError("labels must contain at least 2 distinct classes")
    return list(data), label_t.long(), n_classes


def _center_id(
    center: str | int | None,
    data: Mapping[str, Sequence[str]] | Sequence[str],
    n_classes: int,
) -> int | None:
    """The class id of ``center`` (a concept name with a mapping, a class id with labels)."""
    if center is None:
        return None
    if isinstance(data, Mapping):
        names = list(data)
        if not isinstance(center, str) or center not in names:
            raise ValueError(f"center must be one of the concepts {names}, got {center!r}")
        return names.index(center)
    return integer(center, "center", minimum=0, maximum=n_classes - 1)


def fit_scrubber(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts_by_concept: Mapping[str, Sequence[str]] | Sequence[str],
    layers: Sequence[int],
    *,
    labels: Sequence[int] | Tensor | None = None,
    method: ErasureMethod = "leace",
    sequential: bool = True,
    shrinkage: bool = False,
    constrain_cov_trace: bool = False,
    svd_tol: float = 0.01,
    center: str | int | None = None,
    batch_size: int = 8,
    max_length: int = 256,
    block_path: str | None = None,
    show_progress: bool = False,
) -> Scrubber:
    """Fit LEACE erasers for a concept at several layers and return a :class:`Scrubber`.

    Every non-pad token of a text is one sample labelled with the text's concept (tokens,
    not sequence means, are what the hook edits). Statistics are streamed into float64
    :class:`~mmie.LeaceFitter` objects chunk by chunk, so host memory stays bounded.

    Args:
        model: a causal LM (PEFT-wrapped models work); not modified.
        tokenizer: its tokenizer (with a pad token).
        texts_by_concept: either a mapping ``concept name -> texts`` (class ids follow the
            mapping's order; at least two concepts), or a plain sequence of texts together
            with ``labels``.
        layers: block indices to scrub (any order; fitted in increasing order).
        labels: per-text int class ids, only with a plain sequence of texts.
        method: ``"leace"`` or ``"orth"`` (see :class:`~mmie.LeaceFitter`).
        sequential: fit each layer with the erasers of the layers below attached, so it sees
            upstream erasure (one pass over the texts per layer); ``False`` collects every
            layer from the unscrubbed model in a single pass.
        shrinkage: shrink the feature covariance (see :class:`~mmie.LeaceFitter`).
        constrain_cov_trace: trace safeguard (see :class:`~mmie.LeaceFitter`).
        svd_tol: singular-value cutoff (see :class:`~mmie.LeaceFitter`).
        center: where the erasure centres: ``None`` for LEACE's pooled token mean, or a
            concept (its name in ``texts_by_concept``, or its class id with ``labels``)
            whose token mean becomes the centre, so that concept is moved least and the
            others are moved onto it (see :meth:`~mmie.LeaceFitter.fit`). For
            unlearning, centre on the retain concept: with the pooled mean, the concept
            with more tokens (e.g. Devanagari text, which splits into more tokens) sits
            near the centre and the other one absorbs most of the edit.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).
        block_path: dotted path of the block list for architectures mmie does not know.
        show_progress: show progress bars.

    Returns:
        A detached :class:`Scrubber` holding one float64 CPU eraser per layer.

    Raises:
        ValueError: on empty inputs, fewer than two concepts, mismatched labels, layers
            out of range, or an unknown ``center``.
    """
    texts, text_labels, n_classes = _labelled_texts(texts_by_concept, labels)
    center_id = _center_id(center, texts_by_concept, n_classes)
    wanted = sorted({int(layer) for layer in layers})
    if not wanted:
        raise ValueError("layers must not be empty")
    n_blocks = num_layers(model, block_path)
    bad = [layer for layer in wanted if not 0 <= layer < n_blocks]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model's layers are 0..{n_blocks - 1}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fitter_kwargs: dict[str, Any] = {
        "method": method,
        "shrinkage": shrinkage,
        "constrain_cov_trace": constrain_cov_trace,
        "svd_tol": svd_tol,
    }

    erasers: dict[int, LeaceEraser] = {}
    stages = [[layer] for layer in wanted] if sequential else [wanted]
    for stage in stages:
        upstream = Scrubber(model, erasers, block_path=block_path) if erasers else None
        if upstream is not None:
            upstream.attach()
        try:
            fitters = _collect_statistics(
                model,
                tokenizer,
                texts,
                text_labels,
                n_classes,
                stage,
                fitter_kwargs,
                batch_size=batch_size,
                max_length=max_length,
                block_path=block_path,
                show_progress=show_progress,
            )
        finally:
            if upstream is not None:
                upstream.remove()
        for layer in stage:
            erasers[layer] = fitters[layer].fit(center=center_id)
            logger.info(
                "scrubber layer %d: %d tokens, eraser rank %d",
                layer,
                fitters[layer].n_samples,
                erasers[layer].rank,
            )
    return Scrubber(model, erasers, block_path=block_path)


def _collect_statistics(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    text_labels: Tensor,
    n_classes: int,
    layers: list[int],
    fitter_kwargs: dict[str, Any],
    *,
    batch_size: int,
    max_length: int,
    block_path: str | None,
    show_progress: bool,
) -> dict[int, LeaceFitter]:
    """Stream token-level activations of ``layers`` into one fitter per layer."""
    fitters: dict[int, LeaceFitter] = {}
    chunk = max(batch_size, (_TEXTS_PER_COLLECT // batch_size) * batch_size)
    for start in range(0, len(texts), chunk):
        acts = collect_activations(
            model,
            tokenizer,
            texts[start : start + chunk],
            layers,
            batch_size=batch_size,
            max_length=max_length,
            block_path=block_path,
            show_progress=show_progress,
            desc=f"scrubber layers {layers}",
        )
        token_labels = text_labels[start : start + chunk][acts.token_text_index]  # (n_tokens,)
        for layer in layers:
            x = acts.tokens[layer]  # (n_tokens, d_model)
            if layer not in fitters:
                fitters[layer] = LeaceFitter(x.shape[1], n_classes, **fitter_kwargs)
            fitters[layer].update(x, token_labels)
    return fitters
