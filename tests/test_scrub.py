"""Tests of mmie.edits.scrubber: fitting LEACE scrubbers on a tiny model and applying them as hooks."""

from __future__ import annotations

import functools
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_reference import hidden_after
from mmie.edits.leace import LeaceEraser, LeaceFitter
from mmie.edits.scrubber import Scrubber, fit_scrubber
from mmie.errors import CheckpointError, IncompatibleModelError
from mmie.models.activations import collect_activations
from mmie.models.hooks import BlockIntervention, assert_no_mmie_hooks, interventions, mmie_hooks
from mmie.models.tokenization import tokenize
from mmie.testing import byte_tokenizer, tiny_causal_lm

EN_WORDS = [
    "the",
    "river",
    "runs",
    "past",
    "old",
    "stone",
    "walls",
    "while",
    "children",
    "play",
    "near",
    "quiet",
    "gardens",
]
HI_WORDS = [
    "नदी",
    "पुरानी",
    "पत्थर",
    "दीवारों",
    "के",
    "पास",
    "बहती",
    "है",
    "बच्चे",
    "शांत",
    "बगीचों",
    "में",
    "खेलते",
]


def make_texts(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)  # local generator, global state untouched
    return [" ".join(rng.choices(words, k=rng.randint(2, 6))) for _ in range(n)]


CONCEPTS = {"english": make_texts(EN_WORDS, 30, 0), "hindi": make_texts(HI_WORDS, 12, 1)}
LAYERS = [0, 1]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_causal_lm("llama", seed=0)


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return byte_tokenizer()


@pytest.fixture(scope="module")
def seq_scrubber(model, tok) -> Scrubber:  # type: ignore[no-untyped-def]
    return fit_scrubber(model, tok, CONCEPTS, LAYERS, sequential=True)


@pytest.fixture(scope="module")
def par_scrubber(model, tok) -> Scrubber:  # type: ignore[no-untyped-def]
    return fit_scrubber(model, tok, CONCEPTS, LAYERS, sequential=False)


def all_texts_and_labels() -> tuple[list[str], torch.Tensor]:
    texts = CONCEPTS["english"] + CONCEPTS["hindi"]
    labels = torch.tensor([0] * len(CONCEPTS["english"]) + [1] * len(CONCEPTS["hindi"]))
    return texts, labels


