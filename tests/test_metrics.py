"""Metrics against independent computations written here (manual sums, scipy, brute force)."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmie import metrics as M
from mmie.hooks import BlockIntervention, assert_no_mmie_hooks
from mmie.lid import Detection, EnsembleDetector, ScriptDetector
from mmie.testing import tiny_causal_lm

TEXTS = [
    "hello world",
    "नमस्ते दुनिया",
    "ab",
    "a much longer sentence than all the others, to force padding",
    "xyz",
    "मेरा नाम राम है",
    "the cat sat",
    "ਅੱਜ ਬਹੁਤ ਗਰਮੀ ਹੈ।",
    "আজ খুব বৃষ্টি হচ্ছে।",
]


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm("llama", seed=0)


@pytest.fixture(scope="module")
def other():
    return tiny_causal_lm("llama", seed=1)


def _token_logprobs(model, tokenizer, text):
    """Log-probabilities of each predicted token of one unpadded text (manual)."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()  # (seq, vocab)
    logp = torch.log_softmax(logits, -1)
    return torch.stack([logp[t, ids[0, t + 1]] for t in range(ids.shape[1] - 1)])


# ---------------------------------------------------------------------- perplexity
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_perplexity_matches_manual_sum_and_batch_size(arch, tokenizer):
    model = tiny_causal_lm(arch, seed=0)
    lps = [_token_logprobs(model, tokenizer, t) for t in TEXTS]
    total_nll = -sum(float(lp.sum()) for lp in lps)
    total_tokens = sum(lp.numel() for lp in lps)
    r1 = M.perplexity(model, tokenizer, TEXTS, batch_size=1)
    r8 = M.perplexity(model, tokenizer, TEXTS, batch_size=8)
    assert r1.n_tokens == r8.n_tokens == tuple(lp.numel() for lp in lps)
    np.testing.assert_allclose(r1.perplexity, math.exp(total_nll / total_tokens), rtol=1e-5)
    np.testing.assert_allclose(r8.perplexity, r1.perplexity, rtol=1e-6)
    np.testing.assert_allclose(r8.nll, [-float(lp.sum()) for lp in lps], rtol=1e-5)
    np.testing.assert_allclose(r8.mean_nll, math.log(r8.perplexity), rtol=1e-12)
    np.testing.assert_allclose(
        r8.item_perplexity, [math.exp(-float(lp.mean())) for lp in lps], rtol=1e-5
    )


@settings(max_examples=10, deadline=None)
@given(
    others=st.lists(st.text(alphabet="abcdefgh नमस्ते", min_size=1, max_size=30), max_size=5),
    position=st.integers(0, 5),
)
def test_perplexity_padding_invariance(model, tokenizer, others, position):
    text = "the quick brown fox"
    alone = M.perplexity(model, tokenizer, [text])
    batch = list(others)
    batch.insert(min(position, len(batch)), text)
    together = M.perplexity(model, tokenizer, batch, batch_size=len(batch))
    i = batch.index(text)
    assert together.n_tokens[i] == alone.n_tokens[0]
    np.testing.assert_allclose(together.nll[i], alone.nll[0], rtol=1e-5)


def test_perplexity_validation(model, tokenizer):
    with pytest.raises(ValueError, match="texts must not be empty"):
        M.perplexity(model, tokenizer, [])
    with pytest.raises(TypeError, match="not a single string"):
        M.perplexity(model, tokenizer, "hello")
    with pytest.raises(ValueError, match="batch_size"):
        M.perplexity(model, tokenizer, ["ab"], batch_size=0)
    with pytest.raises(ValueError, match="no predicted token"):
        M.perplexity(model, tokenizer, ["a", "b"])


# ---------------------------------------------------------------------- token KL
def _manual_kl(model, reference, tokenizer, text):
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        p = torch.log_softmax(reference(input_ids=ids).logits[0].double(), -1)
        q = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return [float((p[t].exp() * (p[t] - q[t])).sum()) for t in range(ids.shape[1])]


def test_token_kl_matches_manual_sum(model, other, tokenizer):
    per_text = [_manual_kl(model, other, tokenizer, t) for t in TEXTS]
    r = M.token_kl(model, other, tokenizer, TEXTS, batch_size=3)
    assert r.n_tokens == tuple(len(v) for v in per_text)
    np.testing.assert_allclose(r.values, [np.mean(v) for v in per_text], rtol=1e-4)
    flat = [x for v in per_text for x in v]
    np.testing.assert_allclose(r.kl, np.mean(flat), rtol=1e-4)
    # direction: KL(p_ref || p_model), not the reverse
    rev = M.token_kl(other, model, tokenizer, TEXTS)
    assert abs(rev.kl - r.kl) > 1e-6
    assert M.token_kl(model, model, tokenizer, TEXTS).kl == pytest.approx(0.0, abs=1e-7)


