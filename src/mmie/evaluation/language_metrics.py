"""Language metrics: target-language extraction strength and target-script probability mass.

Both keep their **per-item values** (per generation or prompt) next to the aggregate, so
the experiment runner can run paired permutation tests on them. :func:`extraction_strength`
needs only generations and a language detector; :func:`script_mass` is detector-free and
scores a model teacher-forced with the helpers of :mod:`mmie.evaluation.scoring` (right padding, pad
positions masked).

The other evaluation metrics live in their own modules: perplexity and token KL in
:mod:`mmie.evaluation.scoring`, membership inference in :mod:`mmie.evaluation.mia`, linear probes in
:mod:`mmie.evaluation.probes` and cross-lingual leakage in :mod:`mmie.evaluation.leakage`.
"""

from __future__ import annotations

import copy
import inspect
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from transformers import BatchEncoding, PreTrainedTokenizerBase

from mmie._validation import boolean, finite_float, positive_int, text_list
from mmie.evaluation.scoring import check_finite, nonfinite_error
from mmie.language.detectors import (
    Detection,
    Detector,
    EnsembleDetector,
    RomanizedHindiDetector,
    ScriptDetector,
    script_label,
)
from mmie.language.unicode import (
    SCRIPT_LANGUAGE,
    classify_tokens,
    script_code,
    script_counts,
    script_token_mask,
)
from mmie.models.blocks import input_device, unwrap_model
from mmie.models.logprobs import forward_logits, right_padded_batches
from mmie.models.tokenization import collate_ids, tokenize

__all__ = [
    "ExtractionStrength",
    "ScriptMassResult",
    "extraction_strength",
    "script_mass",
]


# ---------------------------------------------------------------------- extraction strength
@dataclass(frozen=True)
class ExtractionStrength:
    """Target-language extraction strength of a set of generations.

    Attributes:
        values: per generation, ``ES = 1 - (k* - 1) / n`` where ``n`` is the number of
            whitespace-separated words and ``k*`` the smallest ``k`` whose ``k``-word prefix
            is labelled ``target``; 0 if no prefix is (or the generation is empty).
        onsets: per generation, ``k* - 1`` (the number of words before the onset) or
            ``None`` when the target never appears.
        n_words: per generation, ``n``.
        mean: mean of ``values``.
        target: the target label.
        method: ``"prefix"`` or ``"word"``, the method used (see
            :func:`extraction_strength`).
        detector_calls: number of texts passed to the detector, over all generations (0
            when the built-in detectors' prefix labels were computed incrementally).
    """

    values: tuple[float, ...]
    onsets: tuple[int | None, ...]
    n_words: tuple[int, ...]
    mean: float
    target: str
    method: str
    detector_calls: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


class _CountingDetector:
    """Counts the texts a detector is asked to label (exposed as ``detector_calls``)."""

    def __init__(self, detector: Detector) -> None:
        self.inner = detector
        self.calls = 0

    def detect(self, text: str) -> Detection:
        self.calls += 1
        return self.inner.detect(text)

    def detect_batch(self, texts: Sequence[str]) -> list[Detection]:
        self.calls += len(texts)
        return list(self.inner.detect_batch(list(texts))) if texts else []


def _onset_prefix(words: list[str], detector: _CountingDetector, target: str) -> int | None:
    # Prefix k is " ".join(words[:k]), extended word by word; the scan stops at the onset.
    prefix = ""
    for k, word in enumerate(words):
        prefix = f"{prefix} {word}" if k else word
        if detector.detect(prefix).label == target:
            return k
    return None


def _script_prefix_labels(words: list[str]) -> Iterator[str]:
    """ScriptDetector's label of each prefix, from running per-script letter counts."""
    counts: Counter[str] = Counter()
    for word in words:
        counts.update(script_counts(word))
        yield script_label(counts)


