"""Teacher-forced LM scoring: perplexity, token KL and the shared scoring helpers.

* Scoring is teacher-forced with **right padding** (real tokens keep positions ``0..L-1``)
  and every pad position is masked out; totals are weighted by tokens, never averaged over
  batch means, so results do not depend on ``batch_size``.
* Every result keeps its **per-text values** next to the aggregate, so the experiment
  runner can run paired permutation tests on them.
* Reference models are compared on the **same weights** where possible: ``reference`` may be
  a second module or a zero-argument callable returning a context manager under which
  ``model`` *is* the reference (``peft_model.disable_adapter``, or :func:`detached`, which
  detaches an intervention), so no second copy of the base model is ever loaded.

* A model whose logits are not finite (NaN/inf) raises :class:`~mmie.NumericalError`
  naming the first block whose output is not finite, never a NaN result.

The private helpers here (input validation, right-padded batching, logits, target
log-probabilities, reference resolution, the non-finite check) are shared by :mod:`mmie.evaluation.language_metrics`,
:mod:`mmie.evaluation.mia` and :mod:`mmie.evaluation.leakage`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from transformers import BatchEncoding, PreTrainedTokenizerBase

from mmie.errors import IncompatibleModelError, NumericalError
from mmie.evaluation.mia import batch_scores
from mmie.models.activations import pooled_means
from mmie.models.blocks import get_block, get_blocks, input_device, num_layers
from mmie.models.hooks import HookSet
from mmie.models.logprobs import (
    batch_logprobs,
    forward_logits,
    right_padded_batches,
    token_logprobs,
)
from mmie.models.tokenization import collate_ids

__all__ = [
    "KLResult",
    "PerplexityResult",
    "continuation_nll",
    "perplexity",
    "token_kl",
]

logger = logging.getLogger(__name__)

Reference: TypeAlias = nn.Module | Callable[[], AbstractContextManager[Any]]
"""A reference model: a module, or a zero-argument callable returning a context manager
under which the evaluated model itself computes the reference (e.g.
``peft_model.disable_adapter``)."""


# ---------------------------------------------------------------------- input validation
def text_list(texts: object, name: str) -> list[str]:
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


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


@contextlib.contextmanager
def reference_model(reference: Reference, model: nn.Module) -> Iterator[nn.Module]:
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


# ---------------------------------------------------------------------- non-finite logits
def _hidden(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


@torch.no_grad()
def nonfinite_error(model: nn.Module, enc: BatchEncoding, what: str) -> NumericalError:
    """The error for a batch whose logits are not finite, naming the first transformer
    block whose output is not finite (one more forward pass with observing hooks; only run
    once something already failed)."""
    try:
        blocks = list(get_blocks(model))
    except (IncompatibleModelError, AttributeError, TypeError):
        blocks = []
    first: list[int] = []
    handles = []
    for i, block in enumerate(blocks):

        def observe(_module: nn.Module, _args: Any, output: Any, i: int = i) -> None:
            hidden = _hidden(output)
            if not first and hidden is not None and not bool(torch.isfinite(hidden).all()):
                first.append(i)

        handles.append(block.register_forward_hook(observe))
    try:
        forward_logits(model, enc, input_device(model))
    finally:
        for handle in handles:
            handle.remove()
    if first:
        where = f"the first hidden state that is not finite is the output of block {first[0]}" + (
            " (or the embeddings feeding it)" if first[0] == 0 else ""
        )
    elif blocks:
        where = "every block's output is finite, so the final norm or the LM head is not"
    else:
        where = "the blocks could not be located to say where"
    return NumericalError(
        f"{what}: the model's logits are not finite (NaN or inf); {where}. Its weights may be "
        "broken (a diverged training run, float16 overflow: try float32 or bfloat16)"
    )


def check_finite(values: Tensor, model: nn.Module, enc: BatchEncoding, what: str) -> None:
    """Raise :func:`nonfinite_error` when ``values`` (reduced from the logits) are not finite."""
    if not bool(torch.isfinite(values).all()):
        raise nonfinite_error(model, enc, what)


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
        NumericalError: the model's logits are not finite (the message names the first
            block whose output is not).
    """
    texts = text_list(texts, "texts")
    batch_size = positive_int(batch_size, "batch_size")
    nll = [0.0] * len(texts)
    counts = [0] * len(texts)
    device = input_device(model)
    for idx, enc in right_padded_batches(
        tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device
    ):
        logp, mask = batch_logprobs(forward_logits(model, enc), enc)
        _add_nll(logp, mask, idx, nll, counts, model=model, enc=enc)
    return _perplexity_result(nll, counts)


