"""SparseAutoencoder: formulas, SAELens and mmie I/O, training, quality and reconstruction checks."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import Tensor

from mmie.errors import CheckpointError, ConfigError, IncompatibleModelError, ReconstructionError
from mmie.models.activations import collect_activations
from mmie.sae.config import SAEConfig
from mmie.sae.model import SparseAutoencoder
from mmie.sae.quality import check_reconstruction, sae_quality
from mmie.sae.training import train_sae, train_sae_on_model
from mmie.testing import byte_tokenizer, tiny_causal_lm

ARCHS = ["relu", "jumprelu", "topk", "gated"]


TEXTS = [
    f"sample {i}: the quick brown fox jumps over the lazy dog, नमस्ते {i * 7} दुनिया"
    for i in range(24)
]


def raw_tensors(arch: str, d: int = 8, d_sae: int = 20, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {
        "W_enc": torch.randn(d, d_sae, generator=g),
        "W_dec": torch.randn(d_sae, d, generator=g),
        "b_dec": torch.randn(d, generator=g) * 0.1,
    }
    if arch == "gated":
        t |= {k: torch.randn(d_sae, generator=g) * 0.2 for k in ("b_gate", "r_mag", "b_mag")}
    else:
        t["b_enc"] = torch.randn(d_sae, generator=g) * 0.2
    if arch == "jumprelu":
        t["threshold"] = torch.rand(d_sae, generator=g)
    return t


def make_sae(
    arch: str, d: int = 8, d_sae: int = 20, seed: int = 0, **cfg: Any
) -> SparseAutoencoder:
    k = 5 if arch == "topk" else None
    config = SAEConfig(architecture=arch, d_in=d, d_sae=d_sae, k=k, **cfg)  # type: ignore[arg-type]
    return SparseAutoencoder.from_tensors(config, raw_tensors(arch, d, d_sae, seed))


def expected_encode(arch: str, t: dict[str, Tensor], x: Tensor, k: int = 5) -> Tensor:
    """REFERENCE.md formulas, written independently of mmie.sae.model."""
    xin = x - t["b_dec"]
    if arch == "gated":
        active = (xin @ t["W_enc"] + t["b_gate"] > 0).float()
        return active * torch.clamp(xin @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"], min=0)
    p = xin @ t["W_enc"] + t["b_enc"]
    if arch == "relu":
        return torch.clamp(p, min=0)
    if arch == "jumprelu":
        return torch.clamp(p, min=0) * (p > t["threshold"]).float()
    out = torch.zeros_like(p)
    for row in range(p.shape[0]):
        order = sorted(range(p.shape[1]), key=lambda i: -float(p[row, i]))[:k]
        for i in order:
            out[row, i] = max(float(p[row, i]), 0.0)
    return out


# ----------------------------------------------------------------------------- config


def test_config_validation_messages() -> None:
    with pytest.raises(ConfigError, match=r"k: must be an int in \[1, d_sae=4\]"):
        SAEConfig(architecture="topk", d_in=2, d_sae=4)
    with pytest.raises(ConfigError, match="k: is only used by topk"):
        SAEConfig(architecture="relu", d_in=2, d_sae=4, k=2)
    with pytest.raises(ConfigError, match="architecture: must be one of"):
        SAEConfig(architecture="standard", d_in=2, d_sae=4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="d_sae: must be >= 1"):
        SAEConfig(architecture="relu", d_in=2, d_sae=0)
    with pytest.raises(ConfigError, match="d_in: expected an integer"):
        SAEConfig(architecture="relu", d_in=2.0, d_sae=4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"per-token LayerNorm .* cannot be folded"):
        SAEConfig(architecture="relu", d_in=2, d_sae=4, normalize_activations="layer_norm")
    with pytest.raises(ConfigError, match="fold a dataset-wide activation scaling factor"):
        SAEConfig(architecture="relu", d_in=2, d_sae=4, normalize_activations="expected_average")
    with pytest.raises(ConfigError, match="dtype: must be one of"):
        SAEConfig(architecture="relu", d_in=2, d_sae=4, dtype="int8")
    with pytest.raises(ConfigError, match="bogus: unknown key"):
        SAEConfig.from_dict({"architecture": "relu", "d_in": 2, "d_sae": 4, "bogus": 1})
    with pytest.raises(ConfigError, match="d_sae: is required"):
        SAEConfig.from_dict({"architecture": "relu", "d_in": 2})
    assert (
        SAEConfig(architecture="relu", d_in=2, d_sae=4, dtype="torch.bfloat16").dtype == "bfloat16"
    )
    assert SAEConfig(architecture="relu", d_in=2, d_sae=4, dtype=torch.float16).dtype == "float16"


def test_config_accepts_numpy_integers_like_every_config() -> None:
    config = SAEConfig(architecture="topk", d_in=np.int64(8), d_sae=np.int32(16), k=np.int64(2))
    assert (config.d_in, config.d_sae, config.k) == (8, 16, 2)
    assert type(config.d_in) is int


@settings(max_examples=25, deadline=None)
@given(
    arch=st.sampled_from(ARCHS),
    d_in=st.integers(1, 64),
    d_sae=st.integers(1, 256),
    data=st.data(),
)
def test_config_dict_round_trip(arch: str, d_in: int, d_sae: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, d_sae)) if arch == "topk" else None
    config = SAEConfig(
        architecture=arch,  # type: ignore[arg-type]
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        apply_b_dec_to_input=data.draw(st.booleans()),
        hook_layer=data.draw(st.none() | st.integers(0, 40)),
        hook_name=data.draw(st.none() | st.text(max_size=20)),
        dtype=data.draw(st.sampled_from(["float32", "bfloat16", "float16"])),
    )
    assert SAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# ----------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_decode_match_reference_formulas(arch: str) -> None:
    sae = make_sae(arch)
    t = raw_tensors(arch)
    x = torch.randn(7, 8, generator=torch.Generator().manual_seed(3))
    f = sae.encode(x)
    torch.testing.assert_close(f, expected_encode(arch, t, x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sae.decode(f), f @ t["W_dec"] + t["b_dec"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sae(x), sae.decode(f))
    assert sae.encode(x.view(7, 1, 8)).shape == (7, 1, 20)


def test_apply_b_dec_to_input_false_skips_centering() -> None:
    sae = make_sae("relu", apply_b_dec_to_input=False)
    t = raw_tensors("relu")
    x = torch.randn(4, 8)
    torch.testing.assert_close(sae.encode(x), torch.clamp(x @ t["W_enc"] + t["b_enc"], min=0))


@settings(max_examples=20, deadline=None)
@given(arch=st.sampled_from(ARCHS), seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0))
def test_activation_invariants(arch: str, seed: int, scale: float) -> None:
    sae = make_sae(arch, seed=seed % 7)
    x = scale * torch.randn(16, 8, generator=torch.Generator().manual_seed(seed))
    f = sae.encode(x)
    assert (f >= 0).all()
    if arch == "topk":
        assert ((f > 0).sum(-1) <= 5).all()
    # decode is affine: decode(a f) - b_dec == a (decode(f) - b_dec)
    torch.testing.assert_close(
        sae.decode(0.5 * f) - sae.b_dec,
        0.5 * (sae.decode(f) - sae.b_dec),
        rtol=1e-4,
        atol=1e-5 * scale,
    )
    # batch invariance: encoding rows one at a time gives the same activations
    rows = torch.cat([sae.encode(row[None]) for row in x])
    torch.testing.assert_close(rows, f, rtol=1e-5, atol=1e-6 * scale)


def test_jumprelu_threshold_stays_fp32_when_loading_bf16(tmp_path: Path) -> None:
    sae = make_sae("jumprelu")
    sae.save(tmp_path)
    low = SparseAutoencoder.load(tmp_path, dtype=torch.bfloat16)
    assert low.W_enc.dtype == torch.bfloat16
    assert low.threshold.dtype == torch.float32
    assert torch.equal(low.threshold, sae.threshold)


# ----------------------------------------------------------------------------- I/O


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layout", ["mmie", "saelens"])
def test_save_load_round_trip(tmp_path: Path, arch: str, layout: str) -> None:
    sae = make_sae(arch, hook_layer=3, hook_name="blocks.3.hook_resid_post", model_name="tiny")
    sae.save(tmp_path, layout=layout)  # type: ignore[arg-type]
    names = {p.name for p in tmp_path.iterdir()}
    assert names == (
        {"sae_config.json", "sae.safetensors"}
        if layout == "mmie"
        else {"cfg.json", "sae_weights.safetensors"}
    )
    back = SparseAutoencoder.load(tmp_path)
    assert back.config == sae.config
    for name, tensor in sae.tensors().items():
        assert torch.equal(back.tensors()[name], tensor), name
    x = torch.randn(5, 8)
    assert torch.equal(back.encode(x), sae.encode(x))


def write_cfg(path: Path, cfg: dict[str, Any], tensors: dict[str, Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(path / "sae_weights.safetensors")
    )
    return path


def test_saelens_v6_config(tmp_path: Path) -> None:
    cfg = {
        "architecture": "topk",
        "d_in": 8,
        "d_sae": 20,
        "k": 5,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": "gpt2",
            "hook_name": "blocks.4.hook_resid_pre",
            "hook_layer": 4,
            "sae_lens_version": "6.12.0",
        },
    }
    sae = SparseAutoencoder.load(write_cfg(tmp_path, cfg, raw_tensors("topk")))
    assert (sae.architecture, sae.k, sae.config.apply_b_dec_to_input) == ("topk", 5, False)
    # resid_pre of block 4 is the output of block 3
    assert (sae.config.hook_layer, sae.config.hook_name, sae.config.model_name) == (
        3,
        "blocks.4.hook_resid_pre",
        "gpt2",
    )


def test_saelens_pre6_config(tmp_path: Path) -> None:
    cfg = {
        "d_in": 8,
        "d_sae": 20,
        "dtype": "torch.float32",
        "model_name": "pythia",
        "hook_point": "blocks.2.hook_resid_post",
        "hook_point_layer": 2,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 5},
        "normalize_activations": False,
        "sae_lens_training_version": "3.1.0",
    }
    tensors = raw_tensors("topk") | {"scaling_factor": torch.ones(20)}
    sae = SparseAutoencoder.load(write_cfg(tmp_path, cfg, tensors))
    assert (sae.architecture, sae.k, sae.config.hook_layer, sae.config.model_name) == (
        "topk",
        5,
        2,
        "pythia",
    )
    assert sae.config.apply_b_dec_to_input  # the pre-6.0 default
    relu_cfg = {k: v for k, v in cfg.items() if not k.startswith("activation_fn")}
    relu = SparseAutoencoder.load(write_cfg(tmp_path / "relu", relu_cfg, raw_tensors("relu")))
    assert relu.architecture == "relu"


def test_saelens_errors(tmp_path: Path) -> None:
    base = {
        "architecture": "standard",
        "d_in": 8,
        "d_sae": 20,
        "metadata": {"sae_lens_version": "6.0.0"},
    }
    relu = raw_tensors("relu")
    with pytest.raises(CheckpointError, match="needs 'k'"):
        SparseAutoencoder.load(write_cfg(tmp_path / "a", {**base, "architecture": "topk"}, relu))
    with pytest.raises(CheckpointError, match="normalize_activations='expected_average_only_in'"):
        SparseAutoencoder.load(
            write_cfg(
                tmp_path / "b", {**base, "normalize_activations": "expected_average_only_in"}, relu
            )
        )
    with pytest.raises(CheckpointError, match="'batchtopk' is not supported"):
        SparseAutoencoder.load(
            write_cfg(tmp_path / "c", {**base, "architecture": "batchtopk"}, relu)
        )
    with pytest.raises(CheckpointError, match=r"missing \['threshold'\]"):
        SparseAutoencoder.load(
            write_cfg(tmp_path / "d", {**base, "architecture": "jumprelu"}, relu)
        )
    with pytest.raises(CheckpointError, match=r"unexpected \['extra'\]"):
        SparseAutoencoder.load(write_cfg(tmp_path / "e", base, relu | {"extra": torch.ones(1)}))
    with pytest.raises(
        CheckpointError, match=r"b_enc has shape \[21\], expected \[d_sae\] = \[20\]"
    ):
        SparseAutoencoder.load(write_cfg(tmp_path / "f", base, relu | {"b_enc": torch.ones(21)}))
    with pytest.raises(CheckpointError, match="scaling_factor other than 1"):
        SparseAutoencoder.load(
            write_cfg(tmp_path / "g", base, relu | {"scaling_factor": 2 * torch.ones(20)})
        )
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "cfg.json").write_text(json.dumps(base))
    (tmp_path / "h" / "sae_weights.pt").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="never unpickles objects"):
        SparseAutoencoder.load(tmp_path / "h")
    (tmp_path / "i").mkdir()
    with pytest.raises(CheckpointError, match="no SAE layout recognised"):
        SparseAutoencoder.load(tmp_path / "i")


def test_transposed_layout_needs_explicit_opt_in(tmp_path: Path) -> None:
    base = {
        "architecture": "jumprelu",
        "d_in": 8,
        "d_sae": 20,
        "metadata": {"sae_lens_version": "6.0.0"},
    }
    t = raw_tensors("jumprelu")
    linear_style = t | {"W_enc": t["W_enc"].T, "W_dec": t["W_dec"].T}
    path = write_cfg(tmp_path, base, linear_style)
    with pytest.raises(CheckpointError, match="allow_transposed=True"):
        SparseAutoencoder.load(path)
    sae = SparseAutoencoder.load(path, allow_transposed=True)
    assert torch.equal(sae.W_enc, t["W_enc"])
    assert torch.equal(sae.W_dec, t["W_dec"])


def test_log_threshold_is_accepted() -> None:
    t = raw_tensors("jumprelu")
    t["log_threshold"] = t.pop("threshold").log()
    sae = SparseAutoencoder.from_tensors(SAEConfig(architecture="jumprelu", d_in=8, d_sae=20), t)
    torch.testing.assert_close(sae.threshold, raw_tensors("jumprelu")["threshold"])


# ----------------------------------------------------------------------------- quality


def test_sae_quality_matches_direct_computation() -> None:
    sae = make_sae("topk")
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    q = sae_quality(sae, x, batch_size=7)
    f = expected_encode("topk", raw_tensors("topk"), x)
    x_hat = f @ raw_tensors("topk")["W_dec"] + raw_tensors("topk")["b_dec"]
    fvu = float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert q.fvu == pytest.approx(fvu, rel=1e-5)
    cos = float(torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).mean())
    assert q.mean_cosine == pytest.approx(cos, rel=1e-5)
    assert q.mean_l0 == pytest.approx(float((f > 0).sum(-1).float().mean()))
    assert q.dead_fraction == pytest.approx(float(((f > 0).sum(0) == 0).float().mean()))
    assert q.n_tokens == 50
    with pytest.raises(ValueError, match="activations must be"):
        sae_quality(sae, torch.randn(5, 9))


# ----------------------------------------------------------------------------- training


@functools.cache
def tiny() -> tuple[Any, Any, Tensor]:
    tok = byte_tokenizer()
    model = tiny_causal_lm("llama", seed=0)
    acts = collect_activations(model, tok, TEXTS, [1]).tokens[1]
    return model, tok, acts


TOPK_K = 4


@functools.cache
def trained(arch: str, d_sae: int = 256) -> tuple[SparseAutoencoder, Any]:
    _, _, acts = tiny()
    k = TOPK_K if arch == "topk" else None
    return train_sae(
        acts,
        architecture=arch,
        d_sae=d_sae,
        k=k,
        steps=200,
        batch_size=128,
        lr=3e-3,
        seed=0,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_training_lowers_fvu_and_keeps_unit_decoder_rows(arch: str) -> None:
    _, _, acts = tiny()
    k = TOPK_K if arch == "topk" else None
    untrained = SparseAutoencoder(SAEConfig(architecture=arch, d_in=32, d_sae=256, k=k))  # type: ignore[arg-type]
    before = sae_quality(untrained, acts)
    sae, stats = trained(arch)
    assert before.fvu > 0.5
    assert stats.final_fvu < 0.1
    assert stats.steps == len(stats.losses) == 200
    assert stats.n_tokens == acts.shape[0]
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(256), rtol=0, atol=1e-5)
    q = sae_quality(sae, acts)  # on raw activations: the normalisation is folded in
    assert q.fvu == pytest.approx(stats.final_fvu, rel=1e-4)
    assert q.mean_l0 == pytest.approx(stats.final_l0)
    if arch == "topk":
        assert stats.final_l0 <= TOPK_K
    else:
        assert stats.final_l0 < 64
    assert sum(stats.losses[-20:]) < sum(stats.losses[:20])


def test_training_is_seeded_and_leaves_global_rng_alone() -> None:
    _, _, acts = tiny()
    state = torch.random.get_rng_state()
    a, _ = train_sae(acts, architecture="topk", d_sae=32, k=4, steps=20, batch_size=64, seed=5)
    b, _ = train_sae(acts, architecture="topk", d_sae=32, k=4, steps=20, batch_size=64, seed=5)
    c, _ = train_sae(acts, architecture="topk", d_sae=32, k=4, steps=20, batch_size=64, seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.W_enc, b.W_enc)
    assert not torch.equal(a.W_enc, c.W_enc)


def test_topk_aux_loss_trains_dead_latents() -> None:
    """Latents that never fire get no gradient from the TopK loss; the auxiliary loss gives
    them one (they learn to rebuild the residual), which is how it revives them."""
    _, _, acts = tiny()
    kwargs: dict[str, Any] = {
        "architecture": "topk",
        "d_sae": 256,
        "k": 2,
        "steps": 100,
        "batch_size": 64,
        "lr": 3e-3,
        "seed": 0,
    }
    init = SparseAutoencoder(SAEConfig(architecture="topk", d_in=32, d_sae=256, k=2), seed=0).W_dec
    without, _ = train_sae(acts, aux_coefficient=0.0, **kwargs)
    with_aux, _ = train_sae(acts, aux_coefficient=1 / 32, dead_after_tokens=256, **kwargs)
    untouched_without = (without.W_dec == init).all(-1).sum()
    untouched_with = (with_aux.W_dec == init).all(-1).sum()
    assert untouched_without > 0
    assert untouched_with == 0


def test_aux_loss_waits_for_the_papers_dead_threshold_by_default() -> None:
    """With Gao et al.'s 10M-token threshold a short run never calls a latent dead, so it is
    the same run as one without the auxiliary loss (a short threshold kills rare latents)."""
    _, _, acts = tiny()
    kwargs: dict[str, Any] = {"architecture": "topk", "d_sae": 64, "k": 2, "steps": 30}
    default, _ = train_sae(acts, **kwargs)
    without, _ = train_sae(acts, aux_coefficient=0.0, **kwargs)
    short, _ = train_sae(acts, dead_after_tokens=64, **kwargs)
    assert torch.equal(default.W_enc, without.W_enc)
    assert not torch.equal(short.W_enc, without.W_enc)


def test_train_sae_validation() -> None:
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="architecture must be 'relu' or 'topk'"):
        train_sae(x, architecture="gated", d_sae=8)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="k: must be an int"):
        train_sae(x, architecture="topk", d_sae=8)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        train_sae(x, architecture="relu", d_sae=8, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int >= 1, got str"):
        train_sae(x, architecture="relu", d_sae=8, batch_size="8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="steps must be an int >= 1, got float"):
        train_sae(x, architecture="relu", d_sae=8, steps=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        train_sae(torch.full((10, 4), float("nan")), architecture="relu", d_sae=8)


def test_train_sae_on_model_fills_metadata() -> None:
    model, tok, _ = tiny()
    sae, stats = train_sae_on_model(
        model, tok, TEXTS[:8], 0, architecture="topk", d_sae=32, k=4, steps=5, batch_size=32
    )
    assert (sae.config.hook_layer, sae.config.hook_name) == (0, "blocks.0.hook_resid_post")
    assert stats.n_tokens == int(
        tok(TEXTS[:8], padding=True, return_tensors="pt")["attention_mask"].sum()
    )


# ----------------------------------------------------------------------------- reconstruction check


def test_reconstruction_check_passes_for_the_right_sae() -> None:
    model, tok, _ = tiny()
    sae, stats = trained("topk")
    report = check_reconstruction(model, tok, sae, 1, TEXTS, exclude_first_token=False)
    assert report.passed
    assert report.diagnosis == ""
    assert report.n_tokens == stats.n_tokens
    assert report.fvu == pytest.approx(stats.final_fvu, rel=1e-3)
    assert report.mean_l0 <= TOPK_K
    without_first = check_reconstruction(model, tok, sae, 1, TEXTS)
    assert without_first.passed
    assert without_first.n_tokens == stats.n_tokens - len(TEXTS)


def test_reconstruction_check_flags_topk_declared_as_relu() -> None:
    model, tok, _ = tiny()
    sae, _ = trained("topk")
    as_relu = SparseAutoencoder.from_tensors(
        dataclasses.replace(sae.config, architecture="relu", k=None), sae.tensors()
    )
    with pytest.raises(ReconstructionError, match="TopK SAE read as relu") as info:
        check_reconstruction(model, tok, as_relu, 1, TEXTS)
    assert f"k={TOPK_K} " in str(info.value)
    report = check_reconstruction(model, tok, as_relu, 1, TEXTS, raise_on_failure=False)
    assert not report.passed
    assert report.fvu > 1


def test_reconstruction_check_flags_transposed_weights(tmp_path: Path) -> None:
    model, tok, acts = tiny()
    sae, _ = train_sae(acts, architecture="topk", d_sae=32, k=4, steps=200, batch_size=128, lr=3e-3)
    t = {k: v.clone() for k, v in sae.tensors().items()}
    cfg = {
        "architecture": "topk",
        "k": 4,
        "d_in": 32,
        "d_sae": 32,
        "metadata": {"sae_lens_version": "6.0.0"},
    }
    path = write_cfg(tmp_path, cfg, t | {"W_enc": t["W_enc"].T, "W_dec": t["W_dec"].T})
    square = SparseAutoencoder.load(path, allow_transposed=True)  # square: shapes cannot tell
    with pytest.raises(ReconstructionError, match="stored transposed"):
        check_reconstruction(model, tok, square, 1, TEXTS)


def test_reconstruction_check_names_the_layer_when_nothing_helps() -> None:
    model, tok, _ = tiny()
    g = torch.Generator().manual_seed(0)
    t = {
        "W_enc": torch.randn(32, 64, generator=g),
        "b_enc": torch.zeros(64),
        "W_dec": torch.randn(64, 32, generator=g),
        "b_dec": torch.zeros(32),
    }
    sae = SparseAutoencoder.from_tensors(
        SAEConfig(architecture="relu", d_in=32, d_sae=64, hook_layer=0), t
    )
    with pytest.raises(ReconstructionError, match=r"another layer or model.*layer 0, not 1"):
        check_reconstruction(model, tok, sae, 1, TEXTS)


def test_reconstruction_check_rejects_wrong_width() -> None:
    model, tok, _ = tiny()
    with pytest.raises(IncompatibleModelError, match="d_in=8"):
        check_reconstruction(model, tok, make_sae("relu"), 1, TEXTS)
