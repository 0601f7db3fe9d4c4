"""Control arms (mmie.edits.controls): the byte-aware script ban, forced EOS and block noise,
checked against references written here (a strict UTF-8 decoder and an enumeration of the
code points behind every incomplete character)."""

from __future__ import annotations

import codecs
import doctest
import functools
import math
from collections import defaultdict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessor

import mmie
import mmie.edits.controls as controls
import mmie.language.unicode as unicode_mod
from mmie.edits.controls import (
    ForcedEOSProcessor,
    NoiseIntervention,
    ScriptBanMasks,
    ScriptBanProcessor,
)
from mmie.errors import InterventionError
from mmie.evaluation.output_metrics import target_share
from mmie.language.unicode import (
    prefix_only_completes_to,
    script_ban_mask,
    script_of_char,
    token_bytes,
    utf8_tail,
)
from mmie.models.blocks import get_block
from mmie.models.generation import generate
from mmie.study.datasets import load_texts
from mmie.testing import byte_tokenizer, tiny_causal_lm

TOK = byte_tokenizer()
V = len(TOK)  # 259: bytes 0-255, then <pad>, <s>, </s>
PAD, EOS = TOK.pad_token_id, TOK.eos_token_id
KA_DEVA, KA_BENG = "क", "ক"  # E0 A4 95 and E0 A6 95


def has_script(text: str, code: str = "Deva") -> bool:
    return any(script_of_char(ch) == code for ch in text)


# ----------------------------------------------------------------------------- references


