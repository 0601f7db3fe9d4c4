"""Recoverability attacks: relearning, steering, in-context, quantisation and the logit lens.

Every attack is checked against an independent computation on tiny models, and every one
must leave the model exactly as it found it: weights bit-identical, hooks, adapters, flags,
gradients, train/eval modes and the global RNG as they were.
"""

from __future__ import annotations

import copy
import doctest
import importlib
import json
import logging
import math
import random
import sys

import numpy as np
import pytest
import torch

import mmie
from mmie.edits.reft import LoReFTConfig, ReFTAdapter
from mmie.errors import DataError, IncompatibleModelError
from mmie.evaluation.logit_lens import final_norm, logit_lens
from mmie.evaluation.scoring import perplexity
from mmie.models.hooks import mmie_hooks
from mmie.models.tokenization import collate_ids
from mmie.testing import ARCHITECTURES, tiny_causal_lm
from mmie.unlearning.config import UnlearnConfig
from mmie.unlearning.lora_checkpoint import quiet_peft
from mmie.unlearning.objectives import token_nll
from mmie.unlearning.recovery import (
    RELEARN_ADAPTER,
    RelearningCurve,
    _AddVector,
    in_context_recovery,
    quantisation_attack,
    relearning_attack,
    rtn_quantise,
    steering_directions,
    steering_recovery,
)
from mmie.unlearning.train import unlearn_lora

# A toy "target language": cyclic strings over 8 letters, split into disjoint sets.
_CYCLE = "qzxjvkwq"


def _cyclic(offset: int, n: int) -> str:
    return "".join(_CYCLE[(offset + j) % len(_CYCLE)] for j in range(n))


A_TRAIN = [_cyclic(i, 20 + i % 5) for i in range(8)]
A_RELEARN = [_cyclic(i, 26 + i % 3) for i in range(8)]
A_EVAL = [_cyclic(i, 31) for i in range(4)]
OTHER = [f"the cat sat on the mat {i}" for i in range(8)]
PROMPTS = ["the cat", "a dog ran"]


# --------------------------------------------------------------------------- helpers


def _snapshot(model: torch.nn.Module) -> dict:
    """Everything an attack could change on a model."""
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: p.grad for n, p in model.named_parameters()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "modules": [n for n, _ in model.named_modules()],
        "hooks": {
            n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for n, m in model.named_modules()
        },
        "mmie_hooks": mmie_hooks(model),
        "attributes": sorted(vars(model)),
    }


