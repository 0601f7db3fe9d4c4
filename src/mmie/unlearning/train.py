"""Unlearning training on one copy of the base model: LoRA (peft) and ReFT adapters.

Both arms train a small set of adapter parameters on top of the frozen base model, with the
objectives of :mod:`mmie.unlearning.objectives`, and both take their *reference* (for NPO and the
KL retain term) from the same weights: a LoRA arm runs the reference with its LoRA layers
switched off (what peft's ``disable_adapter()`` does, without its walk over every module on
each pass), a ReFT arm with its hooks detached. Reference values that are fixed functions of
the data are computed once (``reference_cache_mb``; see :mod:`mmie.unlearning.trainer`). No
function here loads or copies the base model (the original script held four copies of it at
its peak).

The configuration and result records live in :mod:`mmie.unlearning.config`, the shared
training loop (batches, loss terms, schedule, validation and early stopping) in
:mod:`mmie.unlearning.trainer`, and LoRA target resolution and adapter I/O in
:mod:`mmie.unlearning.lora_checkpoint`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from mmie._validation import finite_float, positive_int
from mmie.edits.reft import ReFTAdapter
from mmie.errors import TrainingError
from mmie.seeding import seed_context
from mmie.unlearning.config import (
    Objective,
    ReFTUnlearnResult,
    UnlearnConfig,
    UnlearnResult,
    resolve_config,
)
from mmie.unlearning.lora_checkpoint import (
    attach_lora,
    check_targets,
    default_lora_targets,
    is_peft,
    remove_lora,
)
from mmie.unlearning.trainer import (
    Trainer,
    check_changed,
    encode_texts,
    frozen_parameters,
    gradient_checkpointing,
)

if TYPE_CHECKING:
    from mmie.edits.reft import LoReFTConfig, ReFTAdapter

__all__ = ["unlearn_lora", "unlearn_reft"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- LoRA


def _lora_reference(peft_model: Any) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """A context-manager factory that switches every LoRA layer of ``peft_model`` off.

    The same forward pass as under ``peft_model.disable_adapter()`` (each layer's
    ``disable_adapters`` flag makes it return its base layer's output), but the layers are
    found once, not on every pass, and no ``requires_grad`` flag is touched (the reference
    runs under ``torch.no_grad``).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)]

    @contextlib.contextmanager
    def reference() -> Iterator[None]:
        before = [layer._disable_adapters for layer in layers]
        for layer in layers:
            layer._disable_adapters = True
        try:
            yield
        finally:
            for layer, flag in zip(layers, before):
                layer._disable_adapters = flag

    return reference


