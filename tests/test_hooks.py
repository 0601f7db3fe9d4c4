"""The shared hook mechanism: tensor/tuple outputs, ordering, idempotence, cleanup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lm_reference import hidden_after
from mmie.errors import InterventionError
from mmie.models.blocks import get_block
from mmie.models.hooks import (
    BlockIntervention,
    HookSet,
    assert_no_mmie_hooks,
    interventions,
    mmie_hooks,
    remove_mmie_hooks,
)
from mmie.models.tokenization import tokenize
from mmie.testing import tiny_causal_lm


class AddConstant(BlockIntervention):
    """Adds a constant to the outputs of some blocks (a test intervention)."""

    def __init__(self, model, layers, value, log=None):
        super().__init__(model)
        self.layers = layers
        self.value = value
        self.log = log if log is not None else []
        self.removed = 0

    def _build_edits(self):
        def make(layer):
            def edit(h):
                self.log.append((self.value, layer))
                return h + self.value

            return edit

        return [(layer, make(layer)) for layer in self.layers]

    def _on_remove(self):
        self.removed += 1


class Scale(AddConstant):
    def _build_edits(self):
        return [(layer, lambda h: h * self.value) for layer in self.layers]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_edit_applies_for_tensor_and_tuple_outputs(arch, tokenizer):
    model = tiny_causal_lm(arch)
    batch = tokenize(tokenizer, ["hello there", "hi"])
    base = hidden_after(model, batch, 0)
    with AddConstant(model, [0], 1.5):
        edited = hidden_after(model, batch, 0)
    torch.testing.assert_close(edited, base + 1.5)
    assert mmie_hooks(model) == []


def test_composition_order_follows_attach_order(model, tokenizer):
    batch = tokenize(tokenizer, ["abc"])
    base = hidden_after(model, batch, 1)
    add, scale = AddConstant(model, [1], 1.0), Scale(model, [1], 2.0)
    with interventions(add, scale):
        first_add = hidden_after(model, batch, 1)
    with interventions(scale, add):
        first_scale = hidden_after(model, batch, 1)
    torch.testing.assert_close(first_add, (base + 1.0) * 2.0)
    torch.testing.assert_close(first_scale, base * 2.0 + 1.0)
    assert_no_mmie_hooks(model)


def test_attach_remove_idempotent_and_exception_safe(model, tokenizer):
    iv = AddConstant(model, [0, 1], 1.0)
    iv.attach()
    iv.attach()
    assert iv.attached
    assert mmie_hooks(model) == [
        ("model.layers.0", "AddConstant"),
        ("model.layers.1", "AddConstant"),
    ]
    with pytest.raises(InterventionError, match="2 mmie hook"):
        assert_no_mmie_hooks(model)
    iv.remove()
    iv.remove()
    assert not iv.attached
    assert_no_mmie_hooks(model)
    with pytest.raises(RuntimeError, match="boom"), iv:
        raise RuntimeError("boom")
    assert_no_mmie_hooks(model)
    with pytest.raises(RuntimeError, match="boom"), interventions(iv, Scale(model, [0], 2)):
        raise RuntimeError("boom")
    assert_no_mmie_hooks(model)


def test_interventions_keeps_already_attached(model):
    outer = AddConstant(model, [0], 1.0).attach()
    with interventions(outer, Scale(model, [1], 2.0)):
        assert len(mmie_hooks(model)) == 2
    assert outer.attached
    assert len(mmie_hooks(model)) == 1
    outer.remove()


def test_bad_layer_registers_nothing(model):
    iv = AddConstant(model, [0, 7], 1.0)
    with pytest.raises(ValueError, match="layer must be in"):
        iv.attach()
    assert not iv.attached
    assert_no_mmie_hooks(model)


def test_remove_mmie_hooks_and_foreign_hooks_untouched(model):
    foreign = get_block(model, 0).register_forward_hook(lambda *a: None)
    AddConstant(model, [0, 1], 1.0).attach()  # lost while attached
    assert remove_mmie_hooks(model) == 2
    assert_no_mmie_hooks(model)
    assert len(get_block(model, 0)._forward_hooks) == 1
    foreign.remove()


def test_input_edit_and_bad_output():
    lin = nn.Linear(3, 3)
    hooks = HookSet("test")
    hooks.add_input_edit(lin, lambda x: torch.zeros_like(x))
    x = torch.randn(2, 3)
    torch.testing.assert_close(lin(x), lin.bias.expand(2, 3))
    hooks.remove()
    assert not torch.allclose(lin(x), lin.bias.expand(2, 3))

    class DictOut(nn.Module):
        def forward(self, x):
            return {"h": x}

    mod = DictOut()
    hooks.add_output_edit(mod, lambda h: h)
    with pytest.raises(InterventionError, match="cannot edit a block output of type dict"):
        mod(torch.ones(1))
    hooks.remove()
