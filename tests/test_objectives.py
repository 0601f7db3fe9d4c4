"""Unlearning objectives against hand computations; padding never changes a loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmie.models.logprobs import predicted_token_mask, token_logprobs
from mmie.models.tokenization import tokenize
from mmie.testing import tiny_causal_lm
from mmie.unlearning.objectives import (
    ga_loss,
    graddiff_loss,
    kl_retain_loss,
    npo_loss,
    sequence_logprobs,
    token_nll,
)

VOCAB = 7


def _log_softmax(row: np.ndarray) -> np.ndarray:
    m = row.max()
    return row - m - math.log(np.exp(row - m).sum())


def _hand_seq_logprobs(logits, ids, mask):
    """Per sequence: sum over t with mask[t] and mask[t+1] of log softmax(logits[t])[ids[t+1]]."""
    logits, ids, mask = logits.double().numpy(), ids.numpy(), mask.numpy()
    out, counts = [], []
    for b in range(ids.shape[0]):
        total, n = 0.0, 0
        for t in range(ids.shape[1] - 1):
            if mask[b, t] and mask[b, t + 1]:
                total += _log_softmax(logits[b, t])[ids[b, t + 1]]
                n += 1
        out.append(total)
        counts.append(n)
    return np.array(out), np.array(counts)


def _hand_kl(logits, ref_logits, mask):
    logits, ref, mask = logits.double().numpy(), ref_logits.double().numpy(), mask.numpy()
    kls = []
    for b in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[b, t]:
                lq, lp = _log_softmax(logits[b, t]), _log_softmax(ref[b, t])
                kls.append(float((np.exp(lp) * (lp - lq)).sum()))
    return float(np.mean(kls))


def _batch(lengths, width, seed=0, pad_id=0, left=False):
    """Random logits/ids with the given real lengths, padded to ``width``."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(lengths), width, VOCAB, generator=g) * 2
    ids = torch.randint(0, VOCAB, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for b, n in enumerate(lengths):
        if left:
            mask[b, width - n :] = 1
        else:
            mask[b, :n] = 1
    ids = ids.masked_fill(mask == 0, pad_id)
    return logits, ids, mask


def _pad_more(logits, ids, mask, extra, seed=1, pad_id=0):
    """Append ``extra`` pad columns with arbitrary logits (right padding)."""
    g = torch.Generator().manual_seed(seed)
    b = ids.shape[0]
    logits2 = torch.cat([logits, torch.randn(b, extra, VOCAB, generator=g) * 5], dim=1)
    ids2 = torch.cat([ids, torch.full((b, extra), pad_id)], dim=1)
    mask2 = torch.cat([mask, torch.zeros(b, extra, dtype=torch.long)], dim=1)
    return logits2, ids2, mask2


def test_predicted_mask_needs_both_tokens_real():
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    assert predicted_token_mask(mask).tolist() == [[True, True, False], [False, True, True]]


def test_sequence_logprobs_and_nll_match_hand_computation():
    logits, ids, mask = _batch([5, 3, 1], width=6)
    seq, counts = _hand_seq_logprobs(logits, ids, mask)
    np.testing.assert_allclose(sequence_logprobs(logits, ids, mask).numpy(), seq, rtol=1e-6)
    assert seq[2] == 0.0
    assert counts[2] == 0
    expected_nll = -seq.sum() / counts.sum()
    assert float(token_nll(logits, ids, mask)) == pytest.approx(expected_nll, rel=1e-6)
    assert float(ga_loss(logits, ids, mask)) == pytest.approx(-expected_nll, rel=1e-6)
    logp, pred = token_logprobs(logits, ids, mask)
    assert logp.shape == (3, 5)
    assert pred.shape == (3, 5)
    assert bool((logp[~pred] == 0).all())


def test_graddiff_matches_hand_computation():
    f_logits, f_ids, f_mask = _batch([4, 2], width=5, seed=3)
    r_logits, r_ids, r_mask = _batch([3, 6, 2], width=6, seed=4)
    fs, fc = _hand_seq_logprobs(f_logits, f_ids, f_mask)
    rs, rc = _hand_seq_logprobs(r_logits, r_ids, r_mask)
    expected = fs.sum() / fc.sum() + 0.5 * (-rs.sum() / rc.sum())
    got = graddiff_loss(f_logits, f_ids, f_mask, r_logits, r_ids, r_mask, retain_nll_weight=0.5)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_npo_matches_hand_computation():
    logp = torch.tensor([-10.0, -3.0, -7.5])
    ref = torch.tensor([-9.0, -4.0, -7.5])
    beta = 0.1
    expected = np.mean(
        [-(2 / beta) * math.log(1 / (1 + math.exp(beta * (a - b)))) for a, b in zip(logp, ref)]
    )
    assert float(npo_loss(logp, ref, beta=beta)) == pytest.approx(expected, rel=1e-6)
    # At the reference every sequence contributes (2/β)·log 2.
    assert float(npo_loss(ref, ref, beta=0.5)) == pytest.approx(4 * math.log(2), rel=1e-6)


def test_npo_gradient_flows_only_to_model_logprobs():
    logp = torch.tensor([-2.0, -1.0], requires_grad=True)
    ref = torch.tensor([-2.5, -1.5], requires_grad=True)
    npo_loss(logp, ref).backward()
    assert logp.grad is not None
    assert bool((logp.grad > 0).all())
    assert ref.grad is None


def test_kl_matches_hand_computation_and_direction():
    logits, _ids, mask = _batch([4, 2, 5], width=5, seed=5)
    ref_logits = torch.randn(logits.shape, generator=torch.Generator().manual_seed(9))
    got = float(kl_retain_loss(logits, ref_logits, mask))
    assert got == pytest.approx(_hand_kl(logits, ref_logits, mask), rel=1e-5)
    # Direction KL(p_ref || p_θ): torch's kl_div(input=log p_θ, target=p_ref).
    m = mask.bool()
    independent = F.kl_div(
        F.log_softmax(logits[m], -1),
        F.log_softmax(ref_logits[m], -1),
        log_target=True,
        reduction="batchmean",
    )
    assert got == pytest.approx(float(independent), rel=1e-5)
    reverse = float(kl_retain_loss(ref_logits, logits, mask))
    assert abs(reverse - got) > 1e-3  # the direction matters for these logits
    assert float(kl_retain_loss(logits, logits.clone(), mask)) == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    extra=st.integers(1, 4),
    seed=st.integers(0, 1000),
    pad_id=st.integers(0, VOCAB - 1),
)
def test_padding_never_changes_any_loss(lengths, extra, seed, pad_id):
    if max(lengths) < 2:
        lengths = [*lengths, 2]
    width = max(lengths)
    base = _batch(lengths, width, seed=seed, pad_id=pad_id)
    padded = _pad_more(*base, extra, seed=seed + 1, pad_id=pad_id)
    ref_base = torch.randn(base[0].shape, generator=torch.Generator().manual_seed(seed + 2))
    ref_padded = torch.cat([ref_base, torch.randn(len(lengths), extra, VOCAB) * 3], dim=1)

    def losses(logits, ids, mask, ref):
        seq = sequence_logprobs(logits, ids, mask)
        return [
            *seq.tolist(),
            float(token_nll(logits, ids, mask)),
            float(ga_loss(logits, ids, mask)),
            float(graddiff_loss(logits, ids, mask, logits, ids, mask)),
            float(npo_loss(seq, sequence_logprobs(ref, ids, mask))),
            float(kl_retain_loss(logits, ref, mask)),
        ]

    a = losses(*base, ref_base)
    b = losses(*padded, ref_padded)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # Left padding (same real tokens, shifted right) gives the same values too.
    left = _batch(lengths, width + extra, seed=seed, pad_id=pad_id, left=True)
    logits_l, ids_l, mask_l = left
    ref_l = torch.zeros_like(logits_l)
    for row, n in enumerate(lengths):
        start = width + extra - n
        logits_l[row, start:] = base[0][row, :n]
        ids_l[row, start:] = base[1][row, :n]
        ref_l[row, start:] = ref_base[row, :n]
    np.testing.assert_allclose(a, losses(logits_l, ids_l, mask_l, ref_l), rtol=1e-6, atol=1e-6)