def unlearn_lora(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    forget: Sequence[str],
    retain: Sequence[str],
    *,
    config: UnlearnConfig | None = None,
    objective: Objective | None = None,
    steps: int | None = None,
    lr: float | None = None,
    rank: int = 8,
    alpha: int | None = None,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
    show_progress: bool = False,
    reference_cache_mb: float = 256.0,
) -> UnlearnResult:
    """Train a LoRA adapter that unlearns ``forget`` while keeping ``retain``.

    The adapter is injected into ``model`` itself (peft's ``get_peft_model``); the base
    weights are frozen and never change, and the reference for NPO and the KL term is the
    same model with its LoRA layers off (as under ``disable_adapter()``), so exactly one copy
    of the base weights exists. The reference is computed once where it can be: the NPO
    forget log-probabilities always, the KL retain logits when they fit in
    ``reference_cache_mb``.
    Training runs inside :func:`~mmie.seed_context` ``(config.seed)``: the adapter
    initialisation, dropout and data order follow the seed, and the global generators are
    restored afterwards. peft sets ``requires_grad=False`` on the base parameters while the
    adapter is attached; :func:`~mmie.lora_arm` removes the adapter again and restores them.

    Args:
        model: a Hugging Face causal LM without a PEFT adapter.
        tokenizer: its tokenizer (with a pad token).
        forget: texts to unlearn.
        retain: texts whose behaviour must be kept.
        config: the training configuration (defaults: :class:`UnlearnConfig`).
        objective: overrides ``config.objective``.
        steps: overrides ``config.steps``.
        lr: overrides ``config.lr``.
        rank: LoRA rank ``r``.
        alpha: LoRA scaling numerator (``lora_alpha``); defaults to ``2 · rank``.
        dropout: LoRA dropout on the adapter input (train mode only).
        target_modules: module names to adapt; defaults to :func:`default_lora_targets`.
        show_progress: show a tqdm bar.
        reference_cache_mb: memory budget (MiB) of the cached KL retain reference logits
            (``Σ tokens × vocab × element size``); above it they are recomputed every step.
            ``0`` caches nothing (every reference computed in its step, as in mmie 0.1).
            Results agree with and without the cache to fp32 rounding (the module
            docstring of ``mmie.unlearning.trainer``).

    Returns:
        An :class:`UnlearnResult` whose ``model`` is the ``PeftModel`` in eval mode.

    Raises:
        TypeError: ``model`` already carries a PEFT adapter, or wrong argument types.
        ValueError: empty text sets or invalid LoRA settings.
        ConfigError: invalid configuration values.
        IncompatibleModelError: a target module does not exist (the message lists the
            available ones) or no default exists for the architecture.
        TrainingError: a loss became non-finite, or the adapter weights did not change
            (``lora_B`` stayed zero).

    Example:
        >>> result = mmie.unlearn_lora(model, tok, hindi, english, steps=50)  # doctest: +SKIP
        >>> with result.model.disable_adapter():  # the reference, same weights
        ...     ref_logits = result.model(**batch).logits
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if is_peft(model):
        raise TypeError(
            "model already carries a PEFT adapter; pass the base model (unload the adapter "
            "with model.unload() first)"
        )
    rank = positive_int(rank, "rank")
    if alpha is not None:
        alpha = positive_int(alpha, "alpha")
    dropout = finite_float(dropout, "dropout", low=0.0, high=1.0, high_open=True)
    reference_cache_mb = finite_float(reference_cache_mb, "reference_cache_mb", low=0.0)
    cfg = resolve_config(config, objective=objective, steps=steps, lr=lr)
    forget_ids = encode_texts(tokenizer, forget, cfg.max_length, "forget")
    retain_ids = encode_texts(tokenizer, retain, cfg.max_length, "retain")
    targets = tuple(target_modules) if target_modules is not None else default_lora_targets(model)
    if isinstance(target_modules, str) or not targets:
        raise TypeError("target_modules must be a non-empty sequence of module names")
    fan_in_fan_out = check_targets(model, targets)

    from peft import LoraConfig

    lora_config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=list(targets),
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
        task_type="CAUSAL_LM",
    )
    flags = [p.requires_grad for p in model.parameters()]
    with seed_context(cfg.seed):
        peft_model: Any = attach_lora(model, lora_config)
        try:
            params = [p for p in peft_model.parameters() if p.requires_grad]
            initial = [p.detach().clone() for p in params]
            trainer = Trainer(
                peft_model,
                params,
                _lora_reference(peft_model),
                tokenizer,
                forget_ids,
                retain_ids,
                cfg,
                reference_cache_mb=reference_cache_mb,
            )
            with gradient_checkpointing(peft_model, cfg.gradient_checkpointing):
                outcome = trainer.run(show_progress=show_progress, desc=f"LoRA {cfg.objective}")
            check_changed(params, initial, "LoRA adapter")
            lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
            if not any(bool(p.detach().abs().sum() > 0) for p in lora_b):
                raise TrainingError(
                    "every lora_B weight is still zero after training: the adapter is a no-op"
                )
        except BaseException:
            remove_lora(peft_model, flags)
            raise
    peft_model.eval()
    logger.info(
        "LoRA %s: %d steps%s",
        cfg.objective,
        len(outcome["history"]),
        " (early stop)" if outcome["early_stopped"] else "",
    )
    return UnlearnResult(model=peft_model, config=cfg, **outcome)


# --------------------------------------------------------------------------- ReFT


@contextlib.contextmanager
def _detached(adapter: ReFTAdapter) -> Iterator[None]:
    """The reference of a ReFT arm: the model with the adapter's hooks removed."""
    was_attached = adapter.attached
    adapter.remove()
    try:
        yield
    finally:
        if was_attached:
            adapter.attach()