def _ensemble_prefix_labels(words: list[str], detector: EnsembleDetector) -> Iterator[str]:
    """The default EnsembleDetector's label of each prefix, from running sums: the script
    stage's letter counts and the romanised stage's lexicon weights (exactly, as a
    fraction: its share is ``math.fsum`` of the weights) and English-word count."""
    romanized = detector.romanized
    assert isinstance(romanized, RomanizedHindiDetector)
    weight, english, n_latin = Fraction(0), 0, 0
    for label, word in zip(_script_prefix_labels(words), words):
        weights, flags = romanized.word_terms(word)
        weight += sum(map(Fraction, weights), Fraction(0))
        english += sum(flags)
        n_latin += len(weights)
        if label != "en":
            yield label
            continue
        if n_latin == 0:
            yield "en"  # Latin letters but no [a-z] word: the ensemble's "und" -> "en"
            continue
        yield romanized.label_of(float(weight) / n_latin, english / n_latin, n_latin)


def _incremental_labels(detector: Detector) -> Callable[[list[str]], Iterator[str]] | None:
    """A linear-time generator of prefix labels for the built-in detectors, else ``None``.

    Exact for :class:`ScriptDetector` and for an :class:`EnsembleDetector` with its default
    stages (a ``ScriptDetector``, a ``RomanizedHindiDetector`` with any lexicon or threshold,
    no ``latin_fallback``, no ``routes``): both labels are functions of sums over the
    prefix's words.
    Subclasses and other detectors are scanned by labelling each prefix.
    """
    if type(detector) is ScriptDetector:
        return _script_prefix_labels
    if (
        type(detector) is EnsembleDetector
        and type(detector.script) is ScriptDetector
        and type(detector.romanized) is RomanizedHindiDetector
        and detector.latin_fallback is None
        and not detector.routes  # a routed script's label needs its detector on each prefix
    ):
        return lambda words: _ensemble_prefix_labels(words, detector)
    return None


def _onset_incremental(
    words: list[str], labels: Callable[[list[str]], Iterator[str]], target: str
) -> int | None:
    for k, label in enumerate(labels(words)):
        if label == target:
            return k
    return None


# Tie order of labels in a tally: the ScriptDetector's (scripts in SCRIPTS order), then others.
_LABEL_ORDER: dict[str, int] = {
    label: i for i, label in enumerate(dict.fromkeys((*SCRIPT_LANGUAGE.values(), "hi-Latn")))
}


def _label_shares(det: Detection) -> dict[str, float]:
    """Per-label shares of a word's letters: ``scores`` if they form a distribution."""
    scores = dict(det.scores)
    if scores and abs(sum(scores.values()) - 1.0) < 1e-6:
        return scores
    return {det.label: 1.0}


def _onset_word(words: list[str], detector: _CountingDetector, target: str) -> int | None:
    detections = detector.detect_batch(words)  # one batched call, n texts
    tally: dict[str, float] = {}
    for k, (word, det) in enumerate(zip(words, detections)):
        letters = sum(script_counts(word).values())  # script-neutral characters excluded
        if letters == 0:
            continue
        for label, share in _label_shares(det).items():
            # Rounded so that shares x letters recover integer letter counts exactly.
            tally[label] = round(tally.get(label, 0.0) + share * letters, 6)
        winner = max(tally, key=lambda lab: (tally[lab], -_LABEL_ORDER.get(lab, len(_LABEL_ORDER))))
        if winner == target:
            return k
    return None


