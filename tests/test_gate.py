"""SAEGate against an independent closed-form reference written here (tiny fp32 CPU models)."""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import Tensor, nn

from mmie.edits.sae_gate import SAEGate
from mmie.errors import IncompatibleModelError, InterventionError
from mmie.models.hooks import assert_no_mmie_hooks, mmie_hooks
from mmie.sae.config import SAEConfig
from mmie.sae.model import SparseAutoencoder
from mmie.testing import byte_tokenizer, tiny_causal_lm

D = 32  # tiny model d_model


D_SAE = 96
TEXTS = ["hello world, this is a test", "नमस्ते दुनिया", "abc"]

# ----------------------------------------------------------------------------- reference


def random_raw_sae(arch: str, *, seed: int, d: int = D, d_sae: int = D_SAE) -> dict[str, Any]:
    """Random SAE tensors in the SAELens layout, scaled to the tiny models' activations."""
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d, generator=g)
    w_dec = 0.5 * w_dec / w_dec.norm(dim=-1, keepdim=True)
    raw: dict[str, Any] = {
        "arch": arch,
        "apply_b_dec": True,
        "W_enc": torch.randn(d, d_sae, generator=g) * 0.5,
        "W_dec": w_dec,
        "b_dec": torch.randn(d, generator=g) * 0.02,
    }
    if arch == "gated":
        raw["b_gate"] = torch.randn(d_sae, generator=g) * 0.1
        raw["r_mag"] = torch.randn(d_sae, generator=g) * 0.3
        raw["b_mag"] = torch.randn(d_sae, generator=g) * 0.1
    else:
        raw["b_enc"] = torch.randn(d_sae, generator=g) * 0.1
    if arch == "jumprelu":
        raw["threshold"] = torch.rand(d_sae, generator=g) * 0.3
    if arch == "topk":
        raw["k"] = 8
    return raw


def tensors_of(raw: dict[str, Any]) -> dict[str, Tensor]:
    return {k: v for k, v in raw.items() if isinstance(v, Tensor)}


def reference_acts(raw: dict[str, Any], x: Tensor) -> Tensor:
    """f(x) for every latent, written from the formulas in REFERENCE.md."""
    x_in = x - raw["b_dec"] if raw["apply_b_dec"] else x
    arch = raw["arch"]
    if arch == "gated":
        gate = (x_in @ raw["W_enc"] + raw["b_gate"]) > 0
        mag = torch.clamp(x_in @ (raw["W_enc"] * torch.exp(raw["r_mag"])) + raw["b_mag"], min=0)
        return torch.where(gate, mag, torch.zeros_like(mag))
    p = x_in @ raw["W_enc"] + raw["b_enc"]
    if arch == "relu":
        return torch.clamp(p, min=0)
    if arch == "jumprelu":
        return torch.where((p > raw["threshold"]) & (p > 0), p, torch.zeros_like(p))
    values, indices = torch.topk(p, raw["k"], dim=-1)
    out = torch.zeros_like(p)
    return out.scatter(-1, indices, torch.clamp(values, min=0))


