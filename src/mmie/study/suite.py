"""The evaluation suite a study runs on the base model and on every (seed, arm).

:func:`evaluate_model` computes the study's metric groups on a model (with whatever
interventions are attached) and returns typed metric records (``record key ->``
:class:`~mmie.study.records.MetricRecord`: the aggregate, one value per item and their
scale), in the item order of :class:`EvalSets`, so the same item pairs up across the base
model and every arm.

========================  ====================================================================
record key                definition (see docs/methods.md)
========================  ====================================================================
``forget_es``             Hindi extraction strength of greedy continuations of held-out Hindi
                          prompts (per prompt)
``mixed_es``              the same on mixed-language and adversarial prompts
``romanized_es``          romanised-Hindi extraction strength on the forget, mixed and
                          romanised prompts (redistribution into Latin script)
``related_es.<lang>``     Hindi extraction strength on prompts in a related language
``retain_ppl``            token-weighted perplexity of held-out retain texts; per item: the
                          text's mean NLL (nats/token), weights: its token counts
``forget_ppl``            the same on held-out forget texts
``related_ppl.<lang>``    the same on related-language texts
``mia_auc``               loss-attack membership-inference AUC, members = forget training texts,
                          non-members = held-out forget texts; per item: each member's share of
                          non-members it out-scores (ties ½), whose mean is the AUC
``forget_script_mass``    probability that the first script letter after each forget prompt
                          is of the target script (:func:`mmie.script_mass`, ``next_char``:
                          any tokenizer, byte-level ones included); ``unresolved``: the mass
                          its search left undecided, per prompt
``probe_auc.<layer>``     held-out AUC of a linear probe separating held-out forget from
                          retain texts by their mean block-``layer`` output (interventions
                          active), at each selected layer; per item: each held-out forget
                          text's share of held-out retain texts it out-scores (ties ½), whose
                          mean is the AUC; ``control_auc``: the shuffled-label control
========================  ====================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mmie.errors import DataError
from mmie.evaluation.language_metrics import extraction_strength, script_mass
from mmie.evaluation.mia import mia_auc, mia_scores
from mmie.evaluation.probes import fit_probe
from mmie.evaluation.scoring import perplexity
from mmie.language.detectors import Detector, EnsembleDetector
from mmie.models.activations import collect_activations
from mmie.models.generation import generate
from mmie.stats import placement_values
from mmie.study.config import ExperimentConfig
from mmie.study.datasets import load_texts
from mmie.study.records import MetricRecord, Records

__all__ = ["EvalSets", "evaluate_model", "load_eval_sets"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSets:
    """The texts and prompts of a study, fixed across seeds so that items pair up.

    Attributes:
        forget_train: forget texts used for training (and as MIA members).
        retain_train: retain texts used for training.
        forget_eval: held-out forget texts (perplexity, MIA non-members).
        retain_eval: held-out retain texts (perplexity).
        prompts: prompt sets: ``"forget"``, ``"mixed"``, ``"romanized"`` and
            ``"related.<lang>"``.
        related_texts: per related language, its texts (perplexity).
        romanized_texts: romanised target-language texts (script-invariant feature picker).
    """

    forget_train: list[str]
    retain_train: list[str]
    forget_eval: list[str]
    retain_eval: list[str]
    prompts: dict[str, list[str]] = field(default_factory=dict)
    related_texts: dict[str, list[str]] = field(default_factory=dict)
    romanized_texts: list[str] = field(default_factory=list)

    def items(self) -> dict[str, list[str]]:
        """Every item list by name, as stored in reports."""
        out = {
            "forget_train": self.forget_train,
            "retain_eval": self.retain_eval,
            "forget_eval": self.forget_eval,
        }
        out.update({f"prompts.{k}": v for k, v in self.prompts.items()})
        out.update({f"related.{k}": v for k, v in self.related_texts.items()})
        return out


def _take(name: str, n: int, path: str) -> list[str]:
    texts = load_texts(name)
    if len(texts) < n:
        raise DataError(
            f"{path}: set {name!r} has {len(texts)} texts, fewer than the {n} requested"
        )
    return texts[:n]


def _prompt(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


# Sets whose texts are complete prompts (instructions), used whole rather than cut to words.
_WHOLE_PROMPT_SETS = ("adversarial",)


def load_eval_sets(config: ExperimentConfig) -> EvalSets:
    """Load the text sets of ``config.data`` and build the prompt sets.

    A prompt is the first ``generation.prompt_words`` words of an evaluation text (the
    adversarial set's texts are used whole: they are instructions). The mixed and romanised
    prompt sets concatenate ``n_eval`` texts of each listed set.

    Raises:
        DataError: a set has fewer texts than requested, a bad line in a JSONL file (file and
            line named), or a training text that is also an evaluation text.
        FileNotFoundError: a set is neither bundled nor an existing file.
    """
    d = config.data
    words = config.generation.prompt_words
    forget_train = _take(d.forget, d.n_forget, "data.forget")
    retain_train = _take(d.retain, d.n_retain, "data.retain")
    forget_eval = _take(d.forget_eval, d.n_eval, "data.forget_eval")
    retain_eval = _take(d.retain_eval, d.n_eval, "data.retain_eval")
    for train, held, name in (
        (forget_train, forget_eval, "forget"),
        (retain_train, retain_eval, "retain"),
    ):
        overlap = set(train) & set(held)
        if overlap:
            raise DataError(
                f"data.{name} and data.{name}_eval share {len(overlap)} text(s), e.g. "
                f"{next(iter(overlap))[:60]!r}; evaluation texts must be held out"
            )

    def prompts_of(names: Sequence[str], path: str) -> list[str]:
        out: list[str] = []
        for i, name in enumerate(names):
            texts = _take(name, d.n_eval, f"{path}[{i}]")
            whole = name in _WHOLE_PROMPT_SETS
            out += [t if whole else _prompt(t, words) for t in texts]
        return out

    related_texts = {
        name: _take(name, d.n_eval, f"data.related[{i}]") for i, name in enumerate(d.related)
    }
    prompts = {
        "forget": [_prompt(t, words) for t in forget_eval],
        "mixed": prompts_of(d.mixed, "data.mixed"),
        "romanized": prompts_of(d.romanized, "data.romanized"),
    }
    for name, texts in related_texts.items():
        prompts[f"related.{name}"] = [_prompt(t, words) for t in texts]
    romanized_texts = [t for name in d.romanized for t in load_texts(name)][: d.n_forget]
    return EvalSets(
        forget_train=forget_train,
        retain_train=retain_train,
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        prompts=prompts,
        related_texts=related_texts,
        romanized_texts=romanized_texts,
    )


def _es_record(generations: Sequence[str], detector: Detector, target: str) -> MetricRecord:
    es = extraction_strength(list(generations), detector, target)
    return MetricRecord(value=float(es.mean), per_item=tuple(float(v) for v in es.values))


def _ppl_record(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    config: ExperimentConfig,
) -> MetricRecord:
    r = perplexity(
        model,
        tokenizer,
        list(texts),
        batch_size=config.data.batch_size,
        max_length=config.data.max_length,
    )
    items = list(r.item_nll)
    if not all(np.isfinite(items)):
        raise DataError("a text has fewer than two tokens, so it has no per-text perplexity")
    return MetricRecord(
        value=float(r.perplexity),
        per_item=tuple(items),
        scale="log_perplexity",
        weights=tuple(r.n_tokens),
    )


def evaluate_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sets: EvalSets,
    config: ExperimentConfig,
    *,
    logits_processors: Sequence[LogitsProcessor] = (),
    probe_layers: Sequence[int] = (),
    show_progress: bool = False,
) -> tuple[Records, dict[str, list[str]]]:
    """Compute the configured metric groups on ``model`` as it is (interventions included).

    Args:
        model: the model, with the arm's adapters and hooks in place.
        tokenizer: its tokenizer.
        sets: the study's text and prompt sets.
        config: the study config (metrics, generation and data settings).
        logits_processors: processors for generation (a dynamic gate's processor).
        probe_layers: layers of the ``probe`` metric group (the study's selected layers;
            the group is skipped when empty).
        show_progress: progress bars for generation.

    Returns:
        ``(records, generations)``: metric records (see the module docstring) and the
        generated continuations per prompt set.
    """

    wanted = set(config.metrics)
    target = config.target
    detector = EnsembleDetector()
    gen_cfg = config.generation
    records: Records = {}
    generations: dict[str, list[str]] = {}

    needed: list[str] = []
    if wanted & {"forget_es", "redistribution"}:
        needed.append("forget")
    if wanted & {"mixed_es", "redistribution"}:
        needed.append("mixed")
    if "redistribution" in wanted:
        needed.append("romanized")
    if "leakage" in wanted:
        needed += [f"related.{name}" for name in config.data.related]
    for name in needed:
        prompts = sets.prompts.get(name, [])
        if not prompts:
            continue
        out = generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=gen_cfg.max_new_tokens,
            batch_size=gen_cfg.batch_size,
            logits_processors=list(logits_processors),
            show_progress=show_progress,
        )
        generations[name] = [str(t) for t in out]

    if "forget_es" in wanted:
        records["forget_es"] = _es_record(generations["forget"], detector, target)
    if "mixed_es" in wanted and generations.get("mixed"):
        records["mixed_es"] = _es_record(generations["mixed"], detector, target)
    if "redistribution" in wanted:
        texts = [t for k in ("forget", "mixed", "romanized") for t in generations.get(k, [])]
        records["romanized_es"] = _es_record(texts, detector, f"{target}-Latn")
    if "leakage" in wanted:
        for name in config.data.related:
            records[f"related_es.{name}"] = _es_record(
                generations[f"related.{name}"], detector, target
            )
            records[f"related_ppl.{name}"] = _ppl_record(
                model, tokenizer, sets.related_texts[name], config
            )
    if "retain_ppl" in wanted:
        records["retain_ppl"] = _ppl_record(model, tokenizer, sets.retain_eval, config)
    if "forget_ppl" in wanted:
        records["forget_ppl"] = _ppl_record(model, tokenizer, sets.forget_eval, config)
    if "mia" in wanted:
        records["mia_auc"] = _mia_record(model, tokenizer, sets, config)
    if "script_mass" in wanted:
        records["forget_script_mass"] = _script_mass_record(
            model, tokenizer, sets.prompts["forget"], config
        )
    if "probe" in wanted and probe_layers:
        records.update(_probe_records(model, tokenizer, sets, config, probe_layers))
    return records, generations


def _probe_records(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sets: EvalSets,
    config: ExperimentConfig,
    layers: Sequence[int],
) -> Records:
    kw: dict[str, Any] = {
        "batch_size": config.data.batch_size,
        "max_length": config.data.max_length,
        "keep_tokens": False,
    }
    forget = collect_activations(model, tokenizer, sets.forget_eval, layers, **kw)
    retain = collect_activations(model, tokenizer, sets.retain_eval, layers, **kw)
    records: Records = {}
    for layer in forget.layers:
        # seed 0: the same held-out texts for the base model, every arm and every seed
        result, s_pos, s_neg = fit_probe(
            forget.means[layer],
            retain.means[layer],
            control=True,
            seed=0,
            test_fraction=0.3,
            l2=1e-2,
            max_iter=100,
        )
        records[f"probe_auc.{layer}"] = MetricRecord(
            value=float(result.auc),
            per_item=tuple(placement_values(s_pos, s_neg).tolist()),
            extra={"control_auc": float(result.control_auc)},
        )
    return records


def _mia_record(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, sets: EvalSets, config: ExperimentConfig
) -> MetricRecord:
    kw: dict[str, Any] = {
        "attack": "loss",
        "batch_size": config.data.batch_size,
        "max_length": config.data.max_length,
    }
    members = mia_scores(model, tokenizer, sets.forget_train, **kw)
    nonmembers = mia_scores(model, tokenizer, sets.forget_eval, **kw)
    result = mia_auc(members, nonmembers)
    per_item = placement_values(members, nonmembers)
    return MetricRecord(
        value=float(result.auc),
        per_item=tuple(per_item.tolist()),
        extra={"tpr_at_1pct_fpr": float(result.tpr_at_fpr)},
    )


def _script_mass_record(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    config: ExperimentConfig,
) -> MetricRecord:
    r = script_mass(
        model,
        tokenizer,
        list(prompts),
        config.target,
        mode="next_char",
        batch_size=config.data.batch_size,
        max_length=config.data.max_length,
    )
    return MetricRecord(
        value=float(r.mean),
        per_item=tuple(float(v) for v in r.values),
        extra={"unresolved": [float(v) for v in r.unresolved]},
    )