def extraction_strength(
    generations: Sequence[str],
    detector: Detector,
    target: str = "hi",
    *,
    method: Literal["auto", "prefix", "word"] = "auto",
) -> ExtractionStrength:
    """How early and how much of each generation is in the target language.

    Each generation is split into ``n`` whitespace-separated words. Let ``k*`` be the
    smallest ``k`` such that the detector labels the ``k``-word prefix ``target``. Then::

        ES = 1 - (k* - 1) / n      (the fraction of words from the onset on)
        ES = 0                     if no prefix is labelled target, or n = 0

    so 1 means "target language from the first word" and values near 0 a late switch.

    Complexity, for ``n`` words and ``m`` characters per generation:

    * ``method="prefix"`` (exact for any detector): prefixes are labelled in order and the
      scan stops at the onset. For :class:`~mmie.ScriptDetector` and an
      :class:`~mmie.EnsembleDetector` with its default stages (the study's detector) the
      prefix labels follow exactly from running sums over the words (letters per script,
      romanised-Hindi lexicon weights, English function words), so the scan examines each
      character once: ``O(m)`` in total, and no detector call. Any other detector is asked
      for the label of each prefix: at most ``n`` calls, on texts of total length
      ``O(n·m)`` -- quadratic in the generation's length (a 4,000-word generation is 4,000
      calls on texts averaging 2,000 words).
    * ``method="word"``: every word is labelled once (one ``detect_batch`` call of ``n``
      texts, ``O(m)`` characters in total) and running per-label letter counts stand in
      for the prefix label: each word adds its letter count (letters and combining marks of
      known scripts; digits, punctuation and the danda ``।`` count 0) spread over the labels
      of its ``Detection.scores`` when they form a distribution, else to its label; the
      prefix label is the tally's maximum, ties broken in the order hi, ur, pa, bn, en, und.
      For :class:`~mmie.ScriptDetector` this is **exactly** its label of the prefix
      (its label is the majority script of the letters, which is additive over words, with
      the same tie order), at ``O(m)`` total cost. For statistical detectors it is an
      approximation.
    * ``method="auto"`` (default): ``"word"`` for a ``ScriptDetector``, else ``"prefix"``.

    The original script labelled every prefix of every generation without stopping,
    re-joining the prefix each time (``O(n²)`` work per generation).

    This is **not** the "extraction strength" of teacher-forced unlearning benchmarks
    (Carlini et al. 2021, as used by open-unlearning): that one is ``1 − k/|y|`` for the
    shortest prefix of length ``k`` of a *reference answer* ``y`` from which the model
    greedily reproduces the rest of ``y``, and measures verbatim memorisation of a given
    text. This one needs no reference text: it measures when free generation drifts into a
    language.

    Args:
        generations: the generated continuations (without their prompts).
        detector: a :class:`~mmie.Detector` (``detect`` and ``detect_batch`` returning
            :class:`~mmie.Detection`), e.g. :class:`~mmie.ScriptDetector`.
        target: the target label (``"hi"``).
        method: ``"auto"``, ``"prefix"`` or ``"word"``.

    Returns:
        An :class:`ExtractionStrength` with per-generation values.

    Raises:
        TypeError: ``generations`` is not a sequence of strings or ``detector`` does not
            implement the detector protocol.
        ValueError: ``generations`` is empty or ``method`` is unknown.

    Example:
        >>> from mmie.language.detectors import ScriptDetector
        >>> es = extraction_strength(["I think यह अच्छा है", "all English"], ScriptDetector())
        >>> es.onsets, es.values  # Devanagari letters outnumber Latin ones from word 4 on
        ((3, None), (0.4, 0.0))
    """
    gens = text_list(generations, "generations")
    if not isinstance(detector, Detector):
        raise TypeError(
            f"detector must implement detect(text) and detect_batch(texts), got {type(detector).__name__}"
        )
    if method not in ("auto", "prefix", "word"):
        raise ValueError(f"method must be 'auto', 'prefix' or 'word', got {method!r}")
    if method == "auto":
        method = "word" if isinstance(detector, ScriptDetector) else "prefix"
    counting = _CountingDetector(detector)
    scan = _onset_prefix if method == "prefix" else _onset_word
    incremental = _incremental_labels(detector) if method == "prefix" else None
    values: list[float] = []
    onsets: list[int | None] = []
    n_words: list[int] = []
    for text in gens:
        words = text.split()
        if not words:
            onset = None
        elif incremental is not None:
            onset = _onset_incremental(words, incremental, target)
        else:
            onset = scan(words, counting, target)
        n = len(words)
        values.append(0.0 if onset is None else 1.0 - onset / n)
        onsets.append(onset)
        n_words.append(n)
    return ExtractionStrength(
        values=tuple(values),
        onsets=tuple(onsets),
        n_words=tuple(n_words),
        mean=float(np.mean(values)),
        target=target,
        method=method,
        detector_calls=counting.calls,
    )


