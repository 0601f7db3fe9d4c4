"""Language metrics (extraction strength, script mass) against brute force and manual softmax."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmie.evaluation.language_metrics import extraction_strength, script_mass
from mmie.language.detectors import Detection, EnsembleDetector, ScriptDetector
from mmie.testing import ARCHITECTURES, tiny_causal_lm


# ---------------------------------------------------------------------- extraction strength
class CountingDetector:
    """Wraps a detector and counts how many texts it labels."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def detect(self, text):
        self.calls += 1
        return self.inner.detect(text)

    def detect_batch(self, texts):
        self.calls += len(texts)
        return self.inner.detect_batch(texts)


@pytest.mark.parametrize("method", ["prefix", "word"])
def test_extraction_strength_detector_calls_linear(method):
    for n in (10, 40, 160):
        det = CountingDetector(ScriptDetector())
        text = " ".join(["word"] * n)  # never Hindi: the worst case scans every word
        es = extraction_strength([text, text], det, method=method)
        assert det.calls == 2 * n == es.detector_calls
        assert es.values == (0.0, 0.0)


def test_extraction_strength_definition():
    # one Latin word, then Devanagari: the prefix turns Hindi at word 2 (1 + 3 > 2 letters)
    es = extraction_strength(
        ["ok नमस्ते दुनिया", "नमस्ते", "plain English text", "  "], ScriptDetector()
    )
    assert es.onsets == (1, 0, None, None)
    assert es.n_words == (3, 1, 3, 0)
    assert es.values == pytest.approx((1 - 1 / 3, 1.0, 0.0, 0.0))
    assert es.mean == pytest.approx(np.mean(es.values))
    assert es.method == "word"


@pytest.mark.parametrize("method", ["prefix", "word"])
def test_danda_does_not_make_punjabi_or_bengali_hindi(method):
    gens = ["ਅੱਜ ਬਹੁਤ ਗਰਮੀ ਹੈ। ਮੈਂ ਘਰ ਜਾ ਰਿਹਾ ਹਾਂ।", "আজ খুব বৃষ্টি হচ্ছে। ।", "। ॥ १२३ ।"]
    for det in (ScriptDetector(), EnsembleDetector()):
        es = extraction_strength(gens, det, "hi", method=method)
        assert es.values == (0.0, 0.0, 0.0)
    assert extraction_strength(gens[:1], ScriptDetector(), "pa", method=method).values == (1.0,)


words = st.sampled_from(["नमस्ते", "है", "hello", "a", "ਅੱਜ", "১২", "।", "42", "অজ", "راز", "Ωμέγα"])


@settings(max_examples=60, deadline=None)
@given(st.lists(words, max_size=12), st.sampled_from(["hi", "en", "pa", "bn", "ur"]))
def test_word_method_is_exact_for_script_detector(ws, target):
    text = " ".join(ws)
    det = ScriptDetector()
    fast = extraction_strength([text], det, target, method="word")
    exact = extraction_strength([text], det, target, method="prefix")
    assert fast.onsets == exact.onsets
    # and the prefix method agrees with labelling every prefix by brute force
    labels = [det.detect(" ".join(ws[: k + 1])).label for k in range(len(ws))]
    first = next((k for k, lab in enumerate(labels) if lab == target), None)
    assert exact.onsets == (first,)


