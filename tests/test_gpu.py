"""Checks that only a GPU can show: half-precision hooks on CUDA, per-block placement.

Skipped without CUDA (CI has none); run with ``pytest -m gpu`` on a GPU machine, or through
``benchmarks/gpu_checks.sh``. ``MMIE_TEST_DEVICE=cpu pytest -m gpu tests/test_gpu.py`` runs the
same assertions on the CPU, to check the tests themselves.
"""

from __future__ import annotations

import os

import pytest
import torch

from mmie.edits.reft import LoReFTConfig, ReFTAdapter
from mmie.edits.sae_gate import SAEGate
from mmie.edits.scrubber import fit_scrubber
from mmie.models.blocks import block_device, get_block
from mmie.models.hooks import assert_no_mmie_hooks, interventions
from mmie.models.tokenization import tokenize
from mmie.sae.config import SAEConfig
from mmie.sae.model import SparseAutoencoder
from mmie.testing import byte_tokenizer, tiny_causal_lm

DEVICE = os.environ.get("MMIE_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]

HINDI = ["मेरा नाम राम है", "आज बहुत गर्मी है", "हम बाज़ार जा रहे हैं", "वह स्कूल जाती है"]
ENGLISH = ["my name is Ram", "it is very hot today", "we are going to the market", "she goes"]


def _model(dtype: torch.dtype) -> torch.nn.Module:
    return tiny_causal_lm("llama", hidden_size=64, num_layers=3, dtype=dtype).to(DEVICE)


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_gate_scrub_reft(dtype):
    tok = byte_tokenizer()
    model = _model(dtype)
    batch = tokenize(tok, HINDI + ENGLISH, device=DEVICE)
    base = _logits(model, batch)

    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=64, d_sae=256), seed=0)
    seen: list[torch.dtype] = []
    probe = get_block(model, 1).register_forward_hook(
        lambda _m, _a, out: seen.append((out if isinstance(out, torch.Tensor) else out[0]).dtype)
    )
    try:
        gate = SAEGate(model, {0: sae, 1: sae}, {0: range(32), 1: range(32)}, alpha=0.0)
        with gate:
            assert torch.equal(_logits(model, batch), base)  # alpha = 0: bit-identical
            gate.alpha = 1.0
            gated = _logits(model, batch)
    finally:
        probe.remove()
    assert set(seen) == {dtype}  # hidden states keep the block dtype
    assert torch.isfinite(gated).all()
    assert not torch.equal(gated, base)

    scrubber = fit_scrubber(model, tok, {"hi": HINDI, "en": ENGLISH}, [1])
    adapter = ReFTAdapter(model, LoReFTConfig(layers=(2,), rank=2))
    with interventions(scrubber, adapter):
        both = _logits(model, batch)
    assert both.dtype == dtype
    assert torch.isfinite(both).all()
    assert_no_mmie_hooks(model)
    assert torch.equal(_logits(model, batch), base)  # the model is clean afterwards


def test_interventions_place_tensors_on_each_blocks_device():
    """Blocks on two devices: every intervention's tensors follow its block."""
    tok = byte_tokenizer()
    model = tiny_causal_lm("llama", hidden_size=64, num_layers=4)
    # Blocks 0-1 (and the embeddings) on the accelerator, blocks 2-3 on the CPU, moved by
    # accelerate's hooks between them, as device_map="auto" does for a model too large for one GPU.
    from accelerate import dispatch_model

    device_map = {
        "model.embed_tokens": 0 if DEVICE == "cuda" else "cpu",
        "model.rotary_emb": 0 if DEVICE == "cuda" else "cpu",
        "model.layers.0": 0 if DEVICE == "cuda" else "cpu",
        "model.layers.1": 0 if DEVICE == "cuda" else "cpu",
        "model.layers.2": "cpu",
        "model.layers.3": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    reference = _logits(model, tokenize(tok, HINDI))
    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=64, d_sae=256), seed=0)
    with SAEGate(model, {1: sae, 3: sae}, {1: range(16), 3: range(16)}, alpha=0.7):
        gated_reference = _logits(model, tokenize(tok, HINDI))
    model = dispatch_model(model, device_map=device_map, main_device="cpu")
    batch = tokenize(tok, HINDI, device="cpu")
    torch.testing.assert_close(_logits(model, batch).cpu(), reference, atol=1e-4, rtol=1e-4)
    gate = SAEGate(model, {1: sae, 3: sae}, {1: range(16), 3: range(16)}, alpha=0.7)
    with gate:
        out = _logits(model, batch).cpu()
    torch.testing.assert_close(out, gated_reference, atol=1e-4, rtol=1e-4)
    assert block_device(model, 1).type == ("cuda" if DEVICE == "cuda" else "cpu")
    assert block_device(model, 3).type == "cpu"
    assert_no_mmie_hooks(model)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_centred_scrubber_probe_and_next_char_on_the_device(dtype):
    """The retain-centred scrubber, the probe records and the next_char script mass on the
    device, against the same computations on the CPU in fp32."""
    from mmie.evaluation.language_metrics import script_mass
    from mmie.study.config import demo_config
    from mmie.study.demo import load_demo_model
    from mmie.study.suite import evaluate_model, load_eval_sets

    config = demo_config(
        metrics=("probe", "script_mass"), data={"n_forget": 24, "n_retain": 24, "n_eval": 20}
    )
    sets = load_eval_sets(config)
    cpu_model, tok = load_demo_model()
    model, _ = load_demo_model(dtype=dtype, device=DEVICE)
    texts = {"retain": sets.retain_train, "forget": sets.forget_train}
    on_device = fit_scrubber(model, tok, texts, [1], center="retain")
    on_cpu = fit_scrubber(cpu_model, tok, texts, [1], center="retain")
    tol = 1e-6 if dtype == torch.float32 else 0.1  # the activations themselves are bf16
    scale = float(on_cpu.erasers[1].bias.abs().max())
    assert (on_device.erasers[1].bias.cpu() - on_cpu.erasers[1].bias).abs().max() <= tol * scale
    with on_device:
        records, _ = evaluate_model(model, tok, sets, config, probe_layers=[1, 2])
    with on_cpu:
        expected, _ = evaluate_model(cpu_model, tok, sets, config, probe_layers=[1, 2])
    for key in ("probe_auc.1", "probe_auc.2", "forget_script_mass"):
        assert records[key]["value"] == pytest.approx(
            expected[key]["value"], abs=1e-4 if dtype == torch.float32 else 0.1
        )
    prompts = sets.prompts["forget"][:6]
    got = script_mass(model, tok, prompts, "Deva", mode="next_char")
    want = script_mass(cpu_model, tok, prompts, "Deva", mode="next_char")
    assert got.mean == pytest.approx(want.mean, abs=1e-4 if dtype == torch.float32 else 0.05)
    assert_no_mmie_hooks(model)