def _add_nll(
    logp: torch.Tensor,
    mask: torch.Tensor,
    idx: Sequence[int],
    nll: list[float],
    counts: list[int],
    *,
    model: nn.Module,
    enc: BatchEncoding,
) -> None:
    """Store one batch's per-text NLL sums and predicted-token counts at ``idx``; non-finite
    sums raise :class:`~mmie.errors.NumericalError` naming the first non-finite block."""
    nll_sums = (-logp).double().sum(1)
    check_finite(nll_sums, model, enc, "perplexity")
    sums = nll_sums.tolist()
    ns = mask.sum(1).tolist()
    for i, s, n in zip(idx, sums, ns):
        nll[i], counts[i] = float(s), int(n)


def _perplexity_result(nll: list[float], counts: list[int]) -> PerplexityResult:
    total = sum(counts)
    if total == 0:
        raise ValueError("texts contain no predicted token (every text is a single token)")
    return PerplexityResult(
        perplexity=math.exp(math.fsum(nll) / total), nll=tuple(nll), n_tokens=tuple(counts)
    )


@dataclass(frozen=True)
class ScoredTexts:
    """What one teacher-forced pass over a text set gives the metrics that read it.

    Attributes:
        perplexity: as :func:`perplexity` of the same texts and batching.
        loss_scores: ``[n_texts]`` float64, as :func:`mmie.mia_scores` with ``attack="loss"``
            (``None`` unless asked for).
        means: per layer, ``[n_texts, d_model]`` mean block output over each text's tokens
            (the pooling of :func:`mmie.collect_activations`, on these batches).
        n_forward: forward passes made.
    """

    perplexity: PerplexityResult
    loss_scores: npt.NDArray[np.float64] | None
    means: dict[int, torch.Tensor]
    n_forward: int


@torch.no_grad()
def score_texts(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = 1024,
    loss_scores: bool = False,
    layers: Sequence[int] = (),
    block_path: str | None = None,
) -> ScoredTexts:
    """Score ``texts`` once for perplexity, MIA loss scores and pooled hidden states.

    The batches and the forward passes are exactly those of :func:`perplexity`, and each
    reading applies its function's own per-batch rule to the same tensors, so the perplexity
    and the loss scores equal :func:`perplexity` and :func:`mmie.mia_scores` (``attack=
    "loss"``) bit for bit. The hidden states are read from the same passes by observers on
    the blocks ``layers`` (after any attached intervention, as
    :func:`mmie.collect_activations` reads them); that function batches in input order, so
    its means can differ from these in the last bits.

    Raises:
        ValueError: empty ``texts``, ``batch_size < 1``, a layer out of range, or a text
            with fewer than two tokens when ``loss_scores`` is asked for.
    """
    texts = text_list(texts, "texts")
    batch_size = positive_int(batch_size, "batch_size")
    wanted = sorted(set(int(layer) for layer in layers))
    n_blocks = num_layers(model, block_path) if wanted else 0
    for layer in wanted:
        if not 0 <= layer < n_blocks:
            raise ValueError(f"layer {layer} out of range [0, {n_blocks - 1}]")
    nll = [0.0] * len(texts)
    counts = [0] * len(texts)
    scores = np.zeros(len(texts), dtype=np.float64) if loss_scores else None
    means = {layer: torch.zeros(0) for layer in wanted}
    captured: dict[int, torch.Tensor] = {}
    hooks = HookSet("score_texts")
    device = input_device(model)
    n_forward = 0
    try:
        for layer in wanted:
            hooks.add_observer(
                get_block(model, layer, block_path), functools.partial(captured.__setitem__, layer)
            )
        for idx, enc in right_padded_batches(
            tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device
        ):
            captured.clear()
            logp, mask = batch_logprobs(forward_logits(model, enc), enc)
            n_forward += 1
            _add_nll(logp, mask, idx, nll, counts, model=model, enc=enc)
            if scores is not None:
                batch_scores(logp, mask, idx, texts, scores, attack="loss")
            if wanted:
                real = enc["attention_mask"].bool().cpu()
                rows = torch.tensor(idx)
                for layer in wanted:
                    pooled = pooled_means(captured[layer].detach().float().cpu(), real)
                    if means[layer].numel() == 0:
                        means[layer] = pooled.new_zeros(len(texts), pooled.shape[-1])
                    means[layer][rows] = pooled
    finally:
        hooks.remove()
        captured.clear()
    return ScoredTexts(
        perplexity=_perplexity_result(nll, counts),
        loss_scores=scores,
        means=means,
        n_forward=n_forward,
    )


