"""Evaluation metrics: language extraction, script mass, perplexity, KL, MIA, probes, leakage.

Every number here means what its name says:

* Scoring is teacher-forced with **right padding** (real tokens keep positions ``0..L-1``)
  and every pad position is masked out; totals are weighted by tokens, never averaged over
  batch means, so results do not depend on ``batch_size``.
* Every metric keeps its **per-item values** (per generation, prompt, text or example) next
  to the aggregate, so the experiment runner can run paired permutation tests on them.
* Reference models are compared on the **same weights** where possible: ``reference`` may be
  a second module or a zero-argument callable returning a context manager under which
  ``model`` *is* the reference (``peft_model.disable_adapter``, or a function that detaches
  an intervention), so no second copy of the base model is ever loaded.

Membership-inference scores are oriented so that **higher means "more likely a member"**;
AUCs come from ranks (Mann-Whitney U, ties counted half).
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BatchEncoding, PreTrainedTokenizerBase

from mmie.hooks import BlockIntervention
from mmie.lid import (
    SCRIPT_LANGUAGE,
    Detection,
    Detector,
    ScriptDetector,
    script_counts,
    script_token_mask,
)
from mmie.models import input_device, tokenize

__all__ = [
    "ExtractionStrength",
    "KLResult",
    "LanguageLeakage",
    "MIAResult",
    "PerplexityResult",
    "ProbeResult",
    "ScriptMassResult",
    "cross_lingual_leakage",
    "detached",
    "extraction_strength",
    "membership_inference",
    "mia_auc",
    "mia_scores",
    "perplexity",
    "probe_auc",
    "script_mass",
    "token_kl",
]

logger = logging.getLogger(__name__)

Reference: TypeAlias = nn.Module | Callable[[], AbstractContextManager[Any]]
"""A reference model: a module, or a zero-argument callable returning a context manager
under which the evaluated model itself computes the reference (e.g.
``peft_model.disable_adapter``)."""

GenerateFn = Callable[[nn.Module, PreTrainedTokenizerBase, Sequence[str]], list[str]]
"""``generate(model, tokenizer, prompts) -> continuations`` (without the prompts)."""

MIAAttack = Literal["loss", "zlib", "min_k"]
_ATTACKS: tuple[str, ...] = ("loss", "zlib", "min_k")


# ---------------------------------------------------------------------- input validation
def _texts(texts: object, name: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a sequence of strings, not a single string")
    if not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(texts).__name__}")
    out = list(texts)
    if not out:
        raise ValueError(f"{name} must not be empty")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
    return out


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


# ---------------------------------------------------------------------- teacher-forced scoring
def _batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int | None,
    device: torch.device,
) -> Iterator[tuple[list[int], BatchEncoding]]:
    """Right-padded batches of ``texts``, longest first (less padding), with their indices."""
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenize(
            tokenizer,
            [texts[i] for i in idx],
            max_length=max_length,
            padding_side="right",
            device=device,
        )
        yield idx, enc


def _logits(model: nn.Module, enc: BatchEncoding, device: torch.device | None = None) -> Tensor:
    """``[batch, seq, vocab]`` logits of a right-padded batch (inputs moved to ``device``)."""
    if getattr(model, "training", False):
        logger.warning("scoring a model in training mode (dropout active); call model.eval()")
    ids, attn = enc["input_ids"], enc["attention_mask"]
    if device is not None:
        ids, attn = ids.to(device), attn.to(device)
    out = model(input_ids=ids, attention_mask=attn, use_cache=False)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits


def _target_logprobs(logits: Tensor, enc: BatchEncoding) -> tuple[Tensor, Tensor]:
    """Log-probabilities of each next real token and the mask of predicted positions.

    Returns:
        ``(logp [batch, seq-1], mask [batch, seq-1])`` in fp32; position ``t`` scores token
        ``t+1`` and is real iff token ``t+1`` is not padding (right padding).
    """
    ids = enc["input_ids"].to(logits.device)
    mask = enc["attention_mask"].to(logits.device)[:, 1:].bool()  # (batch, seq-1)
    logp = -F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2),  # (batch, vocab, seq-1)
        ids[:, 1:],
        reduction="none",
    )  # (batch, seq-1)
    return logp.masked_fill(~mask, 0.0), mask


@contextlib.contextmanager
def _reference_model(reference: Reference, model: nn.Module) -> Iterator[nn.Module]:
    """Yield the module that computes reference outputs (see :data:`Reference`)."""
    if isinstance(reference, nn.Module):
        yield reference
        return
    if not callable(reference):
        raise TypeError(
            "reference must be an nn.Module or a zero-argument callable returning a context "
            f"manager (e.g. peft_model.disable_adapter), got {type(reference).__name__}"
        )
    ctx = reference()
    if not (hasattr(ctx, "__enter__") and hasattr(ctx, "__exit__")):
        raise TypeError(
            "reference() must return a context manager under which model computes the "
            f"reference, got {type(ctx).__name__}"
        )
    with ctx:
        yield model


@contextlib.contextmanager
def detached(*items: BlockIntervention) -> Iterator[None]:
    """Temporarily remove attached interventions; re-attach them on exit (also on errors).

    Makes a hook-based arm its own reference without a second copy of the weights::

        kl = token_kl(model, lambda: detached(gate), tokenizer, texts)

    Interventions that were not attached are left alone. Re-attached interventions run after
    any other hook registered on the same block in the meantime.

    Args:
        *items: interventions (:class:`~mmie.BlockIntervention` subclasses).

    Yields:
        Nothing; inside the block the model runs without ``items``.
    """
    active = [item for item in items if item.attached]
    for item in active:
        item.remove()
    try:
        yield
    finally:
        for item in active:
            item.attach()


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
        detector_calls: number of texts passed to the detector, over all generations.
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
      scan stops at the onset: at most ``n`` detector calls (``O(n)``), on texts of total
      length ``O(n·m)`` in the worst case.
    * ``method="word"``: every word is labelled once (one ``detect_batch`` call of ``n``
      texts, ``O(m)`` characters in total) and running per-label letter counts stand in
      for the prefix label: each word adds its letter count (letters and combining marks of
      known scripts; digits, punctuation and the danda ``।`` count 0) spread over the labels
      of its ``Detection.scores`` when they form a distribution, else to its label; the
      prefix label is the tally's maximum, ties broken in the order hi, ur, pa, bn, en, und.
      For :class:`~mmie.lid.ScriptDetector` this is **exactly** its label of the prefix
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
        detector: a :class:`~mmie.lid.Detector` (``detect`` and ``detect_batch`` returning
            :class:`~mmie.lid.Detection`), e.g. :class:`~mmie.lid.ScriptDetector`.
        target: the target label (``"hi"``).
        method: ``"auto"``, ``"prefix"`` or ``"word"``.

    Returns:
        An :class:`ExtractionStrength` with per-generation values.

    Raises:
        TypeError: ``generations`` is not a sequence of strings or ``detector`` does not
            implement the detector protocol.
        ValueError: ``generations`` is empty or ``method`` is unknown.

    Example:
        >>> from mmie.lid import ScriptDetector
        >>> es = extraction_strength(["I think यह अच्छा है", "all English"], ScriptDetector())
        >>> es.onsets, es.values  # Devanagari letters outnumber Latin ones from word 4 on
        ((3, None), (0.4, 0.0))
    """
    gens = _texts(generations, "generations")
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
    values: list[float] = []
    onsets: list[int | None] = []
    n_words: list[int] = []
    for text in gens:
        words = text.split()
        onset = scan(words, counting, target) if words else None
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
        values: per prompt, the mass (in ``[0, 1]``): at the next-token position, or the
            mean over the text's predicted positions when teacher-forced.
        mean: mean of ``values``.
        mode: ``"next_token"`` or ``"teacher_forced"``.
        n_target_tokens: number of vocabulary entries in the script mask.
    """

    values: tuple[float, ...]
    mean: float
    mode: str
    n_target_tokens: int

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
    mode: Literal["next_token", "teacher_forced"] = "next_token",
    batch_size: int = 8,
    max_length: int | None = 1024,
) -> ScriptMassResult:
    """Detector-free language metric: probability mass on tokens of a script.

    ``next_token``: ``Σ_{v ∈ S} p(v | prompt)`` for the token after each prompt.
    ``teacher_forced``: the same mass at every predicted position ``t`` (``p(· | x_{≤t})``
    for ``t = 0..L-2``) of each text, averaged over its positions.

    The mass is computed as ``exp(logsumexp(logits[S]) − logsumexp(logits))`` in fp32.
    Model vocabulary rows beyond the tokenizer's (padding of the embedding matrix) are not
    in ``S``.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (with a pad token).
        prompts: prompts (``next_token``) or texts (``teacher_forced``).
        script: a script or label understood by :func:`mmie.lid.script_token_mask`
            (``"Deva"``, or ``"hi"`` for the same) or a precomputed boolean mask ``[vocab]``.
        mode: ``"next_token"`` or ``"teacher_forced"``.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).

    Returns:
        A :class:`ScriptMassResult`.

    Raises:
        ValueError: empty prompts, unknown mode, a mask that selects no token, or (teacher
            forced) a text with fewer than two tokens.
    """
    texts = _texts(prompts, "prompts")
    if mode not in ("next_token", "teacher_forced"):
        raise ValueError(f"mode must be 'next_token' or 'teacher_forced', got {mode!r}")
    batch_size = _positive_int(batch_size, "batch_size")
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
    for idx, enc in _batches(
        tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device
    ):
        logits = _logits(model, enc).float()  # (batch, seq, vocab)
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
        for i, v in zip(idx, item.tolist()):
            values[i] = float(v)
    return ScriptMassResult(
        values=tuple(values),
        mean=float(np.mean(values)),
        mode=mode,
        n_target_tokens=int(token_ids.numel()),
    )


# ---------------------------------------------------------------------- perplexity
@dataclass(frozen=True)
class PerplexityResult:
    """Token-weighted perplexity with per-text NLL sums, for paired tests.

    Attributes:
        perplexity: ``exp(Σ NLL / Σ tokens)`` over every predicted non-pad token.
        nll: per text, the summed NLL (nats) of its predicted tokens.
        n_tokens: per text, the number of predicted tokens (its length minus one).
    """

    perplexity: float
    nll: tuple[float, ...]
    n_tokens: tuple[int, ...]

    @property
    def mean_nll(self) -> float:
        """``Σ NLL / Σ tokens`` (nats per token), the log of :attr:`perplexity`."""
        return math.fsum(self.nll) / sum(self.n_tokens)

    @property
    def item_nll(self) -> tuple[float, ...]:
        """Per text, its mean NLL per token (``nan`` for texts with no predicted token)."""
        return tuple(s / n if n else math.nan for s, n in zip(self.nll, self.n_tokens))

    @property
    def item_perplexity(self) -> tuple[float, ...]:
        """Per text, ``exp`` of its mean NLL per token."""
        return tuple(math.exp(v) if not math.isnan(v) else math.nan for v in self.item_nll)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {**asdict(self), "mean_nll": self.mean_nll}


@torch.no_grad()
def perplexity(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = 1024,
) -> PerplexityResult:
    """Perplexity ``exp(Σ NLL / Σ tokens)`` over the non-pad predicted tokens of ``texts``.

    Batches are right-padded (so positions of real tokens do not depend on the batch) and
    pad positions are masked; the total is weighted by tokens, so the result is the same
    for any ``batch_size`` (up to float rounding) and equals scoring each text alone.

    Args:
        model: a causal LM in eval mode.
        tokenizer: its tokenizer (with a pad token).
        texts: the texts; each contributes ``len(tokens) - 1`` predicted tokens.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).

    Returns:
        A :class:`PerplexityResult` with per-text NLL sums and token counts.

    Raises:
        ValueError: empty ``texts``, ``batch_size < 1``, or no predicted token at all.
    """
    texts = _texts(texts, "texts")
    batch_size = _positive_int(batch_size, "batch_size")
    nll = [0.0] * len(texts)
    counts = [0] * len(texts)
    device = input_device(model)
    for idx, enc in _batches(
        tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device
    ):
        logp, mask = _target_logprobs(_logits(model, enc), enc)
        sums = (-logp).double().sum(1).tolist()
        ns = mask.sum(1).tolist()
        for i, s, n in zip(idx, sums, ns):
            nll[i], counts[i] = float(s), int(n)
    total = sum(counts)
    if total == 0:
        raise ValueError("texts contain no predicted token (every text is a single token)")
    return PerplexityResult(
        perplexity=math.exp(math.fsum(nll) / total), nll=tuple(nll), n_tokens=tuple(counts)
    )


# ---------------------------------------------------------------------- KL divergence
@dataclass(frozen=True)
class KLResult:
    """Token-mean ``KL(p_ref ‖ p_model)`` with per-text values.

    Attributes:
        kl: mean over every non-pad position of every text (nats).
        values: per text, the mean over its non-pad positions.
        n_tokens: per text, the number of positions.
    """

    kl: float
    values: tuple[float, ...]
    n_tokens: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


@torch.no_grad()
def token_kl(
    model: nn.Module,
    reference: Reference,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = 1024,
) -> KLResult:
    """Forward KL ``KL(p_ref ‖ p_model) = Σ_v p_ref(v) (log p_ref(v) − log p_model(v))``.

    Computed in fp32 at every non-pad position ``t`` of each text (the next-token
    distributions given ``x_{≤t}``), averaged over positions, weighted by tokens. The
    direction is the one of the retain-side KL term of unlearning objectives: how much
    the evaluated model lost of the reference's predictions where the reference is
    confident.

    Args:
        model: the evaluated model.
        reference: the reference: an ``nn.Module`` with the same vocabulary, or a
            zero-argument callable returning a context manager under which ``model`` is
            the reference, e.g. ``peft_model.disable_adapter`` (LoRA arms) or
            ``lambda: detached(gate)`` (hook-based arms, see :func:`detached`).
            The latter evaluates both distributions with one copy of the weights.
        tokenizer: the shared tokenizer.
        texts: the texts.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).

    Returns:
        A :class:`KLResult`.

    Raises:
        TypeError: ``reference`` is neither a module nor a context-manager factory.
        ValueError: empty ``texts`` or vocabularies of different sizes.
    """
    texts = _texts(texts, "texts")
    batch_size = _positive_int(batch_size, "batch_size")
    values = [0.0] * len(texts)
    counts = [0] * len(texts)
    device = input_device(model)
    for idx, enc in _batches(
        tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device
    ):
        with _reference_model(reference, model) as ref:
            ref_logits = _logits(ref, enc, input_device(ref))
        logits = _logits(model, enc)
        if ref_logits.shape != logits.shape:
            raise ValueError(
                f"reference logits {tuple(ref_logits.shape)} and model logits "
                f"{tuple(logits.shape)} differ; the models must share a vocabulary"
            )
        logp_ref = ref_logits.to(logits.device).float().log_softmax(-1)
        logp = logits.float().log_softmax(-1)
        kl = (logp_ref.exp() * (logp_ref - logp)).sum(-1)  # (batch, seq)
        mask = enc["attention_mask"].to(kl.device).bool()
        kl = kl.masked_fill(~mask, 0.0).double()
        for i, s, n in zip(idx, kl.sum(1).tolist(), mask.sum(1).tolist()):
            values[i], counts[i] = s / n, int(n)
    total = sum(counts)
    kl_mean = math.fsum(v * n for v, n in zip(values, counts)) / total
    return KLResult(kl=kl_mean, values=tuple(values), n_tokens=tuple(counts))


# ---------------------------------------------------------------------- membership inference
@torch.no_grad()
def mia_scores(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    attack: MIAAttack = "loss",
    k: float = 0.4,
    batch_size: int = 8,
    max_length: int | None = 1024,
) -> npt.NDArray[np.float64]:
    """Per-example membership scores; **higher means more likely a training member**.

    * ``loss`` (Yeom et al. 2018): ``−mean NLL`` of the text's predicted tokens.
    * ``zlib`` (Carlini et al. 2021): ``−mean NLL / len(zlib.compress(text))`` (bytes,
      UTF-8): texts that are easy for the model but hard for zlib look memorised.
    * ``min_k`` (Min-K% Prob, Shi et al. 2024): mean of the lowest ``max(1, ⌊k·T⌋)``
      token log-probabilities of the ``T`` predicted tokens.

    Scores are per example (never per batch), pad positions excluded.

    Args:
        model: the evaluated model.
        tokenizer: its tokenizer.
        texts: the texts, each with at least two tokens.
        attack: ``"loss"``, ``"zlib"`` or ``"min_k"``.
        k: the fraction of tokens for ``min_k`` (in ``(0, 1]``).
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).

    Returns:
        ``[n_texts]`` float64 scores in input order.

    Raises:
        ValueError: empty texts, unknown attack, ``k`` outside ``(0, 1]``, or a text with
            fewer than two tokens.
    """
    texts = _texts(texts, "texts")
    if attack not in _ATTACKS:
        raise ValueError(f"attack must be one of {_ATTACKS}, got {attack!r}")
    if not 0.0 < float(k) <= 1.0:
        raise ValueError(f"k must be in (0, 1], got {k!r}")
    batch_size = _positive_int(batch_size, "batch_size")
    scores = np.zeros(len(texts), dtype=np.float64)
    device = input_device(model)
    for idx, enc in _batches(
        tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device
    ):
        logp, mask = _target_logprobs(_logits(model, enc), enc)
        for row, i in enumerate(idx):
            lp = logp[row][mask[row]].double()  # (T,)
            if lp.numel() == 0:
                raise ValueError(f"texts[{i}] has fewer than two tokens; it cannot be scored")
            if attack == "min_k":
                n_low = max(1, int(k * lp.numel()))
                scores[i] = float(lp.sort().values[:n_low].mean())
            elif attack == "zlib":
                scores[i] = float(lp.mean()) / len(zlib.compress(texts[i].encode("utf-8")))
            else:
                scores[i] = float(lp.mean())
    return scores


@dataclass(frozen=True)
class MIAResult:
    """Membership-inference AUC and TPR at a low FPR.

    Attributes:
        auc: ``P(score(member) > score(non-member)) + ½ P(tie)`` (0.5 = chance; for an
            unlearned model, close to 0.5 or below is the goal).
        tpr_at_fpr: the largest true-positive rate of a threshold ``score ≥ τ`` whose
            false-positive rate is at most ``fpr``.
        fpr: the FPR budget (0.01). With fewer than ``1/fpr`` non-members it means "no
            false positive at all".
        n_members: number of member scores.
        n_nonmembers: number of non-member scores.
        member_scores: per-member scores (empty when built from :func:`mia_auc`).
        nonmember_scores: per-non-member scores (likewise).
        attack: the attack name, if known.
    """

    auc: float
    tpr_at_fpr: float
    fpr: float
    n_members: int
    n_nonmembers: int
    member_scores: tuple[float, ...] = ()
    nonmember_scores: tuple[float, ...] = ()
    attack: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def _scores_1d(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold finite numbers")
    return arr


def _rank_auc(pos: npt.NDArray[np.float64], neg: npt.NDArray[np.float64]) -> float:
    """AUC = U / (n_pos n_neg) with average ranks for ties (Mann-Whitney)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks, ties counted half
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def mia_auc(
    member_scores: npt.ArrayLike,
    nonmember_scores: npt.ArrayLike,
    *,
    fpr: float = 0.01,
) -> MIAResult:
    """AUC (from ranks) and TPR at ``fpr`` of per-example membership scores.

    Members are the forget texts; non-members must be held-out texts of the same language
    and distribution (never retain texts of another language, which any model separates).

    Args:
        member_scores: ``[n_members]`` scores of members (higher = more member-like).
        nonmember_scores: ``[n_nonmembers]`` scores of non-members.
        fpr: false-positive-rate budget for the TPR (in ``(0, 1)``).

    Returns:
        An :class:`MIAResult` (``member_scores``/``nonmember_scores`` left empty).

    Raises:
        ValueError: empty or non-finite scores, or ``fpr`` outside ``(0, 1)``.

    Example:
        >>> r = mia_auc([0.9, 0.8, 0.4], [0.1, 0.5, 0.3])
        >>> round(r.auc, 4)
        0.8889
    """
    pos = _scores_1d(member_scores, "member_scores")
    neg = _scores_1d(nonmember_scores, "nonmember_scores")
    if not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr!r}")
    # Thresholds: every distinct score (predict member iff score >= τ) plus +inf (nothing).
    thresholds = np.unique(np.concatenate([pos, neg]))
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    fprs = (neg.size - np.searchsorted(neg_sorted, thresholds, side="left")) / neg.size
    tprs = (pos.size - np.searchsorted(pos_sorted, thresholds, side="left")) / pos.size
    ok = fprs <= fpr + 1e-12
    tpr = float(tprs[ok].max()) if ok.any() else 0.0
    return MIAResult(
        auc=_rank_auc(pos, neg),
        tpr_at_fpr=tpr,
        fpr=float(fpr),
        n_members=int(pos.size),
        n_nonmembers=int(neg.size),
    )


