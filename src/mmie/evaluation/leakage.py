"""Cross-lingual leakage: collateral effect of an arm on related languages.

Per language, the arm and the base model continue the same prompts and score the same
texts; the target-language extraction strength (:mod:`mmie.evaluation.language_metrics`) and the perplexity
(:mod:`mmie.evaluation.scoring`) are compared item by item, so the per-item differences feed paired
tests. The base model is evaluated with the arm's own weights when ``reference`` is a
context-manager factory (see :data:`mmie.evaluation.scoring.Reference`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from torch import nn
from transformers import PreTrainedTokenizerBase

from mmie._validation import text_list
from mmie.evaluation.language_metrics import ExtractionStrength, extraction_strength
from mmie.evaluation.scoring import PerplexityResult, Reference, perplexity, reference_model
from mmie.language.detectors import Detector
from mmie.models.generation import generate as greedy

__all__ = [
    "LanguageLeakage",
    "cross_lingual_leakage",
]

logger = logging.getLogger(__name__)

GenerateFn = Callable[[nn.Module, PreTrainedTokenizerBase, Sequence[str]], list[str]]
"""``generate(model, tokenizer, prompts) -> continuations`` (without the prompts)."""


@dataclass(frozen=True)
class LanguageLeakage:
    """Collateral effect of an arm on one related language, versus the base model.

    Attributes:
        language: the language's label.
        es_delta: mean over prompts of ``ES_model − ES_base`` for the *target* language
            (positive: the arm pushes this language's prompts towards the target).
        es_diffs: per prompt, ``ES_model − ES_base`` (paired).
        ppl_model: perplexity of the arm on this language's texts.
        ppl_base: perplexity of the base model on the same texts.
        ppl_ratio: ``ppl_model / ppl_base`` (> 1: the arm hurts this language).
        nll_diffs: per text, mean NLL per token of the arm minus the base (paired).
        extraction_model: the arm's :class:`ExtractionStrength`.
        extraction_base: the base model's :class:`ExtractionStrength`.
    """

    language: str
    es_delta: float
    es_diffs: tuple[float, ...]
    ppl_model: float
    ppl_base: float
    ppl_ratio: float
    nll_diffs: tuple[float, ...]
    extraction_model: ExtractionStrength
    extraction_base: ExtractionStrength

    @classmethod
    def from_results(
        cls,
        language: str,
        extraction_model: ExtractionStrength,
        extraction_base: ExtractionStrength,
        ppl_model: PerplexityResult,
        ppl_base: PerplexityResult,
    ) -> LanguageLeakage:
        """Combine precomputed results of the arm and the base model on the same items.

        Raises:
            ValueError: the two results do not cover the same number of items.
        """
        if len(extraction_model.values) != len(extraction_base.values):
            raise ValueError("extraction results of model and base cover different prompts")
        if ppl_model.n_tokens != ppl_base.n_tokens:
            raise ValueError("perplexity results of model and base cover different texts")
        es_diffs = tuple(a - b for a, b in zip(extraction_model.values, extraction_base.values))
        nll_diffs = tuple(
            a - b for a, b in zip(ppl_model.item_nll, ppl_base.item_nll) if not math.isnan(a)
        )
        return cls(
            language=language,
            es_delta=float(np.mean(es_diffs)),
            es_diffs=es_diffs,
            ppl_model=ppl_model.perplexity,
            ppl_base=ppl_base.perplexity,
            ppl_ratio=ppl_model.perplexity / ppl_base.perplexity,
            nll_diffs=nll_diffs,
            extraction_model=extraction_model,
            extraction_base=extraction_base,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def cross_lingual_leakage(
    model: nn.Module,
    reference: Reference,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Mapping[str, Sequence[str]],
    detector: Detector,
    *,
    target: str = "hi",
    texts: Mapping[str, Sequence[str]] | None = None,
    generate: GenerateFn | None = None,
    method: Literal["auto", "prefix", "word"] = "auto",
    batch_size: int = 8,
    max_new_tokens: int = 32,
    max_length: int | None = 1024,
) -> dict[str, LanguageLeakage]:
    """Per related language: change in target extraction strength and in perplexity.

    For each language (e.g. Urdu, Punjabi, Bengali, English) the arm and the reference
    continue the same prompts; the target-language extraction strength of both sets of
    continuations is compared prompt by prompt, and both models' perplexities on the
    language's texts are compared text by text. The danda ``।`` shared by Punjabi and
    Bengali is script-neutral for :class:`mmie.ScriptDetector`, so those languages do
    not count as Hindi.

    Args:
        model: the arm (possibly with interventions attached).
        reference: the base model (see :func:`token_kl` for the accepted forms; a
            context-manager factory evaluates the base with the same weights).
        tokenizer: the shared tokenizer.
        prompts: language label -> prompts.
        detector: language detector for :func:`extraction_strength`.
        target: the target (unlearned) language label.
        texts: language label -> texts for perplexity (default: the prompts).
        generate: ``generate(model, tokenizer, prompts) -> continuations``; default greedy
            decoding of ``max_new_tokens`` tokens with :func:`mmie.generate`.
        method: extraction-strength method.
        batch_size: texts per forward pass.
        max_new_tokens: generation length of the default generator.
        max_length: longer texts are truncated (with a warning).

    Returns:
        Language label -> :class:`LanguageLeakage`, in the order of ``prompts``.

    Raises:
        ValueError: ``prompts`` is empty or ``texts`` lacks one of its languages.
    """
    if not prompts:
        raise ValueError("prompts must map at least one language to prompts")
    texts = prompts if texts is None else texts
    missing = [lang for lang in prompts if lang not in texts]
    if missing:
        raise ValueError(f"texts has no entry for language(s) {missing}")

    def default_generate(m: nn.Module, tok: PreTrainedTokenizerBase, p: Sequence[str]) -> list[str]:
        out = greedy(m, tok, p, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return [str(t) for t in out]

    gen = generate or default_generate
    results: dict[str, LanguageLeakage] = {}
    for lang, lang_prompts in prompts.items():
        lang_prompts = text_list(lang_prompts, f"prompts[{lang!r}]")
        lang_texts = text_list(texts[lang], f"texts[{lang!r}]")
        es_model = extraction_strength(
            gen(model, tokenizer, lang_prompts), detector, target, method=method
        )
        ppl_model = perplexity(
            model, tokenizer, lang_texts, batch_size=batch_size, max_length=max_length
        )
        with reference_model(reference, model) as ref:
            es_base = extraction_strength(
                gen(ref, tokenizer, lang_prompts), detector, target, method=method
            )
            ppl_base = perplexity(
                ref, tokenizer, lang_texts, batch_size=batch_size, max_length=max_length
            )
        results[lang] = LanguageLeakage.from_results(lang, es_model, es_base, ppl_model, ppl_base)
        logger.info(
            "leakage %s: ΔES=%+.3f, perplexity %.2f -> %.2f",
            lang,
            results[lang].es_delta,
            ppl_base.perplexity,
            ppl_model.perplexity,
        )
    return results
