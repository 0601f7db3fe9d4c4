"""Output metrics (mmie.evaluation.output_metrics): closed-form cases, properties, validation,
and sampled leakage of the demo model with and without the control arms."""

from __future__ import annotations

import doctest
import functools
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mmie
import mmie.evaluation.output_metrics as output_metrics
from mmie.edits.controls import ForcedEOSProcessor, ScriptBanProcessor
from mmie.evaluation.output_metrics import (
    ALL_SCRIPTS,
    degeneracy,
    sampled_leakage,
    script_distribution,
    target_share,
)
from mmie.study.datasets import load_texts
from mmie.testing import byte_tokenizer, tiny_causal_lm

NEUTRAL = " 0123456789.,;!?-।॥०१२३४५६७८९\n\t"
LETTERS = "कखगमेरािंअबcatXYZابپਕਖਗকখগЖжλ"


def strict_json(data: object) -> str:
    return json.dumps(data, allow_nan=False, ensure_ascii=False)


@functools.cache
def demo() -> tuple[torch.nn.Module, object]:
    return mmie.load_demo_model()


HINDI = [p[: len(p) // 2] for p in load_texts("hindi_eval")[:3]]


# ----------------------------------------------------------------------------- target_share


def test_target_share_closed_form():
    r = target_share(["मेरा office 42।", "hello", "", "।। 42 ...", "कख ab"], "devanagari")
    assert r.values[:2] == (0.4, 0.0)
    assert math.isnan(r.values[2])
    assert math.isnan(r.values[3])
    assert r.values[4] == 0.5
    assert r.any_target == (True, False, False, False, True)
    assert r.n_target == (4, 0, 0, 0, 2)
    assert r.n_letters == (10, 5, 0, 0, 4)
    assert r.n_empty == 2
    assert r.mean == pytest.approx((0.4 + 0.0 + 0.5) / 3)
    assert r.script == "Deva"
    assert strict_json(r.to_dict())  # NaN -> None
    assert r.to_dict()["values"][2] is None


def test_target_share_of_only_empty_texts_is_nan_without_warning():
    r = target_share(["", "  ", "।"], "hi")
    assert math.isnan(r.mean)
    assert r.n_empty == 3
    assert r.to_dict()["mean"] is None


@given(st.lists(st.text(alphabet=LETTERS + NEUTRAL, max_size=30), min_size=1, max_size=5))
def test_target_share_properties(texts):
    r = target_share(texts, "Deva")
    for v, n, t, a in zip(r.values, r.n_letters, r.n_target, r.any_target):
        assert (n == 0) == math.isnan(v)
        assert math.isnan(v) or 0.0 <= v <= 1.0
        assert a == (t > 0)
    # script-neutral characters change nothing
    padded = target_share([f"{NEUTRAL}{t}{NEUTRAL}" for t in texts], "Deva")
    assert padded.n_target == r.n_target
    assert padded.n_letters == r.n_letters


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("text", "hi"), TypeError, "texts must be a sequence of strings, not a single string"),
        (([], "hi"), ValueError, "texts must not be empty"),
        ((["a", 3], "hi"), TypeError, r"texts\[1\] must be a str"),
        ((["a"], "klingon"), ValueError, "script must be one of"),
        ((["a"], 3), TypeError, "script must be a string"),
    ],
)
def test_target_share_validation(args, error, match):
    with pytest.raises(error, match=match):
        target_share(*args)


# ----------------------------------------------------------------------------- script_distribution


def test_script_distribution_closed_form():
    d = script_distribution(["मेरा office", "Привет", "", "ਕਖ কখ"])
    assert d.scripts == ("Deva", "Arab", "Guru", "Beng", "Latn", "Zzzz") == ALL_SCRIPTS
    assert d.counts[0] == (4, 0, 0, 0, 6, 0)
    assert d.share("hi")[0] == 0.4
    assert d.share("Zzzz")[1] == 1.0
    assert all(math.isnan(v) for v in d.shares[2])
    assert d.shares[3] == (0.0, 0.0, 0.5, 0.5, 0.0, 0.0)
    assert d.n_letters == (10, 6, 0, 4)
    assert d.pooled == (4 / 20, 0.0, 2 / 20, 2 / 20, 6 / 20, 6 / 20)
    out = d.to_dict()
    assert strict_json(out)
    assert out["shares"][0]["Latn"] == 0.6
    assert out["shares"][2]["Deva"] is None
    assert out["pooled"]["Zzzz"] == 0.3
    with pytest.raises(ValueError, match="script must be one of"):
        d.share("klingon")