@contextlib.contextmanager
def reference_gate(
    blocks: nn.ModuleList,
    raws: dict[int, dict[str, Any]],
    feats: dict[int, list[int]],
    alpha: float | Tensor,
) -> Iterator[None]:
    """Plain torch hooks applying h - alpha * f_S(h) W_dec[S] per layer."""

    def make(layer: int) -> Callable[..., Any]:
        raw, s = raws[layer], torch.tensor(feats[layer])

        def hook(_m: nn.Module, _a: Any, out: Any) -> Any:
            h = out if isinstance(out, Tensor) else out[0]
            f_s = reference_acts(raw, h.float())[..., s]
            a = alpha if isinstance(alpha, float) else alpha.view(-1, 1, 1)
            new = h - (a * (f_s @ raw["W_dec"][s])).to(h.dtype)
            return new if isinstance(out, Tensor) else (new, *out[1:])

        return hook

    handles = [blocks[layer].register_forward_hook(make(layer)) for layer in raws]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def write_saelens(path: Path, raw: dict[str, Any], *, layer: int, v6: bool) -> Path:
    arch = raw["arch"]
    if v6:
        cfg: dict[str, Any] = {
            "architecture": "standard" if arch == "relu" else arch,
            "d_in": raw["W_enc"].shape[0],
            "d_sae": raw["W_enc"].shape[1],
            "dtype": "float32",
            "apply_b_dec_to_input": raw["apply_b_dec"],
            "normalize_activations": "none",
            "metadata": {
                "hook_name": f"blocks.{layer}.hook_resid_post",
                "sae_lens_version": "6.5.0",
            },
        }
        if arch == "topk":
            cfg["k"] = raw["k"]
    else:
        cfg = {
            "d_in": raw["W_enc"].shape[0],
            "d_sae": raw["W_enc"].shape[1],
            "dtype": "torch.float32",
            "hook_point": f"blocks.{layer}.hook_resid_post",
            "hook_point_layer": layer,
            "apply_b_dec_to_input": raw["apply_b_dec"],
            "normalize_activations": False,
            "activation_fn_str": "topk" if arch == "topk" else "relu",
            "activation_fn_kwargs": {"k": raw["k"]} if arch == "topk" else {},
        }
        if arch == "jumprelu":
            cfg["architecture"] = "jumprelu"
    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {k: v.contiguous() for k, v in tensors_of(raw).items()},
        str(path / "sae_weights.safetensors"),
    )
    return path


def pick_features(raw: dict[str, Any], n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(raw["W_enc"].shape[1], generator=g)[:n].tolist())


# ----------------------------------------------------------------------------- fixtures


@functools.cache
def tokenizer() -> Any:
    return byte_tokenizer()


@functools.cache
def batch(padding_side: str = "right") -> dict[str, Tensor]:
    tok = tokenizer()
    tok.padding_side = padding_side
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    tok.padding_side = "left"
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def make_model(kind: str) -> tuple[nn.Module, nn.ModuleList]:
    """The model and its block list located by hand (independently of mmie.models.blocks)."""
    if kind.startswith("peft-"):
        from peft import LoraConfig, get_peft_model

        base_arch = kind.removeprefix("peft-")
        base = tiny_causal_lm(base_arch, seed=1)
        targets = ["c_attn"] if base_arch == "gpt2" else ["q_proj", "v_proj"]
        torch.manual_seed(0)  # LoRA's random init (test-only global seeding)
        model = get_peft_model(
            base,
            LoraConfig(
                r=4,
                lora_alpha=8,
                target_modules=targets,
                init_lora_weights=False,
                fan_in_fan_out=base_arch == "gpt2",  # GPT-2 uses Conv1D ([in, out]) weights
            ),
        )
        model.eval()
        inner = model.base_model.model
        blocks = inner.transformer.h if base_arch == "gpt2" else inner.model.layers
        return model, blocks
    model = tiny_causal_lm(kind, seed=1)
    if kind == "gpt2":
        return model, model.transformer.h
    if kind == "gpt_neox":
        return model, model.gpt_neox.layers
    return model, model.model.layers


@functools.cache
def llama() -> tuple[nn.Module, nn.ModuleList]:
    return make_model("llama")


@functools.cache
def gate_setup(
    arch: str,
) -> tuple[dict[int, dict[str, Any]], dict[int, SparseAutoencoder], dict[int, list[int]]]:
    raws = {layer: random_raw_sae(arch, seed=10 + layer) for layer in (0, 1)}
    saes = {
        layer: SparseAutoencoder.from_tensors(
            SAEConfig(architecture=arch, d_in=D, d_sae=D_SAE, k=raw.get("k")),  # type: ignore[arg-type]
            tensors_of(raw),
        )
        for layer, raw in raws.items()
    }
    feats = {layer: pick_features(raw, 16, seed=layer) for layer, raw in raws.items()}
    return raws, saes, feats