@functools.cache
def prefix_scripts() -> dict[bytes, frozenset[str | None]]:
    """Every proper prefix of the UTF-8 encoding of a BMP character -> the scripts of the
    characters it completes into (supplementary characters belong to no SCRIPTS entry)."""
    out: dict[bytes, set[str | None]] = defaultdict(set)
    for c in range(0x80, 0x10000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        data = chr(c).encode()
        script = script_of_char(chr(c))
        for k in range(1, len(data)):
            out[data[:k]].add(script)
    return {k: frozenset(v) for k, v in out.items()}


def ref_only(tail: bytes, code: str) -> bool:
    scripts = prefix_scripts().get(tail, frozenset())
    return code in scripts and scripts <= {None, code}


def ref_banned(pending: bytes, data: bytes | None, code: str) -> bool:
    """Decode ``pending + data`` with Python's strict incremental decoder: banned if a new
    character is of ``code`` or the pending tail can only complete into ``code``."""
    if data is None:
        return False
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(pending + data)
    return has_script(text, code) or ref_only(decoder.getstate()[0], code)


@functools.cache
def demo() -> tuple[torch.nn.Module, object]:
    return mmie.load_demo_model()


HINDI_PROMPTS = load_texts("hindi_eval")[:8]


# ----------------------------------------------------------------------------- unicode helpers


TRICKY = b"\x41\x80\x95\xa4\xa5\xa6\xbf\xc2\xc3\xe0\xed\xa0\x9f\xf0\xf4\x90\x8f\xc0\xff"


@given(st.binary(max_size=8) | st.lists(st.sampled_from(TRICKY), max_size=8).map(bytes))
def test_utf8_tail_is_what_a_strict_decoder_keeps_pending(data):
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(data)
    kept = decoder.getstate()[0]
    # Python keeps a surrogate prefix (ED A0-BF) pending although it can never complete.
    surrogate = len(kept) >= 2 and kept[0] == 0xED and kept[1] >= 0xA0
    assert utf8_tail(data) == (b"" if surrogate else kept)


@pytest.mark.parametrize(
    ("prefix", "code", "expected"),
    [
        (b"\xe0\xa4", "Deva", True),  # U+0900-U+093F
        (b"\xe0\xa5", "Deva", True),  # U+0940-U+097F: also the danda and digits (neutral)
        (b"\xe0", "Deva", False),  # also Bengali, Gurmukhi, ...
        (b"\xe0\xa6", "Deva", False),
        (b"\xe0\xa6", "Beng", True),
        (b"\xc3", "Latn", True),  # U+00C0-U+00FF: letters, and the neutral × and ÷
        (b"\xc2", "Latn", False),  # ª and º are not in the Latin ranges
        (b"\xe0\x80", "Deva", False),  # overlong: invalid
        (b"\xe0\xa4\x95", "Deva", False),  # complete
        (b"\xf0", "Deva", False),
        (b"", "Deva", False),
    ],
)
def test_prefix_only_completes_to(prefix, code, expected):
    assert prefix_only_completes_to(prefix, code) is expected
    assert ref_only(prefix, code) is expected


PENDINGS = [
    b"",
    b"\xe0",
    b"\xe0\xa4",
    b"\xe0\xa5",
    b"\xe0\xa6",
    b"\xc3",
    b"\xe1",
    b"\xf0",
    b"\xf0\x9f\x98",
]


@pytest.mark.parametrize("code", ["Deva", "Beng", "Latn"])
def test_ban_mask_matches_the_decoder_reference_on_byte_tokens(code):
    raw = token_bytes(TOK)
    for pending in PENDINGS:
        ban = script_ban_mask(TOK, code, pending)
        expected = [ref_banned(pending, raw[i], code) for i in range(V)]
        assert ban.tolist() == expected, pending


def test_ban_mask_matches_the_decoder_reference_on_the_demo_tokenizer():
    _, tok = demo()
    raw = token_bytes(tok)
    for pending in [b"", b"\xe0", b"\xe0\xa6", b"\xe0\xa8"]:
        ban = script_ban_mask(tok, "Deva", pending)
        assert ban.tolist() == [ref_banned(pending, raw[i], "Deva") for i in range(len(tok))]
    ban = script_ban_mask(tok, "Deva")
    assert not ban[raw.index("।".encode())]  # a whole danda token: script-neutral
    assert not ban[list(tok.all_special_ids)].any()


def test_byte_ban_closed_form():
    assert not script_ban_mask(TOK, "Deva").any()  # a bare E0 is ambiguous: nothing banned
    assert script_ban_mask(TOK, "Deva", b"\xe0").nonzero().view(-1).tolist() == [0xA4, 0xA5]
    assert script_ban_mask(TOK, "Deva", b"\xe0\xa4")[0x80:0xC0].all()  # U+0900-U+093F
    after = script_ban_mask(TOK, "Deva", b"\xe0\xa5")
    allowed = [b for b in range(0x80, 0xC0) if not after[b]]
    assert [chr(0x900 + b - 0x80 + 0x40) for b in allowed] == ["।", "॥", *"०१२३४५६७८९", "॰"]


@pytest.mark.parametrize(
    ("pending", "error", "match"),
    [
        ("\xe0", TypeError, "pending must be bytes"),
        (b"\xe0\xa4\x95", ValueError, "incomplete UTF-8 character"),
        (b"a", ValueError, "incomplete UTF-8 character"),
    ],
)
def test_ban_mask_validates_pending(pending, error, match):
    with pytest.raises(error, match=match):
        script_ban_mask(TOK, "Deva", pending)


# ----------------------------------------------------------------------------- ScriptBanMasks


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([0x41, 0xE0], b"\xe0"),
        ([0xE0, PAD, 0xA4], b"\xe0\xa4"),  # special tokens are skipped by decoding
        ([0xE0, 0xA4, 0x95], b""),
        ([0xE0, 0x80], b""),  # invalid
        ([0xF0, 0x9F, 0x98], b"\xf0\x9f\x98"),
        ([], b""),
    ],
)
def test_pending_of_token_ids(ids, expected):
    assert ScriptBanMasks(TOK, "Deva").pending(ids) == expected


def test_for_rows_reads_past_special_tokens_and_broadcasts_when_nothing_is_pending():
    masks = ScriptBanMasks(TOK, "hi")
    ids = torch.tensor([[65, 0xE0, *[PAD] * 9], [65, 66, *[PAD] * 9]])
    ban = masks.for_rows(ids, 1, V, torch.device("cpu"))
    assert ban.shape == (2, V)
    assert ban[0].nonzero().view(-1).tolist() == [0xA4, 0xA5]
    assert not ban[1].any()
    flat = masks.for_rows(ids[1:], 1, V + 5, torch.device("cpu"))  # padded embedding rows
    assert flat.shape == (V + 5,)
    assert not flat.any()


# ----------------------------------------------------------------------------- ScriptBanProcessor