@given(st.lists(st.text(alphabet=LETTERS + NEUTRAL, max_size=30), min_size=1, max_size=5))
def test_script_distribution_rows_sum_to_one_and_pooled_weights_letters(texts):
    d = script_distribution(texts)
    for row, n in zip(d.shares, d.n_letters):
        if n:
            assert math.fsum(row) == pytest.approx(1.0)
        else:
            assert all(math.isnan(v) for v in row)
    total = sum(d.n_letters)
    if total:
        for j, p in enumerate(d.pooled):
            assert p == pytest.approx(sum(c[j] for c in d.counts) / total)
    for mine, theirs in zip(d.share("Deva"), target_share(texts, "Deva").values):
        assert mine == theirs or (math.isnan(mine) and math.isnan(theirs))


# ----------------------------------------------------------------------------- degeneracy


def test_degeneracy_closed_form():
    texts = [
        "",
        "   ",
        "42.",
        "।।",
        "।।।।",
        "the cat the cat the cat",
        "aaaaaa",
        "hmmmmmmm",
        "A normal sentence about cats.",
        "hmm",
        "a b c a b c x y z w",
    ]
    d = degeneracy(texts)
    assert d.empty == (True, True, True, True, True, False, False, False, False, False, False)
    assert d.repetitive == (
        False,
        False,
        False,
        False,
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    )
    assert d.degenerate == tuple(e or r for e, r in zip(d.empty, d.repetitive))
    assert d.ngram_coverage[5] == pytest.approx(4 / 6)
    assert d.ngram_coverage[10] == pytest.approx(3 / 10)
    assert d.longest_run[4] == 4
    assert d.longest_run[9] == 2
    assert d.empty_rate == pytest.approx(5 / 11)
    assert d.degenerate_rate == pytest.approx(8 / 11)
    assert strict_json(d.to_dict())


def test_degeneracy_parameters():
    text = ["a b c a b c x y z w"]  # 3 of 10 words repeat an earlier trigram
    assert degeneracy(text, repeat_threshold=0.3).repetitive == (True,)
    assert degeneracy(text, repeat_threshold=0.31).repetitive == (False,)
    assert degeneracy(["ab cd"], min_chars=5).empty == (True,)
    assert degeneracy(["ab cde"], min_chars=5).empty == (False,)
    assert degeneracy(["go go go"], ngram=1).ngram_coverage == (pytest.approx(2 / 3),)
    assert degeneracy(["go go go"]).ngram_coverage == (0.0,)  # no trigram repeats


@given(
    words=st.lists(st.sampled_from(["a", "b", "कम", "ক", "x1"]), min_size=1, max_size=6),
    copies=st.integers(2, 4),
    ngram=st.integers(1, 4),
)
def test_a_phrase_said_k_times_covers_k_minus_1_over_k(words, copies, ngram):
    d = degeneracy([" ".join(words * copies)], ngram=ngram)
    n = len(words) * copies
    cover = d.ngram_coverage[0]
    assert 0.0 <= cover <= 1.0
    if ngram <= len(words):  # every word after the first copy repeats an earlier n-gram
        assert cover >= (copies - 1) * len(words) / n - 1e-12
        assert d.repetitive == (True,)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min_chars": 0}, ValueError, "min_chars must be an int >= 1"),
        ({"ngram": 0}, ValueError, "ngram must be an int >= 1"),
        ({"ngram": 2.0}, TypeError, "ngram must be an int"),
        ({"repeat_threshold": 0.0}, ValueError, r"repeat_threshold must be a float in \(0, 1\]"),
        ({"repeat_threshold": 1.5}, ValueError, "repeat_threshold must be"),
        ({"repeat_threshold": "x"}, TypeError, "repeat_threshold must be"),
    ],
)
def test_degeneracy_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        degeneracy(["text"], **kwargs)