def membership_inference(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    members: Sequence[str],
    nonmembers: Sequence[str],
    *,
    attack: MIAAttack = "loss",
    k: float = 0.4,
    fpr: float = 0.01,
    batch_size: int = 8,
    max_length: int | None = 1024,
) -> MIAResult:
    """Score members and non-members with one attack and summarise with :func:`mia_auc`.

    Args:
        model: the evaluated model.
        tokenizer: its tokenizer.
        members: the forget texts.
        nonmembers: held-out texts of the same language (not retain texts); must not share
            a text with ``members``.
        attack: ``"loss"``, ``"zlib"`` or ``"min_k"`` (see :func:`mia_scores`).
        k: fraction for ``min_k``.
        fpr: FPR budget for the TPR.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (with a warning).

    Returns:
        An :class:`MIAResult` including the per-example scores.

    Raises:
        ValueError: a text is both a member and a non-member, or any error of
            :func:`mia_scores` / :func:`mia_auc`.
    """
    mem = _texts(members, "members")
    non = _texts(nonmembers, "nonmembers")
    overlap = set(mem) & set(non)
    if overlap:
        raise ValueError(
            f"{len(overlap)} text(s) are both members and non-members, e.g. "
            f"{next(iter(overlap))[:60]!r}"
        )
    kw: dict[str, Any] = {
        "attack": attack,
        "k": k,
        "batch_size": batch_size,
        "max_length": max_length,
    }
    s_mem = mia_scores(model, tokenizer, mem, **kw)
    s_non = mia_scores(model, tokenizer, non, **kw)
    r = mia_auc(s_mem, s_non, fpr=fpr)
    return MIAResult(
        auc=r.auc,
        tpr_at_fpr=r.tpr_at_fpr,
        fpr=r.fpr,
        n_members=r.n_members,
        n_nonmembers=r.n_nonmembers,
        member_scores=tuple(s_mem.tolist()),
        nonmember_scores=tuple(s_non.tolist()),
        attack=attack,
    )


