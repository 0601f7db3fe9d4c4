"""The ``robustness`` metric group: recoverability attacks in a study, and their verdict.

Every model the study evaluates (the base model, the references and, by default, the arms'
first seed) is attacked under identical settings (:class:`~mmie.study.config.RobustnessConfig`):

================  ====================  ===================================================
attack            threat model          what is measured on the held-out forget texts
================  ====================  ===================================================
``relearning``    white-box weights     forget log-perplexity after each step of a short
                                        fine-tuning on held-out target texts
                                        (:func:`mmie.relearning_attack`)
``steering``      activations           forget log-perplexity with the base model's
                                        target − other direction added at each selected
                                        layer, and with a same-norm random direction
                                        (:func:`mmie.steering_recovery`)
``in_context``    prompt only           extraction strength with ``k`` held-out target
                                        sentences before each forget prompt
                                        (:func:`mmie.in_context_recovery`)
``logit_lens``    activations           target-script mass of every block output read
                                        through the final norm (:func:`mmie.logit_lens`)
``quantisation``  white-box weights     forget log-perplexity with round-to-nearest 8/4-bit
                                        weights (:func:`mmie.quantisation_attack`); arms that
                                        leave the weights alone are "not applicable"
================  ====================  ===================================================

:func:`attack_model` runs them on one model and returns a JSON-ready dict (an attack that
raises is recorded with its error, logged, and judged "not evaluated"). :func:`recoverability`
turns the results into a verdict per model: each attack's *strongest outcome* ``x`` (the
lowest forget log-perplexity over steps, layers, scales or bit widths; the highest
extraction strength or block mass) is placed between the base model and the reference under
the same attack, ``c = (x_model − x_base) / (x_reference − x_base)`` (1: as far from the base
as the reference after the same attack, 0: back at the base). A model is **removed** when
``c ≥ 1 − margin`` under every attack that can tell the base from the reference, **hidden**
when some attack brings it below (the verdict names the attack), and **not evaluated** without
a reference model (removal cannot be claimed against the base alone). The reference is the
oracle (a model that never saw the target language) or, without one, the retrained model.
This is a descriptive comparison of aggregates, not a test: the attacks are single runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from safetensors.torch import load_file, save
from torch import Tensor, nn
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mmie._io import atomic_write_bytes
from mmie.errors import IncompatibleModelError
from mmie.evaluation.logit_lens import logit_lens
from mmie.language.unicode import script_code
from mmie.study.config import ATTACKS, ExperimentConfig
from mmie.study.decisions import split_indices
from mmie.study.suite import EvalSets
from mmie.unlearning.recovery import (
    in_context_recovery,
    quantisation_attack,
    relearning_attack,
    steering_directions,
    steering_recovery,
)

__all__ = [
    "RecoverabilityVerdict",
    "attack_model",
    "attack_sets",
    "fit_directions",
    "load_directions",
    "recoverability",
    "save_directions",
]

logger = logging.getLogger(__name__)

RecoverabilityVerdict = Literal["removed", "hidden", "not evaluated"]

# Arm parts that change the weights (quantisation applies to them); the others are hooks
# or logits processors on the base model's weights.
_WEIGHT_PARTS = frozenset({"lora"})


def attack_sets(sets: EvalSets, config: ExperimentConfig) -> tuple[list[str], list[str]]:
    """``(eval_texts, prompts)`` of the attacks: the first ``robustness.n_texts`` held-out
    forget texts and ``robustness.n_prompts`` forget prompts of the *test* part (the
    selection part never enters a verdict)."""
    r = config.robustness
    _, text_idx = split_indices("forget_eval", len(sets.forget_eval), config.split)
    _, prompt_idx = split_indices("prompts.forget", len(sets.prompts["forget"]), config.split)
    texts = [sets.forget_eval[i] for i in text_idx[: r.n_texts]]
    prompts = [sets.prompts["forget"][i] for i in prompt_idx[: r.n_prompts]]
    return texts, prompts


def fit_directions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sets: EvalSets,
    config: ExperimentConfig,
    layers: Sequence[int],
) -> dict[int, Tensor]:
    """The steering directions of a study, fitted on the (clean) base model: held-out
    target texts (the relearning set) minus as many retain training texts."""
    target = sets.relearn_texts
    other = sets.retain_train[: len(target)]
    return steering_directions(
        model,
        tokenizer,
        target,
        other,
        layers=layers,
        batch_size=config.robustness.batch_size,
        max_length=config.data.max_length,
    )


def save_directions(directions: Mapping[int, Tensor], path: Path) -> None:
    """Write steering directions as safetensors (``{"layer.<L>": tensor}``), atomically."""
    data = save({f"layer.{k}": v.contiguous() for k, v in sorted(directions.items())})
    atomic_write_bytes(path, data)


def load_directions(path: Path) -> dict[int, Tensor]:
    """Read directions written by :func:`save_directions`."""
    return {int(k.split(".", 1)[1]): v for k, v in load_file(str(path)).items()}


def _quantisable(kind: str | None) -> str | None:
    """``None`` when quantisation applies to a model of this arm kind, else the reason."""
    if kind is None:  # base model or reference: plain weights
        return None
    if set(kind.split("+")) & _WEIGHT_PARTS:
        return None
    return f"arm kind {kind!r} leaves the base model's weights unchanged (hooks or processors)"


def attack_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sets: EvalSets,
    config: ExperimentConfig,
    *,
    layers: Sequence[int],
    directions: Mapping[int, Tensor] | None,
    kind: str | None = None,
    logits_processors: Sequence[LogitsProcessor] = (),
) -> dict[str, Any]:
    """Run the configured attacks on one model as deployed; a JSON-ready dict per attack.

    Args:
        model: the model with the arm attached (or the base model or a reference).
        tokenizer: its tokenizer.
        sets: the study's sets (``relearn_texts`` must be set).
        config: the study (its ``robustness`` section).
        layers: the study's selected layers (steering acts on each, one at a time).
        directions: the base model's steering directions (``mmie.study.robustness.fit_directions``).
        kind: the arm kind (``None`` for the base model and references); quantisation is
            "not applicable" to arms that leave the weights alone.
        logits_processors: the arm's processors, active while generating.

    Returns:
        ``{attack: result.to_dict() | {"not_applicable": reason} | {"error": message}}`` and
        ``"seconds"``: the wall time of each attack.
    """
    r = config.robustness
    texts, prompts = attack_sets(sets, config)
    target = config.target
    processors = list(logits_processors)
    bs = r.batch_size
    runs: dict[str, Callable[[], Any]] = {
        "relearning": lambda: relearning_attack(
            model,
            tokenizer,
            sets.relearn_texts,
            texts,
            steps=r.relearn_steps,
            method=r.relearn_method,
            lr=r.relearn_lr,
            rank=r.relearn_rank,
            seed=r.seed,
            eval_prompts=prompts,
            target=target,
            max_new_tokens=config.generation.max_new_tokens,
            logits_processors=processors,
            max_length=config.data.max_length,
            batch_size=bs,
        ),
        "steering": lambda: steering_recovery(
            model,
            tokenizer,
            None,
            None,
            texts,
            layers=sorted(layers),
            scales=r.steering_scales,
            seed=r.seed,
            base_direction=directions,
            max_length=config.data.max_length,
            batch_size=bs,
        ),
        "in_context": lambda: in_context_recovery(
            model,
            tokenizer,
            sets.relearn_texts,
            prompts,
            k=r.in_context_k,
            target=target,
            max_new_tokens=config.generation.max_new_tokens,
            logits_processors=processors,
            seed=r.seed,
            batch_size=bs,
        ),
        "logit_lens": lambda: logit_lens(
            model,
            tokenizer,
            prompts,
            script_code(target, "target"),
            max_length=config.data.max_length,
            batch_size=bs,
        ),
        "quantisation": lambda: quantisation_attack(
            model,
            tokenizer,
            texts,
            bits=r.quantisation_bits,
            eval_prompts=prompts,
            target=target,
            batch_size=bs,
        ),
    }
    out: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for attack in r.attacks:
        if attack == "steering" and directions is None:
            out[attack] = {"error": "no steering directions were fitted"}
            continue
        if attack == "quantisation" and (reason := _quantisable(kind)) is not None:
            out[attack] = {"not_applicable": reason}
            continue
        t0 = time.perf_counter()
        try:
            out[attack] = runs[attack]().to_dict()
        except (IncompatibleModelError, ValueError) as exc:
            # Recorded and judged "not evaluated"; a model the attack cannot read (no known
            # final norm, a context longer than the model's positions) is not a crash.
            logger.warning("%s attack not run: %s", attack, exc)
            out[attack] = {"error": f"{type(exc).__name__}: {exc}"}
        seconds[attack] = time.perf_counter() - t0
        logger.info("%s attack: %.1f s", attack, seconds[attack])
    out["seconds"] = seconds
    return out


# ----------------------------------------------------------------------------- verdict
# Smallest base-to-reference gap an attack must show to tell the two apart, per scale.
_MIN_GAP = {"log_ppl": math.log(1.25), "share": 0.05}


def _outcomes(result: Mapping[str, Any], attack: str) -> tuple[float, float, str] | None:
    """``(before, after, scale)`` of one attack's result: the model's value without the
    attack and the attack's strongest outcome; ``None`` when there is none."""
    if "error" in result or "not_applicable" in result:
        return None
    if attack == "relearning":
        curve = [v for v in result["log_ppl"] if v is not None]
        return (curve[0], min(curve), "log_ppl") if curve else None
    if attack == "steering":
        grid = [v for row in result["log_ppl"] for v in row if v is not None]
        return (result["log_ppl_model"], min(grid), "log_ppl") if grid else None
    if attack == "in_context":
        before, after = result["extraction_strength"], result["extraction_strength_context"]
        return (before, after, "share") if before is not None and after is not None else None
    if attack == "logit_lens":
        mass = [v for v in result["mass"] if v is not None]
        return (mass[-1], max(mass), "share") if mass else None
    if attack == "quantisation":
        values = [v for v in result["log_ppl"] if v is not None]
        return (result["log_ppl_full"], min(values), "log_ppl") if values else None
    raise KeyError(attack)


