"""Recoverability attacks: is the target language removed from the model, or only hidden?

An arm that suppresses a language without removing it gives it back to anyone who pushes a
little. Each function here pushes in one way and measures how much comes back; each leaves
the model exactly as it found it (every weight bit-identical, hooks, adapters,
``requires_grad`` flags, gradients and train/eval modes as they were), runs seeded inside
:func:`~mmie.seed_context` (the caller's global RNG state is restored) and logs its cost
(seconds, forward and backward passes) at ``INFO``, also returned on the result.

=================================  =================  ========================================
attack                             threat model       what it does
=================================  =================  ========================================
:func:`~mmie.relearning_attack`    white-box weights  a few fine-tuning steps on held-out
                                                      target texts (Lynch et al. 2024; Deeb &
                                                      Roger 2024)
:func:`~mmie.quantisation_attack`  white-box weights  round-to-nearest 8/4-bit weights (Zhang
                                                      et al., ICLR 2025)
:func:`~mmie.steering_recovery`    activations        add the mean (target − other)
                                                      activation difference at one block
:func:`~mmie.logit_lens`           activations        read intermediate blocks through the
                                                      final norm and unembedding
:func:`~mmie.in_context_recovery`  prompt only        a few target sentences in the prompt
=================================  =================  ========================================

**Judging an arm.** A number alone says little: a model that never saw the target (the
oracle, or one retrained without the forget texts) also learns from 25 fine-tuning steps.
Run the *same* attack with the same texts, seed and settings on the reference and compare:

* relearning: :attr:`~mmie.RelearningCurve.auc_log_ppl` (area under the log-perplexity
  curve over the steps; lower means the target came back sooner). An arm whose area is
  clearly below the oracle's relearns faster than a model that never knew the language: the
  knowledge was hidden, not removed. :meth:`~mmie.RelearningCurve.steps_to_recover` gives
  the first step that closes a given fraction of the gap to the base model's log-perplexity.
* steering and quantisation: the *recovered fraction* of the log-perplexity gap,
  ``(log ppl_model − log ppl_attacked) / (log ppl_model − log ppl_reference)`` with
  ``reference_log_ppl`` the base model's (1 = back to the base model, 0 = no recovery).
  Steering is judged against its same-norm random control, quantisation against the
  unquantised arm.
* in-context: the gains in extraction strength, target share and script mass when target
  sentences precede the prompt, against the oracle's gains.

The study applies a margin to these differences; the functions only provide the numbers.
Hook-based arms (:class:`~mmie.SAEGate`, :class:`~mmie.Scrubber`, :class:`~mmie.ReFTAdapter`)
keep their hooks attached throughout: relearning fine-tunes the model *with* them, and
quantising base weights leaves them untouched (the study reports quantisation as "not
applicable" for them).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mmie._validation import (
    choice,
    finite_float,
    integer,
    integer_sequence,
    positive_float,
    positive_int,
    text_list,
)
from mmie.errors import DataError, IncompatibleModelError, InterventionError, TrainingError
from mmie.evaluation.language_metrics import extraction_strength, script_mass
from mmie.evaluation.output_metrics import target_share
from mmie.evaluation.scoring import perplexity
from mmie.language.detectors import Detector, ScriptDetector
from mmie.language.unicode import script_code
from mmie.models.activations import collect_activations
from mmie.models.blocks import (
    block_device,
    block_dtype,
    hidden_size,
    input_device,
    num_layers,
    unwrap_model,
)
from mmie.models.generation import generate
from mmie.models.hooks import BlockIntervention, Edit
from mmie.models.tokenization import collate_ids
from mmie.seeding import seed_context
from mmie.unlearning.lora_checkpoint import (
    check_targets,
    default_lora_targets,
    is_peft,
    quiet_peft,
    remove_lora,
)
from mmie.unlearning.objectives import token_nll
from mmie.unlearning.trainer import Batches, encode_texts

__all__ = [
    "InContextRecovery",
    "QuantisationAttack",
    "RelearningCurve",
    "SteeringRecovery",
    "in_context_recovery",
    "quantisation_attack",
    "relearning_attack",
    "rtn_quantise",
    "steering_directions",
    "steering_recovery",
]

logger = logging.getLogger(__name__)

RelearnMethod = Literal["lora", "full"]

RELEARN_ADAPTER = "mmie_relearn"
"""Name of the adapter :func:`relearning_attack` stacks on a LoRA arm (deleted afterwards)."""

_DEFAULT_LR: dict[str, float] = {"lora": 1e-3, "full": 1e-4}
_PROMPT_WORDS = 4  # default eval prompts: the first words of each eval text


# --------------------------------------------------------------------------- shared helpers


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_seed(seed: object) -> int:
    return integer(seed, "seed", minimum=0, maximum=2**32 - 1)


def _check_disjoint(texts: Sequence[str], name: str, other: Sequence[str], other_name: str) -> None:
    """``DataError`` naming an example when a text of ``texts`` is also in ``other``."""
    seen = set(other)
    for i, text in enumerate(texts):
        if text in seen:
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise DataError(
                f"{name}[{i}] is also in {other_name} ({shown!r}): an attack must not train on "
                "or be shown the texts it is evaluated on"
            )


def _default_prompts(texts: Sequence[str]) -> list[str]:
    """The first words of each text (a text with fewer words is kept whole)."""
    return [" ".join(text.split()[:_PROMPT_WORDS]) or text for text in texts]


def _check_processors(processors: object) -> list[LogitsProcessor]:
    if isinstance(processors, (str, bytes)) or not isinstance(processors, Sequence):
        raise TypeError(
            f"logits_processors must be a sequence of logits processors, got "
            f"{type(processors).__name__}"
        )
    for i, p in enumerate(processors):
        if not callable(p):
            raise TypeError(f"logits_processors[{i}] is not callable: {type(p).__name__}")
    return list(processors)


def _check_detector(detector: object) -> Detector:
    if detector is None:
        return ScriptDetector()
    if not isinstance(detector, Detector):
        raise TypeError(
            "detector must implement detect(text) and detect_batch(texts), got "
            f"{type(detector).__name__}"
        )
    return detector


def _optional_float(value: object, name: str) -> float | None:
    return None if value is None else finite_float(value, name)


def _trapezoid(x: Sequence[float], y: Sequence[float]) -> float:
    return math.fsum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))


def _fraction(model_value: float, attacked: float, reference: float) -> float:
    """Recovered fraction of the gap ``model − reference``; ``nan`` when there is no gap."""
    gap = model_value - reference
    return (model_value - attacked) / gap if gap != 0 else math.nan


def _jsonable(value: Any) -> Any:
    """``value`` with tuples as lists and non-finite floats as ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _Cost:
    """Wall-clock seconds and passes: a plain forward pre-hook on the unwrapped model counts
    every forward call (one per generated token during generation); removed on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.base = unwrap_model(model)
        self.forward = 0
        self.backward = 0
        self.seconds = 0.0

    def _count(self, *_: Any) -> None:
        self.forward += 1

    def __enter__(self) -> _Cost:
        self._start = time.perf_counter()
        self._handle = self.base.register_forward_pre_hook(self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
        self.seconds = time.perf_counter() - self._start


@contextlib.contextmanager
def _kept_modes(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's own train/eval flag on exit (also mixed states)."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


# --------------------------------------------------------------------------- relearning


@dataclass(frozen=True)
class RelearningCurve:
    """How fast the target returns under fine-tuning on held-out target texts.

    Attributes:
        steps: the optimizer-step counts at which the model was evaluated (0: before any
            step).
        log_ppl: per step count, the token-mean NLL (nats) of the eval texts, the log of
            their perplexity.
        script_mass: per step count, the mean ``script_mass(mode="next_char")`` of the
            eval prompts: the probability that the next letter is of the target script.
        extraction_strength: per step count, the mean greedy extraction strength of the
            eval prompts' continuations (None unless ``eval_prompts`` was given).
        target_share: per step count, the mean target-script share of those continuations
            (None unless ``eval_prompts`` was given; ``nan`` if every one was letter-free).
        train_loss: the relearning NLL of each optimizer step ``1..max(steps)``.
        method: ``"lora"`` or ``"full"``.
        lr: the learning rate.
        batch_size: texts per step.
        rank: the LoRA rank (None for ``"full"``).
        seed: the seed of data order and adapter initialisation.
        target: the target language label.
        n_relearn_texts: number of relearning texts.
        n_eval_texts: number of eval texts.
        n_prompts: number of eval prompts.
        reference_log_ppl: the reference log-perplexity given (the base model's), or None.
        seconds: wall-clock time of the attack, evaluations included.
        n_forward: model forward passes (training, scoring and generation steps).
        n_backward: backward passes (one per optimizer step).
    """

    steps: tuple[int, ...]
    log_ppl: tuple[float, ...]
    script_mass: tuple[float, ...]
    extraction_strength: tuple[float, ...] | None
    target_share: tuple[float, ...] | None
    train_loss: tuple[float, ...]
    method: str
    lr: float
    batch_size: int
    rank: int | None
    seed: int
    target: str
    n_relearn_texts: int
    n_eval_texts: int
    n_prompts: int
    reference_log_ppl: float | None
    seconds: float
    n_forward: int
    n_backward: int

    @property
    def perplexity(self) -> tuple[float, ...]:
        """Per step count, the eval texts' perplexity ``exp(log_ppl)``."""
        return tuple(math.exp(v) for v in self.log_ppl)

    @property
    def auc_log_ppl(self) -> float:
        """Trapezoid area under ``log_ppl`` over ``steps`` (lower: the target came back
        sooner); 0 with a single step count."""
        return _trapezoid(self.steps, self.log_ppl)

    @property
    def auc_script_mass(self) -> float:
        """Trapezoid area under ``script_mass`` over ``steps`` (higher: more came back)."""
        return _trapezoid(self.steps, self.script_mass)

    @property
    def mean_log_ppl(self) -> float:
        """``auc_log_ppl`` divided by the step span: the curve's average level (the value
        itself for a single step count)."""
        span = self.steps[-1] - self.steps[0]
        return self.auc_log_ppl / span if span else self.log_ppl[0]

    @property
    def mean_script_mass(self) -> float:
        """``auc_script_mass`` divided by the step span."""
        span = self.steps[-1] - self.steps[0]
        return self.auc_script_mass / span if span else self.script_mass[0]

    @property
    def recovered_fraction(self) -> tuple[float, ...] | None:
        """Per step count, ``(log_ppl[0] − log_ppl[i]) / (log_ppl[0] − reference_log_ppl)``
        (None without a reference; ``nan`` when the first value equals it)."""
        if self.reference_log_ppl is None:
            return None
        return tuple(_fraction(self.log_ppl[0], v, self.reference_log_ppl) for v in self.log_ppl)

    def steps_to_recover(
        self, threshold: float = 0.9, reference_log_ppl: float | None = None
    ) -> int | None:
        """The first step count whose log-perplexity closed ``threshold`` of the gap.

        The gap runs from the first evaluated value ``log_ppl[0]`` (normally step 0) to the
        reference (the base model's log-perplexity): the step ``s`` returned is the first
        with ``log_ppl[s] <= log_ppl[0] − threshold · (log_ppl[0] − reference)``.

        Args:
            threshold: the fraction of the gap, in ``(0, 1]``.
            reference_log_ppl: the reference; defaults to the one given to the attack.

        Returns:
            The step count, ``steps[0]`` when the curve starts at or below the reference,
            or None when no evaluated step got there.

        Raises:
            ValueError: ``threshold`` outside ``(0, 1]`` or no reference known.
        """
        threshold = finite_float(threshold, "threshold", low=0.0, high=1.0, low_open=True)
        ref = self.reference_log_ppl if reference_log_ppl is None else reference_log_ppl
        if ref is None:
            raise ValueError(
                "steps_to_recover needs a reference log-perplexity: pass reference_log_ppl "
                "(the base model's) here or to relearning_attack"
            )
        ref = finite_float(ref, "reference_log_ppl")
        start = self.log_ppl[0]
        if start <= ref:
            return self.steps[0]
        goal = start - threshold * (start - ref)
        for step, value in zip(self.steps, self.log_ppl):
            if value <= goal:
                return step
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (with the areas and ``perplexity``; ``nan`` as None)."""
        out = asdict(self)
        out.update(
            perplexity=self.perplexity,
            auc_log_ppl=self.auc_log_ppl,
            auc_script_mass=self.auc_script_mass,
            mean_log_ppl=self.mean_log_ppl,
            mean_script_mass=self.mean_script_mass,
            recovered_fraction=self.recovered_fraction,
        )
        return cast(dict[str, Any], _jsonable(out))


def _check_steps(steps: object) -> tuple[int, ...]:
    out = integer_sequence(steps, "steps", minimum=0)
    if not out:
        raise ValueError("steps must hold at least one step count, e.g. (0, 5, 25)")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(f"steps must be strictly increasing, got {out}")
    return out


def _unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every floating-point parameter once (tied weights are one parameter)."""
    return [p for p in dict.fromkeys(model.parameters()) if p.is_floating_point()]


@contextlib.contextmanager
def _full_weights(model: nn.Module) -> Iterator[tuple[nn.Module, list[nn.Parameter]]]:
    """Train every parameter; put back the values (from a CPU copy), flags and grads."""
    params = _unique_parameters(model)
    saved = [p.detach().to("cpu", copy=True) for p in params]
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield model, params
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)
        for p, flag, grad in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = grad


