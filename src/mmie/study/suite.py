"""The evaluation suite a study runs on the base model and on every (seed, arm).

:func:`evaluate_model` computes the study's metric groups on a model (with whatever
interventions are attached) and returns typed metric records (``record key ->``
:class:`~mmie.MetricRecord`: the aggregate, one value per item and their
scale), in the item order of :class:`EvalSets`, so the same item pairs up across the base
model and every arm.

================================  ============================================================
record key                        definition (see docs/methods.md)
================================  ============================================================
``forget_es``                     target extraction strength (onset) of greedy continuations
                                  of held-out forget prompts
``forget_share``                  their share of target-script letters (amount)
``forget_any``                    whether they contain any target text (0/1)
``forget_empty``                  empty continuation (no letter; 0/1)
``forget_degenerate``             empty or degenerate continuation (0/1)
``forget_scripts.<S>``            share of their letters in script ``S`` (what is written)
``forget_romanized_es``           romanised-target ES on the forget prompts (redistribution;
                                  only when the target has a romanised label)
``forget_sampled``                share of N sampled continuations that are target-dominated
``forget_sampled_worst``          the worst sample's target-script share
``forget_sampled_empty``          share of the samples without a letter
``english_share``                 target-script share of greedy continuations of English
                                  prompts (with the arm's processors active)
``english_any``                   whether those contain any target text (0/1)
``english_degenerate``            empty or degenerate English continuation (0/1)
``english_fluency``               the base model's mean NLL of each English continuation
                                  given its prompt (none for an empty one)
``mixed_es.<set>``                target ES on each mixed prompt set (never pooled)
``mixed_empty.<set>``             empty continuation of a mixed prompt (0/1)
``romanized_es.<set>``            romanised-target ES on each romanised prompt set
``related_es.<set>``              target ES on prompts of a related-language set
``retain_ppl``                    token-weighted perplexity of held-out retain texts; per
                                  item the text's mean NLL (nats/token), weights its tokens
``forget_ppl``                    the same on held-out forget texts
``related_ppl.<set>``             the same on a related-language set
``mia_auc``                       loss-attack membership-inference AUC, members = forget
                                  training texts, non-members = held-out forget texts; per
                                  item each member's placement value; the raw scores of both
                                  classes are kept for DeLong tests
``forget_script_mass``            P(the first script letter after a forget prompt is target)
                                  (:func:`mmie.script_mass`, ``next_char``)
``probe_auc.<layer>``             held-out AUC of a linear probe, forget vs retain texts, at
                                  each selected layer (descriptive, not a gate)
================================  ============================================================
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from torch import Tensor, nn
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mmie.errors import DataError, MmieWarning
from mmie.evaluation.language_metrics import extraction_strength, script_mass
from mmie.evaluation.mia import mia_auc, mia_scores
from mmie.evaluation.output_metrics import (
    degeneracy,
    sampled_leakage,
    script_distribution,
    target_share,
)
from mmie.evaluation.probes import fit_probe
from mmie.evaluation.scoring import (
    PerplexityResult,
    Reference,
    ScoredTexts,
    continuation_nll,
    perplexity,
    reference_model,
    score_texts,
)
from mmie.language.detectors import Detector, make_detector
from mmie.language.unicode import script_code
from mmie.models.activations import collect_activations
from mmie.models.blocks import input_device
from mmie.models.generation import DEFAULT_MAX_BATCH_TOKENS, generate
from mmie.models.hooks import mmie_hooks
from mmie.stats import placement_values
from mmie.study.config import ExperimentConfig
from mmie.study.datasets import load_texts
from mmie.study.demo import demo_relearn_texts
from mmie.study.records import MetricRecord, Records

__all__ = ["EvalSets", "evaluate_model", "fluency_record", "load_eval_sets"]

logger = logging.getLogger(__name__)

#: Interventions (owners as :func:`mmie.mmie_hooks` names them) whose output for a row
#: depends on the rest of its batch: the noise control draws its noise for the whole batch
#: tensor. With one of them attached, the prompt sets are generated as in mmie 0.1 (one
#: ``generate`` call per set, ``generation.batch_size`` prompts in order), so its draws and
#: results stay those of 0.1.
_BATCH_DEPENDENT_HOOKS = frozenset({"NoiseIntervention"})


@dataclass(frozen=True)
class EvalSets:
    """The texts and prompts of a study, fixed across seeds so that items pair up.

    Attributes:
        forget_train: forget texts used for training (and as MIA members).
        retain_train: retain texts used for training.
        forget_eval: held-out forget texts (perplexity, MIA non-members, probes): the first
            ``data.n_scored`` of the set.
        retain_eval: held-out retain texts (perplexity, probes), as many.
        prompts: prompt sets: ``"forget"`` (from the first ``n_eval`` held-out forget texts),
            ``"english"`` (from the first ``n_eval`` held-out retain texts), ``"mixed.<set>"``,
            ``"romanized.<set>"`` and ``"related.<lang>"``.
        continuations: per prompt set, the real rest of the text each prompt was cut from
            (``""`` for a whole-line prompt), aligned with its prompts.
        relearn_texts: held-out target texts of the recoverability attacks
            (``robustness.relearn``; empty without the ``robustness`` group).
        related_texts: per related language, its texts (perplexity).
        picker_texts: auxiliary texts of the feature pickers (``"romanized"``: romanised
            target-language texts for the script-invariant picker), disjoint from every
            prompt set.
    """

    forget_train: list[str]
    retain_train: list[str]
    forget_eval: list[str]
    retain_eval: list[str]
    prompts: dict[str, list[str]] = field(default_factory=dict)
    continuations: dict[str, list[str]] = field(default_factory=dict)
    relearn_texts: list[str] = field(default_factory=list)
    related_texts: dict[str, list[str]] = field(default_factory=dict)
    picker_texts: dict[str, list[str]] = field(default_factory=dict)

    def items(self) -> dict[str, list[str]]:
        """Every item list by name (the ``items`` of a metric record), as stored in reports."""
        out = {
            "forget_train": self.forget_train,
            "retain_eval": self.retain_eval,
            "forget_eval": self.forget_eval,
        }
        out.update({f"prompts.{k}": v for k, v in self.prompts.items()})
        out.update({f"related.{k}": v for k, v in self.related_texts.items()})
        return out


def _relearn_texts(name: str, n: int, path: str) -> list[str]:
    if name != "demo:relearn":
        return _take(name, n, path)
    texts = demo_relearn_texts()
    if len(texts) < n:
        raise DataError(f"{path}: has {len(texts)} texts, fewer than the {n} needed")
    return texts[:n]


def _take(name: str, n: int, path: str, *, start: int = 0) -> list[str]:
    texts = load_texts(name)
    if len(texts) < start + n:
        raise DataError(
            f"{path}: set {name!r} has {len(texts)} texts, fewer than the {start + n} needed"
        )
    return texts[start : start + n]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_held_out(sources: Mapping[str, Sequence[str]]) -> None:
    """Every pair of text sets must be disjoint, and no two sets identical (content hashes)."""
    hashes = {name: {_digest(t) for t in texts} for name, texts in sources.items()}
    names = list(sources)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if hashes[a] and hashes[a] == hashes[b]:
                raise DataError(
                    f"{a} and {b} are the same texts ({len(hashes[a])} of them); every set of a "
                    "study must be distinct (is a romanised set a copy of the original?)"
                )
            shared = hashes[a] & hashes[b]
            if shared:
                example = next(t for t in sources[a] if _digest(t) in shared)
                raise DataError(
                    f"{a} and {b} share {len(shared)} text(s), e.g. {example[:60]!r}; every "
                    "set of a study must be held out from every other"
                )


def _cut(text: str, words: int) -> tuple[str, str]:
    """``(prompt, continuation)``: the first ``words`` words joined by one space, and the
    rest of ``text`` after them (its own whitespace kept)."""
    match = re.match(rf"\s*(?:\S+\s+){{{words - 1}}}\S+", text)
    if match is None:  # fewer words than that: the whole line is the prompt
        return " ".join(text.split()), ""
    return " ".join(match.group(0).split()), text[match.end() :]


def _prompt_set(
    texts: Sequence[str], *, whole: bool, config: ExperimentConfig, path: str
) -> tuple[list[str], list[str]]:
    """Prompts of one set (whole lines or their first words, checked for distinctness) and
    the real continuation of each."""
    gen = config.generation
    cut = [(t, "") if whole else _cut(t, gen.prompt_words) for t in texts]
    prompts = [p for p, _ in cut]
    first: dict[str, str] = {}
    for p, rest in cut:
        first.setdefault(p, rest)  # a duplicate prompt keeps its first text's continuation
    distinct = list(first)
    if len(distinct) < gen.min_prompts:
        raise DataError(
            f"{path}: only {len(distinct)} distinct prompt(s) of {len(prompts)} after cutting "
            f"to generation.prompt_words={gen.prompt_words} words (fewer than "
            f"generation.min_prompts={gen.min_prompts}); the lines share their opening. Use "
            f"them whole (data.whole_prompt_sets) or raise prompt_words"
        )
    if len(distinct) < len(prompts):
        n_dup = len(prompts) - len(distinct)
        if gen.dedupe_prompts:
            logger.info("%s: dropped %d duplicate prompt(s); %d remain", path, n_dup, len(distinct))
            return distinct, [first[p] for p in distinct]
        warnings.warn(
            f"{path}: {n_dup} of {len(prompts)} prompts are duplicates after cutting to "
            f"{gen.prompt_words} words, and the statistics count each as an item; set "
            "generation.dedupe_prompts = true to drop them, use the set whole "
            "(data.whole_prompt_sets) or raise prompt_words",
            MmieWarning,
            stacklevel=3,
        )
    return prompts, [rest for _, rest in cut]


def load_eval_sets(config: ExperimentConfig) -> EvalSets:
    """Load the text sets of ``config.data``, build the prompt sets and check them.

    Runs before any model is loaded. A prompt is the first ``generation.prompt_words`` words
    of an evaluation text, or the whole line for the sets in ``data.whole_prompt_sets``
    (instructions). Each evaluation set contributes its first ``n_eval`` texts (the held-out
    forget and retain sets ``data.n_scored`` to teacher-forced metrics, their prompts from the
    first ``n_eval``); the script-invariant picker's romanised texts are the ``n_forget`` texts after those, so they
    never overlap a prompt set.

    Raises:
        DataError: a set has fewer texts than requested, a bad line in a JSONL file (file and
            line named), two sets that share a text or are identical (every pair of sets is
            checked, by content hash), a set named twice, or a prompt set with too few
            distinct prompts or with duplicates (see :class:`GenerationConfig`).
        FileNotFoundError: a set is neither bundled nor an existing file.
    """
    d = config.data
    forget_train = _take(d.forget, d.n_forget, "data.forget")
    retain_train = _take(d.retain, d.n_retain, "data.retain")
    forget_eval = _take(d.forget_eval, d.n_scored, "data.forget_eval")
    retain_eval = _take(d.retain_eval, d.n_scored, "data.retain_eval")
    listed = [*d.mixed, *d.romanized, *d.related]
    repeated = sorted({n for n in listed if listed.count(n) > 1})
    if repeated:
        raise DataError(f"data: sets {repeated} are listed more than once")
    sources: dict[str, list[str]] = {
        "data.forget": forget_train,
        "data.retain": retain_train,
        "data.forget_eval": forget_eval,
        "data.retain_eval": retain_eval,
    }
    groups: dict[str, dict[str, list[str]]] = {"mixed": {}, "romanized": {}, "related": {}}
    for group, names in (("mixed", d.mixed), ("romanized", d.romanized), ("related", d.related)):
        for i, name in enumerate(names):
            path = f"data.{group}[{i}]"
            groups[group][name] = sources[f"{path} ({name})"] = _take(name, d.n_eval, path)
    picker: dict[str, list[str]] = {}
    if config.sae.picker == "script_invariant":
        if not d.romanized:
            raise DataError("sae.picker = 'script_invariant' needs a data.romanized set")
        name = d.romanized[0]
        path = f"data.romanized[0] ({name}) after its first n_eval lines"
        picker["romanized"] = sources[f"picker texts: {path}"] = _take(
            name, d.n_forget, path, start=d.n_eval
        )
    relearn: list[str] = []
    r = config.robustness
    if "robustness" in config.metrics and r.needs_texts:
        path = f"robustness.relearn ({r.relearn})"
        relearn = sources[path] = _relearn_texts(r.relearn, r.n_relearn, path)
    _check_held_out(sources)

    prompts: dict[str, list[str]] = {}
    continuations: dict[str, list[str]] = {}

    def add(key: str, texts: Sequence[str], name: str, path: str) -> None:
        whole = name in d.whole_prompt_sets
        prompts[key], continuations[key] = _prompt_set(texts, whole=whole, config=config, path=path)

    add("forget", forget_eval[: d.n_eval], d.forget_eval, "data.forget_eval")
    add("english", retain_eval[: d.n_eval], d.retain_eval, "data.retain_eval")
    for group in ("mixed", "romanized", "related"):
        for name, texts in groups[group].items():
            add(f"{group}.{name}", texts, name, f"data.{group} ({name})")
    return EvalSets(
        forget_train=forget_train,
        retain_train=retain_train,
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        prompts=prompts,
        continuations=continuations,
        relearn_texts=relearn,
        related_texts=dict(groups["related"]),
        picker_texts=picker,
    )


def _es_record(
    generations: Sequence[str], detector: Detector, target: str, items: str
) -> MetricRecord:
    es = extraction_strength(list(generations), detector, target)
    return MetricRecord(
        value=float(es.mean), per_item=tuple(float(v) for v in es.values), items=items
    )


def _mean_record(values: npt.ArrayLike, items: str, **extra: Any) -> MetricRecord:
    """A ``mean`` record; items without a value (NaN) do not enter the aggregate."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    value = float(finite.mean()) if finite.size else math.nan
    return MetricRecord(value=value, per_item=tuple(arr.tolist()), items=items, extra=extra)