# ---------------------------------------------------------------------- linear probes
@dataclass(frozen=True)
class ProbeResult:
    """Held-out AUC of a logistic-regression probe, with a shuffled-label control.

    Attributes:
        auc: test AUC of the probe on the true labels.
        control_auc: test AUC of the same pipeline trained on shuffled labels (``nan``
            without a control); near 0.5 unless the probe memorises.
        selectivity: ``auc − control_auc`` (Hewitt & Liang 2019).
        n_train: training examples.
        n_test: test examples.
    """

    auc: float
    control_auc: float
    selectivity: float
    n_train: int
    n_test: int

    def relative_to(self, base: ProbeResult) -> float:
        """``auc − base.auc``: change versus the same probe on the base model's activations.

        Erasing a language should bring this towards ``0.5 − base.auc`` (chance); a probe
        that separates Hindi from English on both models says nothing about erasure.
        """
        return self.auc - base.auc

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def _fit_logistic(x: Tensor, y: Tensor, *, l2: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """L2-regularised logistic regression by L-BFGS from zero (deterministic)."""
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _probe_auc_split(
    x: Tensor, y: Tensor, train: Tensor, test: Tensor, *, l2: float, max_iter: int
) -> float:
    xtr = x[train]
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)  # standardise with train statistics
    w, b = _fit_logistic((xtr - mu) / sd, y[train], l2=l2, max_iter=max_iter)
    s = (((x[test] - mu) / sd) @ w + b).numpy()
    yt = y[test].numpy().astype(bool)
    return _rank_auc(s[yt], s[~yt])