def _lora_config(rank: int, targets: Sequence[str], fan_in_fan_out: bool) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=list(targets),
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
        task_type="CAUSAL_LM",
    )


@contextlib.contextmanager
def _new_lora(
    model: nn.Module, rank: int, target_modules: Sequence[str] | None
) -> Iterator[tuple[nn.Module, list[nn.Parameter]]]:
    """A fresh LoRA adapter on a model without one; unloaded (originals back) on exit."""
    targets = tuple(target_modules) if target_modules is not None else default_lora_targets(model)
    fan_in_fan_out = check_targets(model, targets)
    from peft import get_peft_model

    flags = [p.requires_grad for p in model.parameters()]
    had_config = "peft_config" in vars(model)
    with quiet_peft():
        peft_model: Any = get_peft_model(model, _lora_config(rank, targets, fan_in_fan_out))
    try:
        params = [p for n, p in peft_model.named_parameters() if "lora_" in n]
        yield peft_model, params
    finally:
        remove_lora(peft_model, flags)
        if not had_config and "peft_config" in vars(model):
            delattr(model, "peft_config")  # unload() removes it in current peft; older left it


def _lora_layers(model: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if hasattr(m, "base_layer") and hasattr(m, "lora_A") and hasattr(m, "get_delta_weight")
    ]


def _check_lora_peft(model: Any, what: str, *, merging: bool = False) -> None:
    if not type(model).__module__.startswith("peft"):
        raise IncompatibleModelError(
            f"{what}: {type(model).__name__} carries adapters loaded through transformers' "
            "PEFT integration; pass a peft.PeftModel"
        )
    types = {str(getattr(c, "peft_type", "")) for c in model.peft_config.values()}
    if any("LORA" not in t.upper() for t in types):
        raise IncompatibleModelError(
            f"{what} supports PEFT models with LoRA adapters only, got {sorted(types)}"
        )
    layers = _lora_layers(model)
    if any(getattr(m, "merged", False) for m in layers):
        raise IncompatibleModelError(
            f"{what}: the LoRA adapter is merged into the base weights; call "
            "model.unmerge_adapter() first"
        )
    if any(any(getattr(m, "use_dora", {}).values()) for m in layers):
        raise IncompatibleModelError(f"{what} does not support DoRA adapters")
    if merging and any(getattr(c, "modules_to_save", None) for c in model.peft_config.values()):
        raise IncompatibleModelError(
            f"{what} cannot merge an adapter with modules_to_save (fully trained module copies)"
        )


