"""mmie.generate and DynamicGatingProcessor on tiny fp32 models, checked against references
written here (a pure-Python state machine, hand-sliced token tails, manual cached forwards)."""

from __future__ import annotations

import functools
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import Tensor
from transformers import LogitsProcessor, PreTrainedTokenizerFast

import mmie
from mmie.edits.controls import ForcedEOSProcessor, ScriptBanProcessor
from mmie.edits.dynamic_gating import DynamicGatingProcessor
from mmie.edits.sae_gate import SAEGate
from mmie.errors import InterventionError, TruncationWarning
from mmie.language.detectors import Detection
from mmie.models.generation import generate
from mmie.models.hooks import assert_no_mmie_hooks
from mmie.sae.config import SAEConfig
from mmie.sae.model import SparseAutoencoder
from mmie.testing import tiny_causal_lm

D = 32
HINDI = ["नमस्ते दुनिया, आप", "यह एक", "क", "मेरा नाम राम है और"]
ENGLISH = ["Hello there, how are", "The cat sat on the", "Good morning", "a"]
MIXED = [HINDI[0], ENGLISH[0], HINDI[2], ENGLISH[2], HINDI[1], ENGLISH[3], HINDI[3], ENGLISH[1]]

# ----------------------------------------------------------------------------- fixtures


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def devanagari_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE (ids 0-255 bytes, 256 pad, 257 bos, 258 eos) plus merges that make every
    character of the Devanagari block U+0900-U+097F one token (ids 261-388), like a real
    byte-level BPE that learned whole-character merges."""
    b2u = _bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    for special in ("<pad>", "<s>", "</s>"):
        vocab[special] = len(vocab)
    merges = []
    for second in (0xA4, 0xA5):
        merges.append((b2u[0xE0], b2u[second]))
        vocab[b2u[0xE0] + b2u[second]] = len(vocab)
    for second in (0xA4, 0xA5):
        for third in range(0x80, 0xC0):
            pair = (b2u[0xE0] + b2u[second], b2u[third])
            merges.append(pair)
            vocab[pair[0] + pair[1]] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<pad>", "<s>", "</s>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
    )


TOK = devanagari_tokenizer()
V = len(TOK)
SPECIAL = {256, 257, 258}
# Independent definition of the target tokens: Devanagari letters and marks (not the danda,
# digits or other punctuation of the block).
DEV_IDS = [
    i
    for i in range(V)
    if any(0x900 <= ord(c) <= 0x97F and unicodedata.category(c)[0] in "LM" for c in TOK.decode([i]))
]
LAT_IDS = [i for i in range(V) if TOK.decode([i]).isascii() and TOK.decode([i]).isalpha()]
DEV_MASK = torch.zeros(V, dtype=torch.bool)
DEV_MASK[DEV_IDS] = True


def drifting_model() -> tuple[torch.nn.Module, Tensor]:
    """A tiny Llama that continues Devanagari with Devanagari and Latin with Latin.

    Devanagari tokens share an embedding direction ``u`` and their output rows read ``u``;
    Latin letters do the same with ``v ⟂ u``; a few Latin letters also carry ``u``, so some
    English continuations drift into Devanagari. Returns the model and ``u``.
    """
    model = tiny_causal_lm("llama", vocab_size=V, hidden_size=D, seed=0)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(D, generator=g)
    u /= u.norm()
    v = torch.randn(D, generator=g)
    v -= (v @ u) * u
    v /= v.norm()
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        out = model.get_output_embeddings().weight
        emb.copy_(torch.randn(emb.shape, generator=g) * 0.3)
        out.copy_(torch.randn(out.shape, generator=g) * 0.3)
        emb[DEV_IDS] += u
        emb[LAT_IDS] += v
        out[DEV_IDS] += 0.3 * u
        out[LAT_IDS] += 0.3 * v
        emb[LAT_IDS[:5]] += 0.8 * u
    return model, u


MODEL, U = drifting_model()


def language_sae() -> SparseAutoencoder:
    """A ReLU SAE whose latent 0 reads and writes the Devanagari direction ``u``."""
    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=D, d_sae=4), seed=0)
    with torch.no_grad():
        sae.W_dec[0] = U
        sae.W_enc[:, 0] = U
    return sae


SAE = language_sae()


def make_gate(alpha: float = 1.0) -> SAEGate:
    return SAEGate(MODEL, {1: SAE}, {1: [0]}, alpha=alpha)


class FakeGate:
    """Records what the processor writes (a stand-in for SAEGate in state-machine tests)."""

    def __init__(self) -> None:
        self.alpha = 0.5
        self.attached = False
        self.seq: Tensor | None = None
        self.log: list[Tensor] = []

    def attach(self) -> FakeGate:
        self.attached = True
        return self

    def remove(self) -> None:
        self.attached = False
        self.seq = None

    def set_sequence_alpha(self, alpha: Tensor, *, check: bool = True) -> None:
        self.seq = alpha.clone()
        self.log.append(self.seq)

    def clear_sequence_alpha(self) -> None:
        self.seq = None


class Recorder(LogitsProcessor):
    """Keeps a copy of every (input_ids, scores) it sees."""

    def __init__(self) -> None:
        self.ids: list[Tensor] = []
        self.scores: list[Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: Tensor) -> Tensor:
        self.ids.append(input_ids.clone())
        self.scores.append(scores.clone())
        return scores


class Raiser(LogitsProcessor):
    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, input_ids: torch.LongTensor, scores: Tensor) -> Tensor:
        self.calls += 1
        if self.calls > self.at:
            raise RuntimeError("boom")
        return scores


# ----------------------------------------------------------------------------- reference


def reference_alphas(
    new_tokens: Sequence[Sequence[int] | None],
    *,
    rows: int,
    group: int,
    target: set[int],
    min_tokens: int,
    threshold: float,
    sticky: bool,
    base: float,
    high: float,
) -> list[list[float]]:
    """Alpha per step per row; ``new_tokens[t]`` is the row tokens generated before call t."""
    groups = rows // group
    n_target, n_counted, is_high = [0] * groups, [0] * groups, [False] * groups
    out = []
    for toks in new_tokens:
        if toks is not None:
            for r, tok in enumerate(toks):
                n_target[r // group] += tok in target
                n_counted[r // group] += tok not in SPECIAL
        flag = [
            n_target[i] >= min_tokens and n_target[i] >= Fraction(str(threshold)) * n_counted[i]
            for i in range(groups)
        ]
        is_high = [a or b for a, b in zip(is_high, flag)] if sticky else flag
        out.append([high if is_high[r // group] else base for r in range(rows)])
    return out


def run_steps(
    proc: DynamicGatingProcessor,
    prompt: Tensor,
    steps: list[list[int]],
    permute: Callable[[Tensor, int], Tensor] | None = None,
    scores_fn: Callable[[int], Tensor] | None = None,
) -> list[Tensor]:
    """Call ``proc`` like generate() would: call t sees the prompt plus steps[:t]."""
    rows = prompt.shape[0]
    ids = prompt
    outs = []
    for t in range(len(steps) + 1):
        if t > 0:
            ids = torch.cat([ids, torch.tensor(steps[t - 1]).view(rows, 1)], dim=1)
            if permute is not None:
                ids = permute(ids, t)
        scores = scores_fn(t) if scores_fn else torch.zeros(rows, V)
        outs.append(proc(ids, scores))
    return outs


TOKEN_POOL = [*DEV_IDS[:6], *LAT_IDS[:4], 32, 33, 256, 258, DEV_IDS[-1]]

# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"base_alpha": -0.1}, ValueError, r"base_alpha must be a float in \[0, 1\]"),
        ({"high_alpha": 1.5}, ValueError, r"high_alpha must be a float in \[0, 1\]"),
        ({"base_alpha": 0.8, "high_alpha": 0.2}, ValueError, "swap the two values"),
        ({"base_alpha": True}, TypeError, "base_alpha must be a float"),
        ({"threshold": 2.0}, ValueError, r"threshold must be a float in \[0, 1\]"),
        ({"min_tokens": 0}, ValueError, "min_tokens must be an int >= 1"),
        ({"min_tokens": 1.5}, TypeError, "min_tokens must be an int"),
        ({"detect_every": 0}, ValueError, "detect_every must be an int >= 1"),
        ({"penalty": -1.0}, ValueError, "penalty must be >= 0"),
        ({"penalty": "big"}, TypeError, "penalty must be a float"),
        ({"penalty": 2.0, "script_blind": True}, ValueError, "drop penalty"),
        ({"target_script": "klingon"}, ValueError, "target_script must be one of"),
        ({"target_script": 3}, TypeError, "target_script must be a string"),
        ({"detector": object()}, TypeError, "detect"),
        ({"target_mask": torch.zeros(V)}, TypeError, "boolean"),
        ({"target_mask": torch.zeros(2, V, dtype=torch.bool)}, ValueError, r"\[vocab\]"),
    ],
)
def test_constructor_validates_and_suggests_fix(kwargs, error, match):
    with pytest.raises(error, match=match):
        DynamicGatingProcessor(FakeGate(), TOK, **kwargs)


def test_constructor_rejects_bad_gate_and_tokenizer():
    with pytest.raises(TypeError, match="set_sequence_alpha"):
        DynamicGatingProcessor(object(), TOK)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tokenizer"):
        DynamicGatingProcessor(FakeGate(), "gpt2")  # type: ignore[arg-type]


def test_script_names_and_labels_are_equivalent():
    for name in ("devanagari", "Deva", "hi"):
        proc = DynamicGatingProcessor(FakeGate(), TOK, target_script=name)
        assert proc.target_script == "Deva"
        assert proc.target_language == "hi"


def test_zero_penalty_means_no_penalty():
    proc = DynamicGatingProcessor(FakeGate(), TOK, penalty=0.0, script_blind=True)
    assert proc.penalty is None


def test_call_outside_session_raises():
    proc = DynamicGatingProcessor(FakeGate(), TOK)
    with pytest.raises(InterventionError, match="session"):
        proc(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, V))


def test_rows_must_be_multiple_of_rows_per_prompt():
    proc = DynamicGatingProcessor(FakeGate(), TOK, target_mask=DEV_MASK)
    with proc.session(rows_per_prompt=2), pytest.raises(ValueError, match="rows_per_prompt"):
        proc(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, V))


def test_nested_session_raises():
    proc = DynamicGatingProcessor(FakeGate(), TOK)
    with proc.session(), pytest.raises(InterventionError, match="already"), proc.session():
        pass


def test_default_table_uses_lid_mask():
    from mmie.language.unicode import script_token_mask

    proc = DynamicGatingProcessor(FakeGate(), TOK)
    with proc.session():
        proc(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, V + 7))  # padded vocab
    state = proc._state
    assert state is not None
    table = state.step_table[:, 0].bool()  # (vocab,) the target indicator
    assert table.shape == (V + 7,)
    assert torch.equal(table[:V], script_token_mask(TOK, "Deva") & ~_special_mask())
    assert not state.step_table[V:].any()
    assert torch.equal(state.target_ids, table.nonzero().view(-1))
    # letters are in, danda / digits / ASCII are out
    ka, danda, five = (TOK("क").input_ids[0], TOK("।").input_ids[0], TOK("५").input_ids[0])
    assert table[ka]
    assert not table[danda]
    assert not table[five]
    assert not table[LAT_IDS].any()


def _special_mask() -> Tensor:
    m = torch.zeros(V, dtype=torch.bool)
    m[list(SPECIAL)] = True
    return m


# ----------------------------------------------------------------------------- state machine


steps_strategy = st.integers(1, 3).flatmap(
    lambda groups: st.integers(1, 3).flatmap(
        lambda group: st.tuples(
            st.just(groups),
            st.just(group),
            st.lists(
                st.lists(
                    st.sampled_from(TOKEN_POOL), min_size=groups * group, max_size=groups * group
                ),
                min_size=1,
                max_size=12,
            ),
        )
    )
)


@settings(max_examples=40, deadline=None)
@given(
    case=steps_strategy,
    prompt_len=st.integers(1, 5),
    min_tokens=st.integers(1, 4),
    threshold=st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9, 1.0]),
    sticky=st.booleans(),
)
def test_alpha_schedule_matches_reference(case, prompt_len, min_tokens, threshold, sticky):
    groups, group, steps = case
    rows = groups * group
    gate = FakeGate()
    proc = DynamicGatingProcessor(
        gate,
        TOK,
        base_alpha=0.25,
        high_alpha=0.75,
        min_tokens=min_tokens,
        threshold=threshold,
        sticky=sticky,
        target_mask=DEV_MASK,
    )
    prompt = torch.randint(0, 256, (groups, prompt_len)).repeat_interleave(group, dim=0)
    with proc.session(rows_per_prompt=group):
        assert gate.attached
        assert gate.alpha == 0.25
        run_steps(proc, prompt, steps)
        expected = reference_alphas(
            [None, *steps],
            rows=rows,
            group=group,
            target=set(DEV_IDS),
            min_tokens=min_tokens,
            threshold=threshold,
            sticky=sticky,
            base=0.25,
            high=0.75,
        )
        got = [a.tolist() for a in gate.log]
        assert got == expected
        hist = proc.alpha_history
        assert hist.shape == (rows, len(steps) + 1)
        assert hist.T.tolist() == expected
        assert proc.drifted.tolist() == [expected[-1][i * group] == 0.75 for i in range(groups)]
    # the session cleared the gate and put everything back
    assert gate.seq is None
    assert gate.alpha == 0.5
    assert not gate.attached
    assert proc.alpha_history.shape == (rows, len(steps) + 1)  # still readable


@settings(max_examples=30, deadline=None)
@given(case=steps_strategy, seed=st.integers(0, 2**16), min_tokens=st.integers(1, 3))
def test_beam_reordering_within_groups_cannot_mix_states(case, seed, min_tokens):
    """Reordering rows inside each prompt group (what beam search does) at every step leaves
    every row's alpha unchanged: the state belongs to the group, not the row."""
    groups, group, steps = case
    prompt = torch.randint(0, 256, (groups, 3)).repeat_interleave(group, dim=0)
    g = torch.Generator().manual_seed(seed)

    def permute(ids: Tensor, _t: int) -> Tensor:
        order = torch.cat([torch.randperm(group, generator=g) + i * group for i in range(groups)])
        return ids[order]

    histories = []
    for perm in (None, permute):
        proc = DynamicGatingProcessor(
            FakeGate(), TOK, min_tokens=min_tokens, threshold=0.25, target_mask=DEV_MASK
        )
        with proc.session(rows_per_prompt=group):
            run_steps(proc, prompt, steps, permute=perm)
        histories.append(proc.alpha_history)
    assert torch.equal(histories[0], histories[1])
    # one decision per prompt group
    h = histories[0].view(groups, group, -1)
    assert (h == h[:, :1]).all()