def _ppl_record(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    config: ExperimentConfig,
    items: str,
) -> MetricRecord:
    r = perplexity(
        model,
        tokenizer,
        list(texts),
        batch_size=config.data.batch_size,
        max_length=config.data.max_length,
    )
    return _perplexity_record(r, items)


def _perplexity_record(r: PerplexityResult, items: str) -> MetricRecord:
    values = list(r.item_nll)
    if not all(np.isfinite(values)):
        raise DataError(f"{items}: a text has fewer than two tokens, so it has no perplexity")
    return MetricRecord(
        value=float(r.perplexity),
        per_item=tuple(values),
        scale="log_perplexity",
        weights=tuple(r.n_tokens),
        items=items,
    )


def _output_records(
    name: str, generations: Sequence[str], target: str, detector: Detector, items: str
) -> Records:
    """What one set of greedy continuations says: onset, amount, empties, scripts."""
    texts = list(generations)
    shares = target_share(texts, script_code(target, "target"))
    flags = degeneracy(texts)
    scripts = script_distribution(texts)
    out: Records = {
        f"{name}_es": _es_record(texts, detector, target, items),
        # amount: the share of target-script letters (an output without letters has none: 0)
        f"{name}_share": _mean_record(np.nan_to_num(shares.values, nan=0.0), items),
        f"{name}_any": _mean_record([float(a) for a in shares.any_target], items),
        f"{name}_empty": _mean_record([float(e) for e in flags.empty], items),
        f"{name}_degenerate": _mean_record([float(d) for d in flags.degenerate], items),
    }
    per_text = np.nan_to_num(np.asarray(scripts.shares, dtype=np.float64), nan=0.0)
    for j, script in enumerate(scripts.scripts):
        out[f"{name}_scripts.{script}"] = _mean_record(per_text[:, j], items)
    return out


