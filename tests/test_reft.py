"""Tests of mmie.edits.reft: LoReFT interventions and adapters on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_reference import hidden_after
from mmie.edits.reft import LoReFTConfig, LoReFTIntervention, ReFTAdapter
from mmie.errors import CheckpointError, ConfigError, IncompatibleModelError, InterventionError
from mmie.models.hooks import assert_no_mmie_hooks, mmie_hooks
from mmie.models.tokenization import tokenize
from mmie.testing import byte_tokenizer, tiny_causal_lm

TEXTS = ["the river runs", "नदी के पास", "hi"]


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return byte_tokenizer()


def reference_phi(
    h: torch.Tensor, R: torch.Tensor, W: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Closed form h + Rᵀ(W h + b − R h) in float64, row-vector convention."""
    h64, R64, W64, b64 = h.double(), R.double(), W.double(), b.double()
    return h64 + (h64 @ W64.T + b64 - h64 @ R64.T) @ R64


def orthonormality_error(R: torch.Tensor) -> float:
    R64 = R.detach().double()
    return float((R64 @ R64.T - torch.eye(R.shape[0], dtype=torch.float64)).abs().max())


# ----------------------------------------------------------------- the LoReFT map


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 24), data=st.data())
def test_phi_matches_closed_form_and_is_identity_when_w_equals_r(
    seed: int, d: int, data: st.DataObject
) -> None:
    rank = data.draw(st.integers(1, d))
    module = LoReFTIntervention(d, rank, seed=seed)
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(3, 5, d, generator=g)  # (batch, seq, d_model)
    R = module.R.detach()
    assert orthonormality_error(R) < 1e-5
    out = module(h)
    expected = reference_phi(h, R, module.weight.detach(), module.bias.detach())
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        module.weight.copy_(R)
        module.bias.zero_()
    torch.testing.assert_close(module(h), h, atol=1e-5, rtol=0)


def test_identity_init_is_identity() -> None:
    module = LoReFTIntervention(16, 3, init="identity", seed=1)
    assert torch.equal(module.weight.detach(), module.R.detach())
    assert torch.equal(module.bias.detach(), torch.zeros(3))
    h = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(module(h), h, atol=1e-6, rtol=0)