def logits(model: nn.Module, enc: dict[str, Tensor]) -> Tensor:
    with torch.no_grad():
        return model(**enc).logits


def assert_matches_reference(gated: Tensor, ref: Tensor, base: Tensor) -> None:
    effect = (ref - base).abs().max().item()
    assert effect > 1e-3, "the gate must have a visible effect for the test to mean anything"
    err = (gated - ref).abs().max().item()
    assert err <= 1e-5 * effect, f"max error {err:.3g} vs effect {effect:.3g}"


# ----------------------------------------------------------------------------- closed form


@pytest.mark.parametrize(
    ("arch", "v6"),
    [("relu", True), ("jumprelu", True), ("topk", True), ("relu", False), ("topk", False)],
)
def test_gate_from_saelens_dirs_matches_closed_form(tmp_path: Path, arch: str, v6: bool) -> None:
    model, blocks = llama()
    raws = {layer: random_raw_sae(arch, seed=20 + layer) for layer in (0, 1)}
    saes = {
        layer: SparseAutoencoder.load(
            write_saelens(tmp_path / f"L{layer}", raw, layer=layer, v6=v6)
        )
        for layer, raw in raws.items()
    }
    assert all(saes[layer].config.hook_layer == layer for layer in saes)
    feats = {layer: pick_features(raw, 16, seed=layer) for layer, raw in raws.items()}
    enc = batch()
    base = logits(model, enc)
    with reference_gate(blocks, raws, feats, 0.7):
        ref = logits(model, enc)
    with SAEGate(model, saes, feats, alpha=0.7):
        gated = logits(model, enc)
    assert_no_mmie_hooks(model)
    assert_matches_reference(gated, ref, base)


def test_gated_architecture_matches_closed_form() -> None:
    model, blocks = llama()
    raws, saes, feats = gate_setup("gated")
    enc = batch()
    base = logits(model, enc)
    with reference_gate(blocks, raws, feats, 1.0):
        ref = logits(model, enc)
    with SAEGate(model, saes, feats):
        gated = logits(model, enc)
    assert_matches_reference(gated, ref, base)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2", "gpt_neox", "peft-llama", "peft-gpt2"])
def test_gate_on_architectures(kind: str) -> None:
    model, blocks = make_model(kind)
    raws, saes, feats = gate_setup("relu")
    raws, saes, feats = {1: raws[1]}, {1: saes[1]}, {1: feats[1]}
    enc = batch()
    base = logits(model, enc)
    with reference_gate(blocks, raws, feats, 0.9):
        ref = logits(model, enc)
    gate = SAEGate(model, saes, feats, alpha=0.9)
    with gate:
        assert [owner for _, owner in mmie_hooks(model)] == ["SAEGate"]
        gated = logits(model, enc)
    assert_no_mmie_hooks(model)
    assert_matches_reference(gated, ref, base)
    assert torch.equal(logits(model, enc), base)


# ----------------------------------------------------------------------------- alpha


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_alpha_zero_is_bit_identical(arch: str) -> None:
    model, _ = llama()
    _, saes, feats = gate_setup(arch)
    enc = batch()
    base = logits(model, enc)
    with SAEGate(model, saes, feats, alpha=0.0):
        assert torch.equal(logits(model, enc), base)
    with SAEGate(model, saes, feats, alpha=1.0) as gate:
        assert not torch.equal(logits(model, enc), base)
        with gate.sequence_alpha(torch.zeros(len(TEXTS))):
            assert torch.equal(logits(model, enc), base)


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf"), 2])
def test_alpha_outside_unit_interval_is_refused(bad: float) -> None:
    model, _ = llama()
    _, saes, feats = gate_setup("relu")
    with pytest.raises(ValueError, match=r"alpha must be a float in \[0, 1\]"):
        SAEGate(model, saes, feats, alpha=bad)
    gate = SAEGate(model, saes, feats, alpha=0.5)
    with pytest.raises(ValueError, match=r"alpha must be a float in \[0, 1\]"):
        gate.alpha = bad
    assert gate.alpha == 0.5
    with pytest.raises(ValueError, match=r"sequence alpha values must be in \[0, 1\]"):
        gate.set_sequence_alpha(torch.tensor([0.5, bad, 0.1]))
    assert not gate.sequence_alpha_set


