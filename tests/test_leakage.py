"""Cross-lingual leakage as paired differences of extraction strength and perplexity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmie.evaluation.language_metrics import extraction_strength
from mmie.evaluation.leakage import cross_lingual_leakage
from mmie.evaluation.scoring import perplexity
from mmie.language.detectors import ScriptDetector
from mmie.models.hooks import BlockIntervention, assert_no_mmie_hooks, detached


class _Shift(BlockIntervention):
    """Adds a constant vector to block 0's output (a stand-in for a hook-based arm)."""

    def _build_edits(self):
        shift = torch.linspace(-1.0, 1.0, 32)
        return [(0, lambda h: h + shift)]


def test_cross_lingual_leakage_is_paired_difference(model, other, tokenizer):
    outputs = {id(model): "hello नमस्ते दुनिया", id(other): "hello there friend"}

    def fake_generate(m, tok, prompts):
        return [outputs[id(m)]] * len(prompts)

    prompts = {"pa": ["ਅੱਜ ਬਹੁਤ ਗਰਮੀ ਹੈ।", "ਮੈਂ ਘਰ"], "en": ["the cat", "a dog"]}
    res = cross_lingual_leakage(
        model, other, tokenizer, prompts, ScriptDetector(), generate=fake_generate
    )
    assert list(res) == ["pa", "en"]
    for lang, texts in prompts.items():
        r = res[lang]
        es_m = extraction_strength([outputs[id(model)]] * 2, ScriptDetector()).values
        assert r.es_diffs == pytest.approx(tuple(a - 0.0 for a in es_m))
        assert r.es_delta == pytest.approx(2 / 3)
        pm = perplexity(model, tokenizer, texts)
        pb = perplexity(other, tokenizer, texts)
        assert r.ppl_ratio == pytest.approx(pm.perplexity / pb.perplexity)
        np.testing.assert_allclose(
            r.nll_diffs, np.subtract(pm.item_nll, pb.item_nll), rtol=1e-6, atol=1e-9
        )


def test_cross_lingual_leakage_default_greedy_with_context(model, tokenizer):
    arm = _Shift(model)
    with arm:
        res = cross_lingual_leakage(
            model,
            lambda: detached(arm),
            tokenizer,
            {"bn": ["আজ খুব"], "en": ["hello"]},
            ScriptDetector(),
            max_new_tokens=4,
        )
        assert arm.attached
    assert_no_mmie_hooks(model)
    base = perplexity(model, tokenizer, ["আজ খুব"])
    assert res["bn"].ppl_base == pytest.approx(base.perplexity, rel=1e-6)
    assert res["bn"].ppl_model != pytest.approx(base.perplexity, rel=1e-6)
    with pytest.raises(ValueError, match="no entry for language"):
        cross_lingual_leakage(
            model, model, tokenizer, {"bn": ["x y"]}, ScriptDetector(), texts={"en": ["x y"]}
        )