def _assert_unchanged(model: torch.nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["params"].keys() == before["params"].keys()
    for name, value in before["params"].items():
        assert torch.equal(after["params"][name], value), name  # bit-identical
    for name, value in before["buffers"].items():
        assert torch.equal(after["buffers"][name], value), name
    for key in ("flags", "modes", "modules", "hooks", "mmie_hooks", "attributes"):
        assert after[key] == before[key], key
    for name, grad in before["grads"].items():
        assert after["grads"][name] is grad, name


def _rng_states() -> tuple:
    return random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state()


def _assert_rng(before: tuple) -> None:
    py, np_state, torch_state = _rng_states()
    assert py == before[0]
    assert np.array_equal(np_state, before[1])
    assert torch.equal(torch_state, before[2])


def _pretrain(model, tokenizer, texts, steps=60, lr=1e-2):
    """Full fine-tuning on ``texts`` (one batch), independent of mmie's loops."""
    ids = tokenizer(texts)["input_ids"]
    x, mask = collate_ids(ids, tokenizer.pad_token_id, torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    with mmie.seed_context(0):
        for _ in range(steps):
            loss = token_nll(model(input_ids=x, attention_mask=mask).logits, x, mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for p in model.parameters():
        p.grad = None
    model.eval()
    return model


@pytest.fixture(scope="module")
def learned_and_fresh(tokenizer):
    """A tiny model that learnt the cyclic language (and the other texts), one that did not."""
    learned = _pretrain(tiny_causal_lm("llama", seed=0), tokenizer, A_TRAIN + OTHER)
    fresh = _pretrain(tiny_causal_lm("llama", seed=0), tokenizer, OTHER)
    return learned, fresh


def _lora_arm(model, tokenizer, target_modules=None):
    cfg = UnlearnConfig(objective="ga", steps=15, lr=1e-2, kl_weight=1.0, seed=0)
    result = unlearn_lora(
        model, tokenizer, A_TRAIN, OTHER, config=cfg, target_modules=target_modules
    )
    return result.model


# --------------------------------------------------------------------------- relearning


def test_a_suppressed_language_relearns_faster_than_one_never_learnt(tokenizer, learned_and_fresh):
    """The relearning attack's point: a LoRA arm that hides the cyclic language starts worse
    than a model that never saw it, yet a few steps bring it back far below that model."""
    learned, fresh = learned_and_fresh
    arm = _lora_arm(copy.deepcopy(learned), tokenizer)
    kwargs = {"steps": (0, 6, 10), "target": "en", "lr": 1e-2}
    hidden = relearning_attack(arm, tokenizer, A_RELEARN, A_EVAL, **kwargs)
    never = relearning_attack(fresh, tokenizer, A_RELEARN, A_EVAL, **kwargs)
    assert hidden.log_ppl[0] > never.log_ppl[0]  # the arm looks more "unlearnt" at first
    assert hidden.log_ppl[-1] < never.log_ppl[-1] - 1.0  # and comes back much further
    assert hidden.mean_log_ppl < never.mean_log_ppl + 1.0
    reference = perplexity(learned, tokenizer, A_EVAL).mean_nll
    assert hidden.steps_to_recover(0.5, reference) is not None
    assert never.steps_to_recover(0.9, reference) is None


@pytest.mark.parametrize("method", ["lora", "full"])
def test_relearning_leaves_a_plain_model_bit_identical(tokenizer, model, method):
    model.lm_head.weight.grad = torch.ones_like(model.lm_head.weight)  # a gradient to keep
    model.model.layers[0].train()  # a mixed train/eval state to keep
    before, rng = _snapshot(model), _rng_states()
    curve = relearning_attack(
        model, tokenizer, A_RELEARN, A_EVAL, steps=(0, 2), method=method, target="en"
    )
    _assert_unchanged(model, before)
    _assert_rng(rng)
    assert curve.n_backward == 2
    assert len(curve.train_loss) == 2
    assert curve.log_ppl[1] != curve.log_ppl[0]  # it did train


def test_relearning_keeps_hooks_attached_and_their_parameters_untouched(tokenizer, model):
    """A ReFT arm (hooks with trainable parameters) is fine-tuned as deployed: its hooks stay
    on, and neither its weights nor their gradients change."""
    adapter = ReFTAdapter(model, LoReFTConfig(layers=(1,), rank=2, seed=0)).attach()
    for p in adapter.parameters():
        p.requires_grad_(True)
    adapter_before = {n: p.detach().clone() for n, p in adapter.named_parameters()}
    before = _snapshot(model)
    with_hook = relearning_attack(model, tokenizer, A_RELEARN, A_EVAL, steps=(0,), target="en")
    _ = relearning_attack(model, tokenizer, A_RELEARN, A_EVAL, steps=(0, 2), target="en")
    _assert_unchanged(model, before)
    assert adapter.attached
    for n, p in adapter.named_parameters():
        assert torch.equal(p.detach(), adapter_before[n])
        assert p.grad is None
    adapter.remove()
    without = relearning_attack(model, tokenizer, A_RELEARN, A_EVAL, steps=(0,), target="en")
    assert with_hook.log_ppl != without.log_ppl  # the hook was active while scoring


def test_relearning_stacks_a_second_adapter_on_a_lora_arm(tokenizer, model):
    arm = _lora_arm(model, tokenizer)
    arm.caller_note = "kept"  # an attribute of the caller's, to survive
    before = _snapshot(arm)
    adapters, active = dict(arm.peft_config), list(arm.active_adapters)
    base_logits = arm(input_ids=torch.tensor([[1, 2, 3]])).logits
    curve = relearning_attack(arm, tokenizer, A_RELEARN, A_EVAL, steps=(0, 3), target="en")
    _assert_unchanged(arm, before)
    assert dict(arm.peft_config) == adapters
    assert list(arm.active_adapters) == active
    assert RELEARN_ADAPTER not in arm.peft_config
    assert not any(RELEARN_ADAPTER in n for n, _ in arm.named_modules())
    assert torch.equal(arm(input_ids=torch.tensor([[1, 2, 3]])).logits, base_logits)
    assert curve.log_ppl[1] < curve.log_ppl[0]


def test_relearning_full_on_a_lora_arm_restores_base_and_adapter(tokenizer, model):
    arm = _lora_arm(model, tokenizer)
    before = _snapshot(arm)
    relearning_attack(arm, tokenizer, A_RELEARN, A_EVAL, steps=(1,), method="full", target="en")
    _assert_unchanged(arm, before)


def test_relearning_generates_and_is_reproducible(tokenizer, model):
    kwargs = {"steps": (0, 2), "target": "en", "eval_prompts": PROMPTS, "max_new_tokens": 4}
    a = relearning_attack(model, tokenizer, A_RELEARN, A_EVAL, seed=3, **kwargs)
    b = relearning_attack(model, tokenizer, A_RELEARN, A_EVAL, seed=3, **kwargs)
    c = relearning_attack(model, tokenizer, A_RELEARN, A_EVAL, seed=4, **kwargs)
    assert a.to_dict() | {"seconds": 0} == b.to_dict() | {"seconds": 0}
    assert a.train_loss != c.train_loss
    assert a.extraction_strength is not None
    assert len(a.extraction_strength) == 2
    assert a.target_share is not None
    assert len(a.target_share) == 2
    assert a.n_prompts == len(PROMPTS)
    json.dumps(a.to_dict(), allow_nan=False)
    # step 0 is the model itself, scored independently
    assert a.log_ppl[0] == perplexity(model, tokenizer, A_EVAL).mean_nll
    mass = mmie.script_mass(model, tokenizer, PROMPTS, "en", mode="next_char")
    assert a.script_mass[0] == mass.mean


def test_relearning_logs_its_cost(tokenizer, model, caplog):
    with caplog.at_level(logging.INFO, logger="mmie.unlearning.recovery"):
        curve = relearning_attack(model, tokenizer, A_RELEARN, A_EVAL, steps=(1,), target="en")
    (record,) = [r for r in caplog.records if "relearning_attack" in r.getMessage()]
    assert "s," in record.getMessage()
    assert "1 backward" in record.getMessage()
    assert curve.seconds > 0
    assert curve.n_forward > 1


def test_relearning_refuses_eval_texts_among_relearn_texts(tokenizer, model):
    with pytest.raises(DataError, match=r"relearn_texts\[1\] is also in eval_texts"):
        relearning_attack(model, tokenizer, [A_RELEARN[0], A_EVAL[2]], A_EVAL)
    with pytest.raises(DataError, match="eval_prompts"):
        relearning_attack(model, tokenizer, [*A_RELEARN, "the cat"], A_EVAL, eval_prompts=PROMPTS)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": (0, 5, 5)}, ValueError, "strictly increasing"),
        ({"steps": ()}, ValueError, "at least one"),
        ({"steps": (-1, 2)}, ValueError, "steps"),
        ({"method": "qlora"}, ValueError, "method must be one of"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"rank": 0}, ValueError, "rank"),
        ({"seed": -1}, ValueError, "seed"),
        ({"target": "xx"}, ValueError, "target"),
        ({"logits_processors": "ban"}, TypeError, "logits_processors"),
        ({"target_modules": "q_proj"}, TypeError, "target_modules"),
        ({"detector": object()}, TypeError, "detector"),
    ],
)
def test_relearning_validates_arguments(tokenizer, model, kwargs, error, match):
    with pytest.raises(error, match=match):
        relearning_attack(model, tokenizer, A_RELEARN, A_EVAL, **kwargs)
    with pytest.raises(TypeError, match="relearn_texts"):
        relearning_attack(model, tokenizer, "one text", A_EVAL)


