"""Language metrics (extraction strength, script mass) against brute force and manual softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmie.lid import Detection, EnsembleDetector, ScriptDetector
from mmie.metrics import extraction_strength, script_mass
from mmie.testing import tiny_causal_lm


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm("llama", seed=0)


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
    from mmie.lid import script_token_mask

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
