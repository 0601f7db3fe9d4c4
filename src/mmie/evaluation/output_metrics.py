"""Output metrics: what generated text is written in, whether it is degenerate, and sampled leakage.

Every metric here reads generated text only (no detector, no model internals) and keeps
its **per-text values** next to the aggregates. "Letters" are the characters that vote for
a script (:func:`mmie.script_of_char`: Unicode letters and combining marks); spaces,
digits in any script, punctuation, symbols and the danda ``।``/double danda ``॥``
(U+0964/U+0965) are script-neutral and never counted.

* :func:`target_share`: per text, the share of target-script letters among its letters
  (``nan`` for a text without letters, so an empty output is not mistaken for a clean one).
* :func:`script_distribution`: per text and pooled, the share of letters of each script.
* :func:`degeneracy`: per text, whether it is empty or a repetition loop.
* :func:`sampled_leakage`: ``n_samples`` sampled continuations per prompt, the fraction of
  them dominated by the target script and the worst-of-N target share.

The control arms of ``mmie.edits.controls`` are what these metrics exist to expose: a
script ban gives target share 0 with normal-looking text, forced EOS gives empty outputs
(``nan`` shares, ``empty`` flags), heavy noise gives degenerate loops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mmie._validation import finite_float, integer, positive_float, positive_int, text_list
from mmie.language.unicode import OTHER_SCRIPT, SCRIPTS, script_code, script_counts
from mmie.models.generation import generate

__all__ = [
    "Degeneracy",
    "SampledLeakage",
    "ScriptDistribution",
    "TargetShare",
    "degeneracy",
    "sampled_leakage",
    "script_distribution",
    "target_share",
]

ALL_SCRIPTS: tuple[str, ...] = (*SCRIPTS, OTHER_SCRIPT)
"""The scripts :func:`script_distribution` reports: ``SCRIPTS`` and ``"Zzzz"`` (any other)."""

MIN_RUN = 4
"""Shortest run of one repeated character that :func:`degeneracy` calls a loop."""


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def _mean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN when there are none (and no warning)."""
    kept = [v for v in values if not math.isnan(v)]
    return math.fsum(kept) / len(kept) if kept else math.nan