def _curve(steps, log_ppl, mass, reference=None):
    n = len(steps)
    return RelearningCurve(
        steps=tuple(steps),
        log_ppl=tuple(log_ppl),
        script_mass=tuple(mass),
        extraction_strength=None,
        target_share=None,
        train_loss=(),
        method="lora",
        lr=1e-3,
        batch_size=8,
        rank=8,
        seed=0,
        target="hi",
        n_relearn_texts=n,
        n_eval_texts=n,
        n_prompts=n,
        reference_log_ppl=reference,
        seconds=0.0,
        n_forward=0,
        n_backward=0,
    )


def test_curve_areas_and_steps_to_recover_match_independent_computations():
    steps, log_ppl, mass = (0, 2, 5, 10, 25), (6.0, 5.0, 3.0, 2.0, 1.5), (0.1, 0.2, 0.5, 0.8, 0.9)
    curve = _curve(steps, log_ppl, mass, reference=1.0)
    assert curve.auc_log_ppl == pytest.approx(np.trapezoid(log_ppl, steps))
    assert curve.auc_script_mass == pytest.approx(np.trapezoid(mass, steps))
    assert curve.mean_log_ppl == pytest.approx(np.trapezoid(log_ppl, steps) / 25)
    assert curve.perplexity == pytest.approx(tuple(math.exp(v) for v in log_ppl))
    assert curve.recovered_fraction == pytest.approx((0.0, 0.2, 0.6, 0.8, 0.9))
    # the gap is 5 nats: half of it closes at 3.5 (first reached at step 5), 0.9 at 1.5
    assert curve.steps_to_recover(0.5) == 5
    assert curve.steps_to_recover(0.9) == 25
    assert curve.steps_to_recover(0.95) is None
    assert curve.steps_to_recover(0.5, reference_log_ppl=7.0) == 0  # starts below it
    with pytest.raises(ValueError, match="threshold"):
        curve.steps_to_recover(0.0)
    with pytest.raises(ValueError, match="reference"):
        _curve(steps, log_ppl, mass).steps_to_recover(0.5)
    single = _curve((0,), (4.0,), (0.3,))
    assert (single.auc_log_ppl, single.mean_log_ppl, single.mean_script_mass) == (0.0, 4.0, 0.3)
    json.dumps(curve.to_dict(), allow_nan=False)


