"""Pretrained SAE formats: every reader against a direct implementation of its format's maths.

Each test writes a synthetic checkpoint with the published file names, tensor names, shapes
and dtypes (random weights, d = 16, M = 48), loads it with ``SparseAutoencoder.load`` and
compares ``encode``/``decode`` with the format's own formulas written out here, independently
of mmie (fp32; bf16-stored weights are cast to fp32 first). Refusals and error messages are
checked word for word where they matter to a user.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import Tensor

import mmie
from mmie.errors import CheckpointError, ConfigError, MmieWarning
from mmie.sae.config import SAEConfig, parse_hook
from mmie.sae.formats import LAYOUTS, checkpoint_from_saelens, detect
from mmie.sae.model import SparseAutoencoder
from mmie.testing import byte_tokenizer, tiny_causal_lm

D, M = 16, 48
TOL = 1e-6  # max error relative to the values' scale (max(1, max |reference|)), fp32
# layout -> (encode, decode) max absolute errors, then relative to the values' scale
ERRORS: dict[str, list[tuple[float, float, float, float]]] = {}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=gen(seed)) * scale


def acts(n: int = 256, seed: int = 99, scale: float = 1.0) -> Tensor:
    return randn(n, D, seed=seed, scale=scale)


def max_err(a: Tensor, b: Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def assert_same_maths(
    sae: SparseAutoencoder,
    x: Tensor,
    encode: Any,
    decode: Any,
    tol: float = TOL,
) -> tuple[float, float]:
    """``sae.encode(x)`` equals ``encode(x)`` and ``sae.decode(f)`` equals ``decode(f)``, to
    ``tol`` times the values' scale (fp32 rounds a folded product differently from an
    unfolded one, by a few ulps)."""
    with torch.no_grad():
        f_ref = encode(x)
        x_ref = decode(f_ref)
        enc = max_err(sae.encode(x), f_ref)
        dec = max_err(sae.decode(f_ref), x_ref)
    enc_scale = max(1.0, float(f_ref.abs().max()))
    dec_scale = max(1.0, float(x_ref.abs().max()))
    ERRORS.setdefault(sae.provenance.get("layout", "tensors"), []).append(
        (enc, dec, enc / enc_scale, dec / dec_scale)
    )
    assert enc <= tol * enc_scale, f"encode differs by {enc} (values up to {enc_scale})"
    assert dec <= tol * dec_scale, f"decode differs by {dec} (values up to {dec_scale})"
    assert int((f_ref > 0).sum()) > 0, "the test activations fire no latent"
    return enc, dec


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Keep the k largest of ReLU(pre), zero the rest."""
    values, indices = torch.relu(pre).topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values)


def jumprelu(pre: Tensor, threshold: Tensor) -> Tensor:
    return torch.relu(pre) * (pre > threshold).float()


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_safetensors(path: Path, tensors: dict[str, Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


# ----------------------------------------------------------------------------- SAELens
def saelens_cfg(arch: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architecture": arch,
        "d_in": D,
        "d_sae": M,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"hook_name": "blocks.2.hook_resid_post", "sae_lens_version": "6.12.0"},
    }
    cfg.update(extra)
    return cfg


def saelens_tensors(seed: int = 0, dec_scale: float = 1.0) -> dict[str, Tensor]:
    return {
        "W_enc": randn(D, M, seed=seed, scale=0.5),
        "b_enc": randn(M, seed=seed + 1, scale=0.2),
        "W_dec": randn(M, D, seed=seed + 2, scale=0.3 * dec_scale),
        "b_dec": randn(D, seed=seed + 3, scale=0.1),
    }


def write_saelens(path: Path, cfg: dict[str, Any], tensors: dict[str, Tensor]) -> Path:
    write_json(path / "cfg.json", cfg)
    write_safetensors(path / "sae_weights.safetensors", tensors)
    return path


def unfolded_topk(t: dict[str, Tensor], k: int) -> tuple[Any, Any]:
    """SAELens' TopK with rescale_acts_by_decoder_norm, unfolded (what save_model writes)."""
    norms = t["W_dec"].norm(dim=-1)

    def encode(x: Tensor) -> Tensor:
        hidden_pre = ((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * norms
        return topk_relu(hidden_pre, k)

    def decode(f: Tensor) -> Tensor:
        return (f / norms) @ t["W_dec"] + t["b_dec"]

    return encode, decode


def test_saelens_topk_rescale_acts_by_decoder_norm_is_folded_exactly(tmp_path: Path) -> None:
    t = saelens_tensors(dec_scale=1.0)
    t["W_dec"] = t["W_dec"] * torch.linspace(0.3, 3.0, M)[:, None]  # far from unit norm
    cfg = saelens_cfg("topk", k=6, rescale_acts_by_decoder_norm=True)
    sae = SparseAutoencoder.load(write_saelens(tmp_path, cfg, t))
    encode, decode = unfolded_topk(t, 6)
    x = acts(2048)
    assert_same_maths(sae, x, encode, decode)
    # the very same latents on 100% of the tokens
    assert torch.equal(sae.encode(x) > 0, encode(x) > 0)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(M))
    assert sae.provenance["layout"] == "saelens"
    assert any("rescale_acts_by_decoder_norm" in note for note in sae.provenance["folded"])
    # read as if there were no rescaling (the bug this fixes), most tokens differ
    plain = SparseAutoencoder.load(write_saelens(tmp_path / "plain", saelens_cfg("topk", k=6), t))
    wrong = (plain.encode(x) > 0) != (encode(x) > 0)
    assert float(wrong.any(-1).float().mean()) > 0.5


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, M), spread=st.floats(0.05, 20.0))
def test_rescale_fold_property(seed: int, k: int, spread: float) -> None:
    t = saelens_tensors(seed)
    norms = torch.exp(torch.rand(M, generator=gen(seed)) * math.log(spread)) + 0.05
    t["W_dec"] = t["W_dec"] / t["W_dec"].norm(dim=-1, keepdim=True) * norms[:, None]
    cfg = saelens_cfg("topk", k=k, rescale_acts_by_decoder_norm=True)
    ckpt = checkpoint_from_saelens(cfg, t, source="mem")
    sae = SparseAutoencoder.from_tensors(ckpt.config, ckpt.tensors)
    encode, decode = unfolded_topk(t, k)
    x = acts(64, seed=seed + 7)
    assert_same_maths(sae, x, encode, decode)