# ---------------------------------------------------------------------- script mass
@dataclass(frozen=True)
class ScriptMassResult:
    """Probability mass a model puts on target-script tokens.

    Attributes:
        values: per prompt, the mass (in ``[0, 1]``): at the next-token position, the mean
            over the text's predicted positions when teacher-forced, or (``next_char``) the
            probability that the continuation's first script-bearing character is of the
            script, as far as the search resolved it (a lower bound).
        mean: mean of ``values``.
        mode: ``"next_token"``, ``"teacher_forced"`` or ``"next_char"``.
        n_target_tokens: number of vocabulary entries in the script mask (``next_char``:
            tokens whose first script-bearing character is of the script).
        unresolved: ``next_char`` only (else empty): per prompt, the probability mass the
            search left undecided (below ``tol`` or deeper than ``max_depth``); the exact
            value lies in ``[value, value + unresolved]``.
        n_forward: ``next_char`` only (else 0): sequences scored, prompts included.
    """

    values: tuple[float, ...]
    mean: float
    mode: str
    n_target_tokens: int
    unresolved: tuple[float, ...] = ()
    n_forward: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


@torch.no_grad()
def script_mass(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    script: str | Tensor,
    *,
    mode: Literal["next_token", "teacher_forced", "next_char"] = "next_token",
    batch_size: int = 8,
    max_length: int | None = 1024,
    max_depth: int = 4,
    tol: float = 1e-3,
    kv_cache: bool = True,
) -> ScriptMassResult:
    """Detector-free language metric: probability mass on tokens of a script.

    ``next_token``: ``Σ_{v ∈ S} p(v | prompt)`` for the token after each prompt.
    ``teacher_forced``: the same mass at every predicted position ``t`` (``p(· | x_{≤t})``
    for ``t = 0..L-2``) of each text, averaged over its positions.
    ``next_char``: the probability that the first script-bearing character of the
    continuation (script-neutral characters such as spaces, digits and the danda skipped;
    see :func:`mmie.script_of_char`) is of the script. It does not depend on the
    tokenization: tokens holding part of a multi-byte character, or only neutral
    characters, are expanded (one more forward pass with the token appended) until their
    continuation decides, so byte-level vocabularies are measured exactly (token bytes
    from :func:`mmie.token_bytes`). Branches below ``tol`` probability, deeper than
    ``max_depth`` tokens, or through a token whose bytes are unknown stay unresolved and are
    reported as ``unresolved`` (``value + unresolved`` is an upper bound); special tokens
    (end of text) count as not the script.

    The mass is computed as ``exp(logsumexp(logits[S]) − logsumexp(logits))`` in fp32.
    Model vocabulary rows beyond the tokenizer's (padding of the embedding matrix) are not
    in ``S``.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (with a pad token).
        prompts: prompts (``next_token``) or texts (``teacher_forced``).
        script: a script or label understood by :func:`mmie.script_token_mask`
            (``"Deva"``, or ``"hi"`` for the same) or a precomputed boolean mask ``[vocab]``
            (not with ``next_char``).
        mode: ``"next_token"``, ``"teacher_forced"`` or ``"next_char"``.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).
        max_depth: ``next_char``: the most continuation tokens examined along a branch.
        tol: ``next_char``: branches with less probability than this are not expanded
            (must be positive: every token has some probability).
        kv_cache: ``next_char``: expand the branches from each prompt's KV cache (the
            default; models without a usable cache re-run whole sequences anyway).
            ``False`` re-runs prompt + appended tokens for every branch, mmie 0.1's
            computation and forward passes: for an intervention whose output depends on
            the sequence of forward passes (the noise control), whose results then stay
            those of 0.1.

    Returns:
        A :class:`ScriptMassResult`.

    Raises:
        ValueError: empty prompts, unknown mode, a mask that selects no token, (teacher
            forced) a text with fewer than two tokens, or (``next_char``) an unknown script,
            ``max_depth < 1`` or ``tol`` outside ``(0, 1)``.
        TypeError: a token mask given with ``next_char``.
        NumericalError: the model's logits are not finite.
    """
    texts = text_list(prompts, "prompts")
    if mode not in ("next_token", "teacher_forced", "next_char"):
        raise ValueError(
            f"mode must be 'next_token', 'teacher_forced' or 'next_char', got {mode!r}"
        )
    batch_size = positive_int(batch_size, "batch_size")
    if mode == "next_char":
        if not isinstance(script, str):
            raise TypeError("next_char needs a script name, not a token mask")
        max_depth = positive_int(max_depth, "max_depth")
        tol = finite_float(tol, "tol", low=0.0, high=1.0, low_open=True, high_open=True)
        search = _next_char_mass if boolean(kv_cache, "kv_cache") else _next_char_mass_recompute
        result = search(
            model, tokenizer, texts, script, batch_size, max_length, max_depth, float(tol)
        )
        pairs = zip(result.values, result.unresolved, strict=True)
        bad = [i for i, (v, u) in enumerate(pairs) if not np.isfinite([v, u]).all()]
        if bad:
            enc = tokenize(tokenizer, [texts[bad[0]]], max_length=max_length, device="cpu")
            raise nonfinite_error(model, enc, "script_mass (next_char)")
        return result
    if isinstance(script, str):
        mask = script_token_mask(tokenizer, script)
    elif isinstance(script, Tensor):
        mask = script
    else:
        raise TypeError(
            f"script must be a script name or a bool tensor, got {type(script).__name__}"
        )
    if mask.dtype != torch.bool or mask.ndim != 1:
        raise ValueError(
            f"script mask must be a 1-D bool tensor [vocab], got {mask.dtype} {tuple(mask.shape)}"
        )
    token_ids = mask.nonzero().flatten()
    if token_ids.numel() == 0:
        raise ValueError("the script mask selects no token of the vocabulary")
    device = input_device(model)
    values = [0.0] * len(texts)
    for idx, enc in right_padded_batches(
        tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device
    ):
        logits = forward_logits(model, enc).float()  # (batch, seq, vocab)
        ids = token_ids[token_ids < logits.shape[-1]].to(logits.device)
        log_mass = torch.logsumexp(logits.index_select(-1, ids), -1) - torch.logsumexp(logits, -1)
        attn = enc["attention_mask"].to(logits.device)
        lengths = attn.sum(1)  # (batch,)
        if mode == "next_token":
            rows = torch.arange(len(idx), device=logits.device)
            item = log_mass[rows, lengths - 1].exp()  # (batch,)
        else:
            if bool((lengths < 2).any()):
                raise ValueError("teacher_forced script_mass needs texts of at least two tokens")
            pos = attn[:, 1:].bool()  # (batch, seq-1): positions with a real next token
            mass = log_mass[:, :-1].exp().masked_fill(~pos, 0.0)
            item = mass.sum(1) / pos.sum(1)
        check_finite(item, model, enc, "script_mass")
        for i, v in zip(idx, item.tolist()):
            values[i] = float(v)
    return ScriptMassResult(
        values=tuple(values),
        mean=float(np.mean(values)),
        mode=mode,
        n_target_tokens=int(token_ids.numel()),
    )