@torch.no_grad()
def continuation_nll(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = 1024,
) -> PerplexityResult:
    """NLL of each continuation given its prompt: how surprising a model finds a text.

    The prompt is tokenised as it is fed to generation (with special tokens), the
    continuation without them, and the two are concatenated; only the continuation's tokens
    are scored. With the base model as ``model`` this is the fluency proxy of an arm's
    outputs: the base model's perplexity of what the arm wrote.

    Args:
        model: the scoring model.
        tokenizer: its tokenizer.
        prompts: the prompts.
        continuations: one continuation per prompt (empty ones score no token).
        batch_size: sequences per forward pass.
        max_length: longer prompt + continuation sequences are cut on the left of the prompt.

    Returns:
        A :class:`PerplexityResult` over the continuation tokens; ``n_tokens`` is 0 (and the
        item's mean NLL ``nan``) for an empty continuation. ``perplexity`` is ``nan`` when no
        continuation has a token.

    Raises:
        ValueError: the two sequences differ in length.
        NumericalError: the model's logits are not finite.
    """
    prompts = text_list(prompts, "prompts")
    continuations = text_list(continuations, "continuations")
    if len(prompts) != len(continuations):
        raise ValueError(
            f"prompts and continuations differ in length ({len(prompts)} vs {len(continuations)})"
        )
    batch_size = positive_int(batch_size, "batch_size")
    pad = tokenizer.pad_token_id
    if pad is None:
        raise ValueError("tokenizer has no pad token; call mmie.prepare_tokenizer(tokenizer)")
    head = tokenizer(list(prompts))["input_ids"]
    tail = tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
    seqs: list[tuple[list[int], int]] = []  # (ids, index where the continuation starts)
    for p_ids, c_ids in zip(head, tail):
        ids = list(p_ids) + list(c_ids)
        start = len(p_ids)
        if max_length is not None and len(ids) > max_length:
            cut = len(ids) - max_length
            ids, start = ids[cut:], max(1, start - cut)
        seqs.append((ids, start))
    nll = [0.0] * len(seqs)
    counts = [0] * len(seqs)
    device = input_device(model)
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i][0]), i))
    for first in range(0, len(order), batch_size):
        idx = order[first : first + batch_size]
        batch, attn = collate_ids([seqs[i][0] for i in idx], pad, device)
        logp, mask = token_logprobs(
            forward_logits(model, BatchEncoding({"input_ids": batch, "attention_mask": attn})),
            batch,
            attn,
        )
        keep = torch.zeros_like(mask)
        for row, i in enumerate(idx):
            start, length = seqs[i][1], len(seqs[i][0])
            keep[row, start - 1 : length - 1] = True  # position t predicts token t + 1
        keep &= mask
        nll_sums = (-logp.masked_fill(~keep, 0.0)).double().sum(1)
        check_finite(
            nll_sums,
            model,
            BatchEncoding({"input_ids": batch, "attention_mask": attn}),
            "continuation_nll",
        )
        sums = nll_sums.tolist()
        ns = keep.sum(1).tolist()
        for row, i in enumerate(idx):
            nll[i], counts[i] = float(sums[row]), int(ns[row])
    total = sum(counts)
    ppl = math.exp(math.fsum(nll) / total) if total else math.nan
    return PerplexityResult(perplexity=ppl, nll=tuple(nll), n_tokens=tuple(counts))


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
        NumericalError: the model's or the reference's logits are not finite (the message
            says which, and the first block whose output is not finite).
    """
    texts = text_list(texts, "texts")
    batch_size = positive_int(batch_size, "batch_size")
    values = [0.0] * len(texts)
    counts = [0] * len(texts)
    device = input_device(model)
    for idx, enc in right_padded_batches(
        tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device
    ):
        with reference_model(reference, model) as ref:
            ref_logits = forward_logits(ref, enc, input_device(ref))
        logits = forward_logits(model, enc)
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
        if not bool(torch.isfinite(kl).all()):
            if not bool(torch.isfinite(ref_logits.to(mask.device)[mask]).all()):
                with reference_model(reference, model) as ref:
                    raise nonfinite_error(ref, enc, "token_kl (the reference model)")
            raise nonfinite_error(model, enc, "token_kl (the evaluated model)")
        for i, s, n in zip(idx, kl.sum(1).tolist(), mask.sum(1).tolist()):
            values[i], counts[i] = s / n, int(n)
    total = sum(counts)
    kl_mean = math.fsum(v * n for v, n in zip(values, counts)) / total
    return KLResult(kl=kl_mean, values=tuple(values), n_tokens=tuple(counts))