def test_saelens_refusals_and_per_token_norms(tmp_path: Path) -> None:
    t = saelens_tensors()
    with pytest.raises(CheckpointError, match="rescale_acts_by_decoder_norm is a TopK setting"):
        SparseAutoencoder.load(
            write_saelens(
                tmp_path / "a", saelens_cfg("standard", rescale_acts_by_decoder_norm=True), t
            )
        )
    zero = dict(t, W_dec=t["W_dec"].clone())
    zero["W_dec"][5] = 0
    with pytest.raises(CheckpointError, match=r"decoder rows \[5\] have norm 0"):
        SparseAutoencoder.load(
            write_saelens(
                tmp_path / "b", saelens_cfg("topk", k=4, rescale_acts_by_decoder_norm=True), zero
            )
        )
    for norm, words in (
        ("layer_norm", "per-token LayerNorm"),
        ("constant_norm_rescale", "per-token rescaling"),
    ):
        with pytest.raises(CheckpointError, match=words) as info:
            SparseAutoencoder.load(
                write_saelens(
                    tmp_path / norm, saelens_cfg("standard", normalize_activations=norm), t
                )
            )
        assert "fold" not in str(info.value).lower()  # no dataset factor can fix it
        assert "not representable as a plain SAE" in str(info.value)
    with pytest.raises(CheckpointError, match=r"input_scale=s\) \(SAELens lists s"):
        SparseAutoencoder.load(
            write_saelens(
                tmp_path / "avg",
                saelens_cfg("standard", normalize_activations="expected_average_only_in"),
                t,
            )
        )


def test_saelens_expected_average_only_in_folds_a_given_scale(tmp_path: Path) -> None:
    t = saelens_tensors()
    t["threshold"] = torch.rand(M, generator=gen(5)) * 0.3
    s = 2.5
    cfg = saelens_cfg("jumprelu", normalize_activations="expected_average_only_in")
    sae = SparseAutoencoder.load(write_saelens(tmp_path, cfg, t), input_scale=s)

    def encode(x: Tensor) -> Tensor:  # SAELens run time: x * s, then the SAE, output / s
        return jumprelu((x * s - t["b_dec"]) @ t["W_enc"] + t["b_enc"], t["threshold"])

    def decode(f: Tensor) -> Tensor:
        return (f @ t["W_dec"] + t["b_dec"]) / s

    assert_same_maths(sae, acts() / s, encode, decode)


def test_saelens_pre6_topk_and_description(tmp_path: Path) -> None:
    t = saelens_tensors()
    cfg = {
        "d_in": D,
        "d_sae": M,
        "dtype": "torch.float32",
        "hook_point": "blocks.4.hook_resid_pre",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 5},
        "normalize_activations": False,
    }
    path = write_saelens(tmp_path, cfg, t)
    assert detect(path).description == "SAELens < 6 cfg.json"
    sae = SparseAutoencoder.load(path)

    def encode(x: Tensor) -> Tensor:
        return topk_relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 5)

    assert_same_maths(sae, acts(), encode, lambda f: f @ t["W_dec"] + t["b_dec"])
    assert (sae.config.hook_layer, sae.config.hook_site) == (3, "resid_post")


def gemma_like_saelens(tmp_path: Path, **cfg_extra: Any) -> Path:
    t = saelens_tensors()
    t["b_dec"] = randn(D, seed=11, scale=3.0)  # a large mean, as real activations have
    t["b_enc"] = -(t["b_dec"] @ t["W_enc"]) - 0.1  # quiet at x = b_dec when not centred
    t["threshold"] = torch.full((M,), 0.2)
    cfg = saelens_cfg("jumprelu", **cfg_extra)
    del cfg["apply_b_dec_to_input"]
    cfg.update({k: v for k, v in cfg_extra.items()})
    return write_saelens(tmp_path, cfg, t)


def test_a_hand_written_saelens_config_with_gemma_scope_weights_warns(tmp_path: Path) -> None:
    path = gemma_like_saelens(tmp_path / "a")
    with pytest.warns(
        MmieWarning,
        match=r"does not say apply_b_dec_to_input.*look like apply_b_dec_to_input=false",
    ):
        SparseAutoencoder.load(path)
    said = gemma_like_saelens(tmp_path / "b", apply_b_dec_to_input=True)
    with pytest.warns(MmieWarning, match="says apply_b_dec_to_input=true"):
        SparseAutoencoder.load(said)
    # told the truth, it is quiet
    SparseAutoencoder.load(gemma_like_saelens(tmp_path / "c", apply_b_dec_to_input=False))


# ----------------------------------------------------------------------------- Gemma Scope
def gemma_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    t = saelens_tensors(seed)
    t["threshold"] = torch.rand(M, generator=gen(seed + 9)) * 0.4
    return {k: v.numpy().astype(np.float32) for k, v in t.items()}


def gemma_maths(a: dict[str, np.ndarray]) -> tuple[Any, Any]:
    t = {k: torch.from_numpy(v) for k, v in a.items()}

    def encode(x: Tensor) -> Tensor:  # Gemma Scope's JumpReLUSAE: no input centring
        pre = x @ t["W_enc"] + t["b_enc"]
        return (pre > t["threshold"]).float() * torch.relu(pre)

    return encode, lambda f: f @ t["W_dec"] + t["b_dec"]