def evaluate_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sets: EvalSets,
    config: ExperimentConfig,
    *,
    logits_processors: Sequence[LogitsProcessor] = (),
    probe_layers: Sequence[int] = (),
    reference: Reference | None = None,
    score_fluency: bool = True,
    show_progress: bool = False,
    max_batch_tokens: int | Literal["auto"] | None = "auto",
    profile: Callable[[str], AbstractContextManager[Any]] | None = None,
    base_records: Mapping[str, MetricRecord] | None = None,
    base_generations: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Records, dict[str, list[str]]]:
    """Compute the configured metric groups on ``model`` as it is (interventions included).

    Every greedy prompt set (forget, English, mixed, romanised, related) is continued in one
    :func:`mmie.generate` pass: they share the processors, greedy decoding and
    ``max_new_tokens``, so their distinct prompts are sorted by length and packed by a token
    budget, and each set gets its continuations back in its own order. A greedy
    continuation depends only on its prompt (``mmie.models.generation``), so the records
    are those of one call per set; with an intervention whose output depends on the batch
    (the noise control) attached, the sets are generated one call per set as before.

    Args:
        model: the model, with the arm's adapters and hooks in place.
        tokenizer: its tokenizer.
        sets: the study's text and prompt sets.
        config: the study config (metrics, generation and data settings).
        logits_processors: processors for generation (a dynamic gate's processor, a control).
        probe_layers: layers of the ``probe`` metric group (the study's selected layers;
            the group is skipped when empty).
        reference: the base model, to score the fluency of the English continuations (a
            module, or a zero-argument callable returning a context manager under which
            ``model`` is the base model; see :func:`mmie.token_kl`). ``None``: ``model``
            itself is the base model.
        score_fluency: compute ``english_fluency`` (a reference model evaluated on its own
            leaves it to :func:`fluency_record` once the base model is loaded).
        show_progress: progress bars for generation.
        max_batch_tokens: token budget of a generation batch (see :func:`mmie.generate`);
            ``"auto"``: :data:`mmie.models.generation.DEFAULT_MAX_BATCH_TOKENS` for the
            model's device type (8192 on CPU); ``None``: one ``generate`` call per prompt
            set, ``generation.batch_size`` prompts at a time (mmie 0.1).
        profile: called with a phase name and entered around that phase (a timer, e.g.
            ``benchmarks/study.py``): ``"generation"`` (every greedy set), ``"outputs"``
            (records of the continuations), ``"fluency"``, ``"leakage"`` (related-language
            perplexity), then ``"sampled"``, ``"retain_ppl"``, ``"forget_ppl"``, ``"mia"``,
            ``"script_mass"`` and ``"probe"``; a name may be entered more than once.
        base_records: the base model's records of the same sets and config, to reuse for
            the teacher-forced groups (``related_ppl``, ``retain_ppl``, ``forget_ppl``,
            ``mia_auc``, ``forget_script_mass``, ``probe_auc``) instead of recomputing them.
            Pass them only when ``model`` computes the base model's logits and hidden states
            bit for bit (:attr:`mmie.study.arms.ArmState.scores_as_base`: no adapter, no
            hook but SAE gates at alpha 0, whose edit returns the hidden state itself).
        base_generations: the base model's greedy continuations, to reuse instead of
            generating (with ``base_records``, the ``english_fluency`` and ``sampled``
            records are reused too). Pass them only when ``model`` *and*
            ``logits_processors`` generate as the base model did (no processor).

    The held-out forget and retain texts are scored once each: their perplexity pass also
    gives the MIA non-member scores (the same batches, each metric's own per-batch rule, so
    the values equal separate passes bit for bit) and the hidden states the probes read.

    Returns:
        ``(records, generations)``: metric records (see the module docstring) and the
        greedy continuations per prompt set.
    """
    wanted = set(config.metrics)
    target = config.target
    romanized = config.romanized_label
    detector = make_detector(config.languages.detector)
    processors = list(logits_processors)
    records: Records = {}
    generations: dict[str, list[str]] = {}

    needed: list[str] = []
    if wanted & {"forget_es", "redistribution", "sampled"}:
        needed.append("forget")
    if "english" in wanted:
        needed.append("english")
    if "mixed_es" in wanted:
        needed += [f"mixed.{name}" for name in config.data.mixed]
    if "redistribution" in wanted:
        needed += [f"romanized.{name}" for name in config.data.romanized]
    if "leakage" in wanted:
        needed += [f"related.{name}" for name in config.data.related]
    phase = profile if profile is not None else _no_profile
    if base_generations is not None:
        generations.update({name: list(base_generations[name]) for name in needed})
    else:
        with phase("generation"):
            budget = _batch_budget(model, max_batch_tokens)
            generations.update(
                _generate_sets(
                    model, tokenizer, sets, needed, config, processors, budget, show_progress
                )
            )
    # records that need no forward pass of ``model``: teacher-forced ones of a model that
    # scores as the base, and (same generations) the base-scored fluency and the samples
    tf_reuse: Mapping[str, MetricRecord] = base_records or {}
    gen_reuse: Mapping[str, MetricRecord] = tf_reuse if base_generations is not None else {}
    scored = _SharedPasses(model, tokenizer, sets, config, wanted, probe_layers)

    # Records in the order of mmie 0.1; ``phase`` may be entered more than once per name.
    if "forget" in generations:
        with phase("outputs"):  # detector- and script-based records of the continuations
            items = "prompts.forget"
            records.update(
                _output_records("forget", generations["forget"], target, detector, items)
            )
            if romanized is not None:
                records["forget_romanized_es"] = _es_record(
                    generations["forget"], detector, romanized, items
                )
    if "english" in generations:
        with phase("outputs"):
            records.update(_english_records(generations["english"], config))
        if score_fluency and "english_fluency" in gen_reuse:
            records["english_fluency"] = gen_reuse["english_fluency"]
        elif score_fluency:
            base_of = reference if reference is not None else model
            with phase("fluency"), reference_model(base_of, model) as base:
                records["english_fluency"] = fluency_record(
                    base, tokenizer, sets, config, generations["english"]
                )
    for name in config.data.mixed if "mixed_es" in wanted else ():
        with phase("outputs"):
            outputs = generations[f"mixed.{name}"]
            items = f"prompts.mixed.{name}"
            records[f"mixed_es.{name}"] = _es_record(outputs, detector, target, items)
            empty = degeneracy(outputs).empty
            records[f"mixed_empty.{name}"] = _mean_record([float(e) for e in empty], items)
    for name in config.data.romanized if "redistribution" in wanted else ():
        assert romanized is not None  # the config refuses romanised sets without a label
        with phase("outputs"):
            records[f"romanized_es.{name}"] = _es_record(
                generations[f"romanized.{name}"],
                detector,
                romanized,
                f"prompts.romanized.{name}",
            )
    if "leakage" in wanted:
        for name in config.data.related:
            with phase("outputs"):
                records[f"related_es.{name}"] = _es_record(
                    generations[f"related.{name}"], detector, target, f"prompts.related.{name}"
                )
            key = f"related_ppl.{name}"
            if key in tf_reuse:
                records[key] = tf_reuse[key]
                continue
            with phase("leakage"):
                records[key] = _ppl_record(
                    model, tokenizer, sets.related_texts[name], config, f"related.{name}"
                )
    if "sampled" in wanted:
        sampled = ("forget_sampled", "forget_sampled_empty", "forget_sampled_worst")
        if all(k in gen_reuse for k in sampled):
            records.update({k: gen_reuse[k] for k in sampled})
        else:
            with phase("sampled"):
                records.update(_sampled_records(model, tokenizer, sets, config, processors))
    if "retain_ppl" in wanted:
        if "retain_ppl" in tf_reuse:
            records["retain_ppl"] = tf_reuse["retain_ppl"]
        else:
            with phase("retain_ppl"):
                r = scored.perplexity("retain_eval")
                records["retain_ppl"] = _perplexity_record(r, "retain_eval")
    if "forget_ppl" in wanted:
        if "forget_ppl" in tf_reuse:
            records["forget_ppl"] = tf_reuse["forget_ppl"]
        else:
            with phase("forget_ppl"):
                r = scored.perplexity("forget_eval")
                records["forget_ppl"] = _perplexity_record(r, "forget_eval")
    if "mia" in wanted:
        if "mia_auc" in tf_reuse:
            records["mia_auc"] = tf_reuse["mia_auc"]
        else:
            with phase("mia"):
                records["mia_auc"] = _mia_record(
                    model, tokenizer, sets, config, lambda: scored.loss_scores("forget_eval")
                )
    if "script_mass" in wanted:
        if "forget_script_mass" in tf_reuse:
            records["forget_script_mass"] = tf_reuse["forget_script_mass"]
        else:
            with phase("script_mass"):
                records["forget_script_mass"] = _script_mass_record(
                    model, tokenizer, sets.prompts["forget"], config
                )
    if "probe" in wanted and probe_layers:
        probes = [f"probe_auc.{layer}" for layer in sorted(set(probe_layers))]
        if all(k in tf_reuse for k in probes):
            records.update({k: tf_reuse[k] for k in probes})
        else:
            with phase("probe"):
                forget = scored.means("forget_eval")
                records.update(_probe_records(forget, scored.means("retain_eval")))
    return records, generations