@dataclass
class _Branch:
    """A prompt continued by ``appended`` tokens, whose first script-bearing character is
    still undecided; ``pending`` holds the bytes of an incomplete character."""

    item: int
    appended: list[int]
    pending: bytes
    prob: float


def _next_char_mass(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    script: str,
    batch_size: int,
    max_length: int | None,
    max_depth: int,
    tol: float,
) -> ScriptMassResult:
    """Breadth-first search over continuations until their first script character.

    Each chunk of ``batch_size`` prompts runs once (right padded, with ``use_cache``); the
    search then expands its undecided branches depth by depth from the prompts' KV cache:
    the branches of one depth run together (``8 · batch_size`` rows per forward pass), each
    feeding only its appended tokens after its prompt's cached keys and values (padding
    masked, positions continuing the prompt's). So a depth costs its branches × depth
    tokens, not × (prompt + depth). The prompts' own distributions are bit-identical to a
    recomputation; the expanded ones agree with re-running prompt + tokens to fp32 rounding
    (tests: values within 1e-6). Models whose forward pass returns no cache, or with a
    flash-attention implementation (which does not take a padding hole in the middle of the
    keys), re-run every sequence whole (:func:`_next_char_mass_recompute`).
    """
    cache_name = _cache_argument(model)
    if cache_name is None:
        return _next_char_mass_recompute(
            model, tokenizer, texts, script, batch_size, max_length, max_depth, tol
        )
    code = script_code(script)
    device = input_device(model)
    prompt_ids = _prompt_ids(tokenizer, texts, batch_size, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    found = [0.0] * len(texts)
    unresolved = [0.0] * len(texts)
    n_forward = 0
    rows_per_pass = 8 * batch_size
    for start in range(0, len(texts), batch_size):
        items = list(range(start, min(start + batch_size, len(texts))))
        ids, attn = collate_ids([prompt_ids[i] for i in items], pad, device)
        out = model(input_ids=ids, attention_mask=attn, use_cache=True)
        cache = out.get(cache_name) if hasattr(out, "get") else None
        if cache is None:  # no KV cache from this model: re-run sequences whole
            return _next_char_mass_recompute(
                model, tokenizer, texts, script, batch_size, max_length, max_depth, tol
            )
        logits = out.logits if hasattr(out, "logits") else out[0]
        lengths = attn.sum(1)
        last = lengths.to(logits.device) - 1
        rows = torch.arange(len(items), device=logits.device)
        probs = logits.float()[rows, last].softmax(-1).double().cpu()
        n_forward += len(items)
        frontier = [_Branch(i, [], b"", 1.0) for i in items]
        frontier = _expand(tokenizer, code, frontier, probs, tol, found, unresolved)
        for depth in range(1, max_depth + 1):
            if not frontier:
                break
            if depth == max_depth:  # deep enough: what is left stays unresolved
                for branch in frontier:
                    unresolved[branch.item] += branch.prob
                break
            grown: list[_Branch] = []
            for sub_start in range(0, len(frontier), rows_per_pass):
                sub = frontier[sub_start : sub_start + rows_per_pass]
                index = torch.tensor([b.item - start for b in sub], device=attn.device)
                new_ids = torch.tensor([b.appended for b in sub], dtype=torch.long, device=device)
                mask = torch.cat([attn[index], attn.new_ones(len(sub), depth)], dim=1)
                positions = lengths[index].unsqueeze(1) + torch.arange(depth, device=device)
                past = {cache_name: _select_rows(cache, index)}
                out = model(
                    input_ids=new_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **past,
                )
                logits = out.logits if hasattr(out, "logits") else out[0]
                probs = logits[:, -1].float().softmax(-1).double().cpu()
                n_forward += len(sub)
                grown += _expand(tokenizer, code, sub, probs, tol, found, unresolved)
            frontier = grown
    status0, _ = classify_tokens(tokenizer, code, b"")
    return ScriptMassResult(
        values=tuple(found),
        mean=float(np.mean(found)),
        mode="next_char",
        n_target_tokens=int((status0 == 1).sum()),
        unresolved=tuple(unresolved),
        n_forward=n_forward,
    )


def _cache_argument(model: nn.Module) -> str | None:
    """The name of the KV cache in the model's forward arguments and outputs (``"cache"`` in
    recent transformers, ``"past_key_values"`` before), or ``None`` when the forward pass
    takes no cache and position ids, or uses flash attention (no padding hole in the keys).
    """
    base = unwrap_model(model)
    attn_impl = str(getattr(getattr(base, "config", None), "_attn_implementation", ""))
    if "flash" in attn_impl:
        return None
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return None
    if "position_ids" not in params:
        return None
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def _select_rows(cache: Any, index: Tensor) -> Any:
    """A new cache holding rows ``index`` of ``cache`` (which is left unchanged)."""
    if isinstance(cache, tuple):  # legacy format: per layer (keys, values, ...)
        return tuple(tuple(t.index_select(0, index.to(t.device)) for t in layer) for layer in cache)
    selected = copy.deepcopy(cache)
    selected.reorder_cache(index)
    return selected


def _prompt_ids(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int, max_length: int | None
) -> list[list[int]]:
    prompt_ids: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenize(
            tokenizer, texts[start : start + batch_size], max_length=max_length, device="cpu"
        )
        for ids, attn in zip(enc["input_ids"], enc["attention_mask"], strict=True):
            prompt_ids.append(ids[attn.bool()].tolist())
    return prompt_ids


def _expand(
    tokenizer: PreTrainedTokenizerBase,
    code: str,
    branches: Sequence[_Branch],
    probs: Tensor,
    tol: float,
    found: list[float],
    unresolved: list[float],
) -> list[_Branch]:
    """Add each branch's decided mass to ``found``/``unresolved``; return its children that
    are still undecided and carry at least ``tol`` probability."""
    grown: list[_Branch] = []
    for branch, p in zip(branches, probs, strict=True):
        status, pending = classify_tokens(tokenizer, code, branch.pending)
        vocab = min(p.numel(), status.numel())  # padded embedding rows: never text
        p, st = p[:vocab], status[:vocab]
        found[branch.item] += branch.prob * float(p[st == 1].sum())
        unresolved[branch.item] += branch.prob * float(p[st == -2].sum())  # no bytes
        undecided = (st == -1).nonzero().flatten()
        mass = branch.prob * p[undecided]
        keep = mass >= tol
        unresolved[branch.item] += float(mass[~keep].sum())
        for tid, m in zip(undecided[keep].tolist(), mass[keep].tolist(), strict=True):
            grown.append(_Branch(branch.item, [*branch.appended, tid], pending[tid], m))
    return grown


def _next_char_mass_recompute(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    script: str,
    batch_size: int,
    max_length: int | None,
    max_depth: int,
    tol: float,
) -> ScriptMassResult:
    """The search of :func:`_next_char_mass`, re-running prompt + appended tokens whole for
    every branch (mmie 0.1's computation; the fallback without a usable KV cache)."""
    code = script_code(script)
    device = input_device(model)
    prompt_ids = _prompt_ids(tokenizer, texts, batch_size, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    found = [0.0] * len(texts)
    unresolved = [0.0] * len(texts)
    frontier = [_Branch(i, [], b"", 1.0) for i in range(len(texts))]
    n_forward = 0
    for depth in range(max_depth + 1):
        if not frontier:
            break
        if depth == max_depth:  # deep enough: what is left stays unresolved
            for branch in frontier:
                unresolved[branch.item] += branch.prob
            break
        grown: list[_Branch] = []
        for start in range(0, len(frontier), batch_size):
            chunk = frontier[start : start + batch_size]
            seqs = [prompt_ids[b.item] + b.appended for b in chunk]
            ids, attn = collate_ids(seqs, pad, device)  # right padding, as _logits expects
            logits = forward_logits(
                model, BatchEncoding({"input_ids": ids, "attention_mask": attn})
            )
            last = attn.sum(1).to(logits.device) - 1
            probs = logits.float()[torch.arange(len(seqs), device=logits.device), last].softmax(-1)
            n_forward += len(seqs)
            grown += _expand(tokenizer, code, chunk, probs.double().cpu(), tol, found, unresolved)
        frontier = grown
    status0, _ = classify_tokens(tokenizer, code, b"")
    return ScriptMassResult(
        values=tuple(found),
        mean=float(np.mean(found)),
        mode="next_char",
        n_target_tokens=int((status0 == 1).sum()),
        unresolved=tuple(unresolved),
        n_forward=n_forward,
    )