def test_gemma_scope_npz(tmp_path: Path) -> None:
    a = gemma_arrays()
    where = tmp_path / "gemma-scope-2b-pt-res" / "layer_3" / "average_l0_7"
    where.mkdir(parents=True)
    np.savez(where / "params.npz", **a)
    assert detect(where).layout == "gemma_scope"
    sae = SparseAutoencoder.load(where)
    assert_same_maths(sae, acts(), *gemma_maths(a))
    c = sae.config
    assert (c.architecture, c.apply_b_dec_to_input, c.hook_layer) == ("jumprelu", False, 3)
    assert (c.hook_name, c.hook_site, c.model_name) == (
        "blocks.3.hook_resid_post",
        "resid_post",
        "google/gemma-2-2b",
    )
    # the file itself works too, and a site from the release name
    mlp = tmp_path / "gemma-scope-2b-pt-mlp" / "layer_1" / "average_l0_9"
    mlp.mkdir(parents=True)
    np.savez(mlp / "params.npz", **a)
    assert SparseAutoencoder.load(mlp / "params.npz").config.hook_site == "mlp_out"


def test_gemma_scope_errors(tmp_path: Path) -> None:
    a = gemma_arrays()
    wide = tmp_path / "layer_3" / "width_16k" / "average_l0_7"
    wide.mkdir(parents=True)
    np.savez(wide / "params.npz", **a)
    with pytest.raises(CheckpointError, match=r"width_16k \(16384 latents\) but W_enc has 48"):
        SparseAutoencoder.load(wide)
    with pytest.raises(
        CheckpointError,
        match=r"holds no SAE itself, but these subdirectories do: \['layer_3/width_16k/average_l0_7 \(gemma_scope\)'\]",
    ):
        SparseAutoencoder.load(tmp_path)
    objects = tmp_path / "objects"
    objects.mkdir()
    np.savez(objects / "params.npz", W_enc=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="mmie never unpickles objects"):
        SparseAutoencoder.load(objects)
    few = tmp_path / "few"
    few.mkdir()
    np.savez(few / "params.npz", **{k: v for k, v in a.items() if k != "threshold"})
    with pytest.raises(CheckpointError, match=r"missing \['threshold'\]"):
        SparseAutoencoder.load(few)


def write_gemma_scope_2(path: Path, a: dict[str, np.ndarray], **cfg: Any) -> Path:
    config = {
        "hf_hook_point_in": "model.layers.3.output",
        "hf_hook_point_out": "model.layers.3.output",
        "width": M,
        "model_name": "google/gemma-3-1b-pt",
        "architecture": "jump_relu",
        "l0": 7,
        "affine_connection": False,
        "type": "sae",
    }
    config.update(cfg)
    write_json(path / "config.json", config)
    write_safetensors(
        path / "params.safetensors", {k.lower(): torch.from_numpy(v) for k, v in a.items()}
    )
    return path


def test_gemma_scope_2(tmp_path: Path) -> None:
    a = gemma_arrays(3)
    path = write_gemma_scope_2(tmp_path / "resid_post" / "layer_3_width_16k_l0_small", a)
    assert detect(path).layout == "gemma_scope_2"
    sae = SparseAutoencoder.load(path)
    assert_same_maths(sae, acts(), *gemma_maths(a))
    assert (sae.config.hook_layer, sae.config.hook_site, sae.config.apply_b_dec_to_input) == (
        3,
        "resid_post",
        False,
    )
    with pytest.raises(CheckpointError, match="a transcoder predicts another activation"):
        SparseAutoencoder.load(
            write_gemma_scope_2(
                tmp_path / "tc",
                a,
                type="transcoder",
                hf_hook_point_in="model.layers.5.pre_feedforward_layernorm.output",
                hf_hook_point_out="model.layers.5.post_feedforward_layernorm.output",
            )
        )
    with pytest.raises(CheckpointError, match="affine_connection is set"):
        SparseAutoencoder.load(write_gemma_scope_2(tmp_path / "aff", a, affine_connection=True))
    with pytest.raises(CheckpointError, match="architecture 'topk' is not a Gemma Scope 2 SAE"):
        SparseAutoencoder.load(write_gemma_scope_2(tmp_path / "top", a, architecture="topk"))
    lonely = tmp_path / "lonely"
    write_safetensors(lonely / "params.safetensors", {"w_enc": torch.ones(2, 2)})
    with pytest.raises(
        CheckpointError,
        match=r"looks like a Gemma Scope 2 \(Gemma 3\) directory .* but config.json is missing",
    ):
        SparseAutoencoder.load(lonely)