# --------------------------------------------------------------------------- steering


def test_a_zero_steering_vector_leaves_logits_bit_identical(tokenizer, model):
    ids = torch.tensor([[257, 10, 20, 30, 40]])
    plain = model(input_ids=ids).logits
    with _AddVector(model, {0: torch.zeros(32), 1: torch.zeros(32)}):
        steered = model(input_ids=ids).logits
    assert torch.equal(plain, steered)
    with _AddVector(model, {1: torch.ones(32)}):
        assert not torch.equal(plain, model(input_ids=ids).logits)
    assert mmie_hooks(model) == []


def test_steering_at_scale_zero_or_with_a_zero_direction_changes_nothing(tokenizer, model):
    before, rng = _snapshot(model), _rng_states()
    fitted = steering_recovery(
        model, tokenizer, A_TRAIN, OTHER, A_EVAL, layers=[0, 1], scales=(0.0, 1.0)
    )
    _assert_unchanged(model, before)
    _assert_rng(rng)
    plain = perplexity(model, tokenizer, A_EVAL).mean_nll
    assert fitted.log_ppl_model == plain
    assert [row[0] for row in fitted.log_ppl] == [plain, plain]  # scale 0
    assert [row[0] for row in fitted.random_log_ppl] == [plain, plain]
    assert all(row[1] != plain for row in fitted.log_ppl)
    zero = steering_recovery(
        model, tokenizer, None, None, A_EVAL, layers=[1], base_direction={1: torch.zeros(32)}
    )
    assert zero.direction_norm == (0.0,)
    assert set(zero.log_ppl[0]) == {plain}
    assert set(zero.random_log_ppl[0]) == {plain}
    assert not zero.fitted
    assert fitted.fitted