@contextlib.contextmanager
def _stacked_lora(
    model: Any, rank: int, target_modules: Sequence[str] | None
) -> Iterator[tuple[nn.Module, list[nn.Parameter]]]:
    """A second LoRA adapter on a PEFT LoRA arm, active together with the arm's adapter(s)
    and the only thing trained; deleted on exit, the arm's active adapters and flags back."""
    _check_lora_peft(model, "relearning_attack(method='lora')")
    if RELEARN_ADAPTER in model.peft_config:
        raise InterventionError(
            f"the model already has an adapter named {RELEARN_ADAPTER!r} (left by an earlier "
            "attack?); delete it with model.delete_adapter(...)"
        )
    active = list(model.active_adapters)
    configs = [model.peft_config[name] for name in active]
    if target_modules is not None:
        targets: list[str] = list(target_modules)
    else:
        targets = sorted({str(t) for c in configs for t in (c.target_modules or ())})
    fan_in_fan_out = any(bool(getattr(c, "fan_in_fan_out", False)) for c in configs)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    previous = model.base_model.active_adapter
    previous = list(previous) if isinstance(previous, list) else previous
    previous_outer = vars(model).get("active_adapter")
    with quiet_peft():
        model.add_adapter(RELEARN_ADAPTER, _lora_config(rank, targets, fan_in_fan_out))
    try:
        with quiet_peft():
            model.base_model.set_adapter([*active, RELEARN_ADAPTER])
        params = [p for n, p in model.named_parameters() if f".{RELEARN_ADAPTER}." in n]
        yield model, params
    finally:
        with quiet_peft():
            model.delete_adapter(RELEARN_ADAPTER)
            model.base_model.set_adapter(previous)
        if previous_outer is not None:
            model.active_adapter = previous_outer
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])


def _trainable(
    model: nn.Module, method: str, rank: int, target_modules: Sequence[str] | None
) -> contextlib.AbstractContextManager[tuple[nn.Module, list[nn.Parameter]]]:
    if method == "full":
        return _full_weights(model)
    if is_peft(model):
        return _stacked_lora(model, rank, target_modules)
    return _new_lora(model, rank, target_modules)


@dataclass(frozen=True)
class _Scores:
    log_ppl: float
    script_mass: float
    extraction_strength: float | None
    target_share: float | None


def _score(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    eval_texts: list[str],
    prompts: list[str],
    generate_prompts: bool,
    target: str,
    detector: Detector,
    max_new_tokens: int,
    processors: list[LogitsProcessor],
    batch_size: int,
) -> _Scores:
    with _kept_modes(model):
        model.eval()
        log_ppl = perplexity(model, tokenizer, eval_texts, batch_size=batch_size).mean_nll
        mass = script_mass(
            model, tokenizer, prompts, target, mode="next_char", batch_size=batch_size
        ).mean
        if not generate_prompts:
            return _Scores(log_ppl, mass, None, None)
        gens = cast(
            list[str],
            generate(
                model,
                tokenizer,
                prompts,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                logits_processors=processors,
            ),
        )
    es = extraction_strength(gens, detector, target).mean
    share = target_share(gens, target).mean
    return _Scores(log_ppl, mass, es, share)