# ----------------------------------------------------------------------------- Llama Scope
def lm_saes_tensors(seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> dict[str, Tensor]:
    return {
        "encoder.weight": randn(M, D, seed=seed, scale=0.5).to(dtype),
        "encoder.bias": randn(M, seed=seed + 1, scale=0.3).to(dtype),
        "decoder.weight": (randn(D, M, seed=seed + 2, scale=0.3) * torch.linspace(0.5, 2, M)).to(
            dtype
        ),
        "decoder.bias": randn(D, seed=seed + 3, scale=0.2).to(dtype),
    }


def lm_saes_maths(
    t: dict[str, Tensor],
    theta: Tensor,
    *,
    s_in: float,
    s_out: float,
    pre_encoder_bias: bool = False,
    decoder_norm: bool = False,
) -> tuple[Any, Any]:
    """lm_saes' SAE on normalised activations, wrapped to take and give raw ones."""
    w = {k: v.float() for k, v in t.items()}

    def encode(x: Tensor) -> Tensor:
        x_n = x * s_in
        if pre_encoder_bias:
            x_n = x_n - w["decoder.bias"]
        hidden_pre = x_n @ w["encoder.weight"].T + w["encoder.bias"]
        score = hidden_pre * w["decoder.weight"].norm(dim=0) if decoder_norm else hidden_pre
        return hidden_pre * (score > theta).float()

    def decode(f: Tensor) -> Tensor:
        return (f @ w["decoder.weight"].T + w["decoder.bias"]) / s_out

    return encode, decode


def write_llama_scope(path: Path, t: dict[str, Tensor], **cfg: Any) -> Path:
    hyper = {
        "d_model": D,
        "d_sae": M,
        "hook_point_in": "blocks.3.hook_resid_post",
        "hook_point_out": "blocks.3.hook_resid_post",
        "act_fn": "jumprelu",
        "jump_relu_threshold": 0.3,
        "norm_activation": "dataset-wise",
        "dataset_average_activation_norm": {"in": 7.5, "out": 9.0},
        "apply_decoder_bias_to_pre_encoder": False,
        "sparsity_include_decoder_norm": False,
        "use_decoder_bias": True,
    }
    hyper.update(cfg)
    write_json(path / "hyperparams.json", hyper)
    write_safetensors(path / "checkpoints" / "final.safetensors", t)
    return path


@pytest.mark.parametrize(
    ("pre_encoder_bias", "decoder_norm"), [(False, False), (True, False), (False, True)]
)
def test_llama_scope_folds_the_dataset_norm(
    tmp_path: Path, pre_encoder_bias: bool, decoder_norm: bool
) -> None:
    t = lm_saes_tensors()
    path = write_llama_scope(
        tmp_path / "Llama3_1-8B-Base-L3R-8x",
        t,
        apply_decoder_bias_to_pre_encoder=pre_encoder_bias,
        sparsity_include_decoder_norm=decoder_norm,
    )
    assert detect(path).layout == "llama_scope"
    sae = SparseAutoencoder.load(path)
    s_in, s_out = math.sqrt(D) / 7.5, math.sqrt(D) / 9.0
    maths = lm_saes_maths(
        t,
        torch.tensor(0.3),
        s_in=s_in,
        s_out=s_out,
        pre_encoder_bias=pre_encoder_bias,
        decoder_norm=decoder_norm,
    )
    assert_same_maths(sae, acts(scale=7.5 / math.sqrt(D)), *maths)
    assert sae.W_enc.dtype == torch.float32  # folded in fp32, not rounded back to bf16
    assert (sae.config.apply_b_dec_to_input, sae.config.hook_layer) == (False, 3)
    assert any("sqrt(d_model)/norm_in" in note for note in sae.provenance["folded"])


@settings(max_examples=10, deadline=None)
@given(norm_in=st.floats(0.5, 60.0), norm_out=st.floats(0.5, 60.0), seed=st.integers(0, 999))
def test_llama_scope_fold_property(
    tmp_path_factory: Any, norm_in: float, norm_out: float, seed: int
) -> None:
    t = lm_saes_tensors(seed, dtype=torch.float32)
    path = write_llama_scope(
        tmp_path_factory.mktemp("ls"),
        t,
        dataset_average_activation_norm={"in": norm_in, "out": norm_out},
        jump_relu_threshold=0.1,
    )
    sae = SparseAutoencoder.load(path)
    maths = lm_saes_maths(
        t, torch.tensor(0.1), s_in=math.sqrt(D) / norm_in, s_out=math.sqrt(D) / norm_out
    )
    x = acts(64, seed=seed, scale=norm_in / math.sqrt(D))
    assert_same_maths(sae, x, *maths)


def test_llama_scope_refusals(tmp_path: Path) -> None:
    t = lm_saes_tensors()
    with pytest.raises(CheckpointError, match="a transcoder predicts another activation"):
        SparseAutoencoder.load(
            write_llama_scope(
                tmp_path / "tc",
                t,
                hook_point_in="blocks.3.ln2.hook_normalized",
                hook_point_out="blocks.3.hook_mlp_out",
            )
        )
    with pytest.raises(CheckpointError, match="'token-wise' rescales every token"):
        SparseAutoencoder.load(write_llama_scope(tmp_path / "tw", t, norm_activation="token-wise"))
    half = write_llama_scope(tmp_path / "half", t)
    (half / "checkpoints" / "final.safetensors").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"looks like a Llama Scope directory \(layout 'llama_scope'.*but "
        r"checkpoints/final.safetensors is missing",
    ):
        SparseAutoencoder.load(half)


def write_r1(path: Path, t: dict[str, Tensor], **cfg: Any) -> Path:
    config = {
        "sae_type": "sae",
        "d_model": D,
        "expansion_factor": M // D,
        "hook_point_in": "blocks.5.hook_resid_post",
        "hook_point_out": "blocks.5.hook_resid_post",
        "act_fn": "jumprelu",
        "norm_activation": "dataset-wise",
        "sparsity_include_decoder_norm": True,
        "apply_decoder_bias_to_pre_encoder": False,
        "use_decoder_bias": True,
    }
    config.update(cfg)
    write_json(path / "config.json", config)
    write_safetensors(path / "sae_weights.safetensors", t)
    return path


def test_llama_scope_r1_distill(tmp_path: Path) -> None:
    t = lm_saes_tensors(4, dtype=torch.float32)
    log_theta = (torch.rand(M, generator=gen(8)) * 0.5 + 0.05).log()
    t["log_jumprelu_threshold"] = log_theta
    path = write_r1(tmp_path / "L5R", t)
    assert detect(path).layout == "llama_scope_r1"
    with pytest.raises(
        CheckpointError, match=r"neither the config nor the weights store .* input_scale=s"
    ):
        SparseAutoencoder.load(path)
    s = 1.7
    sae = SparseAutoencoder.load(path, input_scale=s)
    maths = lm_saes_maths(t, log_theta.exp(), s_in=s, s_out=s, decoder_norm=True)
    assert_same_maths(sae, acts(scale=1 / s), *maths)
    # the norms stored as tensors (as lm_saes saves them) are used directly
    stored = write_r1(
        tmp_path / "stored",
        t | {"dataset_average_activation_norm.blocks.5.hook_resid_post": torch.tensor(6.0)},
    )
    sae = SparseAutoencoder.load(stored)
    maths = lm_saes_maths(t, log_theta.exp(), s_in=4 / 6.0, s_out=4 / 6.0, decoder_norm=True)
    assert_same_maths(sae, acts(scale=1.5), *maths)
    with pytest.raises(CheckpointError, match="do not pass input_scale as well"):
        SparseAutoencoder.load(stored, input_scale=2.0)
    inference = write_r1(tmp_path / "inf", t, norm_activation="inference")
    sae = SparseAutoencoder.load(inference)
    assert_same_maths(
        sae, acts(), *lm_saes_maths(t, log_theta.exp(), s_in=1, s_out=1, decoder_norm=True)
    )