def test_alpha_type_errors() -> None:
    model, _ = llama()
    _, saes, feats = gate_setup("relu")
    with pytest.raises(TypeError, match="alpha must be a float"):
        SAEGate(model, saes, feats, alpha=True)
    gate = SAEGate(model, saes, feats)
    with pytest.raises(TypeError, match="floating-point"):
        gate.set_sequence_alpha(torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"shape \[batch\]"):
        gate.set_sequence_alpha(torch.ones(2, 1))


def test_sequence_alpha_batch_mismatch_is_a_clear_error() -> None:
    model, _ = llama()
    _, saes, feats = gate_setup("relu")
    with (
        SAEGate(model, saes, feats) as gate,
        gate.sequence_alpha(torch.ones(2)),
        pytest.raises(InterventionError, match="2 rows but layer 0's hidden state has batch 3"),
    ):
        logits(model, batch())
    assert_no_mmie_hooks(model)


@settings(max_examples=8, deadline=None)
@given(
    arch=st.sampled_from(["relu", "jumprelu", "topk", "gated"]),
    alphas=st.lists(st.floats(0.0, 1.0), min_size=len(TEXTS), max_size=len(TEXTS)),
)
def test_per_row_alpha_equals_each_row_alone(arch: str, alphas: list[float]) -> None:
    model, _ = llama()
    _, saes, feats = gate_setup(arch)
    enc = batch("right")
    with SAEGate(model, saes, feats) as gate:
        with gate.sequence_alpha(torch.tensor(alphas)):
            together = logits(model, enc)
        for row, a in enumerate(alphas):
            n = int(enc["attention_mask"][row].sum())
            single = {key: v[row : row + 1, :n] for key, v in enc.items()}
            gate.alpha = a
            alone = logits(model, single)[0]
            torch.testing.assert_close(together[row, :n], alone, rtol=0, atol=2e-5)