def unlearn_reft(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    forget: Sequence[str],
    retain: Sequence[str],
    *,
    reft_config: LoReFTConfig,
    config: UnlearnConfig | None = None,
    objective: Objective | None = None,
    steps: int | None = None,
    lr: float | None = None,
    block_path: str | None = None,
    show_progress: bool = False,
    reference_cache_mb: float = 256.0,
) -> ReFTUnlearnResult:
    """Train LoReFT adapters that unlearn ``forget`` while keeping ``retain``.

    Same objectives and schedule as :func:`unlearn_lora`; only the adapter's parameters are
    trained (the base model's parameters are frozen for the duration and never change), and
    the reference is the same model with the adapter's hooks detached. The adapter's
    initialisation follows ``reft_config.seed`` (an initialisation setting of the adapter,
    like its rank); data order and dropout follow ``config.seed``. Nothing here overrides
    either: a study builds both configs from the unit's seed. With
    ``positions="prompt"`` every real token of a training text counts as a prompt position.

    Args:
        model: a Hugging Face causal LM (no hooks of another trained adapter attached).
        tokenizer: its tokenizer (with a pad token).
        forget: texts to unlearn.
        retain: texts whose behaviour must be kept.
        reft_config: layers, rank and positions of the adapters (:class:`~mmie.LoReFTConfig`).
        config: the training configuration (defaults: :class:`UnlearnConfig`).
        objective: overrides ``config.objective``.
        steps: overrides ``config.steps``.
        lr: overrides ``config.lr``.
        block_path: dotted path of the block list for unknown architectures.
        show_progress: show a tqdm bar.
        reference_cache_mb: as for :func:`unlearn_lora`.

    Returns:
        A :class:`ReFTUnlearnResult` whose ``adapter`` is attached to ``model``; remove it
        with ``adapter.remove()`` (or use :func:`~mmie.reft_arm`).

    Raises:
        ConfigError: invalid configuration values.
        TrainingError: a loss became non-finite or the adapter did not change.
    """

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    reference_cache_mb = finite_float(reference_cache_mb, "reference_cache_mb", low=0.0)
    cfg = resolve_config(config, objective=objective, steps=steps, lr=lr)
    forget_ids = encode_texts(tokenizer, forget, cfg.max_length, "forget")
    retain_ids = encode_texts(tokenizer, retain, cfg.max_length, "retain")
    base_params = list(model.parameters())
    with seed_context(cfg.seed), frozen_parameters(base_params):
        adapter = ReFTAdapter(model, reft_config, block_path=block_path)
        adapter.attach()
        try:
            params = [p for p in adapter.parameters() if p.requires_grad]
            initial = [p.detach().clone() for p in params]

            def set_mode(mode: bool) -> None:
                model.train(mode)
                adapter.train(mode)

            def before_forward(mask: torch.Tensor) -> None:
                # Unlearning texts have no prompt/continuation split: edit every real token.
                if reft_config.positions == "prompt":
                    adapter.set_position_mask(mask.bool())

            trainer = Trainer(
                model,
                params,
                lambda: _detached(adapter),
                tokenizer,
                forget_ids,
                retain_ids,
                cfg,
                set_mode=set_mode,
                before_forward=before_forward,
                reference_cache_mb=reference_cache_mb,
            )
            with gradient_checkpointing(model, cfg.gradient_checkpointing):
                outcome = trainer.run(show_progress=show_progress, desc=f"ReFT {cfg.objective}")
            check_changed(params, initial, "ReFT adapter")
        except BaseException:
            adapter.remove()
            raise
        finally:
            adapter.eval()
            adapter.clear_position_mask()
    logger.info(
        "ReFT %s: %d steps%s",
        cfg.objective,
        len(outcome["history"]),
        " (early stop)" if outcome["early_stopped"] else "",
    )
    return ReFTUnlearnResult(adapter=adapter, config=cfg, **outcome)