# ----------------------------------------------------------------------------- sparsify
def sparsify_tensors(seed: int = 0) -> dict[str, Tensor]:
    return {
        "encoder.weight": randn(M, D, seed=seed, scale=0.5).bfloat16(),
        "encoder.bias": randn(M, seed=seed + 1, scale=0.2).bfloat16(),
        "W_dec": randn(M, D, seed=seed + 2, scale=0.3).bfloat16(),
        "b_dec": randn(D, seed=seed + 3, scale=0.1).bfloat16(),
    }


def write_sparsify(path: Path, t: dict[str, Tensor], **cfg: Any) -> Path:
    config = {
        "activation": "topk",
        "expansion_factor": M // D,
        "normalize_decoder": True,
        "num_latents": M,
        "k": 6,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": D,
    }
    config.update(cfg)
    write_json(path / "cfg.json", config)
    write_safetensors(path / "sae.safetensors", t)
    return path


def sparsify_maths(t: dict[str, Tensor], k: int) -> tuple[Any, Any]:
    w = {n: v.float() for n, v in t.items()}

    def encode(x: Tensor) -> Tensor:  # sparsify's fused_encoder: ReLU, then top k
        pre = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
        values, indices = pre.topk(k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, indices, values)

    return encode, lambda f: f @ w["W_dec"] + w["b_dec"]


def test_sparsify(tmp_path: Path) -> None:
    t = sparsify_tensors()
    path = write_sparsify(tmp_path / "sae-pythia" / "layers.3", t)
    assert detect(path).layout == "sparsify"
    sae = SparseAutoencoder.load(path)
    assert_same_maths(sae, acts(), *sparsify_maths(t, 6))
    assert (sae.config.k, sae.config.hook_name, sae.config.hook_layer, sae.config.hook_site) == (
        6,
        "layers.3",
        3,
        "resid_post",
    )
    # num_latents = 0 means d_in * expansion_factor
    assert (
        SparseAutoencoder.load(write_sparsify(tmp_path / "z" / "layers.3", t, num_latents=0)).d_sae
        == M
    )
    with pytest.raises(
        CheckpointError,
        match=r"holds no SAE itself, but these subdirectories do: \['layers.3 \(sparsify\)'\]",
    ):
        SparseAutoencoder.load(tmp_path / "sae-pythia")


def test_sparsify_errors_are_not_misleading(tmp_path: Path) -> None:
    t = sparsify_tensors()
    path = write_sparsify(tmp_path / "layers.3", t)
    # forced to read it as SAELens, the config's own words say what is wrong
    with pytest.raises(
        CheckpointError,
        match=r"a SAELens cfg.json names d_in and d_sae, but this one has no 'd_sae'",
    ):
        SparseAutoencoder.load(path, layout="saelens")
    with pytest.raises(CheckpointError, match="skip_connection is set"):
        SparseAutoencoder.load(
            write_sparsify(tmp_path / "skip" / "layers.1", t, skip_connection=True)
        )
    with pytest.raises(CheckpointError, match="transcode is set"):
        SparseAutoencoder.load(write_sparsify(tmp_path / "tc" / "layers.1", t, transcode=True))
    with pytest.raises(CheckpointError, match="activation 'groupmax' is not read"):
        SparseAutoencoder.load(
            write_sparsify(tmp_path / "gm" / "layers.1", t, activation="groupmax")
        )
    (tmp_path / "bare" / "layers.2").mkdir(parents=True)
    write_json(tmp_path / "bare" / "layers.2" / "cfg.json", {"d_in": D, "num_latents": M, "k": 4})
    with pytest.raises(
        CheckpointError,
        match=r"looks like an EleutherAI sparsify hookpoint directory .* but sae.safetensors is missing",
    ):
        SparseAutoencoder.load(tmp_path / "bare" / "layers.2")


# ----------------------------------------------------------------------------- dictionary_learning
class NotATensor:
    """A pickled object: torch.load(weights_only=True) must refuse it."""

    def __init__(self) -> None:
        self.payload = 1