@settings(max_examples=10, deadline=None)
@given(arch=st.sampled_from(["relu", "jumprelu", "topk", "gated"]), alpha=st.floats(0.0, 1.0))
def test_delta_is_linear_in_alpha(arch: str, alpha: float) -> None:
    model, _ = llama()
    _, saes, feats = gate_setup(arch)
    saes, feats = {1: saes[1]}, {1: feats[1]}
    enc = batch()
    seen: list[Tensor] = []
    # the final norm receives block 1's output after every block-1 hook has run
    final_norm = model.model.norm
    watch = final_norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        logits(model, enc)
        with SAEGate(model, saes, feats, alpha=1.0) as gate:
            logits(model, enc)
            gate.alpha = alpha
            logits(model, enc)
    finally:
        watch.remove()
    h0, h1, ha = seen
    full = h1 - h0
    assert full.abs().max() > 1e-3
    torch.testing.assert_close(ha - h0, alpha * full, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- lifecycle


def test_no_hook_left_when_body_raises() -> None:
    model, _ = llama()
    _, saes, feats = gate_setup("topk")
    gate = SAEGate(model, saes, feats)

    def body() -> None:
        with gate:
            gate.set_sequence_alpha(torch.ones(len(TEXTS)))
            logits(model, batch())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert_no_mmie_hooks(model)
    assert not gate.attached
    assert not gate.sequence_alpha_set
    with pytest.raises(RuntimeError, match="boom"), gate.sequence_alpha(torch.ones(3)):
        raise RuntimeError("boom")
    assert not gate.sequence_alpha_set


def test_attach_remove_idempotent_and_plans_dropped() -> None:
    model, _ = llama()
    _, saes, feats = gate_setup("relu")
    gate = SAEGate(model, saes, feats)
    assert gate.attach() is gate.attach()
    assert len(mmie_hooks(model)) == 2
    # relu plans hold only the columns of S: O(d_model * |S|) per token
    assert all(plan.w_enc.shape == (D, 16) for plan in gate._plans.values())
    gate.remove()
    gate.remove()
    assert_no_mmie_hooks(model)
    assert gate._plans == {}


def test_sequence_alpha_set_before_attach_and_buffer_reuse() -> None:
    model, _ = llama()
    _, saes, feats = gate_setup("relu")
    enc = batch()
    alphas = torch.tensor([0.2, 0.9, 0.5])
    gate = SAEGate(model, saes, feats)
    with gate.sequence_alpha(alphas), gate:
        before = logits(model, enc)
        buf = gate._seq_alpha[torch.device("cpu")]
        gate.set_sequence_alpha(torch.tensor([0.3, 0.3, 0.3]))
        assert gate._seq_alpha[torch.device("cpu")] is buf  # copied, not reallocated
        gate.set_sequence_alpha(alphas)
        again = logits(model, enc)
    assert torch.equal(before, again)
    alphas[0] = 1.0  # the gate never aliases the caller's tensor
    with SAEGate(model, saes, feats, alpha=1.0) as other:
        other.set_sequence_alpha(torch.tensor([0.2, 0.9, 0.5]))
        assert torch.equal(logits(model, enc), before)


def test_constructor_validation() -> None:
    model, _ = llama()
    _, saes, _ = gate_setup("relu")
    with pytest.raises(ValueError, match="has no SAE"):
        SAEGate(model, {0: saes[0]}, {1: [1, 2]})
    with pytest.raises(ValueError, match="is empty"):
        SAEGate(model, saes, {0: []})
    with pytest.raises(ValueError, match="outside"):
        SAEGate(model, saes, {0: [D_SAE]})
    with pytest.raises(ValueError, match="duplicate"):
        SAEGate(model, saes, {0: [3, 3]})
    with pytest.raises(ValueError, match=r"layer must be in \[0, 1\]"):
        SAEGate(model, {5: saes[0]}, {5: [1]})
    wide = SparseAutoencoder(SAEConfig(architecture="relu", d_in=D + 1, d_sae=8))
    with pytest.raises(IncompatibleModelError, match="d_in=33"):
        SAEGate(model, {0: wide}, {0: [1]})


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_cached_and_uncached_generation_agree(arch: str) -> None:
    model, blocks = llama()
    raws, saes, feats = gate_setup(arch)
    enc = batch("left")
    kwargs: dict[str, Any] = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 256}

    def generate(use_cache: bool) -> Tensor:
        with torch.no_grad():
            return model.generate(**enc, use_cache=use_cache, **kwargs)

    with reference_gate(blocks, raws, feats, 1.0):
        ref = generate(True)
    with SAEGate(model, saes, feats) as gate:
        cached, uncached = generate(True), generate(False)
        with gate.sequence_alpha(torch.tensor([1.0, 0.0, 0.5])):
            mixed_cached, mixed_uncached = generate(True), generate(False)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, ref)
    assert torch.equal(mixed_cached, mixed_uncached)
    assert torch.equal(mixed_cached[0], cached[0])
    assert_no_mmie_hooks(model)


def test_gate_math_is_fp32_and_delta_in_block_dtype() -> None:
    model = tiny_causal_lm("llama", seed=1, dtype=torch.bfloat16)
    _, saes, feats = gate_setup("jumprelu")
    seen: list[Tensor] = []
    watch = model.model.layers[1].register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.no_grad():
            model(**batch())
            with SAEGate(model, saes, feats):
                model(**batch())
    finally:
        watch.remove()
    assert seen[1].dtype == torch.bfloat16
    assert not torch.equal(seen[0], seen[1])
    assert math.isfinite(float(seen[1].float().abs().max()))