class _SharedPasses:
    """The teacher-forced passes over ``forget_eval`` and ``retain_eval``, read by
    perplexity, MIA (non-member scores) and probes.

    Each text set is scored once, on first use (:func:`mmie.evaluation.scoring.score_texts`,
    with the forget texts' MIA loss scores when ``mia`` is on and the probe layers' hidden
    states when ``probe`` is on). With an intervention whose output depends on the batch
    or on earlier calls attached (the noise control draws fresh noise at every forward
    pass), every reading runs its own passes, in mmie 0.1's order, so its draws and results
    stay those of 0.1.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        sets: EvalSets,
        config: ExperimentConfig,
        wanted: set[str],
        probe_layers: Sequence[int],
    ) -> None:
        self._model, self._tokenizer = model, tokenizer
        self._texts = {"forget_eval": sets.forget_eval, "retain_eval": sets.retain_eval}
        d = config.data
        self._kw: dict[str, Any] = {"batch_size": d.batch_size, "max_length": d.max_length}
        self._mia = "mia" in wanted
        self._layers = tuple(probe_layers) if "probe" in wanted else ()
        self._share = not _batch_dependent(model)
        self._done: dict[str, ScoredTexts] = {}

    def _pass(self, name: str) -> ScoredTexts:
        if name not in self._done:
            self._done[name] = score_texts(
                self._model,
                self._tokenizer,
                self._texts[name],
                loss_scores=self._mia and name == "forget_eval",
                layers=self._layers,
                **self._kw,
            )
        return self._done[name]

    def perplexity(self, name: str) -> PerplexityResult:
        """Perplexity of the set (:func:`mmie.perplexity`)."""
        if self._share:
            return self._pass(name).perplexity
        return perplexity(self._model, self._tokenizer, self._texts[name], **self._kw)

    def loss_scores(self, name: str) -> npt.NDArray[np.float64]:
        """MIA loss scores of the set (:func:`mmie.mia_scores`, ``attack="loss"``)."""
        if self._share:
            scores = self._pass(name).loss_scores
            assert scores is not None
            return scores
        return mia_scores(
            self._model, self._tokenizer, self._texts[name], attack="loss", **self._kw
        )

    def means(self, name: str) -> dict[int, Tensor]:
        """Mean hidden states of the set at the probe layers."""
        if self._share:
            return self._pass(name).means
        acts = collect_activations(
            self._model,
            self._tokenizer,
            self._texts[name],
            self._layers,
            keep_tokens=False,
            **self._kw,
        )
        return dict(acts.means)


def _no_profile(_phase: str) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


def _batch_dependent(model: nn.Module) -> bool:
    """Whether an intervention whose output depends on the batch is attached to ``model``."""
    return bool({owner for _, owner in mmie_hooks(model)} & _BATCH_DEPENDENT_HOOKS)


def _batch_budget(model: nn.Module, max_batch_tokens: int | Literal["auto"] | None) -> int | None:
    """The generation token budget: ``None`` (one call per set) while an intervention whose
    output depends on the batch is attached, else the given or the device's default."""
    if max_batch_tokens is None or _batch_dependent(model):
        return None
    if max_batch_tokens == "auto":
        device = input_device(model).type
        return DEFAULT_MAX_BATCH_TOKENS.get(device, DEFAULT_MAX_BATCH_TOKENS["cuda"])
    return max_batch_tokens