def dl_tensors(dict_class: str, seed: int = 0, threshold: float = 0.2) -> dict[str, Tensor]:
    enc_w = randn(M, D, seed=seed, scale=0.5)
    enc_b = randn(M, seed=seed + 1, scale=0.2)
    dec_w = randn(D, M, seed=seed + 2, scale=0.3)
    b = randn(D, seed=seed + 3, scale=0.1)
    if dict_class == "AutoEncoder":
        return {"bias": b, "encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w}
    if dict_class == "AutoEncoderNew":
        return {
            "encoder.weight": enc_w,
            "encoder.bias": enc_b,
            "decoder.weight": dec_w,
            "decoder.bias": b,
        }
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        return {
            "encoder.weight": enc_w,
            "encoder.bias": enc_b,
            "decoder.weight": dec_w,
            "b_dec": b,
            "k": torch.tensor(6, dtype=torch.int),
            "threshold": torch.tensor(threshold),
        }
    if dict_class == "MatryoshkaBatchTopKSAE":
        return {
            "W_enc": enc_w.T.contiguous(),
            "b_enc": enc_b,
            "W_dec": dec_w.T.contiguous(),
            "b_dec": b,
            "k": torch.tensor(6, dtype=torch.int),
            "threshold": torch.tensor(threshold),
            "group_sizes": torch.tensor([16, 32]),
        }
    if dict_class == "JumpReluAutoEncoder":
        return {
            "W_enc": enc_w.T.contiguous(),
            "b_enc": enc_b,
            "W_dec": dec_w.T.contiguous(),
            "b_dec": b,
            "threshold": torch.rand(M, generator=gen(seed)) * 0.3,
        }
    assert dict_class == "GatedAutoEncoder"
    return {
        "decoder_bias": b,
        "encoder.weight": enc_w,
        "r_mag": randn(M, seed=seed + 4, scale=0.2),
        "gate_bias": randn(M, seed=seed + 5, scale=0.2),
        "mag_bias": randn(M, seed=seed + 6, scale=0.2),
        "decoder.weight": dec_w,
    }


def dl_maths(dict_class: str, t: dict[str, Tensor]) -> tuple[Any, Any]:
    """dictionary_learning's encode/decode of each class, written out."""
    relu = torch.relu
    if dict_class == "AutoEncoder":
        return (
            lambda x: relu((x - t["bias"]) @ t["encoder.weight"].T + t["encoder.bias"]),
            lambda f: f @ t["decoder.weight"].T + t["bias"],
        )
    if dict_class == "AutoEncoderNew":
        return (
            lambda x: relu(x @ t["encoder.weight"].T + t["encoder.bias"]),
            lambda f: f @ t["decoder.weight"].T + t["decoder.bias"],
        )
    if dict_class == "AutoEncoderTopK":

        def topk(x: Tensor) -> Tensor:
            post = relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
            top = post.topk(int(t["k"]), sorted=False, dim=-1)
            return torch.zeros_like(post).scatter_(-1, top.indices, top.values)

        return topk, lambda f: f @ t["decoder.weight"].T + t["b_dec"]
    if dict_class in ("BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
        w_enc = t["W_enc"] if "W_enc" in t else t["encoder.weight"].T
        b_enc = t["b_enc"] if "b_enc" in t else t["encoder.bias"]
        w_dec = t["W_dec"] if "W_dec" in t else t["decoder.weight"].T

        def thresholded(x: Tensor) -> Tensor:  # encode(use_threshold=True), the default
            post = relu((x - t["b_dec"]) @ w_enc + b_enc)
            return post * (post > t["threshold"])

        return thresholded, lambda f: f @ w_dec + t["b_dec"]
    if dict_class == "JumpReluAutoEncoder":

        def jump(x: Tensor) -> Tensor:
            pre_jump = x @ t["W_enc"] + t["b_enc"]
            return relu(pre_jump * (pre_jump > t["threshold"]))

        return jump, lambda f: f @ t["W_dec"] + t["b_dec"]

    def gated(x: Tensor) -> Tensor:
        x_enc = (x - t["decoder_bias"]) @ t["encoder.weight"].T
        f_gate = (x_enc + t["gate_bias"] > 0).float()
        f_mag = relu(t["r_mag"].exp() * x_enc + t["mag_bias"])
        return f_gate * f_mag

    return gated, lambda f: f @ t["decoder.weight"].T + t["decoder_bias"]


def write_dl(path: Path, dict_class: str, data: dict[str, Any], **trainer: Any) -> Path:
    config = {
        "trainer": {
            "dict_class": dict_class,
            "trainer_class": "Trainer",
            "activation_dim": D,
            "dict_size": M,
            "k": 6,
            "layer": 3,
            "lm_name": "EleutherAI/pythia-70m-deduped",
            "submodule_name": "resid_post_layer_3",
        }
        | trainer,
        "buffer": {"ctx_len": 128},
    }
    write_json(path / "config.json", config)
    torch.save(data, path / "ae.pt")
    return path


DL_ARCH = {
    "AutoEncoder": "relu",
    "AutoEncoderNew": "relu",
    "AutoEncoderTopK": "topk",
    "BatchTopKSAE": "jumprelu",
    "MatryoshkaBatchTopKSAE": "jumprelu",
    "JumpReluAutoEncoder": "jumprelu",
    "GatedAutoEncoder": "gated",
}


@pytest.mark.parametrize("dict_class", list(DL_ARCH))
def test_dictionary_learning(tmp_path: Path, dict_class: str) -> None:
    t = dl_tensors(dict_class)
    path = write_dl(tmp_path / "trainer_0", dict_class, t)
    assert detect(path).layout == "dictionary_learning"
    sae = SparseAutoencoder.load(path)
    assert sae.architecture == DL_ARCH[dict_class]
    assert_same_maths(sae, acts(), *dl_maths(dict_class, t))
    assert (sae.config.hook_name, sae.config.model_name) == (
        "blocks.3.hook_resid_post",
        "EleutherAI/pythia-70m-deduped",
    )


def test_dictionary_learning_batchtopk_without_a_threshold_is_relu(tmp_path: Path) -> None:
    t = dl_tensors("BatchTopKSAE", threshold=-1.0)
    sae = SparseAutoencoder.load(write_dl(tmp_path, "BatchTopKSAE", t))
    assert sae.architecture == "relu"
    assert_same_maths(sae, acts(), *dl_maths("BatchTopKSAE", t))


def test_dictionary_learning_refusals(tmp_path: Path) -> None:
    t = dl_tensors("AutoEncoder")
    with pytest.raises(CheckpointError, match="dict_class 'CrossCoder' is not read; mmie maps"):
        SparseAutoencoder.load(write_dl(tmp_path / "cc", "CrossCoder", t))
    with pytest.raises(
        CheckpointError,
        match=r"torch.load\(weights_only=True\) refused it .* mmie never unpickles objects",
    ):
        SparseAutoencoder.load(write_dl(tmp_path / "obj", "AutoEncoder", t | {"x": NotATensor()}))
    with pytest.raises(
        CheckpointError, match=r"\['note'\] are not tensors .* mmie never unpickles objects"
    ):
        SparseAutoencoder.load(write_dl(tmp_path / "str", "AutoEncoder", t | {"note": "hi"}))
    backup = {"step": 5, "ae": t, "optimizer": {"state": {}}, "config": {}, "norm_factor": 1.0}
    with pytest.raises(CheckpointError, match="is a dictionary_learning training backup"):
        SparseAutoencoder.load(write_dl(tmp_path / "bak", "AutoEncoder", backup))
    with pytest.raises(CheckpointError, match=r"trainer.k = 7 but ae.pt stores k = 6"):
        SparseAutoencoder.load(
            write_dl(tmp_path / "k", "AutoEncoderTopK", dl_tensors("AutoEncoderTopK"), k=7)
        )
    gated = dl_tensors("GatedAutoEncoder")
    del gated["r_mag"]
    with pytest.raises(CheckpointError, match=r"missing \['r_mag'\]"):
        SparseAutoencoder.load(write_dl(tmp_path / "g", "GatedAutoEncoder", gated))
    alone = tmp_path / "alone"
    alone.mkdir()
    torch.save(t, alone / "ae.pt")
    with pytest.raises(
        CheckpointError,
        match=r"looks like a dictionary_learning trainer directory .* config.json is missing",
    ):
        SparseAutoencoder.load(alone)


# ----------------------------------------------------------------------------- Qwen Scope
def qwen_tensors(seed: int = 0) -> dict[str, Tensor]:
    return {
        "W_enc": randn(M, D, seed=seed, scale=0.5),
        "W_dec": randn(D, M, seed=seed + 1, scale=0.3),
        "b_enc": randn(M, seed=seed + 2, scale=0.2),
        "b_dec": randn(D, seed=seed + 3, scale=0.1),
    }


def qwen_maths(t: dict[str, Tensor], k: int) -> tuple[Any, Any]:
    def encode(x: Tensor) -> Tensor:  # transposed vs SAELens, no input centring
        return topk_relu(x @ t["W_enc"].T + t["b_enc"], k)

    return encode, lambda f: f @ t["W_dec"].T + t["b_dec"]


def test_qwen_scope(tmp_path: Path) -> None:
    t = qwen_tensors()
    tmp_path.joinpath("qwen").mkdir()
    file = tmp_path / "qwen" / "layer7.sae.pt"
    torch.save(t, file)
    assert detect(file).layout == "qwen_scope"
    with pytest.raises(CheckpointError, match=r"does not store k .*\.load\(path, k=\.\.\.\)"):
        SparseAutoencoder.load(file)
    sae = SparseAutoencoder.load(file, k=6)
    assert_same_maths(sae, acts(), *qwen_maths(t, 6))
    assert (sae.config.hook_layer, sae.config.apply_b_dec_to_input) == (7, False)
    write_json(tmp_path / "qwen" / "config.json", {"k": 6})
    sae = SparseAutoencoder.load(tmp_path / "qwen")  # the directory: its one layerN.sae.pt
    assert sae.k == 6
    with pytest.raises(CheckpointError, match=r"k=5 was passed but .* says k=6"):
        SparseAutoencoder.load(file, k=5)
    torch.save(t, tmp_path / "qwen" / "layer8.sae.pt")
    with pytest.raises(CheckpointError, match="holds 2 Qwen Scope files"):
        SparseAutoencoder.load(tmp_path / "qwen")


# ----------------------------------------------------------------------------- OpenAI
def test_openai_topk_is_refused_with_the_reason(tmp_path: Path) -> None:
    state = {
        "pre_bias": torch.zeros(D),
        "latent_bias": torch.zeros(M),
        "encoder.weight": torch.zeros(M, D),
        "decoder.weight": torch.zeros(D, M),
        "stats_last_nonzero": torch.zeros(M, dtype=torch.long),
        "activation": "TopK",
        "activation_state_dict": {"k": 32},
    }
    (tmp_path / "gpt2").mkdir()
    torch.save(state, tmp_path / "gpt2" / "8.pt")
    assert detect(tmp_path / "gpt2").layout == "openai_topk"
    for where in (tmp_path / "gpt2", tmp_path / "gpt2" / "8.pt"):
        with pytest.raises(
            CheckpointError,
            match=r"OpenAI TopK autoencoder .* LayerNorm .* not representable as a plain SAE",
        ):
            SparseAutoencoder.load(where)
    (tmp_path / "other").mkdir()
    torch.save(qwen_tensors(), tmp_path / "other" / "x.pt")
    with pytest.raises(CheckpointError, match=r"no OpenAI TopK state dict .* among \['x.pt'\]"):
        SparseAutoencoder.load(tmp_path / "other", layout="openai_topk")


# ----------------------------------------------------------------------------- sniffer, layouts
def test_every_layout_has_a_name_and_forcing_one_works(tmp_path: Path) -> None:
    assert LAYOUTS == (
        "mmie",
        "saelens",
        "gemma_scope",
        "gemma_scope_2",
        "llama_scope",
        "llama_scope_r1",
        "sparsify",
        "dictionary_learning",
        "qwen_scope",
        "openai_topk",
    )
    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=D, d_sae=M))
    sae.save(tmp_path / "mine")
    assert detect(tmp_path / "mine").layout == "mmie"
    assert SparseAutoencoder.load(tmp_path / "mine", layout="mmie").provenance["layout"] == "mmie"
    with pytest.raises(ValueError, match="layout must be 'auto' or one of"):
        SparseAutoencoder.load(tmp_path / "mine", layout="gemma")
    with pytest.raises(
        CheckpointError,
        match=r"looks like a Llama Scope directory \(layout 'llama_scope'.*but "
        r"hyperparams.json is missing; found \['sae.safetensors', 'sae_config.json'\]",
    ):
        SparseAutoencoder.load(tmp_path / "mine", layout="llama_scope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(
        CheckpointError,
        match=r"no SAE layout recognised \(found \['notes.txt'\]\). mmie reads mmie: "
        r"sae_config.json \+ sae.safetensors; saelens: cfg.json",
    ):
        SparseAutoencoder.load(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="does not exist"):
        SparseAutoencoder.load(tmp_path / "nowhere")


