"""The per-seed unit of a study: build an arm on the one base model, train, use, release.

The original script loaded a fresh copy of the model for every arm of every seed and freed
none of them (it ran out of GPU memory after two or three seeds). Here every arm is built
*on* the single base model and taken off it again:

>>> for seed in seeds:  # doctest: +SKIP
...     cfg = mmie.UnlearnConfig(seed=seed)               # the one owner of the run's seed
...     with mmie.lora_arm(model, tok, forget, retain, config=cfg) as arm:
...         scores.append(evaluate(arm.model))          # the PeftModel
...     reft_cfg = mmie.LoReFTConfig(layers=(2,), seed=seed)
...     with mmie.reft_arm(model, tok, forget, retain, reft_config=reft_cfg, config=cfg) as arm:
...         scores.append(evaluate(model))              # adapter hooks attached

On exit, also when the body raises, :func:`lora_arm` unloads the LoRA layers (peft's
``unload()``: the original modules go back in place, so the base model computes exactly what
it computed before), :func:`reft_arm` removes the adapter's hooks, both restore the base
parameters' ``requires_grad`` flags and train/eval mode, drop their references to the
adapter (whose optimizer state already went when training returned) and call
:func:`mmie.free_memory`. Memory therefore returns to its baseline after every
seed, provided the body keeps no reference of its own to the yielded arm: the yielded
object is invalid after the ``with`` block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from mmie.errors import InterventionError
from mmie.models.hooks import assert_no_mmie_hooks
from mmie.models.loading import free_memory
from mmie.unlearning.config import ReFTUnlearnResult, UnlearnConfig, UnlearnResult
from mmie.unlearning.lora_checkpoint import drop_peft_config, load_lora, quiet_peft
from mmie.unlearning.train import unlearn_lora, unlearn_reft

if TYPE_CHECKING:
    from mmie.edits.reft import LoReFTConfig

__all__ = ["lora_arm", "reft_arm", "restored_lora_arm"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _BaseState:
    """What an arm may change on the base model and must put back."""

    requires_grad: list[bool]
    training: bool

    @classmethod
    def capture(cls, model: nn.Module) -> _BaseState:
        return cls([p.requires_grad for p in model.parameters()], model.training)

    def restore(self, model: nn.Module) -> None:
        params = list(model.parameters())
        if len(params) != len(self.requires_grad):
            raise InterventionError(
                f"the base model has {len(params)} parameters after releasing the arm, "
                f"{len(self.requires_grad)} before: the arm was not removed cleanly"
            )
        for p, flag in zip(params, self.requires_grad):
            p.requires_grad_(flag)
            p.grad = None
        model.train(self.training)


@contextlib.contextmanager
def _arm_scope(model: nn.Module, what: str) -> Iterator[list[Callable[[], None]]]:
    """The release protocol both arm kinds share.

    Yields a list to which the body appends the steps that take its trained part off the
    model; on exit (also when the body or training raises) they run in order, then the base
    parameters' flags and train/eval mode are restored and memory is freed, whatever the
    release steps raised.
    """
    state = _BaseState.capture(model)
    release: list[Callable[[], None]] = []
    try:
        yield release
    finally:
        try:
            for step in release:
                step()
        finally:
            release.clear()  # drop the closures' references to the adapter
            state.restore(model)
            free_memory()
    logger.debug("%s released", what)


def _check_config(config: UnlearnConfig | None) -> UnlearnConfig:
    if config is None:
        return UnlearnConfig()
    if not isinstance(config, UnlearnConfig):
        raise TypeError(f"config must be an UnlearnConfig or None, got {type(config).__name__}")
    return config


@contextlib.contextmanager
def lora_arm(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    forget: Sequence[str],
    retain: Sequence[str],
    *,
    config: UnlearnConfig | None = None,
    rank: int = 8,
    alpha: int | None = None,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
    show_progress: bool = False,
) -> Iterator[UnlearnResult]:
    """Train a LoRA unlearning arm on ``model`` for one seed; remove it on exit.

    Args:
        model: the base model (no adapter attached); it is modified in place while the
            block runs and restored exactly afterwards.
        tokenizer: its tokenizer.
        forget: texts to unlearn.
        retain: texts whose behaviour must be kept.
        config: training configuration (defaults: :class:`~mmie.UnlearnConfig`); its
            ``seed`` is the arm's seed.
        rank: LoRA rank.
        alpha: LoRA ``lora_alpha`` (default ``2 · rank``).
        dropout: LoRA dropout.
        target_modules: LoRA targets (default: :func:`~mmie.default_lora_targets`).
        show_progress: show a tqdm bar while training.

    Yields:
        The :class:`~mmie.UnlearnResult`; ``result.model`` is the ``PeftModel`` to evaluate
        (``with result.model.disable_adapter():`` gives the reference). Do not keep it after
        the block: its LoRA layers are gone.

    Raises:
        Everything :func:`~mmie.unlearn_lora` raises; the base model is left clean.
    """
    cfg = _check_config(config)
    with _arm_scope(model, f"LoRA arm of seed {cfg.seed}") as release:
        result = unlearn_lora(
            model,
            tokenizer,
            forget,
            retain,
            config=cfg,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            target_modules=target_modules,
            show_progress=show_progress,
        )
        release.append(lambda: _unload_lora(result.model, model))
        yield result


def _unload_lora(peft_model: Any, base: nn.Module) -> None:
    try:
        with quiet_peft():
            restored = peft_model.unload()
    finally:
        drop_peft_config(base)  # unload() removes it from peft 0.19 on; older left it
    if restored is not base:
        raise InterventionError("peft's unload() returned another model than the base model")
    leftover = [n for n, _ in base.named_modules() if "lora_" in n]
    if leftover:
        raise InterventionError(f"LoRA modules left on the base model after unload: {leftover[:5]}")


@contextlib.contextmanager
def reft_arm(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    forget: Sequence[str],
    retain: Sequence[str],
    *,
    reft_config: LoReFTConfig,
    config: UnlearnConfig | None = None,
    block_path: str | None = None,
    show_progress: bool = False,
) -> Iterator[ReFTUnlearnResult]:
    """Train a ReFT unlearning arm on ``model`` for one seed; detach it on exit.

    Args:
        model: the base model (its weights are never modified).
        tokenizer: its tokenizer.
        forget: texts to unlearn.
        retain: texts whose behaviour must be kept.
        reft_config: layers, rank, positions and initialisation seed of the adapters.
        config: training configuration (defaults: :class:`~mmie.UnlearnConfig`); its
            ``seed`` drives data order and dropout.
        block_path: dotted path of the block list for unknown architectures.
        show_progress: show a tqdm bar while training.

    Yields:
        The :class:`~mmie.ReFTUnlearnResult`; its ``adapter`` is attached, so ``model``
        itself is the arm inside the block (``adapter.remove()``/``attach()`` switch to the
        reference and back). Save it with ``result.adapter.save(dir)`` inside the block.

    Raises:
        Everything :func:`~mmie.unlearn_reft` raises; the base model is left clean.
    """
    cfg = _check_config(config)
    with _arm_scope(model, f"ReFT arm of seed {cfg.seed}") as release:
        result = unlearn_reft(
            model,
            tokenizer,
            forget,
            retain,
            reft_config=reft_config,
            config=cfg,
            block_path=block_path,
            show_progress=show_progress,
        )

        def detach() -> None:
            result.adapter.remove()
            assert_no_mmie_hooks(model)

        release.append(detach)
        yield result


@contextlib.contextmanager
def restored_lora_arm(model: nn.Module, directory: str | Path) -> Iterator[Any]:
    """Attach a LoRA adapter saved by :func:`~mmie.save_lora` to ``model``; remove it on exit.

    The same release protocol as :func:`lora_arm` (the base model is restored exactly), for
    an adapter trained earlier: a study trains a (seed, options) adapter once and reuses it
    for every arm built on it (``lora`` and ``lora+sae_gate``).

    Yields:
        The ``peft.PeftModel`` in eval mode (invalid after the block).

    Raises:
        CheckpointError: the adapter does not fit the model (see :func:`~mmie.load_lora`).
    """
    with _arm_scope(model, f"LoRA adapter from {directory}") as release:
        peft_model = load_lora(model, directory)
        release.append(lambda: _unload_lora(peft_model, model))
        yield peft_model