def _generate_sets(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sets: EvalSets,
    names: Sequence[str],
    config: ExperimentConfig,
    processors: Sequence[LogitsProcessor],
    max_batch_tokens: int | None,
    show_progress: bool,
) -> dict[str, list[str]]:
    """Greedy continuations of the prompt sets ``names``: one packed pass over their distinct
    prompts, or (``max_batch_tokens=None``) one call per set."""
    gen = config.generation
    kw: dict[str, Any] = {
        "max_new_tokens": gen.max_new_tokens,
        "logits_processors": processors,
        "show_progress": show_progress,
    }
    if max_batch_tokens is None:
        return {
            name: [
                str(t)
                for t in generate(
                    model, tokenizer, sets.prompts[name], batch_size=gen.batch_size, **kw
                )
            ]
            for name in names
        }
    prompts = list(dict.fromkeys(p for name in names for p in sets.prompts[name]))
    out = generate(model, tokenizer, prompts, max_batch_tokens=max_batch_tokens, **kw)
    continuation = {p: str(t) for p, t in zip(prompts, out, strict=True)}
    return {name: [continuation[p] for p in sets.prompts[name]] for name in names}


def _english_records(outputs: list[str], config: ExperimentConfig) -> Records:
    """English prompts: target leakage and empty or degenerate output."""
    items = "prompts.english"
    shares = target_share(outputs, script_code(config.target, "target"))
    flags = degeneracy(outputs)
    return {
        "english_share": _mean_record(np.nan_to_num(shares.values, nan=0.0), items),
        "english_any": _mean_record([float(a) for a in shares.any_target], items),
        "english_degenerate": _mean_record([float(d) for d in flags.degenerate], items),
    }