def test_steering_directions_are_mean_activation_differences(tokenizer, model):
    directions = steering_directions(model, tokenizer, A_TRAIN, OTHER, layers=[0])
    # independently: hidden_states[1] is the output of block 0; average per text, then texts
    means = []
    for texts in (A_TRAIN, OTHER):
        per_text = []
        for text in texts:
            ids = tokenizer([text], return_tensors="pt")["input_ids"]
            with torch.no_grad():
                hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[1]
            per_text.append(hidden[0].mean(0))
        means.append(torch.stack(per_text).mean(0))
    assert torch.allclose(directions[0], means[0] - means[1], atol=1e-5)


def test_steering_recovered_fraction_follows_its_definition(tokenizer, model):
    result = steering_recovery(
        model, tokenizer, A_TRAIN, OTHER, A_EVAL, layers=[1], scales=(2.0,), reference_log_ppl=1.0
    )
    expected = (result.log_ppl_model - result.log_ppl[0][0]) / (result.log_ppl_model - 1.0)
    assert result.recovered_fraction == ((pytest.approx(expected),),)
    assert result.best_recovered_fraction == pytest.approx(expected)
    assert result.perplexity[0][0] == pytest.approx(math.exp(result.log_ppl[0][0]))
    assert result.log_ppl_drop[0][0] == pytest.approx(result.log_ppl_model - result.log_ppl[0][0])
    json.dumps(result.to_dict(), allow_nan=False)
    assert (
        steering_recovery(
            model, tokenizer, A_TRAIN, OTHER, A_EVAL, layers=[1], scales=(2.0,)
        ).recovered_fraction
        is None
    )


def test_the_hindi_direction_recovers_more_than_random_ones_on_the_demo_oracle():
    """On the never-Hindi demo model, the base model's Hindi − English direction at block 1
    lowers Hindi perplexity; same-norm random directions (three seeds) do not."""
    base, tok = mmie.load_demo_model("base")
    oracle, _ = mmie.load_demo_model("oracle")
    hindi = mmie.load_texts("hindi_eval")[:16]
    english = mmie.load_texts("english_eval")[64:80]
    direction = steering_directions(base, tok, mmie.demo_relearn_texts(), english, layers=[1])
    for seed in (0, 1, 2):
        r = steering_recovery(
            oracle,
            tok,
            None,
            None,
            hindi,
            layers=[1],
            scales=(1.0,),
            base_direction=direction,
            seed=seed,
        )
        assert r.log_ppl_drop[0][0] > 0.5
        assert r.log_ppl_drop[0][0] > r.log_ppl_model - r.random_log_ppl[0][0] + 0.5


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": [2]}, ValueError, "layers"),
        ({"layers": [1, 1]}, ValueError, "repeat"),
        ({"layers": []}, ValueError, "at least one"),
        ({"scales": "1"}, TypeError, "scales"),
        ({"scales": (float("nan"),)}, ValueError, "scales"),
        ({"base_direction": {0: torch.zeros(32)}}, ValueError, "no direction for layer 1"),
        ({"base_direction": {1: torch.zeros(16)}}, ValueError, "shape"),
        ({"base_direction": [torch.zeros(32)]}, TypeError, "mapping"),
    ],
)
def test_steering_validates_arguments(tokenizer, model, kwargs, error, match):
    args = {"layers": [1], **kwargs}
    with pytest.raises(error, match=match):
        steering_recovery(model, tokenizer, A_TRAIN, OTHER, A_EVAL, **args)