def token_data(model, tok, layer: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """Token-level activations of ``layer`` under whatever is attached, and token labels."""
    texts, labels = all_texts_and_labels()
    acts = collect_activations(model, tok, texts, [layer], batch_size=len(texts))
    return acts.tokens[layer].double(), labels[acts.token_text_index]


def cross_cov(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    zf = z.double()[:, None]
    return (x - x.mean(0)).T @ (zf - zf.mean(0)) / (len(x) - 1)


def probe_accuracy(x: torch.Tensor, z: torch.Tensor) -> float:
    """In-sample accuracy of a binary logistic-regression probe trained with L-BFGS."""
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")
    target = z.double()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, target)
        loss = loss + 1e-4 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((((x @ w + b) > 0).long() == z).double().mean())


class AddConstant(BlockIntervention):
    def __init__(self, model, layer: int, value: float) -> None:  # type: ignore[no-untyped-def]
        super().__init__(model)
        self.layer, self.value = layer, value

    def _build_edits(self):  # type: ignore[no-untyped-def]
        return [(self.layer, lambda h: h + self.value)]


# ------------------------------------------------------------------------ guarantees


def test_scrubbed_layers_have_zero_cross_covariance(model, tok, seq_scrubber) -> None:  # type: ignore[no-untyped-def]
    for layer in LAYERS:
        x, z = token_data(model, tok, layer)
        before = cross_cov(x, z).abs().max()
        with seq_scrubber:
            xs, zs = token_data(model, tok, layer)
        assert torch.equal(z, zs)
        after = cross_cov(xs, zs).abs().max()
        assert before > 1e-2
        assert after < 1e-5 * float(before) + 1e-7
    assert_no_mmie_hooks(model)


def test_probe_at_chance_on_scrubbed_layer(model, tok, seq_scrubber) -> None:  # type: ignore[no-untyped-def]
    x, z = token_data(model, tok, 1)
    majority = max(float(z.double().mean()), 1 - float(z.double().mean()))
    before = probe_accuracy(x, z)
    with seq_scrubber:
        xs, zs = token_data(model, tok, 1)
    after = probe_accuracy(xs, zs)
    assert before > majority + 0.15
    assert abs(after - majority) < 0.03


def test_sequential_fit_sees_upstream_erasure(model, tok, seq_scrubber, par_scrubber) -> None:  # type: ignore[no-untyped-def]
    texts, labels = all_texts_and_labels()
    # layer 0 has nothing upstream: both modes fit the same eraser
    e0s, e0p = seq_scrubber.erasers[0], par_scrubber.erasers[0]
    probe = torch.randn(7, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(e0s(probe), e0p(probe), atol=1e-6)

    # independent refit of layer 1 on activations collected under layer 0's eraser
    with Scrubber(model, {0: e0s}):
        acts = collect_activations(model, tok, texts, [1], batch_size=len(texts))
    refit = LeaceFitter(32, 2).update(acts.tokens[1], labels[acts.token_text_index]).fit()
    assert torch.allclose(seq_scrubber.erasers[1](probe.double()), refit(probe.double()), atol=1e-6)

    # ... and of the non-sequential one on the unscrubbed model
    plain = collect_activations(model, tok, texts, [1], batch_size=len(texts))
    refit_plain = LeaceFitter(32, 2).update(plain.tokens[1], labels[plain.token_text_index]).fit()
    e1p = par_scrubber.erasers[1]
    assert torch.allclose(e1p(probe.double()), refit_plain(probe.double()), atol=1e-6)

    # the statistics differ, and only the sequential eraser zeroes layer 1 with both attached
    assert not torch.allclose(e1p.bias, seq_scrubber.erasers[1].bias, atol=1e-3)
    with par_scrubber:
        xp, zp = token_data(model, tok, 1)
    with seq_scrubber:
        xs, zs = token_data(model, tok, 1)
    assert cross_cov(xp, zp).abs().max() > 100 * cross_cov(xs, zs).abs().max()


def test_padding_is_excluded(model, tok, seq_scrubber) -> None:  # type: ignore[no-untyped-def]
    """Batch size changes the amount of padding but not the fitted erasers."""
    one = fit_scrubber(model, tok, CONCEPTS, [0], batch_size=1)  # no padding at all
    probe = torch.randn(5, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for layer in [0]:
        assert torch.allclose(
            one.erasers[layer](probe), seq_scrubber.erasers[layer](probe), atol=1e-5
        )


def test_texts_and_labels_form_equals_mapping(model, tok, par_scrubber) -> None:  # type: ignore[no-untyped-def]
    texts, labels = all_texts_and_labels()
    other = fit_scrubber(model, tok, texts, [0, 1], labels=labels.tolist(), sequential=False)
    for layer in LAYERS:
        a, b = other.erasers[layer], par_scrubber.erasers[layer]
        assert torch.allclose(a.proj_left @ a.proj_right, b.proj_left @ b.proj_right, atol=1e-10)
        assert torch.allclose(a.bias, b.bias, atol=1e-10)


def test_centred_on_a_concept(model, tok, par_scrubber) -> None:  # type: ignore[no-untyped-def]
    """``center="english"``: the same projections, centred on the English token mean, which
    the scrubbed layer's English tokens keep while the Hindi mean is moved onto it."""
    texts, labels = all_texts_and_labels()
    scrubber = fit_scrubber(model, tok, CONCEPTS, [0], sequential=False, center="english")
    by_id = fit_scrubber(model, tok, texts, [0], labels=labels.tolist(), center=0)
    a, b = scrubber.erasers[0], par_scrubber.erasers[0]
    assert torch.equal(a.proj_left, b.proj_left)
    assert torch.equal(a.proj_right, b.proj_right)
    assert torch.allclose(by_id.erasers[0].bias, a.bias, rtol=0, atol=1e-10)
    x, z = token_data(model, tok, 0)
    english_mean = x[z == 0].mean(0)
    assert torch.allclose(a.bias, english_mean, rtol=0, atol=1e-6)
    with scrubber:
        erased, z = token_data(model, tok, 0)
    assert torch.allclose(erased[z == 0].mean(0), english_mean, rtol=0, atol=1e-5)
    assert torch.allclose(erased[z == 1].mean(0), english_mean, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="center must be one of the concepts"):
        fit_scrubber(model, tok, CONCEPTS, [0], center="urdu")
    with pytest.raises(ValueError, match=r"center must be an int in \[0, 1\]"):
        fit_scrubber(model, tok, texts, [0], labels=labels.tolist(), center=2)


# ---------------------------------------------------------------------------- hooks


@functools.cache
def cached_model_and_batch() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    return tiny_causal_lm("llama", seed=1), tokenize(byte_tokenizer(), ["hello world", "नमस्ते", "x"])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), layer=st.sampled_from([0, 1]), rank=st.integers(0, 3))
def test_edit_is_eraser_on_block_output(seed: int, layer: int, rank: int) -> None:
    model, batch = cached_model_and_batch()
    g = torch.Generator().manual_seed(seed)
    eraser = LeaceEraser(
        proj_left=torch.randn(32, rank, generator=g, dtype=torch.float64) / 6,
        proj_right=torch.randn(rank, 32, generator=g, dtype=torch.float64) / 6,
        bias=torch.randn(32, generator=g, dtype=torch.float64),
    )
    raw = hidden_after(model, batch, layer)
    with Scrubber(model, {layer: eraser}):
        edited = hidden_after(model, batch, layer)
    expected = eraser.to(dtype=torch.float32)(raw)
    torch.testing.assert_close(edited, expected, atol=1e-6, rtol=1e-6)
    assert_no_mmie_hooks(model)


def test_no_hooks_left_after_exit_and_exceptions(model, tok, seq_scrubber) -> None:  # type: ignore[no-untyped-def]
    with seq_scrubber:
        assert [owner for _, owner in mmie_hooks(model)] == ["Scrubber", "Scrubber"]
    assert_no_mmie_hooks(model)
    with pytest.raises(RuntimeError, match="boom"), seq_scrubber:
        raise RuntimeError("boom")
    assert_no_mmie_hooks(model)
    assert not seq_scrubber.attached


def test_fit_leaves_no_hooks_when_collection_fails(model, tok, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import mmie.edits.scrubber as scrub_module

    calls = {"n": 0}
    real = scrub_module.collect_activations

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # second stage: layer 0's eraser is attached
            assert mmie_hooks(model) == [("model.layers.0", "Scrubber")]
            raise RuntimeError("collection failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(scrub_module, "collect_activations", failing)
    with pytest.raises(RuntimeError, match="collection failed"):
        fit_scrubber(model, tok, CONCEPTS, LAYERS)
    assert_no_mmie_hooks(model)


def test_composes_with_other_interventions(model, tok, seq_scrubber) -> None:  # type: ignore[no-untyped-def]
    batch = tokenize(tok, ["the river", "नदी के पास"])
    raw = hidden_after(model, batch, 1)
    scrub1 = Scrubber(model, {1: seq_scrubber.erasers[1]})
    e1 = seq_scrubber.erasers[1].to(dtype=torch.float32)
    add = AddConstant(model, 1, 0.5)
    with interventions(scrub1, add):
        scrub_then_add = hidden_after(model, batch, 1)
    with interventions(add, scrub1):
        add_then_scrub = hidden_after(model, batch, 1)
    torch.testing.assert_close(scrub_then_add, e1(raw) + 0.5)
    torch.testing.assert_close(add_then_scrub, e1(raw + 0.5))
    assert_no_mmie_hooks(model)


def test_bfloat16_model_keeps_dtype(tok, seq_scrubber) -> None:  # type: ignore[no-untyped-def]
    model16 = tiny_causal_lm("llama", seed=0, dtype=torch.bfloat16)
    batch = tokenize(tok, ["the river runs"])
    raw = hidden_after(model16, batch, 0)
    with Scrubber(model16, {0: seq_scrubber.erasers[0]}) as scrubber:
        edited = hidden_after(model16, batch, 0)
        logits = model16(**batch).logits
    assert scrubber.erasers[0].dtype == torch.float64  # stored copy untouched
    assert edited.dtype == torch.bfloat16
    assert logits.dtype == torch.bfloat16
    expected = (seq_scrubber.erasers[0].to(dtype=torch.float32)(raw.float())).to(torch.bfloat16)
    assert torch.equal(edited, expected)


def test_save_load_round_trip(model, tok, seq_scrubber, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = seq_scrubber.save(tmp_path / "scrub")
    loaded = Scrubber.load(path, model)
    assert loaded.layers == seq_scrubber.layers
    for layer in LAYERS:
        for name in ("proj_left", "proj_right", "bias"):
            assert torch.equal(
                getattr(loaded.erasers[layer], name), getattr(seq_scrubber.erasers[layer], name)
            )
    batch = tokenize(tok, ["the river", "नदी"])
    with torch.no_grad():
        with seq_scrubber:
            a = model(**batch).logits
        with loaded:
            b = model(**batch).logits
    assert torch.equal(a, b)


def test_load_rejects_bad_files(model, seq_scrubber, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file, save_file

    path = seq_scrubber.save(tmp_path / "s")
    tensors = load_file(str(path / "erasers.safetensors"))
    save_file({**tensors, "layers.5.proj_left": torch.zeros(1)}, str(path / "erasers.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected keys"):
        Scrubber.load(path, model)
    del tensors["layers.1.bias"]
    save_file(tensors, str(path / "erasers.safetensors"))
    with pytest.raises(CheckpointError, match=r"layer 1: missing keys \['bias'\]"):
        Scrubber.load(path, model)
    (path / "scrubber.json").write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="not an mmie scrubber config"):
        Scrubber.load(path, model)


# ----------------------------------------------------------------------- validation


def test_scrubber_validates(model, seq_scrubber) -> None:  # type: ignore[no-untyped-def]
    e0 = seq_scrubber.erasers[0]
    with pytest.raises(ValueError, match="non-empty mapping"):
        Scrubber(model, {})
    with pytest.raises(ValueError, match=r"layer 2, but the model's layers are 0\.\.1"):
        Scrubber(model, {2: e0})
    with pytest.raises(TypeError, match=r"erasers\[0\] must be a LeaceEraser"):
        Scrubber(model, {0: "eraser"})  # type: ignore[dict-item]
    small = LeaceEraser(torch.zeros(8, 1), torch.zeros(1, 8), torch.zeros(8))
    with pytest.raises(IncompatibleModelError, match="d_model=8 but the model's hidden size is 32"):
        Scrubber(model, {0: small})


def test_fit_scrubber_validates(model, tok) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="at least 2 concepts"):
        fit_scrubber(model, tok, {"english": ["a"]}, [0])
    with pytest.raises(ValueError, match=r"texts_by_concept\['hindi'\] must be a non-empty"):
        fit_scrubber(model, tok, {"english": ["a"], "hindi": []}, [0])
    with pytest.raises(ValueError, match="labels are required"):
        fit_scrubber(model, tok, ["a", "b"], [0])
    with pytest.raises(ValueError, match="labels has 1 entries but there are 2 texts"):
        fit_scrubber(model, tok, ["a", "b"], [0], labels=[0])
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        fit_scrubber(model, tok, ["a", "b"], [0], labels=[1, 1])
    with pytest.raises(ValueError, match=r"layers \[4\] out of range"):
        fit_scrubber(model, tok, CONCEPTS, [0, 4])
    with pytest.raises(ValueError, match="layers must not be empty"):
        fit_scrubber(model, tok, CONCEPTS, [])
    assert_no_mmie_hooks(model)