def test_rotation_stays_orthonormal_under_training() -> None:
    d, rank = 12, 3
    module = LoReFTIntervention(d, rank, seed=0)
    R0 = module.R.detach().clone()
    g = torch.Generator().manual_seed(1)
    h = torch.randn(64, d, generator=g)
    target = h + torch.randn(64, d, generator=g)  # a toy regression target
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    losses = []
    for _ in range(25):
        loss = ((module(h) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert orthonormality_error(module.R) < 1e-5
    assert losses[-1] < losses[0]
    assert (module.R.detach() - R0).abs().max() > 1e-2  # R really moved


@pytest.mark.parametrize("weight_decay", [0.01, 0.5])
def test_weight_decay_does_not_collapse_r(weight_decay: float) -> None:
    """AdamW decays the parametrization's ±1 sign diagonal; R must stay a rotation."""
    module = LoReFTIntervention(10, 3, seed=0)
    R0 = module.R.detach().clone()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=weight_decay)
    h = torch.randn(16, 10, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        loss = module(h).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    R = module.R.detach()
    assert orthonormality_error(R) < 1e-5
    assert (R - R0).abs().max() < 0.05  # small steps: same rotation, signs kept


def test_two_forwards_one_backward() -> None:
    """GradDiff-style objectives sum losses of two forward passes before backward."""
    module = LoReFTIntervention(10, 3, seed=0)
    g = torch.Generator().manual_seed(0)
    forget, retain = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    loss = -module(forget).pow(2).mean() + module(retain).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in module.parameters())


def test_parameters_are_standard_and_seeded() -> None:
    state = torch.random.get_rng_state()
    a = LoReFTIntervention(10, 2, seed=5)
    b = LoReFTIntervention(10, 2, seed=5)
    c = LoReFTIntervention(10, 2, seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        assert type(pa) is torch.nn.Parameter
        assert pa.requires_grad
        assert torch.equal(pa, pb)
    assert torch.equal(a.R, b.R)
    assert not torch.equal(a.R, c.R)
    assert {n for n, _ in a.named_parameters()} == {
        "weight",
        "bias",
        "parametrizations.rotation.original",
    }


def test_dropout_only_in_training_mode() -> None:
    module = LoReFTIntervention(8, 2, dropout=0.5, seed=0).eval()
    h = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        module(h).double(),
        reference_phi(h, module.R.detach(), module.weight.detach(), module.bias.detach()),
        atol=1e-5,
        rtol=1e-5,
    )
    module.train()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        noisy = module(h)
    assert not torch.allclose(noisy, module.eval()(h))


def test_dropout_acts_on_the_edit_only() -> None:
    """``h + dropout(edit)``, not pyreft's ``dropout(h + edit)``: the base hidden state is
    never zeroed, and each coordinate of the output is h, or h plus the rescaled edit."""
    h = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    identity = LoReFTIntervention(8, 2, dropout=0.9, seed=0, init="identity").train()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        # edit ~0: h passes intact (pyreft's dropout would zero ~90% of its coordinates)
        torch.testing.assert_close(identity(h), h, atol=1e-5, rtol=0)
    module = LoReFTIntervention(8, 2, dropout=0.5, seed=0).train()
    edit = module.eval()(h) - h
    module.train()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = module(h)
    kept = torch.isclose(out - h, 2 * edit, atol=1e-6)  # 1 / (1 - p) = 2
    dropped = torch.isclose(out, h, atol=1e-6)
    assert bool((kept | dropped).all())
    assert 0.3 < float(dropped.double().mean()) < 0.7


# -------------------------------------------------------------------- validation


def test_rank_validation_message(model) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"rank=33 exceeds d_model=32.*choose rank <= 32"):
        ReFTAdapter(model, LoReFTConfig(layers=(0,), rank=33))
    with pytest.raises(ValueError, match="rank=9 exceeds d_model=8"):
        LoReFTIntervention(8, 9)
    assert_no_mmie_hooks(model)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": ()}, "layers: must not be empty"),
        ({"layers": (0, 0)}, "layers: must be unique"),
        ({"layers": (-1,)}, r"layers\[0\]: must be >= 0"),
        ({"layers": 3}, "layers: expected a list"),
        ({"layers": ("1",)}, r"layers\[0\]: expected an integer"),
        ({"layers": (0,), "rank": 0}, "rank: must be >= 1"),
        ({"layers": (0,), "rank": 2.0}, "rank: expected an integer"),
        ({"layers": (0,), "positions": "last"}, r"positions: must be one of \['all', 'prompt'\]"),
        ({"layers": (0,), "dropout": 1.0}, r"dropout: must be in \[0, 1\)"),
        ({"layers": (0,), "seed": -1}, "seed: must be >= 0"),
        ({"layers": (0,), "init": "zeros"}, r"init: must be one of \['random', 'identity'\]"),
    ],
)
def test_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LoReFTConfig(**kwargs)  # type: ignore[arg-type]


def test_config_round_trip_and_sorting() -> None:
    config = LoReFTConfig(layers=[3, 1], rank=2, positions="prompt", dropout=0.1, seed=4)  # type: ignore[arg-type]
    assert config.layers == (1, 3)
    assert LoReFTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="alpha: unknown key"):
        LoReFTConfig.from_dict({"layers": [0], "alpha": 1})


def test_adapter_validates_layers_and_config(model) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"config.layers \[2\] out of range"):
        ReFTAdapter(model, LoReFTConfig(layers=(0, 2)))
    with pytest.raises(TypeError, match="config must be a LoReFTConfig"):
        ReFTAdapter(model, {"layers": (0,)})  # type: ignore[arg-type]


# ------------------------------------------------------------------------ adapter


def test_adapter_edits_block_outputs_with_closed_form(model, tok) -> None:  # type: ignore[no-untyped-def]
    batch = tokenize(tok, TEXTS)
    raw0 = hidden_after(model, batch, 0)
    adapter = ReFTAdapter(model, LoReFTConfig(layers=(0, 1), rank=4))
    with adapter:
        edited0 = hidden_after(model, batch, 0)
    m = adapter.intervention(0)
    expected = reference_phi(raw0, m.R.detach(), m.weight.detach(), m.bias.detach())
    torch.testing.assert_close(edited0.double(), expected, atol=1e-5, rtol=1e-5)
    assert_no_mmie_hooks(model)