class Rig(LogitsProcessor):
    """Makes any model prefer Devanagari क (E0 A4 95), then Bengali ক (E0 A6 95)."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        out = scores.clone()
        for r, ids in enumerate(input_ids.tolist()):
            if ids[-1] == 0xE0:
                bias = {0xA4: 60.0, 0xA6: 40.0}
            elif ids[-1] in (0xA4, 0xA6) and ids[-2] == 0xE0:
                bias = {0x95: 60.0}
            else:
                bias = {0xE0: 60.0}
            for tid, b in bias.items():
                out[r, tid] += b
        return out


MODEL = tiny_causal_lm("llama", seed=0)


def test_rigged_greedy_generation_writes_bengali_instead_of_devanagari():
    plain = generate(MODEL, TOK, ["x", "yz"], max_new_tokens=12, logits_processors=[Rig()])
    assert plain == [KA_DEVA * 4] * 2
    ban = ScriptBanProcessor(TOK, "Deva")
    out = generate(MODEL, TOK, ["x", "yz"], max_new_tokens=12, logits_processors=[Rig(), ban])
    assert out == [KA_BENG * 4] * 2  # the shared E0 lead byte stays allowed


@pytest.mark.parametrize(
    "options",
    [
        {"num_beams": 3, "num_return_sequences": 2},
        {"do_sample": True, "seed": 0, "num_return_sequences": 3, "temperature": 3.0},
    ],
)
def test_ban_holds_under_beam_search_and_sampling(options):
    ban = ScriptBanProcessor(TOK, "hi", vocab_size=V)
    out = generate(
        MODEL, TOK, ["x", "नमस्ते"], max_new_tokens=15, logits_processors=[Rig(), ban], **options
    )
    texts = [t for group in out for t in group]
    assert len(texts) == 2 * options["num_return_sequences"]
    assert not any(has_script(t) for t in texts)
    assert any(has_script(t, "Beng") for t in texts)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    bias=st.floats(0.0, 8.0),
    script=st.sampled_from(["Deva", "Beng", "Latn"]),
)
def test_ban_never_emits_a_banned_character_whatever_the_scores(seed, bias, script):
    """Sample 60 steps from random logits tilted towards lead bytes (E0, C3), continuation
    bytes and ASCII letters: without the ban, 10 of 15 seeds write Devanagari at bias 5."""
    g = torch.Generator().manual_seed(seed)
    rows = 4
    ids = torch.full((rows, 2), 65)
    ban = ScriptBanProcessor(TOK, script)
    tilt = torch.zeros(V)
    tilt[[*range(0x80, 0xC0), *range(0x61, 0x7B)]] += bias / 2
    tilt[[0xE0, 0xA4, 0xA5, 0xA6, 0xC3]] += bias
    with ban.session():
        for _ in range(60):
            scores = torch.randn(rows, V, generator=g) * 2 + tilt
            scores[:, EOS] = -math.inf  # keep writing
            kept = scores.clone()
            out = ban(ids, scores)
            assert torch.equal(scores, kept)  # the caller's scores are untouched
            probs = out.softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=g)
            ids = torch.cat([ids, nxt], dim=1)
    for text in TOK.batch_decode(ids[:, 2:].tolist(), skip_special_tokens=True):
        assert not has_script(text, script), text


def test_per_step_cost_never_decodes_the_vocabulary(monkeypatch):
    ban = ScriptBanProcessor(TOK, "Deva")
    first = generate(MODEL, TOK, ["x"], max_new_tokens=12, logits_processors=[Rig(), ban])
    calls = []
    monkeypatch.setattr(controls, "script_ban_mask", lambda *a: calls.append(a))
    monkeypatch.setattr(unicode_mod, "_decode_each", lambda *a: pytest.fail("decoded"))
    again = generate(MODEL, TOK, ["x"], max_new_tokens=12, logits_processors=[Rig(), ban])
    assert again == first
    assert calls == []  # the masks are cached on the device, per pending prefix


def test_session_and_call_validation():
    ban = ScriptBanProcessor(TOK, "Deva", vocab_size=V)
    with (
        ban.session(),
        pytest.raises(InterventionError, match="already has an open session"),
        ban.session(),
    ):
        pass
    with (
        pytest.raises(ValueError, match="rows_per_prompt must be an int >= 1"),
        ban.session(rows_per_prompt=0),
    ):
        pass
    with ban.session(rows_per_prompt=2), pytest.raises(ValueError, match="not a multiple"):
        ban(torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, V))
    with pytest.raises(ValueError, match="vocab_size=259"):
        ban(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, V + 1))
    with pytest.raises(ValueError, match=r"scores must be \[rows=1, vocab\]"):
        ban(torch.zeros(1, 1, dtype=torch.long), torch.zeros(2, V))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("not a tokenizer", "Deva"), {}, TypeError, "tokenizer must be a transformers"),
        ((TOK, "klingon"), {}, ValueError, "script must be one of"),
        ((TOK, "Deva"), {"vocab_size": 100}, ValueError, "smaller than the tokenizer's 259"),
        ((TOK, "Deva"), {"vocab_size": 2.5}, TypeError, "vocab_size must be an int"),
    ],
)
def test_ban_constructor_validation(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        ScriptBanProcessor(*args, **kwargs)


def test_demo_model_greedy_hindi_continuations_lose_devanagari():
    model, tok = demo()
    prompts = [p[: len(p) // 2] for p in HINDI_PROMPTS]
    plain = generate(model, tok, prompts, max_new_tokens=24)
    ban = ScriptBanProcessor(tok, "hi")
    banned = generate(model, tok, prompts, max_new_tokens=24, logits_processors=[ban])
    assert target_share(plain, "hi").mean > 0.9  # the demo model continues Hindi in Hindi
    assert not any(has_script(t) for t in banned)
    assert target_share(banned, "hi").mean == 0.0
    assert all(t.strip() for t in banned)  # it still writes something


# ----------------------------------------------------------------------------- ForcedEOS


@pytest.mark.parametrize(
    "options",
    [{}, {"do_sample": True, "seed": 1}, {"num_beams": 2}],
)
def test_forced_eos_gives_empty_continuations(options):
    out = generate(
        MODEL,
        TOK,
        ["hello", "नमस्ते", "x"],
        max_new_tokens=8,
        logits_processors=[ForcedEOSProcessor(EOS)],
        **options,
    )
    assert out == ["", "", ""]


def test_forced_eos_scores():
    scores = torch.randn(2, 5)
    out = ForcedEOSProcessor([1, 3])(torch.zeros(2, 1, dtype=torch.long), scores)
    assert out.tolist() == [[-math.inf, 0.0, -math.inf, 0.0, -math.inf]] * 2
    with pytest.raises(ValueError, match="outside the logits' 5 columns"):
        ForcedEOSProcessor(5)(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 5))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("2", TypeError, "eos_token_id must be a sequence of ints"),
        (-1, ValueError, "eos_token_id must be an int >= 0"),
        ([], ValueError, "at least one id"),
        ([1, 2.5], TypeError, r"eos_token_id\[1\] must be an int"),
    ],
)
def test_forced_eos_validation(value, error, match):
    with pytest.raises(error, match=match):
        ForcedEOSProcessor(value)


# ----------------------------------------------------------------------------- noise


def block_output(model, layer: int, ids: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = get_block(model, layer).register_forward_hook(
        lambda _m, _a, out: seen.append((out if isinstance(out, torch.Tensor) else out[0]).clone())
    )
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    return seen[0]


IDS = torch.tensor([[65, 66, 67, 68, 69], [70, 71, 72, 73, 74]])


def test_noise_is_scale_times_token_rms_times_a_seeded_normal():
    clean = block_output(MODEL, 0, IDS)
    with NoiseIntervention(MODEL, 0, scale=0.5, seed=7):
        noisy = block_output(MODEL, 0, IDS)  # the observer runs after the noise hook
    z = torch.randn(clean.shape, generator=torch.Generator().manual_seed(7))
    rms = clean.pow(2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(noisy, clean + 0.5 * rms * z)


def test_noise_is_reproducible_identity_at_zero_and_leaves_global_rng_alone():
    with torch.no_grad():
        base = MODEL(input_ids=IDS).logits
    state = torch.random.get_rng_state()
    runs = []
    for seed in (3, 3, 4):
        with NoiseIntervention(MODEL, 1, scale=1.0, seed=seed), torch.no_grad():
            runs.append(MODEL(input_ids=IDS).logits)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])
    assert not torch.allclose(runs[0], base)
    with NoiseIntervention(MODEL, 1, scale=0.0, seed=3), torch.no_grad():
        assert torch.equal(MODEL(input_ids=IDS).logits, base)
    mmie.assert_no_mmie_hooks(MODEL)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": 2, "scale": 1.0, "seed": 0}, ValueError, r"layer must be an int in \[0, 1\]"),
        ({"layer": 0, "scale": -1.0, "seed": 0}, ValueError, "scale must be a finite float >= 0"),
        ({"layer": 0, "scale": math.inf, "seed": 0}, ValueError, "scale must be"),
        ({"layer": 0, "scale": "big", "seed": 0}, TypeError, "scale must be"),
        ({"layer": 0, "scale": 1.0, "seed": 1.5}, TypeError, "seed must be an int"),
        ({"layer": 0, "scale": 1.0, "seed": -1}, ValueError, "seed must be an int in"),
    ],
)
def test_noise_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        NoiseIntervention(MODEL, **kwargs)


def test_docstring_examples():
    assert doctest.testmod(controls).failed == 0