def relearning_attack(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    relearn_texts: Sequence[str],
    eval_texts: Sequence[str],
    *,
    steps: Sequence[int] = (0, 2, 5, 10, 25),
    method: RelearnMethod = "lora",
    lr: float | None = None,
    batch_size: int = 8,
    rank: int = 8,
    seed: int = 0,
    eval_prompts: Sequence[str] | None = None,
    target: str = "hi",
    max_new_tokens: int = 32,
    logits_processors: Sequence[LogitsProcessor] = (),
    detector: Detector | None = None,
    target_modules: Sequence[str] | None = None,
    reference_log_ppl: float | None = None,
    grad_clip: float | None = 1.0,
    max_length: int = 256,
) -> RelearningCurve:
    """Fine-tune the model as deployed on held-out target texts; record how fast it returns.

    Relearning attack (Lynch et al. 2024, "Eight methods to evaluate robust unlearning in
    LLMs"; Deeb & Roger 2024, "Do unlearning methods remove information from language model
    weights?"): a few optimizer steps of the plain next-token NLL (:func:`~mmie.token_nll`)
    on ``relearn_texts`` (``batch_size`` texts per step, reshuffled every pass from a
    generator seeded with ``seed``; AdamW, constant ``lr``, no weight decay, gradients
    clipped to ``grad_clip``; the model's own train mode, as an attacker would train). At
    every count in ``steps`` the model is scored in eval mode: forget perplexity on
    ``eval_texts``, ``script_mass(mode="next_char")`` on the eval prompts and, when
    ``eval_prompts`` is given, greedy extraction strength and target share of their
    continuations (with ``logits_processors`` active).

    What is trained:

    * ``method="lora"`` on a plain model (a hook-based arm, or the base/oracle): a fresh
      LoRA adapter (``rank``, ``lora_alpha = 2·rank``, ``target_modules`` or
      :func:`~mmie.default_lora_targets`), unloaded afterwards (peft's ``unload()``: the
      original modules go back).
    * ``method="lora"`` on a PEFT LoRA arm: the adapters are **stacked**, not merged: a
      second adapter (``"mmie_relearn"``, on the arm's target modules) is added and
      made active together with the arm's, only it is trained, and it is deleted
      afterwards; the arm's adapter weights never change.
    * ``method="full"``: every parameter of the model (base weights and, on a PEFT arm, its
      adapter weights); their values are put back afterwards from a CPU copy of exactly
      those parameters, bit for bit.

    Attached hooks (SAE gates, scrubbers, ReFT adapters) stay attached throughout, and the
    model's own parameters are the only ones that receive gradients (``torch.autograd.grad``
    on the trained parameters: the ``.grad`` of an intervention's parameters is never
    touched). Every ``requires_grad`` flag, gradient and train/eval mode is restored.

    Threat model: white-box weights.

    Args:
        model: the model as deployed (a ``PeftModel`` arm, or a model with hooks attached).
        tokenizer: its tokenizer (with a pad token).
        relearn_texts: held-out target texts to fine-tune on (e.g.
            :func:`mmie.demo_relearn_texts`); must share no text with ``eval_texts`` or
            ``eval_prompts``.
        eval_texts: forget texts whose perplexity is tracked.
        steps: strictly increasing optimizer-step counts to evaluate at; include 0 for the
            starting point (and for :meth:`RelearningCurve.steps_to_recover`).
        method: ``"lora"`` or ``"full"`` (see above).
        lr: AdamW learning rate (default ``1e-3`` for LoRA, ``1e-4`` for full fine-tuning).
        batch_size: texts per optimizer step and per scoring pass.
        rank: LoRA rank (``method="lora"``).
        seed: seed of the data order, the adapter initialisation and dropout.
        eval_prompts: prompts to generate from (and to score script mass on); default: the
            first four words of each eval text, scored but not generated from.
        target: the target language label (``"hi"``); its script is used for script mass
            and target share, the label for extraction strength.
        max_new_tokens: tokens generated per eval prompt.
        logits_processors: the arm's logits processors, active while generating.
        detector: language detector of extraction strength (default:
            :class:`~mmie.ScriptDetector`).
        target_modules: LoRA targets (default: the arm's, or the architecture's default).
        reference_log_ppl: the reference log-perplexity of ``eval_texts`` (the base
            model's), stored for :attr:`RelearningCurve.recovered_fraction`.
        grad_clip: maximum global gradient norm; None disables clipping.
        max_length: relearning texts are truncated to this many tokens (with a warning).

    Returns:
        A :class:`RelearningCurve`.

    Raises:
        DataError: a relearning text is also an eval text or prompt (the message names it).
        TypeError, ValueError: invalid arguments (the message names the argument).
        IncompatibleModelError: no default LoRA targets for the architecture, or a PEFT
            model that is not a LoRA adapter (or is merged).
        TrainingError: the relearning loss became non-finite.

    Example:
        >>> base, tok = mmie.load_demo_model()  # doctest: +SKIP
        >>> hindi = mmie.load_texts("hindi_eval")  # doctest: +SKIP
        >>> ref = mmie.perplexity(base, tok, hindi).mean_nll  # doctest: +SKIP
        >>> with mmie.lora_arm(base, tok, forget, retain) as arm:  # doctest: +SKIP
        ...     curve = mmie.relearning_attack(
        ...         arm.model, tok, mmie.demo_relearn_texts(), hindi, reference_log_ppl=ref
        ...     )
        >>> curve.perplexity, curve.steps_to_recover(0.9)  # doctest: +SKIP
    """
    model = _check_model(model)
    relearn = text_list(relearn_texts, "relearn_texts")
    evals = text_list(eval_texts, "eval_texts")
    _check_disjoint(relearn, "relearn_texts", evals, "eval_texts")
    generate_prompts = eval_prompts is not None
    prompts = (
        text_list(eval_prompts, "eval_prompts")
        if eval_prompts is not None
        else _default_prompts(evals)
    )
    if generate_prompts:
        _check_disjoint(relearn, "relearn_texts", prompts, "eval_prompts")
    step_counts = _check_steps(steps)
    method = choice(method, "method", ("lora", "full"))
    lr = positive_float(lr, "lr") if lr is not None else _DEFAULT_LR[method]
    batch_size = positive_int(batch_size, "batch_size")
    rank = positive_int(rank, "rank")
    seed = _check_seed(seed)
    script_code(target, "target")
    max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
    processors = _check_processors(logits_processors)
    det = _check_detector(detector)
    if target_modules is not None and (isinstance(target_modules, str) or not target_modules):
        raise TypeError("target_modules must be a non-empty sequence of module names or None")
    ref = _optional_float(reference_log_ppl, "reference_log_ppl")
    clip = positive_float(grad_clip, "grad_clip") if grad_clip is not None else None
    max_length = integer(max_length, "max_length", minimum=2)
    pad = tokenizer.pad_token_id
    if pad is None:
        raise ValueError("tokenizer has no pad token; call mmie.prepare_tokenizer(tokenizer)")
    ids = encode_texts(tokenizer, relearn, max_length, "relearn_texts")

    wanted = set(step_counts)
    records: list[_Scores] = []
    losses: list[float] = []
    with (
        _Cost(model) as cost,
        seed_context(seed),
        _kept_modes(model),
        _trainable(model, method, rank, target_modules) as (net, params),
    ):

        def score() -> _Scores:
            return _score(
                net,
                tokenizer,
                evals,
                prompts,
                generate_prompts,
                target,
                det,
                max_new_tokens,
                processors,
                batch_size,
            )

        if 0 in wanted:
            records.append(score())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        batches = Batches(len(ids), batch_size, torch.Generator().manual_seed(seed))
        device = input_device(net)
        try:
            for step in range(1, step_counts[-1] + 1):
                net.train()
                x, mask = collate_ids([ids[i] for i in batches.next()], int(pad), device)
                out = net(input_ids=x, attention_mask=mask, use_cache=False)
                loss = token_nll(out.logits, x, mask)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the relearning loss is {float(loss)} at step {step}; lower lr"
                    )
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                cost.backward += 1
                for p, g in zip(params, grads):
                    p.grad = g
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                optimizer.step()
                for p in params:
                    p.grad = None
                losses.append(float(loss.detach()))
                if step in wanted:
                    records.append(score())
        finally:
            for p in params:
                p.grad = None
            del optimizer
    logger.info(
        "relearning_attack (%s, %d steps): %.2f s, %d forward and %d backward passes",
        method,
        step_counts[-1],
        cost.seconds,
        cost.forward,
        cost.backward,
    )
    has_gen = generate_prompts
    return RelearningCurve(
        steps=step_counts,
        log_ppl=tuple(r.log_ppl for r in records),
        script_mass=tuple(r.script_mass for r in records),
        extraction_strength=(
            tuple(cast(float, r.extraction_strength) for r in records) if has_gen else None
        ),
        target_share=tuple(cast(float, r.target_share) for r in records) if has_gen else None,
        train_loss=tuple(losses),
        method=method,
        lr=lr,
        batch_size=batch_size,
        rank=rank if method == "lora" else None,
        seed=seed,
        target=target,
        n_relearn_texts=len(relearn),
        n_eval_texts=len(evals),
        n_prompts=len(prompts),
        reference_log_ppl=ref,
        seconds=cost.seconds,
        n_forward=cost.forward,
        n_backward=cost.backward,
    )


# --------------------------------------------------------------------------- steering


def _add(vector: Tensor, hidden: Tensor) -> Tensor:
    return hidden + vector


class _AddVector(BlockIntervention):
    """Adds a constant vector to every position of chosen blocks' outputs (cast to each
    block's dtype and placed on its device at attach time)."""

    def __init__(
        self, model: nn.Module, vectors: Mapping[int, Tensor], *, block_path: str | None = None
    ) -> None:
        super().__init__(model, block_path=block_path)
        self.vectors = dict(vectors)

    def _build_edits(self) -> list[tuple[int, Edit]]:
        edits: list[tuple[int, Edit]] = []
        for layer, vector in self.vectors.items():
            vec = vector.to(
                device=block_device(self.model, layer, self.block_path),
                dtype=block_dtype(self.model, layer, self.block_path),
            )
            edits.append((layer, functools.partial(_add, vec)))
        return edits


def _check_layers(model: nn.Module, layers: object, block_path: str | None) -> tuple[int, ...]:
    n_blocks = num_layers(model, block_path)
    out = integer_sequence(layers, "layers", minimum=0, maximum=n_blocks - 1)
    if not out:
        raise ValueError("layers must name at least one block")
    if len(set(out)) != len(out):
        raise ValueError(f"layers must not repeat a block, got {out}")
    return out


def steering_directions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    target_texts: Sequence[str],
    other_texts: Sequence[str],
    *,
    layers: Sequence[int],
    batch_size: int = 8,
    max_length: int = 256,
    block_path: str | None = None,
) -> dict[int, Tensor]:
    """The mean activation difference (target − other) at each block output.

    Each text's block output is averaged over its non-pad tokens
    (:func:`mmie.collect_activations`), the texts of each set are averaged with equal
    weight, and the direction is the target mean minus the other mean. Fit it on the *base*
    model to attack an arm with the base model's own direction (``base_direction`` of
    :func:`steering_recovery`).

    Args:
        model: the model to read (attached interventions stay active).
        tokenizer: its tokenizer.
        target_texts: texts in the target language.
        other_texts: texts in the other language(s).
        layers: the blocks.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).
        block_path: dotted path of the block list for unknown architectures.

    Returns:
        ``{layer: [d_model] fp32 CPU tensor}``.

    Raises:
        TypeError, ValueError: empty or invalid text sets or layers.
    """
    model = _check_model(model)
    target = text_list(target_texts, "target_texts")
    other = text_list(other_texts, "other_texts")
    wanted = _check_layers(model, layers, block_path)
    kwargs: dict[str, Any] = {
        "batch_size": positive_int(batch_size, "batch_size"),
        "max_length": positive_int(max_length, "max_length"),
        "keep_tokens": False,
        "block_path": block_path,
    }
    with _kept_modes(model):
        model.eval()
        acts_t = collect_activations(model, tokenizer, target, wanted, **kwargs)
        acts_o = collect_activations(model, tokenizer, other, wanted, **kwargs)
    return {
        layer: acts_t.means[layer].mean(0) - acts_o.means[layer].mean(0)  # (d_model,)
        for layer in wanted
    }