@settings(max_examples=30, deadline=None)
@given(
    case=steps_strategy,
    penalty=st.sampled_from([0.5, 3.0, float("inf")]),
    seed=st.integers(0, 2**16),
)
def test_penalty_never_mutates_scores_and_hits_only_drifted_target_logits(case, penalty, seed):
    groups, group, steps = case
    rows = groups * group
    prompt = torch.randint(0, 256, (groups, 2)).repeat_interleave(group, dim=0)
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(rows, V, generator=g) for _ in range(len(steps) + 1)]
    copies = [x.clone() for x in inputs]
    proc = DynamicGatingProcessor(
        FakeGate(), TOK, min_tokens=1, threshold=0.0, penalty=penalty, target_mask=DEV_MASK
    )
    with proc.session(rows_per_prompt=group):
        outs = run_steps(proc, prompt, steps, scores_fn=lambda t: inputs[t])
    hist = proc.alpha_history  # (rows, steps): 1.0 where the row's group drifted
    for t, (x, x0, y) in enumerate(zip(inputs, copies, outs)):
        assert torch.equal(x, x0)  # the caller's tensor is untouched
        drifted = hist[:, t] == 1.0
        expected = x0.clone()
        expected[drifted.nonzero().view(-1)[:, None], torch.tensor(DEV_IDS)[None, :]] -= penalty
        assert torch.equal(y, expected)
        if drifted.any():
            assert y is not x