def test_hooks_removed_on_exit_and_exception(model, tok) -> None:  # type: ignore[no-untyped-def]
    adapter = ReFTAdapter(model, LoReFTConfig(layers=(0, 1), rank=2))
    with adapter:
        assert [owner for _, owner in mmie_hooks(model)] == ["ReFTAdapter", "ReFTAdapter"]
    assert_no_mmie_hooks(model)
    with pytest.raises(RuntimeError, match="boom"), adapter:
        raise RuntimeError("boom")
    assert_no_mmie_hooks(model)
    assert not adapter.attached


def test_training_through_the_model_keeps_r_orthonormal(model, tok) -> None:  # type: ignore[no-untyped-def]
    batch = tokenize(tok, TEXTS)
    model.requires_grad_(False)
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = ReFTAdapter(model, LoReFTConfig(layers=(0, 1), rank=4, dropout=0.1))
    before = {n: p.detach().clone() for n, p in adapter.named_parameters()}
    opt = torch.optim.AdamW(adapter.parameters(), lr=0.05)
    adapter.train()
    target = batch["input_ids"].clone()
    target[batch["attention_mask"] == 0] = -100
    with adapter:
        for _ in range(5):
            logits = model(**batch).logits
            # toy objective: push the logits away from the next token (gradient ascent)
            loss = -torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    adapter.eval()
    assert not adapter.training
    for layer in adapter.layers:
        assert orthonormality_error(adapter.intervention(layer).R) < 1e-5
    for name, p in adapter.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name
    for k, v in model.state_dict().items():
        assert torch.equal(v, base_weights[k]), k
    assert_no_mmie_hooks(model)


def test_save_load_reproduces_logits_exactly(model, tok, tmp_path) -> None:  # type: ignore[no-untyped-def]
    batch = tokenize(tok, TEXTS)
    adapter = ReFTAdapter(model, LoReFTConfig(layers=(0, 1), rank=3, seed=2))
    # train a few steps so the parametrization is far from its initial state
    opt = torch.optim.Adam(adapter.parameters(), lr=0.1)
    with adapter:
        for _ in range(3):
            loss = model(**batch).logits.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            expected = model(**batch).logits
    path = adapter.save(tmp_path / "reft")
    meta = json.loads((path / "reft_config.json").read_text())
    assert meta["config"]["layers"] == [0, 1]
    assert meta["d_model"] == 32
    from safetensors.torch import load_file

    stored = load_file(str(path / "reft_weights.safetensors"))
    assert set(stored) == {
        f"layers.{i}.{n}" for i in (0, 1) for n in ("rotation", "weight", "bias")
    }
    torch.testing.assert_close(stored["layers.0.rotation"], adapter.intervention(0).R.detach())

    fresh = tiny_causal_lm("llama", seed=0)
    loaded = ReFTAdapter.load(path, fresh)
    with loaded, torch.no_grad():
        got = fresh(**batch).logits
    assert torch.equal(got, expected)
    assert loaded.config == adapter.config
    assert_no_mmie_hooks(fresh)