# ---------------------------------------------------------------------- target share
@dataclass(frozen=True)
class TargetShare:
    """Share of target-script letters in each text.

    Attributes:
        values: per text, ``n_target / n_letters`` in ``[0, 1]``, or ``nan`` when the text
            has no letters.
        any_target: per text, whether it holds at least one target-script letter.
        n_target: per text, its target-script letters.
        n_letters: per text, its letters (of any script).
        mean: mean of the non-NaN ``values`` (``nan`` if every text is letter-free).
        n_empty: texts without letters (the NaN ``values``).
        script: the target script's ISO 15924 code.
    """

    values: tuple[float, ...]
    any_target: tuple[bool, ...]
    n_target: tuple[int, ...]
    n_letters: tuple[int, ...]
    mean: float
    n_empty: int
    script: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (``nan`` becomes ``None``)."""
        out = asdict(self)
        out["values"] = [_json_float(v) for v in self.values]
        out["mean"] = _json_float(self.mean)
        return out


def target_share(texts: Sequence[str], script: str) -> TargetShare:
    """Per text, the share of its letters that are of the target script.

    ``share = n_target / n_letters`` where ``n_letters`` counts the characters that vote
    for a script (letters and combining marks of any script) and ``n_target`` those of
    ``script``; digits, punctuation, spaces and the danda do not count. A text with no
    letters (an empty continuation, only punctuation) gets ``nan`` rather than 0, so callers
    can tell empty output from output in another script.

    Args:
        texts: the texts (e.g. generated continuations).
        script: the target script: a code (``"Deva"``), a name (``"devanagari"``) or a
            language label (``"hi"``).

    Returns:
        A :class:`TargetShare`.

    Raises:
        TypeError: ``texts`` is a single string or holds non-strings; ``script`` is not a
            string.
        ValueError: ``texts`` is empty or ``script`` unknown.

    Example:
        >>> r = target_share(["मेरा office", "hello", "।।"], "hi")
        >>> r.values[:2], r.any_target, r.n_empty
        ((0.4, 0.0), (True, False, False), 1)
    """
    items = text_list(texts, "texts")
    code = script_code(script)
    counts = [script_counts(text) for text in items]
    n_letters = tuple(sum(c.values()) for c in counts)
    n_target = tuple(c.get(code, 0) for c in counts)
    values = tuple(t / n if n else math.nan for t, n in zip(n_target, n_letters))
    return TargetShare(
        values=values,
        any_target=tuple(t > 0 for t in n_target),
        n_target=n_target,
        n_letters=n_letters,
        mean=_mean(values),
        n_empty=sum(1 for n in n_letters if n == 0),
        script=code,
    )


# ---------------------------------------------------------------------- script distribution
@dataclass(frozen=True)
class ScriptDistribution:
    """Share of letters per script, per text and pooled over all texts.

    Attributes:
        scripts: the scripts, in column order: ``SCRIPTS`` then ``"Zzzz"`` (letters of any
            other script).
        counts: per text, its letters of each script (aligned with ``scripts``).
        shares: per text, ``counts / n_letters`` (sums to 1), or all ``nan`` for a text
            without letters.
        n_letters: per text, its letters.
        pooled: the shares over the letters of all texts together (each letter weighs the
            same, so long texts weigh more); all ``nan`` if no text has letters.
    """

    scripts: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]
    shares: tuple[tuple[float, ...], ...]
    n_letters: tuple[int, ...]
    pooled: tuple[float, ...]

    def share(self, script: str) -> tuple[float, ...]:
        """Per text, the share of ``script`` (a code, name or label; ``"Zzzz"`` for other).

        Raises:
            ValueError: unknown script.
        """
        code = script if script == OTHER_SCRIPT else script_code(script)
        column = self.scripts.index(code)
        return tuple(row[column] for row in self.shares)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: per-text and pooled ``{script: share}`` (``nan`` → ``None``)."""
        return {
            "scripts": list(self.scripts),
            "counts": [dict(zip(self.scripts, row)) for row in self.counts],
            "shares": [
                {s: _json_float(v) for s, v in zip(self.scripts, row)} for row in self.shares
            ],
            "n_letters": list(self.n_letters),
            "pooled": {s: _json_float(v) for s, v in zip(self.scripts, self.pooled)},
        }


def script_distribution(texts: Sequence[str]) -> ScriptDistribution:
    """Per text and pooled, the share of letters written in each script.

    Letters are counted as in :func:`target_share`; the columns are ``SCRIPTS``
    (Devanagari, Arabic, Gurmukhi, Bengali, Latin) and ``"Zzzz"`` for letters of any other
    script (Cyrillic, Han, ...). Script-neutral characters count nowhere.

    Args:
        texts: the texts.

    Returns:
        A :class:`ScriptDistribution`.

    Raises:
        TypeError: ``texts`` is a single string or holds non-strings.
        ValueError: ``texts`` is empty.

    Example:
        >>> d = script_distribution(["मेरा office", "ok"])
        >>> d.share("Deva"), d.share("Latn"), d.pooled[d.scripts.index("Latn")]
        ((0.4, 0.0), (0.6, 1.0), 0.6666666666666666)
    """
    items = text_list(texts, "texts")
    counts: list[tuple[int, ...]] = []
    for text in items:
        c = script_counts(text)
        counts.append(tuple(c.get(s, 0) for s in ALL_SCRIPTS))
    n_letters = tuple(sum(row) for row in counts)
    shares = tuple(
        tuple(k / n if n else math.nan for k in row) for row, n in zip(counts, n_letters)
    )
    total = sum(n_letters)
    pooled = tuple(
        sum(row[j] for row in counts) / total if total else math.nan
        for j in range(len(ALL_SCRIPTS))
    )
    return ScriptDistribution(
        scripts=ALL_SCRIPTS,
        counts=tuple(counts),
        shares=shares,
        n_letters=n_letters,
        pooled=pooled,
    )