def test_the_log_names_the_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = sparsify_tensors()
    path = write_sparsify(tmp_path / "layers.3", t)
    with caplog.at_level("INFO", logger="mmie.sae.formats"):
        SparseAutoencoder.load(path)
    assert "reading an EleutherAI sparsify hookpoint directory (layout 'sparsify')" in caplog.text


# ----------------------------------------------------------------------------- hook sites
@settings(max_examples=25, deadline=None)
@given(layer=st.integers(0, 200))
def test_hook_names_of_every_convention_name_the_same_site(layer: int) -> None:
    for name in (
        f"blocks.{layer}.hook_resid_post",
        f"blocks.{layer + 1}.hook_resid_pre",
        f"model.layers.{layer}.output",
        f"model.layers.{layer}",
        f"layers.{layer}",
        f"gpt_neox.layers.{layer}",
        f"transformer.h.{layer}",
        f"resid_post_layer_{layer}",
    ):
        assert parse_hook(name) == (("resid_post", layer)), name
    assert parse_hook(f"blocks.{layer}.hook_mlp_out") == ("mlp_out", layer)
    assert parse_hook(f"layers.{layer}.mlp") == ("mlp_out", layer)
    assert parse_hook(f"blocks.{layer}.attn.hook_z") == ("attn_z", layer)
    assert parse_hook(f"model.layers.{layer}.self_attn") == ("attn_out", layer)
    assert parse_hook(f"blocks.{layer}.hook_resid_mid").site == "resid_mid"
    assert parse_hook("blocks.0.hook_resid_pre") == ("embed", None)
    assert parse_hook(None) is None
    assert parse_hook("my_hook").site == "unknown"