# ----------------------------------------------------------------------------- sampled leakage


def test_sampled_leakage_is_seeded_and_consistent_with_target_share():
    model, tok = demo()
    state = torch.random.get_rng_state()
    a = sampled_leakage(model, tok, HINDI, n_samples=4, seed=3, max_new_tokens=12)
    b = sampled_leakage(model, tok, HINDI, n_samples=4, seed=3, max_new_tokens=12)
    c = sampled_leakage(model, tok, HINDI, n_samples=4, seed=4, max_new_tokens=12)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.to_dict() == b.to_dict()
    assert a.samples != c.samples
    assert len(a.samples) == len(HINDI)
    assert all(len(s) == 4 for s in a.samples)
    for samples, shares, frac, worst in zip(
        a.samples, a.shares, a.dominated_fraction, a.worst_share
    ):
        assert shares == target_share(list(samples), "hi").values
        assert frac == sum(1 for v in shares if v >= 0.5) / 4
        assert worst == max(v for v in shares if not math.isnan(v))
    assert a.mean_dominated > 0.5  # the demo model mostly continues Hindi in Hindi
    assert strict_json(a.to_dict())


def test_sampled_leakage_under_the_control_arms():
    model, tok = demo()
    ban = ScriptBanProcessor(tok, "hi")
    banned = sampled_leakage(
        model, tok, HINDI, n_samples=4, max_new_tokens=12, logits_processors=[ban]
    )
    assert banned.worst_share == (0.0,) * len(HINDI)
    assert banned.mean_dominated == 0.0
    assert banned.any_target_fraction == (0.0,) * len(HINDI)
    silent = sampled_leakage(
        model, tok, HINDI, n_samples=3, logits_processors=[ForcedEOSProcessor(tok.eos_token_id)]
    )
    assert silent.samples == (("", "", ""),) * len(HINDI)
    assert all(math.isnan(v) for v in silent.worst_share)
    assert math.isnan(silent.mean_worst)
    assert silent.n_empty == (3,) * len(HINDI)
    assert silent.to_dict()["mean_worst"] is None


def test_sampled_leakage_with_one_sample_and_a_byte_model():
    tok = byte_tokenizer()
    model = tiny_causal_lm("llama", seed=0)
    r = sampled_leakage(model, tok, ["x", "y"], n_samples=1, max_new_tokens=4, batch_size=1)
    assert [len(s) for s in r.samples] == [1, 1]
    assert r.n_samples == 1
    assert r.script == "Deva"


MODEL = tiny_causal_lm("llama", seed=0)
TOK = byte_tokenizer()


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("model", TOK, ["x"]), {}, TypeError, "model must be a torch.nn.Module"),
        ((MODEL, "tok", ["x"]), {}, TypeError, "tokenizer must be a transformers"),
        ((MODEL, TOK, "x"), {}, TypeError, "not a single string"),
        ((MODEL, TOK, []), {}, ValueError, "prompts must not be empty"),
        ((MODEL, TOK, ["x"]), {"n_samples": 0}, ValueError, "n_samples must be an int >= 1"),
        ((MODEL, TOK, ["x"]), {"temperature": 0.0}, ValueError, "temperature must be"),
        ((MODEL, TOK, ["x"]), {"seed": -1}, ValueError, "seed must be an int in"),
        ((MODEL, TOK, ["x"]), {"seed": None}, TypeError, "seed must be an int"),
        ((MODEL, TOK, ["x"]), {"dominated": 0.0}, ValueError, r"dominated must be a float in"),
        ((MODEL, TOK, ["x"]), {"script": "klingon"}, ValueError, "script must be one of"),
        ((MODEL, TOK, ["x"]), {"max_new_tokens": 0}, ValueError, "max_new_tokens must be"),
    ],
)
def test_sampled_leakage_validation(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        sampled_leakage(*args, **kwargs)


def test_docstring_examples():
    assert doctest.testmod(output_metrics).failed == 0