# ---------------------------------------------------------------------- degeneracy
@dataclass(frozen=True)
class Degeneracy:
    """Which texts are empty or repetition loops (definitions in :func:`degeneracy`).

    Attributes:
        empty: per text, fewer than ``min_chars`` letters.
        repetitive: per text, a word n-gram loop or a single-character loop.
        degenerate: per text, ``empty or repetitive``.
        ngram_coverage: per text, the share of its words that lie in a word ``ngram``
            already seen earlier in the text (0 when none repeats).
        longest_run: per text, the longest run of one repeated non-space character.
        n_letters: per text, its letters.
        empty_rate: share of texts that are empty.
        repetitive_rate: share of texts that are repetitive.
        degenerate_rate: share of texts that are degenerate.
        min_chars: the parameter used.
        ngram: the parameter used.
        repeat_threshold: the parameter used.
    """

    empty: tuple[bool, ...]
    repetitive: tuple[bool, ...]
    degenerate: tuple[bool, ...]
    ngram_coverage: tuple[float, ...]
    longest_run: tuple[int, ...]
    n_letters: tuple[int, ...]
    empty_rate: float
    repetitive_rate: float
    degenerate_rate: float
    min_chars: int
    ngram: int
    repeat_threshold: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def _ngram_coverage(words: list[str], n: int) -> float:
    """Share of ``words`` inside an ``n``-gram that already occurred earlier in the text."""
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            covered[i : i + n] = [True] * n
        else:
            seen.add(gram)
    return sum(covered) / len(words) if words else 0.0


def _longest_run(text: str) -> tuple[int, int]:
    """``(longest run of one character, characters)`` of ``text`` without whitespace."""
    chars = "".join(text.split())
    best = run = 0
    prev = ""
    for ch in chars:
        run = run + 1 if ch == prev else 1
        prev = ch
        best = max(best, run)
    return best, len(chars)


def degeneracy(
    texts: Sequence[str],
    *,
    min_chars: int = 1,
    ngram: int = 3,
    repeat_threshold: float = 0.5,
) -> Degeneracy:
    """Flag empty outputs and repetition loops.

    Definitions, per text:

    * **empty**: it has fewer than ``min_chars`` letters (letters and combining marks of
      any script, as in :func:`target_share`): whitespace, digits, punctuation, symbols,
      the danda and U+FFFD do not count. ``""``, ``"   "``, ``"42."`` and ``"।।"`` are
      empty.
    * **repetitive**: either

      - a *word n-gram loop*: split on whitespace into ``n`` words; a word is *repeated*
        when it lies in a sequence of ``ngram`` consecutive words that already occurred
        earlier in the text (the first occurrence does not count, overlaps are allowed);
        the text loops when at least ``repeat_threshold`` of its ``n`` words are repeated
        (``ngram_coverage``). ``"the cat the cat the cat"`` has coverage 4/6 (everything
        after the first ``"the cat"``), a sentence said twice 1/2, a sentence said three
        times 2/3, a text of at most ``ngram`` words 0; or
      - a *single-character loop*: with whitespace removed, one character repeats at
        least ``MIN_RUN`` (4) times in a row and that run is at least ``repeat_threshold``
        of the remaining characters (``"aaaaaa"``, ``"।।।।"``, ``"hmmmmmm"``).

    * **degenerate**: empty or repetitive (a text can be both: ``"।।।।"``).

    Loops of a longer unit written without spaces (``"abababab"``) are not detected.

    Args:
        texts: the texts.
        min_chars: letters a text needs not to be empty (``>= 1``).
        ngram: words per n-gram of the loop test (``>= 1``).
        repeat_threshold: share of the words (or characters) a loop must cover, in
            ``(0, 1]``.

    Returns:
        A :class:`Degeneracy`.

    Raises:
        TypeError: ``texts`` is a single string or holds non-strings, or a parameter has
            the wrong type.
        ValueError: ``texts`` is empty or a parameter is out of range.

    Example:
        >>> d = degeneracy(["", "the cat the cat the cat", "aaaaaa", "A normal sentence."])
        >>> d.empty, d.repetitive
        ((True, False, False, False), (False, True, True, False))
    """
    items = text_list(texts, "texts")
    min_chars = positive_int(min_chars, "min_chars")
    ngram = positive_int(ngram, "ngram")
    repeat_threshold = finite_float(
        repeat_threshold, "repeat_threshold", low=0.0, high=1.0, low_open=True
    )
    empty: list[bool] = []
    repetitive: list[bool] = []
    coverage: list[float] = []
    runs: list[int] = []
    letters: list[int] = []
    for text in items:
        n = sum(script_counts(text).values())
        cov = _ngram_coverage(text.split(), ngram)
        run, n_chars = _longest_run(text)
        loop = run >= MIN_RUN and run >= repeat_threshold * n_chars
        empty.append(n < min_chars)
        repetitive.append(cov >= repeat_threshold or loop)
        coverage.append(cov)
        runs.append(run)
        letters.append(n)
    degenerate = [e or r for e, r in zip(empty, repetitive)]
    total = len(items)
    return Degeneracy(
        empty=tuple(empty),
        repetitive=tuple(repetitive),
        degenerate=tuple(degenerate),
        ngram_coverage=tuple(coverage),
        longest_run=tuple(runs),
        n_letters=tuple(letters),
        empty_rate=sum(empty) / total,
        repetitive_rate=sum(repetitive) / total,
        degenerate_rate=sum(degenerate) / total,
        min_chars=min_chars,
        ngram=ngram,
        repeat_threshold=repeat_threshold,
    )