def test_hook_site_round_trips_and_old_configs_load() -> None:
    config = SAEConfig(architecture="relu", d_in=D, d_sae=M, hook_name="blocks.2.hook_mlp_out")
    assert config.hook_site == "mlp_out"
    assert "hook_site" not in config.to_dict()
    assert SAEConfig.from_dict(config.to_dict()) == config
    assert SAEConfig(architecture="relu", d_in=D, d_sae=M).hook_site is None


def test_the_gate_refuses_saes_of_other_sites_unless_told() -> None:
    model = tiny_causal_lm("llama", hidden_size=D, num_layers=2, seed=0)
    mlp = SparseAutoencoder(
        SAEConfig(
            architecture="relu", d_in=D, d_sae=M, hook_layer=1, hook_name="blocks.1.hook_mlp_out"
        )
    )
    with pytest.raises(
        ValueError,
        match=r"saes\[1\] was trained on 'blocks.1.hook_mlp_out', hook site 'mlp_out' \(an MLP's "
        r"output\), but an SAEGate reads and edits the residual stream at block outputs",
    ):
        mmie.SAEGate(model, {1: mlp}, {1: [0, 1]})
    with mmie.SAEGate(model, {1: mlp}, {1: [0, 1]}, allow_other_sites=True) as gate:
        assert gate.attached
    resid = SparseAutoencoder(
        SAEConfig(architecture="relu", d_in=D, d_sae=M, hook_name="model.layers.1.output")
    )
    with mmie.SAEGate(model, {1: resid}, {1: [0]}):
        pass
    with pytest.raises(TypeError, match="allow_other_sites must be True or False"):
        mmie.SAEGate(model, {1: mlp}, {1: [0]}, allow_other_sites=1)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- SAELens objects
def test_saelens_interop_names_the_extra_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sae_lens", None)  # import sae_lens raises ImportError
    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=D, d_sae=M))
    with pytest.raises(ImportError, match=r"pip install 'mmie\[saelens\]'"):
        sae.to_saelens()
    with pytest.raises(ImportError, match=r"SAELens >= 6"):
        SparseAutoencoder.from_saelens(object())


# ----------------------------------------------------------------------------- study
def test_a_study_uses_a_pretrained_sae_for_every_seed(tmp_path: Path) -> None:
    model = tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0)
    tok = byte_tokenizer()
    texts = [f"sample {i}: the quick brown fox, नमस्ते दुनिया {i * 7}" for i in range(24)]
    sae, _ = mmie.train_sae_on_model(
        model, tok, texts, 1, d_sae=64, k=8, steps=200, batch_size=128, seed=0
    )
    sae_dir = tmp_path / "pretrained"
    sae.save(sae_dir, layout="saelens")
    config = mmie.demo_config(
        model="tiny-llama",
        seeds=(0, 1),
        output_dir=str(tmp_path / "out"),
        references={"oracle": "", "retrain": ""},
        controls=(),
        metrics=("forget_es", "retain_ppl"),
        data={"n_forget": 6, "n_retain": 6, "n_eval": 4, "max_length": 256, "batch_size": 8},
        selection={"mode": "fixed", "layers": (1,)},
        sae={"paths": {1: str(sae_dir)}, "n_features": 4, "max_retain_frequency": 1.0},
        generation={"max_new_tokens": 4, "batch_size": 8},
        arms=[{"kind": "sae_gate"}],
        n_boot=200,
        plots=False,
    )
    assert config.sae.paths == (f"1={sae_dir}",)
    mmie.run_experiment(config, model=model, tokenizer=tok, show_progress=False)
    infos = []
    for seed in (0, 1):
        shard = json.loads((tmp_path / "out" / "shards" / f"seed{seed}__sae_gate.json").read_text())
        infos.append(shard["info"])
    quality = infos[0]["sae_quality"]["1"]
    assert quality["source"] == str(sae_dir)
    assert quality["layout"] == "saelens"
    assert quality["fvu"] < 0.8
    assert quality["cosine"] > 0.5
    assert infos[0]["sae_quality"] == infos[1]["sae_quality"]  # the same SAE for every seed
    assert infos[0]["features"] == infos[1]["features"]
    assert not list((tmp_path / "out").rglob("sae/layer1"))  # nothing trained or cached


def test_study_sae_paths_are_validated() -> None:
    with pytest.raises(ConfigError, match=r'sae.paths\[0\]: expected "LAYER=DIR"'):
        mmie.demo_config(sae={"paths": ["six=dir"]})
    with pytest.raises(ConfigError, match=r"sae.paths\[0\]: the directory is empty"):
        mmie.demo_config(sae={"paths": ["6= "]})
    with pytest.raises(ConfigError, match=r"sae.layout: must be one of \['auto', 'mmie'"):
        mmie.demo_config(sae={"layout": "gemma"})
    config = mmie.demo_config(sae={"paths": {"6": "a", "2": "b"}})
    assert config.sae.pretrained() == {6: "a", 2: "b"}
    assert mmie.ExperimentConfig.from_dict(config.to_dict()) == config