class _Shift(BlockIntervention):
    """Adds a constant vector to block 0's output (a stand-in for a hook-based arm)."""

    def _build_edits(self):
        shift = torch.linspace(-1.0, 1.0, 32)
        return [(0, lambda h: h + shift)]


def test_token_kl_reference_context_uses_same_weights(model, tokenizer):
    arm = _Shift(model)
    with arm:
        got = M.token_kl(model, lambda: M.detached(arm), tokenizer, TEXTS[:4])
        assert arm.attached  # re-attached after every reference pass
        shifted = [M.perplexity(model, tokenizer, [t]).nll[0] for t in TEXTS[:2]]  # with the edit
    assert_no_mmie_hooks(model)
    unshifted = [M.perplexity(model, tokenizer, [t]).nll[0] for t in TEXTS[:2]]
    assert shifted != unshifted  # the intervention does something

    class _Hooked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, **kw):
            with _Shift(model):
                return model(**kw)

    expected = [_manual_kl(_Hooked(), model, tokenizer, t) for t in TEXTS[:4]]
    np.testing.assert_allclose(got.values, [np.mean(v) for v in expected], rtol=1e-4)


def test_token_kl_peft_disable_adapter(tokenizer):
    peft = pytest.importorskip("peft")
    base = tiny_causal_lm("llama", seed=3)
    copy = tiny_causal_lm("llama", seed=3)
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    arm = peft.get_peft_model(base, config).eval()
    got = M.token_kl(arm, arm.disable_adapter, tokenizer, TEXTS[:3])
    expected = M.token_kl(arm, copy, tokenizer, TEXTS[:3])
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-5)
    assert got.kl > 0


def test_token_kl_rejects_bad_reference(model, tokenizer):
    with pytest.raises(TypeError, match=r"reference must be an nn\.Module"):
        M.token_kl(model, 42, tokenizer, TEXTS)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must return a context manager"):
        M.token_kl(model, lambda: 3, tokenizer, TEXTS)  # type: ignore[arg-type,return-value]
    bigger = tiny_causal_lm("llama", vocab_size=300)
    with pytest.raises(ValueError, match="share a vocabulary"):
        M.token_kl(model, bigger, tokenizer, TEXTS[:2])


# ---------------------------------------------------------------------- membership inference
def test_mia_scores_match_manual(model, tokenizer):
    texts = TEXTS[:6]
    lps = [_token_logprobs(model, tokenizer, t).numpy() for t in texts]
    loss = M.mia_scores(model, tokenizer, texts, attack="loss", batch_size=4)
    np.testing.assert_allclose(loss, [lp.mean() for lp in lps], rtol=1e-5)
    z = M.mia_scores(model, tokenizer, texts, attack="zlib", batch_size=4)
    np.testing.assert_allclose(
        z, [lp.mean() / len(zlib.compress(t.encode())) for lp, t in zip(lps, texts)], rtol=1e-5
    )
    mk = M.mia_scores(model, tokenizer, texts, attack="min_k", k=0.4)
    expected = [np.sort(lp)[: max(1, int(0.4 * lp.size))].mean() for lp in lps]
    np.testing.assert_allclose(mk, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="attack must be one of"):
        M.mia_scores(model, tokenizer, texts, attack="ratio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be in"):
        M.mia_scores(model, tokenizer, texts, attack="min_k", k=0.0)
    with pytest.raises(ValueError, match="fewer than two tokens"):
        M.mia_scores(model, tokenizer, ["a", "abc"])


finite = st.floats(-5, 5, allow_nan=False).map(lambda v: round(v, 1))  # rounding makes ties