# --------------------------------------------------------------- exact mixed-precision TopK


def _topk_sae(w_enc: Tensor, b_enc: Tensor, k: int, *, seed: int = 0) -> SparseAutoencoder:
    d, d_sae = w_enc.shape
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d, generator=g)
    tensors = {
        "W_enc": w_enc,
        "b_enc": b_enc,
        "W_dec": 0.5 * w_dec / w_dec.norm(dim=-1, keepdim=True),
        "b_dec": torch.randn(d, generator=g) * 0.02,
    }
    config = SAEConfig(architecture="topk", d_in=d, d_sae=d_sae, k=k)
    return SparseAutoencoder.from_tensors(config, tensors)


def _plans(sae: SparseAutoencoder, features: tuple[int, ...]) -> tuple[Any, Any]:
    from mmie.edits.sae_gate import _build_plan

    cpu = torch.device("cpu")
    fp32 = _build_plan(sae, 0, features, cpu, topk_precision="fp32")
    mixed = _build_plan(sae, 0, features, cpu, topk_precision="mixed")
    assert fp32.mixed is None
    assert mixed.mixed is not None
    return fp32, mixed


def _gaussian(d: int = 48, d_sae: int = 2048, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, d_sae, generator=g) / d**0.5, torch.randn(d_sae, generator=g) * 0.1


def _inputs(d: int, shape: tuple[int, ...], seed: int) -> Tensor:
    return torch.randn(*shape, d, generator=torch.Generator().manual_seed(seed))


def _assert_exact(fp32: Any, mixed: Any, x: Tensor, *, ran: bool | None = True) -> None:
    want = fp32.feature_acts(x)
    got = mixed.feature_acts(x)
    assert torch.equal(got, want)
    x_in = x - mixed.b_dec_in if mixed.b_dec_in is not None else x
    if ran is not None:
        assert (mixed._topk_mixed(x_in) is not None) == ran


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (2, 3), (1, 7)])
def test_mixed_topk_equals_fp32_on_gaussian_preactivations(shape):
    w, b = _gaussian()
    sae = _topk_sae(w, b, k=16)
    fp32, mixed = _plans(sae, tuple(range(0, 2048, 7)))  # 293 features, many of them active
    for seed in range(5):
        _assert_exact(fp32, mixed, _inputs(48, shape, seed))


def test_mixed_topk_equals_fp32_on_trained_like_preactivations():
    """A few large latents per token over a negative bias (a trained TopK SAE's shape): the
    top k holds the large ones and the boundary sits in the bulk."""
    w, _ = _gaussian(seed=1)
    b = torch.full((2048,), -0.5)
    sae = _topk_sae(w, b, k=12)
    fp32, mixed = _plans(sae, tuple(range(0, 2048, 5)))
    g = torch.Generator().manual_seed(3)
    for seed in range(4):
        big = torch.randint(0, 2048, (2, 5), generator=g)
        x = _inputs(48, (2, 1), seed) * 0.2 + 3 * w.T[big].sum(1)[:, None]  # (2, 1, 48)
        _assert_exact(fp32, mixed, x)


def test_mixed_topk_equals_fp32_at_near_ties():
    """Columns that differ in the last bits: pre-activations tie to within fp32 rounding at
    the k-th value, so only the fp32 recomputation can order them."""
    w, b = _gaussian(seed=2)
    x = _inputs(48, (1, 1), 0)
    sae0 = _topk_sae(w, b, k=10)
    p = (x[0, 0] - sae0.tensors()["b_dec"]) @ w + b
    order = p.argsort(descending=True)
    w_near, b_near = w.clone(), b.clone()
    for i in range(6, 14):  # around the 10th value, copy a neighbour with a tiny change
        j, src = order[i], order[i - 1]
        w_near[:, j] = w[:, src] * (1 + 2.0**-22)
        b_near[j] = b[src]
    sae = _topk_sae(w_near, b_near, k=10)
    features = tuple(int(j) for j in order[:20])
    fp32, mixed = _plans(sae, features)
    _assert_exact(fp32, mixed, x)