@dataclass(frozen=True)
class SteeringRecovery:
    """Forget perplexity under a steering vector, against a same-norm random control.

    Attributes:
        layers: the blocks steered (one at a time).
        scales: the multipliers of the direction.
        log_ppl_model: log-perplexity of the eval texts without steering.
        log_ppl: ``[layer][scale]`` log-perplexity with ``scale · direction`` added at
            ``layer``.
        random_log_ppl: the same with the random control direction.
        direction_norm: per layer, the direction's L2 norm (the control's too).
        reference_log_ppl: the reference log-perplexity given (the base model's), or None.
        fitted: whether the directions were fitted on this model (False: given as
            ``base_direction``).
        seed: the seed of the random control.
        n_eval_texts: number of eval texts.
        seconds: wall-clock time.
        n_forward: model forward passes.
    """

    layers: tuple[int, ...]
    scales: tuple[float, ...]
    log_ppl_model: float
    log_ppl: tuple[tuple[float, ...], ...]
    random_log_ppl: tuple[tuple[float, ...], ...]
    direction_norm: tuple[float, ...]
    reference_log_ppl: float | None
    fitted: bool
    seed: int
    n_eval_texts: int
    seconds: float
    n_forward: int

    @property
    def perplexity(self) -> tuple[tuple[float, ...], ...]:
        """``[layer][scale]`` forget perplexity ``exp(log_ppl)`` under steering."""
        return tuple(tuple(math.exp(v) for v in row) for row in self.log_ppl)

    @property
    def log_ppl_drop(self) -> tuple[tuple[float, ...], ...]:
        """``[layer][scale]`` ``log_ppl_model − log_ppl`` (positive: steering lowered it)."""
        return tuple(tuple(self.log_ppl_model - v for v in row) for row in self.log_ppl)

    @property
    def recovered_fraction(self) -> tuple[tuple[float, ...], ...] | None:
        """``[layer][scale]`` ``(log_ppl_model − log_ppl) / (log_ppl_model −
        reference_log_ppl)``: the share of the gap to the reference steering closes (None
        without a reference)."""
        return self._fractions(self.log_ppl)

    @property
    def random_recovered_fraction(self) -> tuple[tuple[float, ...], ...] | None:
        """The same for the random control."""
        return self._fractions(self.random_log_ppl)

    @property
    def best_recovered_fraction(self) -> float | None:
        """The largest recovered fraction over layers and scales (None without a
        reference; ``nan`` when there is no gap)."""
        return _best(self.recovered_fraction)

    @property
    def best_random_recovered_fraction(self) -> float | None:
        """The largest recovered fraction of the random control."""
        return _best(self.random_recovered_fraction)

    def _fractions(
        self, grid: tuple[tuple[float, ...], ...]
    ) -> tuple[tuple[float, ...], ...] | None:
        ref = self.reference_log_ppl
        if ref is None:
            return None
        return tuple(tuple(_fraction(self.log_ppl_model, v, ref) for v in row) for row in grid)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (with the fractions; ``nan`` as None)."""
        out = asdict(self)
        out.update(
            perplexity=self.perplexity,
            log_ppl_drop=self.log_ppl_drop,
            recovered_fraction=self.recovered_fraction,
            random_recovered_fraction=self.random_recovered_fraction,
            best_recovered_fraction=self.best_recovered_fraction,
            best_random_recovered_fraction=self.best_random_recovered_fraction,
        )
        return cast(dict[str, Any], _jsonable(out))


def _best(grid: tuple[tuple[float, ...], ...] | None) -> float | None:
    if grid is None:
        return None
    values = [v for row in grid for v in row if not math.isnan(v)]
    return max(values) if values else math.nan


def _check_directions(
    directions: object, layers: tuple[int, ...], d_model: int
) -> dict[int, Tensor]:
    if not isinstance(directions, Mapping):
        raise TypeError(
            f"base_direction must be a mapping {{layer: tensor}}, got {type(directions).__name__}"
        )
    out: dict[int, Tensor] = {}
    for layer in layers:
        if layer not in directions:
            raise ValueError(
                f"base_direction has no direction for layer {layer} (it has {sorted(directions)})"
            )
        vec = directions[layer]
        if not isinstance(vec, Tensor):
            raise TypeError(f"base_direction[{layer}] must be a tensor, got {type(vec).__name__}")
        if vec.shape != (d_model,):
            raise ValueError(
                f"base_direction[{layer}] must have shape [{d_model}] (d_model), got "
                f"{tuple(vec.shape)}"
            )
        vec = vec.detach().float().cpu()
        if not bool(torch.isfinite(vec).all()):
            raise ValueError(f"base_direction[{layer}] has non-finite entries")
        out[layer] = vec
    return out


def steering_recovery(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    target_texts: Sequence[str] | None,
    other_texts: Sequence[str] | None,
    eval_texts: Sequence[str],
    *,
    layers: Sequence[int],
    scales: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    seed: int = 0,
    base_direction: Mapping[int, Tensor] | None = None,
    reference_log_ppl: float | None = None,
    batch_size: int = 8,
    max_length: int | None = 1024,
    block_path: str | None = None,
) -> SteeringRecovery:
    """Add the target-language direction at one block and measure the forget perplexity.

    The direction at each layer is the mean activation difference target − other
    (:func:`steering_directions`), fitted here on ``target_texts``/``other_texts`` or
    given as ``base_direction`` (the study fits it on the base model). For every layer
    and scale, ``scale · direction`` is added to every position of that block's output
    (a constant-vector :class:`~mmie.BlockIntervention`, cast to the block's dtype; one
    layer at a time, removed in ``finally``) and the perplexity of ``eval_texts`` is
    scored. The control is a random direction of the same norm per layer (Gaussian,
    from a generator seeded with ``seed``) under the same scales: a direction that only
    perturbs the model does not recover the language. With ``reference_log_ppl`` (the base
    model's log-perplexity of ``eval_texts``) the result gives the recovered fraction of the
    gap, ``(log ppl_model − log ppl_steered) / (log ppl_model − log ppl_reference)``.

    Attached interventions stay active; the model's weights, hooks and modes are unchanged
    afterwards.

    Threat model: activations (the attacker can add to hidden states).

    Args:
        model: the model as deployed.
        tokenizer: its tokenizer.
        target_texts: texts in the target language to fit the direction on (not used, may
            be None, with ``base_direction``).
        other_texts: texts in the other language(s) (likewise).
        eval_texts: forget texts whose perplexity is measured.
        layers: the blocks to steer, one at a time.
        scales: multipliers of the direction (0 is the identity).
        seed: seed of the random control direction.
        base_direction: ``{layer: [d_model] tensor}`` fitted elsewhere (the base model's).
        reference_log_ppl: the base model's log-perplexity of ``eval_texts``.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).
        block_path: dotted path of the block list for unknown architectures.

    Returns:
        A :class:`SteeringRecovery`.

    Raises:
        TypeError, ValueError: invalid arguments (the message names the argument), or
            neither texts nor ``base_direction`` to get a direction from.

    Example:
        >>> base, tok = mmie.load_demo_model()  # doctest: +SKIP
        >>> hindi = mmie.load_texts("hindi_eval")  # doctest: +SKIP
        >>> english = mmie.load_texts("english_eval")[64:96]  # doctest: +SKIP
        >>> ref = mmie.perplexity(base, tok, hindi).mean_nll  # doctest: +SKIP
        >>> direction = mmie.steering_directions(  # doctest: +SKIP
        ...     base, tok, mmie.demo_relearn_texts(), english, layers=[1, 2]
        ... )
        >>> r = mmie.steering_recovery(  # doctest: +SKIP
        ...     arm_model, tok, None, None, hindi, layers=[1, 2],
        ...     base_direction=direction, reference_log_ppl=ref,
        ... )
        >>> r.best_recovered_fraction, r.best_random_recovered_fraction  # doctest: +SKIP
    """
    model = _check_model(model)
    evals = text_list(eval_texts, "eval_texts")
    wanted = _check_layers(model, layers, block_path)
    scale_list = tuple(
        finite_float(s, f"scales[{i}]") for i, s in enumerate(_as_sequence(scales, "scales"))
    )
    if not scale_list:
        raise ValueError("scales must hold at least one scale")
    seed = _check_seed(seed)
    ref = _optional_float(reference_log_ppl, "reference_log_ppl")
    batch_size = positive_int(batch_size, "batch_size")
    d_model = hidden_size(model)
    given = base_direction is not None
    if base_direction is not None:
        given_directions = _check_directions(base_direction, wanted, d_model)
    elif target_texts is None or other_texts is None:
        raise ValueError(
            "steering_recovery needs target_texts and other_texts to fit the direction, "
            "or base_direction={layer: tensor}"
        )

    def log_ppl() -> float:
        return perplexity(
            model, tokenizer, evals, batch_size=batch_size, max_length=max_length
        ).mean_nll

    with _Cost(model) as cost, seed_context(seed), _kept_modes(model):
        if given:
            directions = given_directions
        else:
            directions = steering_directions(
                model,
                tokenizer,
                cast(Sequence[str], target_texts),
                cast(Sequence[str], other_texts),
                layers=wanted,
                batch_size=batch_size,
                block_path=block_path,
            )
        gen = torch.Generator().manual_seed(seed)
        controls: dict[int, Tensor] = {}
        for layer in wanted:  # same-norm Gaussian directions, drawn in layer order
            noise = torch.randn(d_model, generator=gen)
            controls[layer] = noise * (directions[layer].norm() / noise.norm())
        model.eval()
        base_value = log_ppl()
        grids: list[list[list[float]]] = [[], []]
        for grid, vectors in zip(grids, (directions, controls)):
            for layer in wanted:
                row = []
                for scale in scale_list:
                    with _AddVector(model, {layer: scale * vectors[layer]}, block_path=block_path):
                        row.append(log_ppl())
                grid.append(row)
    result = SteeringRecovery(
        layers=wanted,
        scales=scale_list,
        log_ppl_model=base_value,
        log_ppl=tuple(tuple(row) for row in grids[0]),
        random_log_ppl=tuple(tuple(row) for row in grids[1]),
        direction_norm=tuple(float(directions[layer].norm()) for layer in wanted),
        reference_log_ppl=ref,
        fitted=not given,
        seed=seed,
        n_eval_texts=len(evals),
        seconds=cost.seconds,
        n_forward=cost.forward,
    )
    logger.info(
        "steering_recovery (%d layers x %d scales): %.2f s, %d forward passes",
        len(wanted),
        len(scale_list),
        cost.seconds,
        cost.forward,
    )
    return result


def _as_sequence(values: object, name: str) -> Sequence[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    return values


# --------------------------------------------------------------------------- in-context


@dataclass(frozen=True)
class InContextRecovery:
    """Target-language output with and without target sentences before the prompt.

    Attributes:
        k: target sentences prepended to each prompt.
        target: the target language label.
        n_prompts: number of prompts.
        extraction_strength: mean greedy extraction strength without context.
        extraction_strength_context: the same with the context.
        target_share: mean target-script share of the continuations without context
            (``nan`` if every continuation was letter-free).
        target_share_context: the same with the context.
        script_mass: mean ``script_mass(mode="next_char")`` of the prompts.
        script_mass_context: the same with the context.
        es_values: per prompt, extraction strength without context.
        es_values_context: per prompt, with context.
        share_values: per prompt, target share without context (``nan``: no letters).
        share_values_context: per prompt, with context.
        mass_values: per prompt, script mass without context.
        mass_values_context: per prompt, with context.
        context_indices: per prompt, the indices into ``context_texts`` prepended to it.
        seed: the seed of the context choice.
        seconds: wall-clock time.
        n_forward: model forward passes (scoring and generation steps).
    """

    k: int
    target: str
    n_prompts: int
    extraction_strength: float
    extraction_strength_context: float
    target_share: float
    target_share_context: float
    script_mass: float
    script_mass_context: float
    es_values: tuple[float, ...]
    es_values_context: tuple[float, ...]
    share_values: tuple[float, ...]
    share_values_context: tuple[float, ...]
    mass_values: tuple[float, ...]
    mass_values_context: tuple[float, ...]
    context_indices: tuple[tuple[int, ...], ...]
    seed: int
    seconds: float
    n_forward: int

    @property
    def es_gain(self) -> float:
        """``extraction_strength_context − extraction_strength``."""
        return self.extraction_strength_context - self.extraction_strength

    @property
    def share_gain(self) -> float:
        """``target_share_context − target_share`` (``nan`` if either is)."""
        return self.target_share_context - self.target_share

    @property
    def mass_gain(self) -> float:
        """``script_mass_context − script_mass``."""
        return self.script_mass_context - self.script_mass

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (with the gains; ``nan`` as None)."""
        out = asdict(self)
        out.update(es_gain=self.es_gain, share_gain=self.share_gain, mass_gain=self.mass_gain)
        return cast(dict[str, Any], _jsonable(out))


def _check_positions(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int
) -> None:
    """Refuse prompts that, with their continuation, exceed the model's positions."""
    config = getattr(unwrap_model(model), "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(limit, int):
        return
    longest = max(len(ids) for ids in tokenizer(prompts)["input_ids"])
    if longest + max_new_tokens > limit:
        raise ValueError(
            f"the longest prompt with its context has {longest} tokens; with "
            f"max_new_tokens={max_new_tokens} it exceeds the model's {limit} positions: lower k "
            "or max_new_tokens, or pass shorter context_texts"
        )


def in_context_recovery(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    context_texts: Sequence[str],
    prompts: Sequence[str],
    *,
    k: int = 3,
    target: str = "hi",
    max_new_tokens: int = 32,
    logits_processors: Sequence[LogitsProcessor] = (),
    seed: int = 0,
    detector: Detector | None = None,
    separator: str = "\n",
    batch_size: int = 8,
) -> InContextRecovery:
    """In-context relearning: prepend ``k`` held-out target sentences to every prompt.

    For each prompt, ``k`` distinct texts of ``context_texts`` are drawn (a permutation
    from a generator seeded with ``seed``, one draw per prompt in order) and joined with
    ``separator`` before it: ``ctx_1 + sep + … + ctx_k + sep + prompt`` (``k=0`` leaves the
    prompt as it is). Both prompt sets are continued greedily (with ``logits_processors``
    active) and scored: extraction strength and target share of the continuations and
    ``script_mass(mode="next_char")`` of the next letter. The model is not modified.

    Threat model: prompt only (black-box access suffices).

    Args:
        model: the model as deployed.
        tokenizer: its tokenizer.
        context_texts: held-out target-language sentences (never eval texts; the study
            checks against every set; here a context equal to a prompt is refused).
        prompts: the forget prompts.
        k: sentences per prompt, ``0 <= k <= len(context_texts)``.
        target: the target language label (``"hi"``).
        max_new_tokens: tokens generated per prompt.
        logits_processors: the arm's logits processors.
        seed: seed of the context choice.
        detector: language detector of extraction strength (default:
            :class:`~mmie.ScriptDetector`).
        separator: joins the context sentences and the prompt.
        batch_size: prompts per forward pass.

    Returns:
        An :class:`InContextRecovery`; with ``k=0`` both halves are equal.

    Raises:
        DataError: a context text is also a prompt.
        ValueError: a prompt with its context and ``max_new_tokens`` would not fit in the
            model's positions (``max_position_embeddings``), or invalid arguments.
        TypeError: invalid argument types (the message names the argument).

    Example:
        >>> contexts = mmie.demo_relearn_texts()  # doctest: +SKIP
        >>> r = mmie.in_context_recovery(arm_model, tok, contexts, prompts, k=2)  # doctest: +SKIP
        >>> r.es_gain, r.mass_gain  # doctest: +SKIP
    """
    model = _check_model(model)
    contexts = text_list(context_texts, "context_texts")
    plain = text_list(prompts, "prompts")
    _check_disjoint(contexts, "context_texts", plain, "prompts")
    k = integer(k, "k", minimum=0, maximum=len(contexts))
    script_code(target, "target")
    max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
    processors = _check_processors(logits_processors)
    seed = _check_seed(seed)
    det = _check_detector(detector)
    if not isinstance(separator, str):
        raise TypeError(f"separator must be a str, got {type(separator).__name__}")
    batch_size = positive_int(batch_size, "batch_size")
    gen = torch.Generator().manual_seed(seed)
    chosen = [tuple(torch.randperm(len(contexts), generator=gen)[:k].tolist()) for _ in plain]
    with_context = [
        separator.join([*(contexts[i] for i in idx), prompt]) for idx, prompt in zip(chosen, plain)
    ]
    _check_positions(model, tokenizer, with_context, max_new_tokens)

    def run(texts: list[str]) -> tuple[Any, Any, Any]:
        mass = script_mass(model, tokenizer, texts, target, mode="next_char", batch_size=batch_size)
        gens = cast(
            list[str],
            generate(
                model,
                tokenizer,
                texts,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                logits_processors=processors,
            ),
        )
        return extraction_strength(gens, det, target), target_share(gens, target), mass

    with _Cost(model) as cost, seed_context(seed), _kept_modes(model):
        model.eval()
        es0, share0, mass0 = run(plain)
        es1, share1, mass1 = run(with_context)
    logger.info(
        "in_context_recovery (k=%d, %d prompts): %.2f s, %d forward passes",
        k,
        len(plain),
        cost.seconds,
        cost.forward,
    )
    return InContextRecovery(
        k=k,
        target=target,
        n_prompts=len(plain),
        extraction_strength=es0.mean,
        extraction_strength_context=es1.mean,
        target_share=share0.mean,
        target_share_context=share1.mean,
        script_mass=mass0.mean,
        script_mass_context=mass1.mean,
        es_values=es0.values,
        es_values_context=es1.values,
        share_values=share0.values,
        share_values_context=share1.values,
        mass_values=mass0.values,
        mass_values_context=mass1.values,
        context_indices=tuple(chosen),
        seed=seed,
        seconds=cost.seconds,
        n_forward=cost.forward,
    )


# --------------------------------------------------------------------------- quantisation


def rtn_quantise(weight: Tensor, bits: int, *, axis: int = 0) -> Tensor:
    """Round-to-nearest symmetric quantisation with one scale per slice along ``axis``.

    With ``q_max = 2^(bits−1) − 1`` and, per output channel ``o`` (the slice of ``weight``
    at index ``o`` along ``axis``), ``s_o = max |w_o| / q_max``, every element becomes
    ``s_o · clamp(round(w / s_o), −q_max, q_max)``: an integer grid of ``2·q_max + 1``
    levels, so the round-trip error of each element is at most ``s_o / 2`` (half a
    quantisation step). A channel of zeros stays zero. Computed in fp32, returned in
    ``weight``'s dtype; ``weight`` is not modified.

    Args:
        weight: the weight, e.g. ``[out, in]`` of an ``nn.Linear`` (``axis=0``) or ``[in,
            out]`` of a transformers ``Conv1D`` (``axis=1``).
        bits: bits per weight, in ``[2, 16]`` (8: 255 levels, 4: 15 levels).
        axis: the output-channel axis.

    Returns:
        The dequantised weight, a new tensor of ``weight``'s shape, dtype and device.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor.
        ValueError: ``bits`` outside ``[2, 16]`` or ``axis`` out of range.

    Example:
        >>> import torch
        >>> rtn_quantise(torch.tensor([[0.1, -0.5, 0.26]]), 2)  # levels -0.5, 0, 0.5
        tensor([[ 0.0000, -0.5000,  0.5000]])
    """
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor, got {type(weight).__name__}")
    bits = integer(bits, "bits", minimum=2, maximum=16)
    axis = integer(axis, "axis", minimum=-weight.ndim, maximum=weight.ndim - 1) % weight.ndim
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    others = [d for d in range(w.ndim) if d != axis]
    amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = amax / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w / safe), -qmax, qmax)
    return (q * safe).to(weight.dtype)


@dataclass(frozen=True)
class QuantisationAttack:
    """Forget metrics of the model with round-to-nearest quantised weights.

    Attributes:
        bits: the bit widths tried.
        log_ppl_full: log-perplexity of the eval texts at full precision.
        log_ppl: per bit width, the log-perplexity with quantised weights.
        script_mass_full: mean ``script_mass(mode="next_char")`` of the prompts at full
            precision.
        script_mass: per bit width, the same with quantised weights.
        max_abs_error: per bit width, the largest ``|ŵ − w|`` over all quantised weights.
        relative_error: per bit width, ``‖Ŵ − W‖_F / ‖W‖_F`` over all quantised weights.
        n_matrices: number of weight matrices quantised.
        n_quantised: number of weight elements quantised.
        merged_adapter: whether a LoRA adapter was merged into the weights first.
        skipped: names of Linear layers left in full precision (the output embedding).
        reference_log_ppl: the reference log-perplexity given (the base model's), or None.
        target: the target language label.
        n_eval_texts: number of eval texts.
        seconds: wall-clock time.
        n_forward: model forward passes.
    """

    bits: tuple[int, ...]
    log_ppl_full: float
    log_ppl: tuple[float, ...]
    script_mass_full: float
    script_mass: tuple[float, ...]
    max_abs_error: tuple[float, ...]
    relative_error: tuple[float, ...]
    n_matrices: int
    n_quantised: int
    merged_adapter: bool
    skipped: tuple[str, ...]
    reference_log_ppl: float | None
    target: str
    n_eval_texts: int
    seconds: float
    n_forward: int

    @property
    def perplexity(self) -> tuple[float, ...]:
        """Per bit width, the forget perplexity ``exp(log_ppl)``."""
        return tuple(math.exp(v) for v in self.log_ppl)

    @property
    def recovered_fraction(self) -> tuple[float, ...] | None:
        """Per bit width, ``(log_ppl_full − log_ppl) / (log_ppl_full − reference_log_ppl)``
        (None without a reference): how much of the arm's gap quantisation closes."""
        ref = self.reference_log_ppl
        if ref is None:
            return None
        return tuple(_fraction(self.log_ppl_full, v, ref) for v in self.log_ppl)

    @property
    def script_mass_change(self) -> tuple[float, ...]:
        """Per bit width, ``script_mass − script_mass_full``."""
        return tuple(v - self.script_mass_full for v in self.script_mass)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (with the fractions; ``nan`` as None)."""
        out = asdict(self)
        out.update(
            perplexity=self.perplexity,
            recovered_fraction=self.recovered_fraction,
            script_mass_change=self.script_mass_change,
        )
        return cast(dict[str, Any], _jsonable(out))


@dataclass(frozen=True, eq=False)
class _Target:
    name: str
    module: nn.Module  # the module whose weight is replaced
    axis: int  # output-channel axis of its weight
    lora: nn.Module | None  # the peft LoRA layer wrapping it, whose delta is merged
    quantise: bool  # False: a LoRA base layer that is only merged (embeddings, the head)

    @property
    def weight(self) -> Tensor:
        return cast(Tensor, self.module.weight)


def _quantisation_targets(
    model: nn.Module, skip_output_embedding: bool
) -> tuple[list[_Target], list[str]]:
    """Every Linear/Conv1D weight to quantise, and every LoRA base layer to merge (with the
    adapter disabled while scoring, a base layer left out would lose its delta)."""
    base = unwrap_model(model)
    lora_layers = _lora_layers(base)
    wrapped = {id(m.base_layer): m for m in lora_layers}
    inside_adapters = {
        id(sub)
        for m in lora_layers
        for sub in m.modules()
        if sub is not m and sub is not m.base_layer
    }
    get_head = getattr(base, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    head = getattr(head, "base_layer", head)
    targets: list[_Target] = []
    skipped: list[str] = []
    seen: set[int] = set()
    for name, module in base.named_modules():
        if id(module) in inside_adapters:
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor) or id(weight) in seen:
            continue
        is_linear = isinstance(module, nn.Linear)
        quantise = (is_linear or type(module).__name__ == "Conv1D") and weight.ndim == 2
        if quantise and skip_output_embedding and module is head:
            skipped.append(name)
            quantise = False
        lora = wrapped.get(id(module))
        if quantise or lora is not None:
            seen.add(id(weight))
            targets.append(_Target(name, module, 0 if is_linear else 1, lora, quantise))
    return targets, skipped


def _effective_weight(target: _Target, original: Tensor) -> Tensor:
    """fp32 weight the layer computes with: the original plus the active LoRA deltas."""
    w = original.to(device=target.weight.device, dtype=torch.float32)
    layer: Any = target.lora
    if layer is not None and not getattr(layer, "disable_adapters", False):
        for name in layer.active_adapters:
            if name in layer.lora_A or name in getattr(layer, "lora_embedding_A", {}):
                w = w + layer.get_delta_weight(name).float()
    return w


def quantisation_attack(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    eval_texts: Sequence[str],
    *,
    bits: Sequence[int] = (8, 4),
    eval_prompts: Sequence[str] | None = None,
    target: str = "hi",
    reference_log_ppl: float | None = None,
    skip_output_embedding: bool = True,
    batch_size: int = 8,
) -> QuantisationAttack:
    """Quantise every Linear weight to ``bits`` and measure the forget metrics.

    Zhang et al. (ICLR 2025, "Catastrophic failure of LLM unlearning via quantization")
    found that 4-bit quantisation of models unlearned with small learning rates restores
    much of the forgotten knowledge: the unlearning update is smaller than the
    quantisation step and rounds away. Here every ``nn.Linear`` (and transformers
    ``Conv1D``) weight is quantised with :func:`rtn_quantise` (round-to-nearest, symmetric,
    one scale per output channel), the forget perplexity of ``eval_texts`` and
    ``script_mass(mode="next_char")`` of the prompts are scored, and the original weights
    are written back bit for bit from a CPU copy (also when scoring raises). The output
    embedding is kept in full precision by default, as GPTQ, AWQ and bitsandbytes'
    ``load_in_8bit``/``load_in_4bit`` keep it (with tied embeddings, quantising it would
    quantise the input embedding too). Biases and norms stay in full precision.

    A PEFT LoRA arm is quantised *merged*: for each adapted layer the effective weight
    ``W + ΔW`` (the active adapters' deltas) is quantised into that layer's base weight and
    scored with the adapter disabled; only copies of the affected weights are made, never a
    second model. Hook-based arms keep their hooks attached and untouched: quantising the
    base weights tests the base model under the hooks (the study reports quantisation as
    "not applicable" for hook-only arms). Only simulated round-to-nearest quantisation is
    implemented (no bitsandbytes kernels).

    Threat model: white-box weights (the attacker deploys a quantised copy).

    Args:
        model: the model as deployed (a LoRA ``PeftModel`` is merged as described).
        tokenizer: its tokenizer.
        eval_texts: forget texts whose perplexity is measured.
        bits: bit widths to try, each in ``[2, 16]``.
        eval_prompts: prompts for script mass (default: the first four words of each eval
            text).
        target: the target language label (``"hi"``).
        reference_log_ppl: the base model's log-perplexity of ``eval_texts``, for
            :attr:`QuantisationAttack.recovered_fraction`.
        skip_output_embedding: keep the output embedding (``lm_head``) in full precision.
        batch_size: texts per forward pass.

    Returns:
        A :class:`QuantisationAttack`.

    Raises:
        IncompatibleModelError: a PEFT model that is not LoRA, merged, or DoRA.
        TypeError, ValueError: invalid arguments (the message names the argument).

    Example:
        >>> q = mmie.quantisation_attack(arm.model, tok, hindi, bits=(8, 4))  # doctest: +SKIP
        >>> q.log_ppl_full, q.log_ppl  # doctest: +SKIP
    """
    model = _check_model(model)
    evals = text_list(eval_texts, "eval_texts")
    prompts = (
        text_list(eval_prompts, "eval_prompts")
        if eval_prompts is not None
        else _default_prompts(evals)
    )
    bit_list = integer_sequence(bits, "bits", minimum=2, maximum=16)
    if not bit_list:
        raise ValueError("bits must hold at least one bit width, e.g. (8, 4)")
    script_code(target, "target")
    ref = _optional_float(reference_log_ppl, "reference_log_ppl")
    if not isinstance(skip_output_embedding, bool):
        raise TypeError("skip_output_embedding must be True or False")
    batch_size = positive_int(batch_size, "batch_size")
    peft = is_peft(model)
    if peft:
        _check_lora_peft(model, "quantisation_attack", merging=True)
    targets, skipped = _quantisation_targets(model, skip_output_embedding)
    merged = any(t.lora is not None for t in targets)

    def scores() -> tuple[float, float]:
        log_ppl = perplexity(model, tokenizer, evals, batch_size=batch_size).mean_nll
        mass = script_mass(
            model, tokenizer, prompts, target, mode="next_char", batch_size=batch_size
        )
        return log_ppl, mass.mean

    log_ppl: list[float] = []
    masses: list[float] = []
    max_err: list[float] = []
    rel_err: list[float] = []
    with _Cost(model) as cost, _kept_modes(model), torch.no_grad():
        model.eval()
        full_ppl, full_mass = scores()
        originals = [t.weight.detach().to("cpu", copy=True) for t in targets]
        try:
            for b in bit_list:
                worst, err_sq, norm_sq = 0.0, 0.0, 0.0
                for t, original in zip(targets, originals):
                    w = _effective_weight(t, original)
                    if not t.quantise:  # merged only, in full precision
                        t.weight.copy_(w)
                        continue
                    q = rtn_quantise(w, b, axis=t.axis)
                    diff = q.float() - w
                    worst = max(worst, float(diff.abs().max()))
                    err_sq += float(diff.double().square().sum())
                    norm_sq += float(w.double().square().sum())
                    t.weight.copy_(q)
                disable = cast(Any, model).disable_adapter() if peft else contextlib.nullcontext()
                with disable:
                    value, mass = scores()
                log_ppl.append(value)
                masses.append(mass)
                max_err.append(worst)
                rel_err.append(math.sqrt(err_sq / norm_sq) if norm_sq > 0 else 0.0)
                for t, original in zip(targets, originals):
                    t.weight.copy_(original)
        finally:
            for t, original in zip(targets, originals):
                t.weight.copy_(original)
    logger.info(
        "quantisation_attack (bits %s, %d matrices): %.2f s, %d forward passes",
        bit_list,
        sum(t.quantise for t in targets),
        cost.seconds,
        cost.forward,
    )
    return QuantisationAttack(
        bits=bit_list,
        log_ppl_full=full_ppl,
        log_ppl=tuple(log_ppl),
        script_mass_full=full_mass,
        script_mass=tuple(masses),
        max_abs_error=tuple(max_err),
        relative_error=tuple(rel_err),
        n_matrices=sum(t.quantise for t in targets),
        n_quantised=sum(t.weight.numel() for t in targets if t.quantise),
        merged_adapter=merged,
        skipped=tuple(skipped),
        reference_log_ppl=ref,
        target=target,
        n_eval_texts=len(evals),
        seconds=cost.seconds,
        n_forward=cost.forward,
    )