@settings(max_examples=40, deadline=None)
@given(a=st.lists(finite, min_size=1, max_size=30), b=st.lists(finite, min_size=1, max_size=30))
def test_mia_auc_matches_mannwhitney_and_is_antisymmetric(a, b):
    r = M.mia_auc(a, b)
    u = scipy.stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    np.testing.assert_allclose(r.auc, u / (len(a) * len(b)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(M.mia_auc(b, a).auc, 1.0 - r.auc, atol=1e-12)
    # TPR at FPR: brute force over every threshold (predict member iff score >= t)
    best = 0.0
    for t in [*a, *b, math.inf]:
        fpr = np.mean(np.asarray(b) >= t)
        if fpr <= 0.01:
            best = max(best, float(np.mean(np.asarray(a) >= t)))
    assert r.tpr_at_fpr == pytest.approx(best)
    assert (r.n_members, r.n_nonmembers) == (len(a), len(b))


def test_mia_auc_tpr_at_one_percent():
    rng = np.random.default_rng(0)
    non = rng.normal(size=1000)
    mem = rng.normal(loc=2.0, size=500)
    r = M.mia_auc(mem, non)
    eleventh = np.sort(non)[-11]  # any threshold above it has at most 10 false positives
    assert r.tpr_at_fpr == pytest.approx(np.mean(mem > eleventh))
    with pytest.raises(ValueError, match="fpr must be in"):
        M.mia_auc(mem, non, fpr=1.0)
    with pytest.raises(ValueError, match="member_scores must be a non-empty"):
        M.mia_auc([], non)
    with pytest.raises(ValueError, match="finite"):
        M.mia_auc([np.nan], non)


def test_membership_inference_per_example_and_disjoint(model, tokenizer):
    r = M.membership_inference(model, tokenizer, TEXTS[:4], TEXTS[4:8], attack="loss")
    assert len(r.member_scores) == 4
    assert len(r.nonmember_scores) == 4
    assert r.auc == pytest.approx(M.mia_auc(r.member_scores, r.nonmember_scores).auc)
    assert r.attack == "loss"
    with pytest.raises(ValueError, match="both members and non-members"):
        M.membership_inference(model, tokenizer, TEXTS[:4], TEXTS[3:6])


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
        es = M.extraction_strength([text, text], det, method=method)
        assert det.calls == 2 * n == es.detector_calls
        assert es.values == (0.0, 0.0)


def test_extraction_strength_definition():
    # one Latin word, then Devanagari: the prefix turns Hindi at word 2 (1 + 3 > 2 letters)
    es = M.extraction_strength(
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
        es = M.extraction_strength(gens, det, "hi", method=method)
        assert es.values == (0.0, 0.0, 0.0)
    assert M.extraction_strength(gens[:1], ScriptDetector(), "pa", method=method).values == (1.0,)


words = st.sampled_from(["नमस्ते", "है", "hello", "a", "ਅੱਜ", "১২", "।", "42", "অজ", "راز", "Ωμέγα"])


@settings(max_examples=60, deadline=None)
@given(st.lists(words, max_size=12), st.sampled_from(["hi", "en", "pa", "bn", "ur"]))
def test_word_method_is_exact_for_script_detector(ws, target):
    text = " ".join(ws)
    det = ScriptDetector()
    fast = M.extraction_strength([text], det, target, method="word")
    exact = M.extraction_strength([text], det, target, method="prefix")
    assert fast.onsets == exact.onsets
    # and the prefix method agrees with labelling every prefix by brute force
    labels = [det.detect(" ".join(ws[: k + 1])).label for k in range(len(ws))]
    first = next((k for k, lab in enumerate(labels) if lab == target), None)
    assert exact.onsets == (first,)


def test_extraction_strength_romanised_and_validation():
    es = M.extraction_strength(["I went home", "mera naam Ram hai"], EnsembleDetector(), "hi-Latn")
    assert es.values[0] == 0.0
    assert es.values[1] > 0
    assert es.method == "prefix"
    with pytest.raises(TypeError, match="detect_batch"):
        M.extraction_strength(["x"], object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method must be"):
        M.extraction_strength(["x"], ScriptDetector(), method="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generations must not be empty"):
        M.extraction_strength([], ScriptDetector())


def test_word_method_uses_labels_without_distribution():
    class Fixed:
        def detect(self, text):
            return Detection("hi" if "x" in text else "en", 0.9)

        def detect_batch(self, texts):
            return [self.detect(t) for t in texts]

    # word letters: aaa=3 (en), x=1 (hi), xxxxx=5 (hi): the tally turns hi at word 3
    es = M.extraction_strength(["aaa x xxxxx"], Fixed(), method="word")
    assert es.onsets == (2,)


# ---------------------------------------------------------------------- script mass
def test_script_mass_matches_manual_softmax(model, tokenizer):
    from mmie.lid import script_token_mask

    mask = script_token_mask(tokenizer, "Latn")
    texts = ["hello there", "नमस्ते", "abc def ghi"]
    nt = M.script_mass(model, tokenizer, texts, "Latn", batch_size=2)
    tf = M.script_mass(model, tokenizer, texts, mask, mode="teacher_forced")
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
        M.script_mass(model, tokenizer, ["ab"], torch.zeros(259, dtype=torch.bool))
    with pytest.raises(ValueError, match="1-D bool tensor"):
        M.script_mass(model, tokenizer, ["ab"], torch.zeros(259))
    with pytest.raises(ValueError, match="mode must be"):
        M.script_mass(model, tokenizer, ["ab"], "Latn", mode="greedy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least two tokens"):
        M.script_mass(model, tokenizer, ["a"], "Latn", mode="teacher_forced")


# ---------------------------------------------------------------------- probes
def test_logistic_fit_matches_scipy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(40, generator=g, dtype=torch.float64) > 0).double()
    w, b = M._fit_logistic(x, y, l2=0.1, max_iter=200)
    xn, yn = x.numpy(), y.numpy()

    def objective(theta):
        z = xn @ theta[:5] + theta[5]
        nll = np.mean(np.logaddexp(0.0, z) - yn * z)
        return nll + 0.05 * np.sum(theta[:5] ** 2)

    ref = scipy.optimize.minimize(objective, np.zeros(6), method="BFGS", tol=1e-10).x
    np.testing.assert_allclose(w.numpy(), ref[:5], atol=1e-4)
    np.testing.assert_allclose(float(b), ref[5], atol=1e-4)


def test_probe_auc_separable_and_null():
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(40, 16, generator=g) + 2.0 * torch.eye(16)[0]
    neg = torch.randn(40, 16, generator=g) - 2.0 * torch.eye(16)[0]
    r = M.probe_auc(pos, neg, seed=0)
    assert r.auc > 0.95
    assert abs(r.control_auc - 0.5) < 0.3
    assert r.selectivity == pytest.approx(r.auc - r.control_auc)
    assert r.n_test == 24
    assert r.n_train == 56
    assert M.probe_auc(pos, neg, seed=0) == r  # deterministic given the seed
    null = M.probe_auc(torch.randn(40, 16, generator=g), torch.randn(40, 16, generator=g))
    assert null.auc < 0.8
    assert r.relative_to(null) == pytest.approx(r.auc - null.auc)
    assert math.isnan(M.probe_auc(pos, neg, control=False).control_auc)


def test_probe_auc_validation():
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match="same d_model"):
        M.probe_auc(x, torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2 examples per class"):
        M.probe_auc(x, torch.randn(1, 4))
    with pytest.raises(ValueError, match="test_fraction"):
        M.probe_auc(x, x, test_fraction=1.0)


# ---------------------------------------------------------------------- cross-lingual leakage
def test_cross_lingual_leakage_is_paired_difference(model, other, tokenizer):
    outputs = {id(model): "hello नमस्ते दुनिया", id(other): "hello there friend"}

    def fake_generate(m, tok, prompts):
        return [outputs[id(m)]] * len(prompts)

    prompts = {"pa": ["ਅੱਜ ਬਹੁਤ ਗਰਮੀ ਹੈ।", "ਮੈਂ ਘਰ"], "en": ["the cat", "a dog"]}
    res = M.cross_lingual_leakage(
        model, other, tokenizer, prompts, ScriptDetector(), generate=fake_generate
    )
    assert list(res) == ["pa", "en"]
    for lang, texts in prompts.items():
        r = res[lang]
        es_m = M.extraction_strength([outputs[id(model)]] * 2, ScriptDetector()).values
        assert r.es_diffs == pytest.approx(tuple(a - 0.0 for a in es_m))
        assert r.es_delta == pytest.approx(2 / 3)
        pm = M.perplexity(model, tokenizer, texts)
        pb = M.perplexity(other, tokenizer, texts)
        assert r.ppl_ratio == pytest.approx(pm.perplexity / pb.perplexity)
        np.testing.assert_allclose(
            r.nll_diffs, np.subtract(pm.item_nll, pb.item_nll), rtol=1e-6, atol=1e-9
        )


def test_cross_lingual_leakage_default_greedy_with_context(model, tokenizer):
    arm = _Shift(model)
    with arm:
        res = M.cross_lingual_leakage(
            model,
            lambda: M.detached(arm),
            tokenizer,
            {"bn": ["আজ খুব"], "en": ["hello"]},
            ScriptDetector(),
            max_new_tokens=4,
        )
        assert arm.attached
    assert_no_mmie_hooks(model)
    base = M.perplexity(model, tokenizer, ["আজ খুব"])
    assert res["bn"].ppl_base == pytest.approx(base.perplexity, rel=1e-6)
    assert res["bn"].ppl_model != pytest.approx(base.perplexity, rel=1e-6)
    with pytest.raises(ValueError, match="no entry for language"):
        M.cross_lingual_leakage(
            model, model, tokenizer, {"bn": ["x y"]}, ScriptDetector(), texts={"en": ["x y"]}
        )