def test_mixed_topk_exact_ties_fall_back_to_the_fp32_choice():
    """Every latent duplicated: the pre-activations come in exactly equal pairs, so with k odd
    the k-th value is tied; which twin is active is topk's choice, made by the fp32 pass."""
    w, b = _gaussian(d=48, d_sae=1024, seed=4)
    w2, b2 = torch.cat([w, w], dim=1), torch.cat([b, b])
    sae = _topk_sae(w2, b2, k=9)
    fp32, mixed = _plans(sae, tuple(range(0, 2048, 3)))
    x = _inputs(48, (2, 1), 5)
    pre = (x - sae.tensors()["b_dec"]) @ w2 + b2
    top = pre.topk(10, dim=-1).values
    assert bool((top[..., 8] == top[..., 9]).all())  # the test means something
    _assert_exact(fp32, mixed, x, ran=False)


def test_mixed_topk_bound_holds_and_falls_back_on_non_finite_inputs():
    w, b = _gaussian(seed=6)
    sae = _topk_sae(w * 40, b * 40, k=16)  # large values: the relative terms dominate
    fp32, mixed = _plans(sae, tuple(range(64)))
    x = _inputs(48, (1, 6), 7) * torch.logspace(-3, 3, 6).view(1, 6, 1)
    x_in = (x - mixed.b_dec_in).reshape(-1, 48)
    approx, bound = mixed.mixed.bounds(x_in, mixed.b_enc)
    exact = (x_in.double() @ mixed.w_enc.double() + mixed.b_enc.double()).float()
    p32 = x_in @ mixed.w_enc + mixed.b_enc
    assert bool(((p32 - approx).abs() <= bound).all())
    assert bool(((exact - approx).abs() <= bound).all())
    assert float(bound.max()) > 0
    bad = x.clone()
    bad[0, 2, 0] = float("nan")
    assert mixed.mixed.bounds((bad - mixed.b_dec_in).reshape(-1, 48), mixed.b_enc) is None
    torch.testing.assert_close(  # the fp32 pass, NaN where it gives NaN
        mixed.feature_acts(bad), fp32.feature_acts(bad), rtol=0, atol=0, equal_nan=True
    )


def test_gate_topk_precision_gives_the_same_logits():
    model = tiny_causal_lm("llama", seed=0)
    tok = byte_tokenizer()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    raw = random_raw_sae("topk", seed=3, d_sae=1024)
    raw["k"] = 8
    sae = SparseAutoencoder.from_tensors(
        SAEConfig(architecture="topk", d_in=D, d_sae=1024, k=8), tensors_of(raw)
    )
    feats = {1: list(range(0, 1024, 9))}
    out = {}
    for precision in ("fp32", "mixed", "auto"):
        with SAEGate(model, {1: sae}, feats, topk_precision=precision) as gate:
            plan = gate._plans[1]
            assert (plan.mixed is not None) == (precision == "mixed")  # auto: fp32 on a CPU
            out[precision] = logits(model, enc)
            with torch.no_grad():  # one token per row: the decoding-step shape
                step = model(input_ids=enc["input_ids"][:, :1]).logits
            out[precision + "_step"] = step
    assert torch.equal(out["mixed"], out["fp32"])
    assert torch.equal(out["auto"], out["fp32"])
    assert torch.equal(out["mixed_step"], out["fp32_step"])
    with pytest.raises(ValueError, match="topk_precision"):
        SAEGate(model, {1: sae}, feats, topk_precision="fp16")  # type: ignore[arg-type]