def fluency_record(
    base: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sets: EvalSets,
    config: ExperimentConfig,
    outputs: Sequence[str],
) -> MetricRecord:
    """The base model's mean NLL (nats/token) of each English continuation (a fluency proxy);
    an empty continuation has no value. ``extra["text_nll"]`` holds the base model's NLL of
    the *real* continuation of the same text, the level the gate compares with (the base's
    own greedy output is its mode, so comparing with it would penalise any change)."""
    prompts = sets.prompts["english"]
    kw: dict[str, Any] = {
        "batch_size": config.data.batch_size,
        "max_length": config.data.max_length,
    }
    fluency = continuation_nll(base, tokenizer, prompts, list(outputs), **kw)
    truth = sets.continuations["english"]
    reference = continuation_nll(base, tokenizer, prompts, truth, **kw)
    return _mean_record(
        list(fluency.item_nll),
        "prompts.english",
        text_nll=[v if math.isfinite(v) else None for v in reference.item_nll],
    )


def _sampled_records(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sets: EvalSets,
    config: ExperimentConfig,
    processors: Sequence[LogitsProcessor],
) -> Records:
    s = config.sampling
    result = sampled_leakage(
        model,
        tokenizer,
        sets.prompts["forget"],
        script=script_code(config.target, "target"),
        n_samples=s.n_samples,
        temperature=s.temperature,
        seed=s.seed,
        dominated=s.dominated,
        max_new_tokens=config.generation.max_new_tokens,
        batch_size=config.generation.batch_size,
        logits_processors=processors,
    )
    items = "prompts.forget"
    return {
        "forget_sampled": _mean_record(result.dominated_fraction, items),
        # letter-free samples: their own outcome, never counted as avoiding the target
        "forget_sampled_empty": _mean_record([e / s.n_samples for e in result.n_empty], items),
        # an output with no letter at all has no target letter either: 0
        "forget_sampled_worst": _mean_record(np.nan_to_num(result.worst_share, nan=0.0), items),
    }