def test_padding_does_not_change_losses_of_a_real_model(tokenizer):
    model = tiny_causal_lm("llama", seed=1)
    texts = ["hello world", "नमस्ते", "abc"]
    enc = tokenize(tokenizer, texts, padding_side="right")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    extra = 5
    ids2 = torch.cat([ids, torch.full((3, extra), tokenizer.pad_token_id)], dim=1)
    mask2 = torch.cat([mask, torch.zeros(3, extra, dtype=torch.long)], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        logits2 = model(input_ids=ids2, attention_mask=mask2).logits
        ref = tiny_causal_lm("llama", seed=2)
        r1 = ref(input_ids=ids, attention_mask=mask).logits
        r2 = ref(input_ids=ids2, attention_mask=mask2).logits
    for fn in (sequence_logprobs, token_nll):
        torch.testing.assert_close(fn(logits, ids, mask), fn(logits2, ids2, mask2))
    torch.testing.assert_close(kl_retain_loss(logits, r1, mask), kl_retain_loss(logits2, r2, mask2))
    # Each text alone (no padding at all) gives the same sequence log-probabilities.
    alone = []
    for text in texts:
        e = tokenize(tokenizer, [text])
        with torch.no_grad():
            lg = model(**e).logits
        alone.append(float(sequence_logprobs(lg, e["input_ids"], e["attention_mask"])[0]))
    torch.testing.assert_close(sequence_logprobs(logits, ids, mask), torch.tensor(alone))


def test_losses_run_in_fp32_for_bf16_logits():
    logits, ids, mask = _batch([4, 3], width=4)
    low = logits.to(torch.bfloat16)
    assert token_nll(low, ids, mask).dtype == torch.float32
    assert kl_retain_loss(low, low, mask).dtype == torch.float32


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: token_nll(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3)), "logits"),
        (
            lambda: token_nll(
                torch.zeros(2, 3, 4), torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2)
            ),
            "input_ids",
        ),
        (
            lambda: token_nll(
                torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2)
            ),
            "attention_mask",
        ),
        (
            lambda: token_nll(
                torch.zeros(2, 3, 4),
                torch.zeros(2, 3, dtype=torch.long),
                torch.tensor([[1, 0, 0], [1, 0, 0]]),
            ),
            "no predicted token",
        ),
        (lambda: npo_loss(torch.zeros(2), torch.zeros(2), beta=0.0), "beta"),
        (lambda: npo_loss(torch.zeros(2), torch.zeros(3)), "logp_model"),
        (
            lambda: kl_retain_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.ones(1, 2)),
            "ref_logits",
        ),
        (
            lambda: kl_retain_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2)),
            "no real position",
        ),
    ],
)
def test_invalid_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