# "E0 A4" and "E0 A5" merges (ids 259, 260), bare bytes of Devanagari and Bengali characters
BYTE_POOL = [DEV_IDS[0], DEV_IDS[-1], 259, 260, 0xE0, 0xA4, 0xA5, 0xA6, 0x95, 65, 32]


@settings(max_examples=20, deadline=None)
@given(
    steps=st.lists(st.lists(st.sampled_from(BYTE_POOL), min_size=3, max_size=3), max_size=10),
    seed=st.integers(0, 2**16),
)
def test_infinite_penalty_bans_what_the_script_ban_bans_in_drifted_rows(steps, seed):
    """penalty=inf without a target mask: drifted rows get ScriptBanProcessor's byte-aware
    ban (partial characters included), the other rows their scores unchanged."""
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(3, V, generator=g) for _ in range(len(steps) + 1)]
    prompt = torch.tensor([[65, 66], [67, 68], [69, 70]])
    proc = DynamicGatingProcessor(
        FakeGate(), TOK, min_tokens=1, threshold=0.0, penalty=float("inf")
    )
    ban = ScriptBanProcessor(TOK, "Deva")
    with proc.session(), ban.session():
        outs = run_steps(proc, prompt, steps, scores_fn=lambda t: inputs[t])
        banned = run_steps(ban, prompt, steps, scores_fn=lambda t: inputs[t])
    hist = proc.alpha_history
    for t, (x, y, b) in enumerate(zip(inputs, outs, banned)):
        drifted = hist[:, t] == 1.0
        assert torch.equal(y, torch.where(drifted[:, None], b, x))