def test_steering_needs_texts_or_a_direction(tokenizer, model):
    with pytest.raises(ValueError, match="base_direction"):
        steering_recovery(model, tokenizer, None, None, A_EVAL, layers=[1])


# --------------------------------------------------------------------------- in-context


def test_in_context_with_k_zero_equals_the_plain_results(tokenizer, model):
    before, rng = _snapshot(model), _rng_states()
    r = in_context_recovery(
        model, tokenizer, A_RELEARN, PROMPTS, k=0, target="en", max_new_tokens=6
    )
    _assert_unchanged(model, before)
    _assert_rng(rng)
    assert r.context_indices == ((), ())
    assert r.es_values == r.es_values_context
    assert r.mass_values == r.mass_values_context
    assert np.array_equal(r.share_values, r.share_values_context, equal_nan=True)
    assert (r.es_gain, r.mass_gain) == (0.0, 0.0)
    # and they are the plain metrics, computed independently
    gens = mmie.generate(model, tokenizer, PROMPTS, max_new_tokens=6)
    es = mmie.extraction_strength(gens, mmie.ScriptDetector(), "en")
    assert r.es_values == es.values
    assert (
        r.mass_values == mmie.script_mass(model, tokenizer, PROMPTS, "en", mode="next_char").values
    )


def test_in_context_prepends_k_distinct_seeded_sentences(tokenizer, model):
    kwargs = {"k": 3, "target": "en", "max_new_tokens": 4, "seed": 5}
    a = in_context_recovery(model, tokenizer, A_RELEARN, PROMPTS, **kwargs)
    b = in_context_recovery(model, tokenizer, A_RELEARN, PROMPTS, **kwargs)
    assert a.context_indices == b.context_indices
    assert all(len(set(idx)) == 3 for idx in a.context_indices)
    with_context = [
        "\n".join([*(A_RELEARN[i] for i in idx), p]) for idx, p in zip(a.context_indices, PROMPTS)
    ]
    mass = mmie.script_mass(model, tokenizer, with_context, "en", mode="next_char")
    assert a.mass_values_context == mass.values
    json.dumps(a.to_dict(), allow_nan=False)


def test_in_context_validates(tokenizer, model):
    with pytest.raises(DataError, match=r"context_texts\[1\] is also in prompts"):
        in_context_recovery(model, tokenizer, ["x y", "the cat"], PROMPTS)
    with pytest.raises(ValueError, match="k must be"):
        in_context_recovery(model, tokenizer, A_RELEARN, PROMPTS, k=9)
    short = tiny_causal_lm("llama", max_position_embeddings=40)
    with pytest.raises(ValueError, match="40 positions"):
        in_context_recovery(short, tokenizer, A_RELEARN, PROMPTS, k=2, max_new_tokens=8)


# --------------------------------------------------------------------------- quantisation


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_rtn_round_trip_error_is_at_most_half_a_step(bits):
    gen = torch.Generator().manual_seed(bits)
    weight = torch.randn(16, 24, generator=gen) * torch.linspace(0.01, 3.0, 16).unsqueeze(1)
    weight[3] = 0.0  # a channel of zeros
    quantised = rtn_quantise(weight, bits)
    assert quantised.shape == weight.shape
    assert quantised.dtype == weight.dtype
    # independently, in float64: one step per output row
    w = weight.double().numpy()
    qmax = 2 ** (bits - 1) - 1
    step = np.abs(w).max(axis=1, keepdims=True) / qmax
    err = np.abs(quantised.double().numpy() - w)
    assert np.all(err <= step / 2 * (1 + 1e-5) + 1e-12)
    levels = np.divide(quantised.double().numpy(), step, out=np.zeros_like(w), where=step > 0)
    assert np.allclose(levels, np.round(levels), atol=1e-4)
    assert np.abs(np.round(levels)).max() <= qmax
    assert torch.equal(quantised[3], torch.zeros(24))
    # the per-column variant (transformers Conv1D stores [in, out]) is the transpose
    assert torch.equal(rtn_quantise(weight.T, bits, axis=1), quantised.T)