def test_extraction_strength_romanised_and_validation():
    es = extraction_strength(["I went home", "mera naam Ram hai"], EnsembleDetector(), "hi-Latn")
    assert es.values[0] == 0.0
    assert es.values[1] > 0
    assert es.method == "prefix"
    with pytest.raises(TypeError, match="detect_batch"):
        extraction_strength(["x"], object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method must be"):
        extraction_strength(["x"], ScriptDetector(), method="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generations must not be empty"):
        extraction_strength([], ScriptDetector())


def test_word_method_uses_labels_without_distribution():
    class Fixed:
        def detect(self, text):
            return Detection("hi" if "x" in text else "en", 0.9)

        def detect_batch(self, texts):
            return [self.detect(t) for t in texts]

    # word letters: aaa=3 (en), x=1 (hi), xxxxx=5 (hi): the tally turns hi at word 3
    es = extraction_strength(["aaa x xxxxx"], Fixed(), method="word")
    assert es.onsets == (2,)


# ---------------------------------------------------------------------- script mass
def test_script_mass_matches_manual_softmax(model, tokenizer):
    from mmie.language.unicode import script_token_mask

    mask = script_token_mask(tokenizer, "Latn")
    texts = ["hello there", "नमस्ते", "abc def ghi"]
    nt = script_mass(model, tokenizer, texts, "Latn", batch_size=2)
    tf = script_mass(model, tokenizer, texts, mask, mode="teacher_forced")
    assert nt.n_target_tokens == 52
    for i, text in enumerate(texts):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            p = torch.softmax(model(input_ids=ids).logits[0].double(), -1)[:, mask]
        assert nt.values[i] == pytest.approx(float(p[-1].sum()), rel=1e-5)
        assert tf.values[i] == pytest.approx(float(p[:-1].sum(-1).mean()), rel=1e-5)
    assert 0.0 < nt.mean < 1.0


def test_script_mass_validation(model, tokenizer):
    with pytest.raises(ValueError, match="selects no token"):
        script_mass(model, tokenizer, ["ab"], torch.zeros(259, dtype=torch.bool))
    with pytest.raises(ValueError, match="1-D bool tensor"):
        script_mass(model, tokenizer, ["ab"], torch.zeros(259))
    with pytest.raises(ValueError, match="mode must be"):
        script_mass(model, tokenizer, ["ab"], "Latn", mode="greedy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least two tokens"):
        script_mass(model, tokenizer, ["a"], "Latn", mode="teacher_forced")


class MarkovLM(torch.nn.Module):
    """A byte-level "model" whose next-token distribution depends only on the last token:
    ``rows[last] = {token: probability}`` (other rows uniform)."""

    def __init__(self, rows: dict[int, dict[int, float]], vocab: int = 259) -> None:
        super().__init__()
        table = torch.zeros(vocab, vocab)
        for last, dist in rows.items():
            table[last] = -1e9
            for token, prob in dist.items():
                table[last, token] = float(np.log(prob))
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        return types.SimpleNamespace(logits=self.table[input_ids])


CONT = range(0x80, 0xC0)  # UTF-8 continuation bytes
MARKOV = {
    ord("x"): {0xE0: 0.5, 0xD0: 0.1, ord("a"): 0.2, ord(" "): 0.2},
    0xE0: {0xA4: 0.6, 0xA5: 0.4},  # E0 A4 xx: Devanagari letters; E0 A5 A4: the danda
    0xA4: {b: 1 / 64 for b in CONT},
    0xA5: {0xA4: 1.0},
    0xD0: {b: 1 / 64 for b in CONT},  # D0 xx: Cyrillic
    ord(" "): {ord("a"): 0.5, 0xE0: 0.5},
}


@pytest.mark.parametrize(
    ("max_depth", "tol", "found", "unresolved"),
    [
        (1, 1e-12, 0.0, 0.8),  # E0, D0 (incomplete) and " " are undecided after one token
        (3, 1e-12, 0.3, 0.3),  # x E0 A4 xx decided; x E0 A5 A4 (danda) and " " E0 .. open
        (4, 1e-12, 0.36, 0.04),  # " " E0 A4 xx decided; x E0 A5 A4 + stray byte: invalid
        (5, 1e-12, 0.36, 0.0),
        (5, 0.05, 0.36, 0.04),  # " " E0 A5 (0.04) is below tol
    ],
)
def test_next_char_mass_by_hand(tokenizer, max_depth, tol, found, unresolved):
    """P(first script character is Devanagari) after "x", worked out by hand: 0.5 · 0.6
    (E0 A4 xx) + 0.2 · 0.5 · 0.6 (a space, then E0 A4 xx) = 0.36. The danda (E0 A5 A4) and
    the space are script-neutral, Cyrillic (D0 xx) and "a" are other scripts."""
    model = MarkovLM(MARKOV).eval()
    r = script_mass(model, tokenizer, ["x"], "hi", mode="next_char", max_depth=max_depth, tol=tol)
    assert r.mode == "next_char"
    assert r.values[0] == pytest.approx(found, abs=1e-6)  # fp32 logits
    assert r.unresolved[0] == pytest.approx(unresolved, abs=1e-6)
    assert r.n_target_tokens == 0  # no single byte is a Devanagari character
    assert r.n_forward >= 1


def test_next_char_mass_agrees_with_sampling():
    """On the demo model (byte-level BPE with partial-character tokens): the exact search
    against the share of sampled continuations whose first script letter is Devanagari."""
    from mmie.language.unicode import script_of_char
    from mmie.study.demo import load_demo_model

    model, tok = load_demo_model()
    prompts = ["मेरे दोस्त", "The weather is"]
    exact = script_mass(model, tok, prompts, "Deva", mode="next_char", tol=1e-6, max_depth=6)
    assert max(exact.unresolved) < 1e-3
    gen = torch.Generator().manual_seed(0)
    n = 3000
    for i, prompt in enumerate(prompts):
        prompt_ids = tok([prompt], return_tensors="pt")["input_ids"]
        ids = prompt_ids.repeat(n, 1)
        for _ in range(6):
            with torch.no_grad():
                p = model(input_ids=ids).logits[:, -1].float().softmax(-1)
            ids = torch.cat([ids, torch.multinomial(p, 1, generator=gen)], dim=1)
        hits = undecided = 0
        for row in ids[:, prompt_ids.shape[1] :].tolist():
            text = tok.decode(row, skip_special_tokens=False).split("\ufffd")[0]
            letters = [s for s in map(script_of_char, text) if s is not None]
            if letters:
                hits += letters[0] == "Deva"
            else:
                undecided += 1
        rate = hits / n
        se = max(float(np.sqrt(exact.values[i] * (1 - exact.values[i]) / n)), 1e-3)
        assert abs(rate - exact.values[i]) < 4 * se + undecided / n


def test_token_bytes_of_byte_level_and_byte_fallback_tokenizers(tokenizer):
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from mmie.language.unicode import token_bytes

    raw = token_bytes(tokenizer)
    assert raw[:256] == tuple(bytes([b]) for b in range(256))
    assert raw[256:] == (None, None, None)  # pad, bos, eos
    vocab = {"<unk>": 0, "<0xE0>": 1, "<0xA4>": 2, "\u2581the": 3, "क": 4, "a": 5}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    sp = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    assert token_bytes(sp) == (None, b"\xe0", b"\xa4", b" the", "क".encode(), b"a")


def test_next_char_validation(model, tokenizer):
    with pytest.raises(TypeError, match="script name"):
        script_mass(model, tokenizer, ["ab"], torch.ones(259, dtype=torch.bool), mode="next_char")
    with pytest.raises(ValueError, match="tol must be"):
        script_mass(model, tokenizer, ["ab"], "Deva", mode="next_char", tol=1.0)
    with pytest.raises(ValueError, match="tol must be"):
        script_mass(model, tokenizer, ["ab"], "Deva", mode="next_char", tol=0.0)
    with pytest.raises(ValueError, match="max_depth"):
        script_mass(model, tokenizer, ["ab"], "Deva", mode="next_char", max_depth=0)
    with pytest.raises(ValueError, match="script must be one of"):
        script_mass(model, tokenizer, ["ab"], "Klingon", mode="next_char")


@pytest.mark.parametrize("prefix", [b"", b"\xe0", b"\xe0\xa4", b"\xe0\xa5", b"\xd0", b"\xf0\x9f"])
def test_token_classification_skips_only_impossible_tokens(prefix):
    """After an incomplete character only tokens starting with a continuation byte are
    examined; the result equals examining every token."""
    from mmie.language.unicode import _first_script, classify_tokens, token_bytes
    from mmie.study.demo import load_demo_model

    _, tok = load_demo_model()
    status, pending = classify_tokens(tok, "Deva", prefix)
    special = set(tok.all_special_ids)
    for i, data in enumerate(token_bytes(tok)):
        if data is None:
            assert status[i] == (0 if i in special else -2)
            continue
        state, rest = _first_script(prefix + data, "Deva")
        assert status[i] == state
        assert pending.get(i, b"") == rest


# --------------------------------------------------------- next_char from the KV cache

LONG = "यह एक लंबा वाक्य है जो बहुत सारे बाइट्स रखता है और "


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_next_char_from_the_prompt_cache_equals_recomputing_every_sequence(tokenizer, arch):
    """Random tiny models over a byte tokenizer have high-entropy next-byte distributions, so
    the search branches a lot: the cached expansion must give the recomputed values."""
    from mmie.evaluation.language_metrics import _next_char_mass_recompute

    model = tiny_causal_lm(arch, seed=1)
    prompts = ["नमस्ते दुनिया", "hello there my", "क", "मेरा नाम", LONG, "x"]
    kw = {"batch_size": 2, "max_length": 256, "max_depth": 3, "tol": 2e-3}
    cached = script_mass(model, tokenizer, prompts, "hi", mode="next_char", **kw)
    with torch.no_grad():
        whole = _next_char_mass_recompute(model, tokenizer, prompts, "hi", 2, 256, 3, 2e-3)
    assert cached.n_forward == whole.n_forward > 2 * len(prompts)  # it did branch
    np.testing.assert_allclose(cached.values, whole.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(cached.unresolved, whole.unresolved, rtol=0, atol=1e-6)
    # kv_cache=False is exactly the recomputation, with its forward passes
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        plain = script_mass(model, tokenizer, prompts, "hi", mode="next_char", kv_cache=False, **kw)
    finally:
        handle.remove()
    assert plain == whole
    assert len(calls) > len(prompts) // 2  # whole sequences, re-run batch by batch
    with pytest.raises(TypeError, match="kv_cache"):
        script_mass(model, tokenizer, prompts, "hi", mode="next_char", kv_cache=1)


def test_next_char_from_the_cache_on_the_demo_and_a_peft_model(tokenizer):
    from peft import LoraConfig, get_peft_model

    from mmie.evaluation.language_metrics import _cache_argument, _next_char_mass_recompute
    from mmie.study.demo import load_demo_model

    demo, tok = load_demo_model()
    prompts = ["मेरे दोस्त", "The weather is", "आज मौसम", "कल हम"]
    for model, t in ((demo, tok), (tiny_causal_lm("llama", seed=2), tokenizer)):
        peft = get_peft_model(
            model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        ).eval()
        for m in (model, peft) if t is tokenizer else (model,):
            assert _cache_argument(m) is not None
            cached = script_mass(m, t, prompts, "Deva", mode="next_char", tol=1e-4)
            with torch.no_grad():
                whole = _next_char_mass_recompute(m, t, prompts, "Deva", 8, 1024, 4, 1e-4)
            assert cached.n_forward == whole.n_forward
            np.testing.assert_allclose(cached.values, whole.values, rtol=0, atol=1e-6)
            np.testing.assert_allclose(cached.unresolved, whole.unresolved, rtol=0, atol=1e-6)
    assert _cache_argument(MarkovLM(MARKOV)) is None  # no cache: every sequence re-run