def test_infinite_penalty_bans_partial_characters():
    steps = [[DEV_IDS[0], 65], [0xE0, 0xE0]]  # row 0 drifts, row 1 does not
    proc = DynamicGatingProcessor(
        FakeGate(), TOK, min_tokens=1, threshold=0.0, penalty=float("inf")
    )
    with proc.session():
        out = run_steps(proc, torch.tensor([[65], [66]]), steps)[-1]
    banned = (out[0] == float("-inf")).nonzero().view(-1).tolist()
    assert banned == sorted({0xA4, 0xA5, 259, 260, *DEV_IDS})  # after a pending E0
    assert not out[1].isinf().any()


def test_threshold_is_compared_exactly():
    """3 target tokens out of 10 meet threshold=0.3 (float arithmetic would say 3 < 3.0000000000000004)."""
    steps = [[DEV_IDS[0]]] * 3 + [[LAT_IDS[0]]] * 7
    proc = DynamicGatingProcessor(
        FakeGate(), TOK, min_tokens=1, threshold=0.3, sticky=False, target_mask=DEV_MASK
    )
    with proc.session():
        run_steps(proc, torch.zeros(1, 1, dtype=torch.long), steps)
    # fraction after k tokens: 1/1 .. 3/3, then 3/4 .. 3/10 (>= 0.3 throughout)
    assert proc.alpha_history.tolist() == [[0.0] + [1.0] * 10]
    with proc.session():
        run_steps(proc, torch.zeros(1, 1, dtype=torch.long), [*steps, [LAT_IDS[0]]])
    assert proc.alpha_history[0, -1] == 0.0  # 3/11 < 0.3