def test_load_repairs_slightly_non_orthonormal_r(model, tok, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file, save_file

    adapter = ReFTAdapter(model, LoReFTConfig(layers=(1,), rank=3))
    path = adapter.save(tmp_path / "r")
    tensors = load_file(str(path / "reft_weights.safetensors"))
    noisy = tensors["layers.1.rotation"] + 1e-3 * torch.randn(
        3, 32, generator=torch.Generator().manual_seed(0)
    )
    save_file({**tensors, "layers.1.rotation": noisy}, str(path / "reft_weights.safetensors"))
    loaded = ReFTAdapter.load(path, model)
    R = loaded.intervention(1).R.detach()
    assert orthonormality_error(R) < 1e-6
    assert (R - noisy).abs().max() < 5e-3

    save_file({**tensors, "layers.1.rotation": 3 * noisy}, str(path / "reft_weights.safetensors"))
    with pytest.raises(CheckpointError, match="stored R is not a rotation"):
        ReFTAdapter.load(path, model)
    del tensors["layers.1.bias"]
    save_file(tensors, str(path / "reft_weights.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \['layers.1.bias'\]"):
        ReFTAdapter.load(path, model)
    meta = json.loads((path / "reft_config.json").read_text())
    (path / "reft_config.json").write_text(json.dumps({**meta, "d_model": 16}))
    with pytest.raises(IncompatibleModelError, match="d_model=16"):
        ReFTAdapter.load(path, model)


# ------------------------------------------------------------------ prompt positions


def test_prompt_positions_follow_the_mask(model, tok) -> None:  # type: ignore[no-untyped-def]
    batch = tokenize(tok, TEXTS)
    raw = hidden_after(model, batch, 0)
    adapter = ReFTAdapter(model, LoReFTConfig(layers=(0,), rank=2, positions="prompt"))
    mask = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    mask[:, :3] = True
    with adapter, adapter.position_mask(mask):
        edited = hidden_after(model, batch, 0)
    m = adapter.intervention(0)
    phi = reference_phi(raw, m.R.detach(), m.weight.detach(), m.bias.detach()).float()
    torch.testing.assert_close(edited[:, :3], phi[:, :3], atol=1e-5, rtol=1e-5)
    assert torch.equal(edited[:, 3:], raw[:, 3:])
    assert adapter._masks == {}  # cleared by the context manager


def test_prompt_positions_errors_and_cleanup(model, tok) -> None:  # type: ignore[no-untyped-def]
    batch = tokenize(tok, TEXTS)
    adapter = ReFTAdapter(model, LoReFTConfig(layers=(0,), rank=2, positions="prompt"))
    with adapter, pytest.raises(InterventionError, match="no position mask is set"):
        model(**batch)
    adapter.set_position_mask(torch.ones(2, batch["input_ids"].shape[1], dtype=torch.bool))
    with adapter, pytest.raises(InterventionError, match=r"mask\.repeat_interleave"):
        model(**batch)
    assert adapter._masks == {}  # removing the adapter clears the mask
    with pytest.raises(ValueError, match="only applies with positions='prompt'"):
        ReFTAdapter(model, LoReFTConfig(layers=(0,))).set_position_mask(batch["attention_mask"])
    with pytest.raises(ValueError, match=r"mask must be a \[batch, seq\] tensor"):
        adapter.set_position_mask(torch.ones(3, dtype=torch.bool))
    assert_no_mmie_hooks(model)


def test_prompt_positions_cached_and_uncached_generation_agree(model) -> None:  # type: ignore[no-untyped-def]
    tok_left = byte_tokenizer(padding_side="left")
    enc = tokenize(tok_left, ["the river", "नदी"], padding_side="left")
    adapter = ReFTAdapter(model, LoReFTConfig(layers=(0, 1), rank=4, positions="prompt"))
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 256}
    with torch.no_grad():
        plain = model.generate(**enc, **kwargs)
        with adapter, adapter.position_mask(enc["attention_mask"]):
            cached = model.generate(**enc, use_cache=True, **kwargs)
            uncached = model.generate(**enc, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, plain)  # the adapter does change the continuation
    assert_no_mmie_hooks(model)


def test_bfloat16_model_uses_float32_parameters(tok) -> None:  # type: ignore[no-untyped-def]
    model16 = tiny_causal_lm("llama", seed=0, dtype=torch.bfloat16)
    batch = tokenize(tok, TEXTS)
    raw = hidden_after(model16, batch, 1)
    adapter = ReFTAdapter(model16, LoReFTConfig(layers=(1,), rank=2))
    m = adapter.intervention(1)
    assert m.weight.dtype == torch.float32
    with adapter:
        edited = hidden_after(model16, batch, 1)
        logits = model16(**batch).logits
    assert edited.dtype == torch.bfloat16
    assert logits.dtype == torch.bfloat16
    assert torch.equal(edited, m(raw).to(torch.bfloat16))