def _closeness(x: float, base: float, ref: float) -> float:
    return (x - base) / (ref - base)


def recoverability(
    base: Mapping[str, Any] | None,
    references: Mapping[str, Mapping[str, Any]],
    models: Mapping[str, Mapping[str, Any]],
    *,
    margin: float,
    attacks: Sequence[str] = ATTACKS,
) -> dict[str, Any]:
    """The recoverability verdict of every model from its attack results.

    Args:
        base: the base model's attack results (:func:`attack_model`), or None.
        references: ``"oracle"`` / ``"retrain"`` -> their attack results.
        models: model name -> attack results (arms, and the references themselves).
        margin: a model is removed under an attack when its closeness to the reference is
            at least ``1 - margin``.
        attacks: the attacks the study ran.

    Returns:
        ``{"reference": name | None, "margin": margin, "models": {name: {"verdict",
        "reason", "attacks": {attack: {"before", "after", "closeness_before", "closeness",
        "status", "reason"}}}}}``.
    """
    ref_name = next((n for n in ("oracle", "retrain") if n in references), None)
    out: dict[str, Any] = {"reference": ref_name, "margin": margin, "models": {}}
    for name, result in models.items():
        if base is None or ref_name is None:
            out["models"][name] = {
                "verdict": "not evaluated",
                "reason": "no reference model: removal cannot be claimed against the base "
                "model alone (configure [references] oracle)",
                "attacks": {},
            }
            continue
        per_attack: dict[str, Any] = {}
        for attack in attacks:
            per_attack[attack] = _judge_attack(
                attack, result.get(attack, {}), base.get(attack, {}),
                references[ref_name].get(attack, {}), margin, ref_name,
            )  # fmt: skip
        judged = {a: v for a, v in per_attack.items() if v["status"] in ("removed", "hidden")}
        hidden = sorted(
            (a for a, v in judged.items() if v["status"] == "hidden"),
            key=lambda a: per_attack[a]["closeness"],
        )
        if hidden:
            worst = per_attack[hidden[0]]
            verdict: RecoverabilityVerdict = "hidden"
            reason = (
                f"{hidden[0]} brings it to {worst['closeness']:.2f} of the way from the base "
                f"model to the {ref_name} under the same attack (removed needs >= "
                f"{1 - margin:.2f}; before the attack: {worst['closeness_before']:.2f})"
            )
        elif judged:
            verdict = "removed"
            reason = (
                f"under every attack ({', '.join(judged)}) it stays at least {1 - margin:.2f} "
                f"of the way from the base model to the {ref_name}"
            )
        else:
            verdict = "not evaluated"
            reason = "no attack could tell the base model from the reference"
        out["models"][name] = {"verdict": verdict, "reason": reason, "attacks": per_attack}
    return out