# ---------------------------------------------------------------------- sampled leakage
@dataclass(frozen=True)
class SampledLeakage:
    """Target-script leakage over ``n_samples`` sampled continuations per prompt.

    Attributes:
        samples: per prompt, its ``n_samples`` continuations (in sampling order).
        shares: per prompt, the :func:`target_share` of each sample (``nan``: no letters).
        dominated_fraction: per prompt, the fraction of its samples whose target share is
            at least ``dominated`` (letter-free samples count as not dominated).
        worst_share: per prompt, the largest target share among its samples (worst of
            N); ``nan`` if no sample has letters.
        any_target_fraction: per prompt, the fraction of its samples holding at least one
            target-script letter.
        n_empty: per prompt, its samples without letters.
        mean_dominated: mean of ``dominated_fraction`` over prompts.
        mean_worst: mean of the non-NaN ``worst_share`` (``nan`` if none).
        script: the target script's ISO 15924 code.
        n_samples: samples per prompt.
        temperature: the sampling temperature.
        seed: the sampling seed.
        dominated: the domination threshold.
        max_new_tokens: tokens generated per sample at most.
    """

    samples: tuple[tuple[str, ...], ...]
    shares: tuple[tuple[float, ...], ...]
    dominated_fraction: tuple[float, ...]
    worst_share: tuple[float, ...]
    any_target_fraction: tuple[float, ...]
    n_empty: tuple[int, ...]
    mean_dominated: float
    mean_worst: float
    script: str
    n_samples: int
    temperature: float
    seed: int
    dominated: float
    max_new_tokens: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (``nan`` becomes ``None``)."""
        out = asdict(self)
        out["shares"] = [[_json_float(v) for v in row] for row in self.shares]
        out["worst_share"] = [_json_float(v) for v in self.worst_share]
        out["mean_worst"] = _json_float(self.mean_worst)
        return out


def sampled_leakage(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    script: str = "Deva",
    n_samples: int = 8,
    temperature: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    dominated: float = 0.5,
    logits_processors: Sequence[LogitsProcessor] = (),
    max_batch_tokens: int | None = None,
) -> SampledLeakage:
    """Sample ``n_samples`` continuations per prompt and measure how often they leak.

    Greedy decoding shows one continuation; a model that still knows the language may leak
    it only in some samples. This samples ``n_samples`` continuations per prompt with
    :func:`mmie.generate` (``do_sample=True``, ``num_return_sequences=n_samples``,
    ``temperature``, no top-k/top-p truncation, seeded with ``seed``) and reports, per
    prompt, the fraction of samples that are *target-dominated* (``target_share >=
    dominated``) and the worst-of-N target share. Sampling is reproducible for a given
    ``seed`` and ``batch_size`` (see :func:`mmie.generate`); the caller's global RNG state
    is restored afterwards. ``logits_processors`` (e.g. a control arm of
    ``mmie.edits.controls``) are applied at every step, their sessions opened per
    batch.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer, with a pad token.
        prompts: the prompts.
        script: the target script (code, name or language label).
        n_samples: continuations per prompt.
        temperature: sampling temperature (``> 0``).
        seed: the sampling seed.
        max_new_tokens: tokens per continuation at most.
        batch_size: prompts per ``generate`` call (each gives ``n_samples`` rows).
        dominated: target share at which a sample counts as target-dominated, in
            ``(0, 1]``.
        logits_processors: extra logits processors.
        max_batch_tokens: pack prompts by this token budget (counting ``n_samples`` rows
            per prompt; see :func:`mmie.generate`) instead of ``batch_size`` at a time. The
            samples then differ from those of ``batch_size`` batching (the RNG draws for
            whole batches), reproducibly for a given seed and budget; ``None`` (default,
            the study's setting) keeps them.

    Returns:
        A :class:`SampledLeakage`.

    Raises:
        TypeError: ``model`` is not a module, ``tokenizer`` not a tokenizer, ``prompts``
            not a sequence of strings, or a parameter of the wrong type.
        ValueError: empty ``prompts`` or a parameter out of range.

    Example:
        >>> leak = sampled_leakage(model, tok, ["नमस्ते, मेरा"], n_samples=4)  # doctest: +SKIP
        >>> leak.dominated_fraction, leak.worst_share  # doctest: +SKIP
        ((0.75,), (1.0,))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(
            f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}"
        )
    items = text_list(prompts, "prompts")
    code = script_code(script)
    n_samples = positive_int(n_samples, "n_samples")
    temperature = positive_float(temperature, "temperature")
    seed = integer(seed, "seed", minimum=0, maximum=2**32 - 1)
    max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
    batch_size = positive_int(batch_size, "batch_size")
    dominated = finite_float(dominated, "dominated", low=0.0, high=1.0, low_open=True)
    out = generate(
        model,
        tokenizer,
        items,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=True,
        seed=seed,
        temperature=temperature,
        num_return_sequences=n_samples,
        logits_processors=logits_processors,
        max_batch_tokens=max_batch_tokens,
    )
    groups = [[g] if isinstance(g, str) else list(g) for g in out]  # n_samples == 1: strings
    samples: list[tuple[str, ...]] = []
    shares: list[tuple[float, ...]] = []
    dominated_fraction: list[float] = []
    worst: list[float] = []
    any_fraction: list[float] = []
    n_empty: list[int] = []
    for group in groups:
        ts = target_share(group, code)
        samples.append(tuple(group))
        shares.append(ts.values)
        dominated_fraction.append(
            sum(1 for v in ts.values if not math.isnan(v) and v >= dominated) / n_samples
        )
        kept = [v for v in ts.values if not math.isnan(v)]
        worst.append(max(kept) if kept else math.nan)
        any_fraction.append(sum(ts.any_target) / n_samples)
        n_empty.append(ts.n_empty)
    return SampledLeakage(
        samples=tuple(samples),
        shares=tuple(shares),
        dominated_fraction=tuple(dominated_fraction),
        worst_share=tuple(worst),
        any_target_fraction=tuple(any_fraction),
        n_empty=tuple(n_empty),
        mean_dominated=math.fsum(dominated_fraction) / len(dominated_fraction),
        mean_worst=_mean(worst),
        script=code,
        n_samples=n_samples,
        temperature=temperature,
        seed=seed,
        dominated=dominated,
        max_new_tokens=max_new_tokens,
    )