def test_rtn_validates():
    with pytest.raises(ValueError, match="bits"):
        rtn_quantise(torch.ones(2, 2), 1)
    with pytest.raises(TypeError, match="floating-point"):
        rtn_quantise(torch.ones(2, 2, dtype=torch.long), 8)


def _quantised_copy_log_ppl(model, tokenizer, bits):
    """Independent: quantise every Linear (per row) and GPT-2 Conv1D (per column, it stores
    ``[in, out]``) but lm_head of a deep copy with NumPy, and score the copy."""
    clone = copy.deepcopy(model)
    for name, module in clone.named_modules():
        conv1d = type(module).__name__ == "Conv1D"
        if (isinstance(module, torch.nn.Linear) or conv1d) and name != "lm_head":
            w = module.weight.detach().double().numpy()
            w = w.T if conv1d else w  # (out, in)
            step = np.abs(w).max(axis=1, keepdims=True) / (2 ** (bits - 1) - 1)
            q = np.round(np.divide(w, step, out=np.zeros_like(w), where=step > 0)) * step
            module.weight.data = torch.from_numpy(q.T if conv1d else q).float().contiguous()
    return perplexity(clone, tokenizer, A_EVAL).mean_nll


def test_quantisation_matches_an_independent_quantised_copy_and_restores_weights(tokenizer, model):
    before, rng = _snapshot(model), _rng_states()
    result = quantisation_attack(model, tokenizer, A_EVAL, bits=(8, 4), target="en")
    _assert_unchanged(model, before)
    _assert_rng(rng)
    assert result.log_ppl_full == perplexity(model, tokenizer, A_EVAL).mean_nll
    for bits, value in zip((8, 4), result.log_ppl):
        assert value == pytest.approx(_quantised_copy_log_ppl(model, tokenizer, bits), abs=1e-6)
    assert result.skipped == ("lm_head",)
    assert result.n_matrices == 2 * 7  # q k v o gate up down per block
    assert not result.merged_adapter
    assert result.max_abs_error[1] > result.max_abs_error[0] > 0
    json.dumps(result.to_dict(), allow_nan=False)


def test_quantisation_of_gpt2_conv1d_weights_is_per_output_column(tokenizer):
    model = tiny_causal_lm("gpt2", seed=0)
    before = _snapshot(model)
    result = quantisation_attack(model, tokenizer, A_EVAL, bits=(4,), target="en")
    _assert_unchanged(model, before)
    assert result.n_matrices == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block
    assert result.log_ppl[0] == pytest.approx(
        _quantised_copy_log_ppl(model, tokenizer, 4), abs=1e-6
    )


@pytest.mark.parametrize("targets", [None, ["q_proj", "v_proj", "lm_head"]])
def test_quantisation_merges_a_lora_arm_and_restores_it(tokenizer, model, targets):
    """The LoRA delta is merged before quantising; a LoRA on the (unquantised) output
    embedding is merged in full precision, not dropped."""
    arm = _lora_arm(model, tokenizer, targets)
    before = _snapshot(arm)
    result = quantisation_attack(
        arm, tokenizer, A_EVAL, bits=(8,), target="en", reference_log_ppl=0.5
    )
    _assert_unchanged(arm, before)
    assert result.merged_adapter
    with quiet_peft():
        merged = copy.deepcopy(arm).merge_and_unload()
    assert result.log_ppl_full == pytest.approx(perplexity(merged, tokenizer, A_EVAL).mean_nll)
    assert result.log_ppl[0] == pytest.approx(
        _quantised_copy_log_ppl(merged, tokenizer, 8), abs=1e-5
    )
    gap = result.log_ppl_full - 0.5
    assert result.recovered_fraction == (
        pytest.approx((result.log_ppl_full - result.log_ppl[0]) / gap),
    )