def _judge_attack(
    attack: str,
    model: Mapping[str, Any],
    base: Mapping[str, Any],
    ref: Mapping[str, Any],
    margin: float,
    ref_name: str,
) -> dict[str, Any]:
    empty = {"before": None, "after": None, "closeness_before": None, "closeness": None}
    if "not_applicable" in model:
        return {**empty, "status": "not applicable", "reason": model["not_applicable"]}
    m, b, r = (_outcomes(x, attack) if x else None for x in (model, base, ref))
    if m is None or b is None or r is None:
        missing = "this model" if m is None else "the base model" if b is None else ref_name
        error = (model if m is None else base if b is None else ref).get("error", "not run")
        return {**empty, "status": "not evaluated", "reason": f"{missing}: {error}"}
    scale = m[2]
    if abs(r[1] - b[1]) < _MIN_GAP[scale]:
        return {
            **empty,
            "before": m[0],
            "after": m[1],
            "status": "not evaluated",
            "reason": (
                f"after the attack the base model ({b[1]:.3g}) and the {ref_name} "
                f"({r[1]:.3g}) are too close to place a model between them"
            ),
        }
    c_before = _closeness(m[0], b[0], r[0]) if abs(r[0] - b[0]) >= _MIN_GAP[scale] else None
    c_after = _closeness(m[1], b[1], r[1])
    status = "removed" if c_after >= 1 - margin else "hidden"
    return {
        "before": m[0],
        "after": m[1],
        "closeness_before": c_before,
        "closeness": c_after,
        "status": status,
        "reason": f"{c_after:.2f} of the way from the base model to the {ref_name}",
    }