def test_script_blind_schedules_alpha_without_touching_scores():
    steps = [[DEV_IDS[0]], [DEV_IDS[1]], [DEV_IDS[2]]]
    proc = DynamicGatingProcessor(
        FakeGate(), TOK, min_tokens=1, threshold=0.0, script_blind=True, target_mask=DEV_MASK
    )
    x = torch.randn(1, V)
    with proc.session():
        outs = run_steps(proc, torch.zeros(1, 2, dtype=torch.long), steps, scores_fn=lambda t: x)
    assert proc.alpha_history.tolist() == [[0.0, 1.0, 1.0, 1.0]]
    assert all(o is x for o in outs)


def test_new_generation_resets_state():
    gate = FakeGate()
    proc = DynamicGatingProcessor(gate, TOK, min_tokens=1, threshold=0.0, target_mask=DEV_MASK)
    with proc.session():
        run_steps(proc, torch.zeros(2, 3, dtype=torch.long), [[DEV_IDS[0], 32]] * 3)
        assert proc.alpha_history.shape == (2, 4)
        assert proc.drifted.tolist() == [True, False]
        # another batch size: a new generation
        run_steps(proc, torch.zeros(1, 3, dtype=torch.long), [[32]])
        assert proc.alpha_history.tolist() == [[0.0, 0.0]]
        # same rows, but input_ids do not continue the previous call: new generation
        run_steps(proc, torch.zeros(1, 9, dtype=torch.long), [[32]])
        assert proc.alpha_history.shape == (1, 2)
        proc.reset()
        assert proc.alpha_history.shape == (0, 0)
        assert proc.drifted.numel() == 0