def test_quantisation_leaves_hooks_on_and_untouched(tokenizer, model):
    with _AddVector(model, {1: torch.full((32,), 0.5)}):
        hooks = mmie_hooks(model)
        result = quantisation_attack(model, tokenizer, A_EVAL, bits=(8,), target="en")
        assert mmie_hooks(model) == hooks
        assert result.log_ppl_full == perplexity(model, tokenizer, A_EVAL).mean_nll


# --------------------------------------------------------------------------- logit lens


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logit_lens_at_the_last_block_is_the_models_own_mass(tokenizer, arch):
    model = tiny_causal_lm(arch, seed=0)
    prompts = ["hello wor", "ab", "x y z 1"]
    lens = logit_lens(model, tokenizer, prompts, "Latn")
    own = mmie.script_mass(model, tokenizer, prompts, "Latn", mode="next_token")
    assert lens.layers == (0, 1)
    assert lens.values[-1] == pytest.approx(own.values, abs=1e-5)
    assert lens.mass[-1] == pytest.approx(own.mean, abs=1e-5)
    assert lens.n_target_tokens == own.n_target_tokens


def test_logit_lens_reads_the_model_as_deployed(tokenizer, model):
    before = _snapshot(model)
    with _AddVector(model, {1: torch.full((32,), 0.5)}):
        lens = logit_lens(model, tokenizer, PROMPTS, "Latn", layers=[1])
        own = mmie.script_mass(model, tokenizer, PROMPTS, "Latn")
    _assert_unchanged(model, before)
    assert lens.values[0] == pytest.approx(own.values, abs=1e-5)
    arm = _lora_arm(model, tokenizer)
    lens = logit_lens(arm, tokenizer, PROMPTS, "Latn")
    own = mmie.script_mass(arm, tokenizer, PROMPTS, "Latn")
    assert lens.values[-1] == pytest.approx(own.values, abs=1e-5)
    assert lens.at(1) == lens.mass[-1]


def test_logit_lens_refuses_to_guess_a_missing_norm(tokenizer, model):
    del model.model.norm
    with pytest.raises(IncompatibleModelError, match="final norm of LlamaForCausalLM"):
        logit_lens(model, tokenizer, PROMPTS, "Latn")
    with pytest.raises(IncompatibleModelError, match=r"norm_path='model\.nope'"):
        final_norm(model, "model.nope")


def test_logit_lens_validates(tokenizer, model):
    with pytest.raises(ValueError, match="selects no token"):
        logit_lens(model, tokenizer, PROMPTS, "hi")  # bytes only: no Devanagari token
    with pytest.raises(ValueError, match="layers"):
        logit_lens(model, tokenizer, PROMPTS, "Latn", layers=[2])
    with pytest.raises(KeyError, match="not read"):
        logit_lens(model, tokenizer, PROMPTS, "Latn", layers=[0]).at(1)


def test_logit_lens_plot(tokenizer, model, tmp_path, monkeypatch):
    lens = logit_lens(model, tokenizer, PROMPTS, "Latn")
    json.dumps(lens.to_dict(), allow_nan=False)
    pytest.importorskip("matplotlib")
    path = lens.plot(tmp_path / "lens.png", title="tiny")
    assert path.stat().st_size > 0
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"mmie\[plot\]"):
        lens.plot(tmp_path / "again.png")


@pytest.mark.parametrize("module", ["mmie.unlearning.recovery", "mmie.evaluation.logit_lens"])
def test_docstring_examples_run(module):
    assert doctest.testmod(importlib.import_module(module)).failed == 0