def probe_auc(
    acts_pos: Tensor,
    acts_neg: Tensor,
    *,
    control: bool = True,
    seed: int = 0,
    test_fraction: float = 0.3,
    l2: float = 1e-2,
    max_iter: int = 100,
) -> ProbeResult:
    """Held-out AUC of a logistic-regression probe separating two sets of activations.

    The data are split per class (stratified) with ``numpy.random.default_rng(seed)``;
    features are standardised with training statistics; the probe is L2-regularised
    logistic regression fitted by L-BFGS in float64 torch (no scikit-learn). The control
    task refits the same pipeline on labels shuffled with the same generator and the same
    split, so ``selectivity = auc − control_auc`` discounts what a probe of this capacity
    gets from memorising.

    Use it on mean-pooled activations (``Activations.means``, pad positions excluded). An
    absolute AUC says little about erasure: Hindi and English activations are separable on
    any model because their tokens differ. Run the same probe (same texts, same seed) on the
    base model's and on the arm's activations and report the change with
    :meth:`ProbeResult.relative_to`, next to the control; erasure at a layer shows as a
    drop of ``auc`` towards ``control_auc``.

    Args:
        acts_pos: ``[n_pos, d_model]`` activations of the positive class.
        acts_neg: ``[n_neg, d_model]`` activations of the negative class.
        control: also run the shuffled-label control.
        seed: seed of the split and the shuffle.
        test_fraction: fraction of each class held out (at least one per class).
        l2: L2 penalty on the weights (on standardised features).
        max_iter: L-BFGS iterations.

    Returns:
        A :class:`ProbeResult`.

    Raises:
        ValueError: not 2-D, different widths, fewer than 2 examples per class, or
            ``test_fraction`` outside ``(0, 1)``.
    """
    if acts_pos.ndim != 2 or acts_neg.ndim != 2 or acts_pos.shape[1] != acts_neg.shape[1]:
        raise ValueError(
            "acts_pos and acts_neg must be [n, d_model] with the same d_model, got "
            f"{tuple(acts_pos.shape)} and {tuple(acts_neg.shape)}"
        )
    if min(acts_pos.shape[0], acts_neg.shape[0]) < 2:
        raise ValueError("probe_auc needs at least 2 examples per class")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    x = torch.cat([acts_pos, acts_neg]).detach().double().cpu()  # (n, d_model)
    n_pos, n = acts_pos.shape[0], x.shape[0]
    y = torch.cat([torch.ones(n_pos), torch.zeros(n - n_pos)]).double()
    test_idx: list[int] = []
    for members in (np.arange(n_pos), np.arange(n_pos, n)):
        n_test = min(len(members) - 1, max(1, round(test_fraction * len(members))))
        test_idx.extend(rng.permutation(members)[:n_test].tolist())
    is_test = torch.zeros(n, dtype=torch.bool)
    is_test[test_idx] = True
    train, test = (~is_test).nonzero().flatten(), is_test.nonzero().flatten()
    auc = _probe_auc_split(x, y, train, test, l2=l2, max_iter=max_iter)
    control_auc = math.nan
    if control:
        # Shuffle labels within the training and within the test split: the labels are
        # then independent of x, and each split keeps its class counts (both classes in test).
        y_shuffled = y.clone()
        for part in (train, test):
            y_shuffled[part] = y[part][torch.from_numpy(rng.permutation(part.numel()))]
        control_auc = _probe_auc_split(x, y_shuffled, train, test, l2=l2, max_iter=max_iter)
    return ProbeResult(
        auc=auc,
        control_auc=control_auc,
        selectivity=auc - control_auc,
        n_train=int(train.numel()),
        n_test=int(test.numel()),
    )


# ---------------------------------------------------------------------- cross-lingual leakage
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
    Bengali is script-neutral for :class:`mmie.lid.ScriptDetector`, so those languages do
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
        from mmie.generation import generate as greedy

        out = greedy(m, tok, p, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return [str(t) for t in out]

    gen = generate or default_generate
    results: dict[str, LanguageLeakage] = {}
    for lang, lang_prompts in prompts.items():
        lang_prompts = _texts(lang_prompts, f"prompts[{lang!r}]")
        lang_texts = _texts(texts[lang], f"texts[{lang!r}]")
        es_model = extraction_strength(
            gen(model, tokenizer, lang_prompts), detector, target, method=method
        )
        ppl_model = perplexity(
            model, tokenizer, lang_texts, batch_size=batch_size, max_length=max_length
        )
        with _reference_model(reference, model) as ref:
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