class TailDetector:
    """Labels a text "hi" when it contains 'x'; records what it was given."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def detect(self, text: str) -> Any:
        return Detection("hi" if "x" in text else "en", 1.0)

    def detect_batch(self, texts: Sequence[str]) -> list[Any]:
        self.seen.append(list(texts))
        return [self.detect(t) for t in texts]


def test_detector_reads_only_new_tail_every_k_steps():
    x, a, b = TOK("x").input_ids[0], TOK("a").input_ids[0], TOK("b").input_ids[0]
    # row 0 writes "x" at step 5; row 1 never; row 2 finishes (pad) after step 2
    steps = [[a, a, b], [a, b, b], [b, a, 256], [a, b, 256], [x, a, 256], [a, a, 256]]
    steps += [[b, b, 256]] * 3
    det = TailDetector()
    proc = DynamicGatingProcessor(
        FakeGate(), TOK, detector=det, detect_every=3, target_mask=DEV_MASK
    )
    prompt = torch.tensor([[97, 98], [99, 100], [101, 102]])
    with proc.session():
        run_steps(proc, prompt, steps)
    tails = [
        [
            TOK.decode([steps[t][r] for t in range(lo, lo + 3)], skip_special_tokens=True)
            for r in range(3)
        ]
        for lo in (0, 3, 6)
    ]
    # finished rows (only pads in the tail) are not sent to the detector
    assert det.seen == [tails[0], tails[1][:2], tails[2][:2]]
    hist = proc.alpha_history  # detection at calls 3, 6, 9: row 0 switches at call 6
    assert hist[0].tolist() == [0.0] * 6 + [1.0] * 4
    assert hist[1:].eq(0).all()


# ----------------------------------------------------------------------------- end to end


def _alone_and_batch(prompts: list[str], **proc_kwargs: Any) -> None:
    gate = make_gate()
    kwargs = {"min_tokens": 2, "threshold": 0.25, **proc_kwargs}
    proc = DynamicGatingProcessor(gate, TOK, **kwargs)
    rec = Recorder()
    batch = generate(
        MODEL,
        TOK,
        prompts,
        max_new_tokens=16,
        batch_size=len(prompts),
        logits_processors=[proc, rec],
    )
    hist = proc.alpha_history
    assert hist.shape == (len(prompts), len(rec.ids))
    for i, prompt in enumerate(prompts):
        proc_i = DynamicGatingProcessor(gate, TOK, **kwargs)
        alone = generate(MODEL, TOK, [prompt], max_new_tokens=16, logits_processors=[proc_i])
        assert alone == [batch[i]], prompt
        h = proc_i.alpha_history[0]
        assert torch.equal(hist[i, : h.numel()], h), prompt
        assert (hist[i, h.numel() :] == h[-1]).all()  # after its EOS a row only gets pads
    # the trajectory also matches the reference state machine run on the generated tokens
    new = rec.ids[-1][:, rec.ids[0].shape[1] :]  # tokens generated before the last call
    expected = reference_alphas(
        [None, *new.T.tolist()],
        rows=len(prompts),
        group=1,
        target=set(DEV_IDS),
        min_tokens=2,
        threshold=0.25,
        sticky=True,
        base=0.0,
        high=1.0,
    )
    assert hist.T.tolist() == expected


def test_batch_invariance_of_tokens_and_alpha_trajectories():
    """A mixed, left-padded batch of Hindi and English prompts gives each prompt exactly the
    text and alpha trajectory it gets alone (greedy, fp32)."""
    _alone_and_batch(MIXED)


def test_batch_invariance_with_penalty():
    _alone_and_batch(MIXED[:5], penalty=2.0)


def test_trajectories_are_nontrivial_and_the_gate_acts():
    """Hindi prompts switch at different steps, English ones mostly not; gating changes text."""
    gate = make_gate()
    proc = DynamicGatingProcessor(gate, TOK, min_tokens=2, threshold=0.25)
    gated = generate(MODEL, TOK, MIXED, max_new_tokens=16, logits_processors=[proc])
    hist = proc.alpha_history
    switch = [int(row.argmax()) if row.any() else None for row in hist]
    assert all(switch[i] is not None for i in (0, 2, 4, 6))  # Hindi prompts drift
    assert any(s is None for s in switch)  # some English prompt never does
    assert len({s for s in switch if s is not None}) >= 2
    plain = generate(MODEL, TOK, MIXED, max_new_tokens=16)
    assert gated != plain


@settings(max_examples=5, deadline=None)
@given(
    order=st.permutations(range(len(MIXED))),
    batch_size=st.integers(1, 4),
)
def test_generate_output_does_not_depend_on_batching(order, batch_size):
    prompts = [MIXED[i] for i in order][:5]
    gate = make_gate()
    proc = DynamicGatingProcessor(gate, TOK, min_tokens=2, threshold=0.25)
    out = generate(
        MODEL, TOK, prompts, max_new_tokens=8, batch_size=batch_size, logits_processors=[proc]
    )
    assert out == [alone_8(p) for p in prompts]


# Processors of the token-budget tests: a factory per kind, so every call gets a fresh one.
_PROCESSORS: dict[str, Callable[[], list[LogitsProcessor]]] = {
    "none": list,
    "dynamic_gate": lambda: [
        DynamicGatingProcessor(make_gate(), TOK, min_tokens=2, threshold=0.25)
    ],
    "dynamic_gate_penalty": lambda: [
        DynamicGatingProcessor(make_gate(), TOK, min_tokens=2, threshold=0.25, penalty=2.0)
    ],
    "script_ban": lambda: [ScriptBanProcessor(TOK, "hi")],
    "eos": lambda: [ForcedEOSProcessor(258)],
}


@functools.cache
def alone(prompt: str, kind: str, max_new_tokens: int) -> str:
    procs = _PROCESSORS[kind]()
    out = generate(MODEL, TOK, [prompt], max_new_tokens=max_new_tokens, logits_processors=procs)
    return str(out[0])


@settings(max_examples=8, deadline=None)
@given(
    order=st.permutations(range(len(MIXED))),
    budget=st.sampled_from([1, 40, 64, 100, 4096]),
    kind=st.sampled_from(sorted(_PROCESSORS)),
)
def test_token_budget_generation_equals_one_prompt_generation(order, budget, kind):
    """Sorted, token-budget batches give every prompt, in input order, exactly the greedy
    text it gets alone (fp32), with the dynamic gate (and its SAE gate) and the controls."""
    prompts = [MIXED[i] for i in order]
    out = generate(
        MODEL,
        TOK,
        prompts,
        max_new_tokens=8,
        max_batch_tokens=budget,
        logits_processors=_PROCESSORS[kind](),
    )
    assert out == [alone(p, kind, 8) for p in prompts]


def test_token_batches_pack_longest_first_within_the_budget():
    from mmie.models.generation import _token_batches

    lengths = TOK(MIXED, add_special_tokens=True, return_length=True)["length"]
    for budget, rows in ((1, 1), (60, 1), (200, 2), (10_000, 3)):
        batches = _token_batches(TOK, MIXED, None, 8, rows, budget)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(MIXED)))
        assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
        for batch in batches:
            width = max(lengths[i] for i in batch)
            assert len(batch) == 1 or len(batch) * rows * (width + 8) <= budget
    assert len(_token_batches(TOK, MIXED, None, 8, 1, 10_000)) == 1
    # prompts cut to max_prompt_tokens count with their cut length
    cut = [min(n, 3) for n in lengths]
    batches = _token_batches(TOK, MIXED, 3, 1, 1, 8)
    assert [cut[i] for b in batches for i in b] == sorted(cut, reverse=True)
    assert all(len(b) * (max(cut[i] for i in b) + 1) <= 8 for b in batches)
    assert max(len(b) for b in batches) == 2


def test_token_budget_sampling_is_reproducible_and_in_input_order():
    kwargs: dict[str, Any] = {
        "max_new_tokens": 6,
        "do_sample": True,
        "seed": 3,
        "num_return_sequences": 3,
        "max_batch_tokens": 64,
    }
    a = generate(MODEL, TOK, MIXED, **kwargs)
    b = generate(MODEL, TOK, MIXED, **kwargs)
    assert a == b
    assert len(a) == len(MIXED)
    assert all(len(group) == 3 for group in a)
    solo = generate(MODEL, TOK, MIXED, **{**kwargs, "max_batch_tokens": 1})  # a batch each
    assert len(solo) == len(MIXED)
    assert all(len(group) == 3 for group in solo)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        generate(MODEL, TOK, MIXED, max_batch_tokens=0)


@functools.cache
def alone_8(prompt: str) -> str:
    proc = DynamicGatingProcessor(make_gate(), TOK, min_tokens=2, threshold=0.25)
    return generate(MODEL, TOK, [prompt], max_new_tokens=8, logits_processors=[proc])[0]


def test_one_step_lag_alpha_set_at_t_acts_at_t_plus_1():
    prompt = ["नमस्ते दुनिया"]  # Devanagari context: the gated latent is active
    m = 3  # every non-special token is a target: the decision flips at call m
    mask = torch.ones(V, dtype=torch.bool)
    gate = make_gate()
    proc = DynamicGatingProcessor(gate, TOK, min_tokens=m, threshold=0.0, target_mask=mask)
    gated = Recorder()
    generate(MODEL, TOK, prompt, max_new_tokens=m + 3, logits_processors=[gated, proc])
    assert proc.alpha_history.tolist() == [[0.0] * m + [1.0] * 3]
    plain = Recorder()
    with make_gate(alpha=0.0):
        generate(MODEL, TOK, prompt, max_new_tokens=m + 3, logits_processors=[plain])
    for t in range(m + 1):  # alpha written at calls < m was 0, and call m's logits predate it
        assert torch.equal(gated.scores[t], plain.scores[t]), t
    assert not torch.allclose(gated.scores[m + 1], plain.scores[m + 1])
    # independent check of step m+1: a cached forward of the prefix at alpha 0, then the
    # newest token at alpha 1
    ids = gated.ids[m + 1]  # prompt + m + 1 generated tokens
    with make_gate(alpha=0.0) as g2, torch.no_grad():
        out = MODEL(ids[:, :-1], use_cache=True)
        g2.alpha = 1.0
        name = "cache" if "cache" in out else "past_key_values"  # renamed in transformers 5
        step = MODEL(ids[:, -1:], use_cache=True, **{name: out[name]})
    torch.testing.assert_close(step.logits[:, -1], gated.scores[m + 1], atol=1e-5, rtol=1e-5)


def test_num_return_sequences_and_beams_keep_one_decision_per_prompt():
    gate = make_gate()
    proc = DynamicGatingProcessor(gate, TOK, min_tokens=2, threshold=0.25)
    rec = Recorder()
    out = generate(
        MODEL,
        TOK,
        MIXED[:3],
        max_new_tokens=10,
        do_sample=True,
        seed=0,
        num_return_sequences=2,
        logits_processors=[proc, rec],
    )
    assert len(out) == 3
    assert all(len(o) == 2 and all(isinstance(s, str) for s in o) for o in out)
    hist = proc.alpha_history
    assert hist.shape[0] == 6
    h = hist.view(3, 2, -1)
    assert (h == h[:, :1]).all()
    # sampling never reorders rows: the group decision is the reference on summed counts
    new = rec.ids[-1][:, rec.ids[0].shape[1] :]
    expected = reference_alphas(
        [None, *new.T.tolist()],
        rows=6,
        group=2,
        target=set(DEV_IDS),
        min_tokens=2,
        threshold=0.25,
        sticky=True,
        base=0.0,
        high=1.0,
    )
    assert hist.T.tolist() == expected
    assert not gate.sequence_alpha_set

    proc_b = DynamicGatingProcessor(gate, TOK, min_tokens=2, threshold=0.25)
    beams = generate(
        MODEL, TOK, MIXED[:3], max_new_tokens=10, num_beams=2, logits_processors=[proc_b]
    )
    assert len(beams) == 3
    assert all(isinstance(s, str) for s in beams)
    hb = proc_b.alpha_history.view(3, 2, -1)
    assert (hb == hb[:, :1]).all()
    assert hb[0].any()  # the Hindi prompt's group switched
    both = generate(
        MODEL,
        TOK,
        MIXED[:2],
        max_new_tokens=6,
        num_beams=2,
        num_return_sequences=2,
        logits_processors=[proc_b],
    )
    assert [len(o) for o in both] == [2, 2]
    assert not gate.sequence_alpha_set
    assert not gate.attached
    assert_no_mmie_hooks(MODEL)


@pytest.mark.parametrize("pre_attached", [False, True])
def test_no_per_sequence_state_after_generate_returns_or_raises(pre_attached):
    gate = make_gate(alpha=0.7)
    if pre_attached:
        gate.attach()
    try:
        proc = DynamicGatingProcessor(gate, TOK, min_tokens=1, threshold=0.0)
        generate(MODEL, TOK, MIXED[:3], max_new_tokens=5, logits_processors=[proc])
        assert not gate.sequence_alpha_set
        assert gate.alpha == 0.7
        assert gate.attached == pre_attached
        with pytest.raises(RuntimeError, match="boom"):
            generate(
                MODEL, TOK, MIXED[:3], max_new_tokens=8, logits_processors=[proc, Raiser(at=3)]
            )
        assert proc.alpha_history.shape == (3, 4)  # it ran 4 steps before the raise
        assert not gate.sequence_alpha_set
        assert gate.alpha == 0.7
        assert gate.attached == pre_attached
        # a later forward pass with another batch size is not affected by leftover rows
        enc = TOK(["abc"], return_tensors="pt")
        with torch.no_grad():
            MODEL(**enc)
    finally:
        gate.remove()
    assert_no_mmie_hooks(MODEL)


# ----------------------------------------------------------------------------- generate


def test_generate_returns_only_new_text():
    enc = TOK(MIXED[:3], padding=True, return_tensors="pt")
    ref = MODEL.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=256)
    expected = TOK.batch_decode(ref[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert generate(MODEL, TOK, MIXED[:3], max_new_tokens=6, batch_size=2) == expected


def test_left_truncation_warns_and_keeps_the_end():
    long_prompt = "x" * 40 + " Answer in English:"
    rec = Recorder()
    with pytest.warns(TruncationWarning, match="1 prompt"):
        generate(
            MODEL,
            TOK,
            [long_prompt, "short"],
            max_new_tokens=2,
            max_prompt_tokens=12,
            logits_processors=[rec],
        )
    first = rec.ids[0]
    assert first.shape[1] == 12
    full = TOK(long_prompt).input_ids
    assert first[0].tolist() == full[-12:]
    assert TOK.decode(first[0]) == long_prompt[-12:]
    assert first[1, -5:].tolist() == TOK("short").input_ids
    assert TOK.truncation_side == "right"  # restored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(MODEL, TOK, ["short"], max_new_tokens=1, max_prompt_tokens=12)


def test_seeded_sampling_is_reproducible_and_restores_global_rng():
    before = torch.random.get_rng_state()
    kwargs: dict[str, Any] = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5}
    a = generate(MODEL, TOK, MIXED[:4], seed=1, top_p=0.95, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = generate(MODEL, TOK, MIXED[:4], seed=1, top_p=0.95, **kwargs)
    c = generate(MODEL, TOK, MIXED[:4], seed=2, top_p=0.95, **kwargs)
    assert a == b
    assert a != c
    greedy = generate(MODEL, TOK, MIXED[:4], max_new_tokens=8)
    assert greedy != a


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prompts": "hello"}, TypeError, r"wrap it: \[text\]"),
        ({"prompts": ["a", 3]}, TypeError, r"prompts\[1\] must be a str"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"max_prompt_tokens": 0}, ValueError, "max_prompt_tokens"),
        ({"do_sample": True}, ValueError, "seed=0"),
        ({"temperature": 0.7}, ValueError, "do_sample=True"),
        ({"do_sample": True, "seed": 0, "temperature": 0.0}, ValueError, "temperature"),
        ({"do_sample": True, "seed": 0, "top_p": 1.5}, ValueError, "top_p"),
        ({"num_beams": 2, "num_return_sequences": 3}, ValueError, "<= num_beams"),
        ({"num_return_sequences": 2}, ValueError, "identical copies"),
        ({"logits_processors": [3]}, TypeError, "callable"),
    ],
)
def test_generate_validates_arguments(kwargs, error, match):
    args: dict[str, Any] = {"prompts": ["a"], **kwargs}
    prompts = args.pop("prompts")
    with pytest.raises(error, match=match):
        generate(MODEL, TOK, prompts, **args)


def test_generate_is_exported():
    assert mmie.generate is generate
    assert mmie.DynamicGatingProcessor is DynamicGatingProcessor