def _probe_records(forget: Mapping[int, Tensor], retain: Mapping[int, Tensor]) -> Records:
    """Probe records from the mean hidden states of the held-out forget and retain texts."""
    records: Records = {}
    for layer in sorted(forget):
        # seed 0: the same held-out texts for the base model, every arm and every seed
        result, s_pos, s_neg = fit_probe(
            forget[layer],
            retain[layer],
            control=True,
            seed=0,
            test_fraction=0.3,
            l2=1e-2,
            max_iter=100,
        )
        records[f"probe_auc.{layer}"] = MetricRecord(
            value=float(result.auc),
            per_item=tuple(placement_values(s_pos, s_neg).tolist()),
            items="forget_eval (probe test split)",
            extra={"control_auc": float(result.control_auc)},
        )
    return records


def _mia_record(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sets: EvalSets,
    config: ExperimentConfig,
    nonmember_scores: Callable[[], npt.NDArray[np.float64]],
) -> MetricRecord:
    """MIA record: member scores computed here, then the non-members' (the loss scores of
    ``forget_eval``, from the shared forget pass when there is one)."""
    kw: dict[str, Any] = {
        "attack": "loss",
        "batch_size": config.data.batch_size,
        "max_length": config.data.max_length,
    }
    members = mia_scores(model, tokenizer, sets.forget_train, **kw)
    nonmembers = nonmember_scores()
    result = mia_auc(members, nonmembers)
    per_item = placement_values(members, nonmembers)
    return MetricRecord(
        value=float(result.auc),
        per_item=tuple(per_item.tolist()),
        items="forget_train",
        extra={
            "tpr_at_1pct_fpr": float(result.tpr_at_fpr),
            # the raw scores, for two-class (DeLong) tests and PrivLeak against a reference
            "member_scores": [float(v) for v in members],
            "nonmember_scores": [float(v) for v in nonmembers],
        },
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
        kv_cache=not _batch_dependent(model),  # the noise control: 0.1's forward passes
    )
    return MetricRecord(
        value=float(r.mean),
        per_item=tuple(float(v) for v in r.values),
        items="prompts.forget",
        extra={"unresolved": [float(v) for v in r.unresolved]},
    )
