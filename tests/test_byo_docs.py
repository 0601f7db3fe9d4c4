"""docs/sae_formats.md ("Bring your own model and SAEs") says what the library really does: its
study configs are valid, and every error message it shows is the one a synthetic directory of
that layout gets, verbatim."""

from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import mmie
from mmie.errors import CheckpointError, MmieWarning, ReconstructionError
from mmie.study.config import ExperimentConfig
from mmie.testing import byte_tokenizer, tiny_causal_lm
from test_sae_formats import (
    NotATensor,
    dl_tensors,
    gemma_arrays,
    gemma_like_saelens,
    qwen_tensors,
    saelens_cfg,
    saelens_tensors,
    sparsify_tensors,
    write_dl,
    write_json,
    write_saelens,
    write_sparsify,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PAGE = Path(__file__).resolve().parents[1] / "docs" / "sae_formats.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)


def shown() -> set[str]:
    """Every line of the page's ``text`` blocks."""
    return {line for block in blocks("text") for line in block.splitlines() if line}


def test_the_study_configs_are_valid():
    configs = [ExperimentConfig.from_dict(tomllib.loads(block)) for block in blocks("toml")]
    gemma, llama = configs
    assert gemma.model == "google/gemma-2-2b"
    assert gemma.sae.layout == "gemma_scope"
    assert set(gemma.sae.pretrained()) == set(gemma.selection.layers) == {20}
    assert llama.model == "meta-llama/Llama-3.1-8B"
    assert llama.sae.layout == "auto"
    assert set(llama.sae.pretrained()) == set(llama.selection.layers) == {15}


def _message(load) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(CheckpointError) as info:
        load()
    return f"CheckpointError: {info.value}"


def test_the_wrong_layout_messages_are_real(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load = mmie.SparseAutoencoder.load
    messages = []

    downloads = Path("saes/downloads")
    downloads.mkdir(parents=True)
    (downloads / "README.md").write_text("x")
    (downloads / "model.bin").write_bytes(b"\0")
    messages.append(_message(lambda: load("saes/downloads")))

    write_sparsify(Path("saes/sae-pythia-70m/layers.3"), sparsify_tensors())
    messages.append(_message(lambda: load("saes/sae-pythia-70m")))
    messages.append(_message(lambda: load("saes/sae-pythia-70m/layers.3", layout="saelens")))

    for l0 in ("average_l0_41", "average_l0_82"):
        where = Path("saes/gemma-scope-2b-pt-res/layer_12/width_16k") / l0
        where.mkdir(parents=True)
        np.savez(where / "params.npz", **gemma_arrays())
    messages.append(_message(lambda: load("saes/gemma-scope-2b-pt-res/layer_12")))

    llama = Path("saes/Llama3_1-8B-Base-L15R-8x")
    (llama / "checkpoints").mkdir(parents=True)
    write_json(
        llama / "hyperparams.json",
        {
            "d_model": 8,
            "d_sae": 32,
            "hook_point_in": "blocks.15.hook_resid_post",
            "hook_point_out": "blocks.15.hook_resid_post",
            "act_fn": "jumprelu",
        },
    )
    messages.append(_message(lambda: load(str(llama))))

    t = saelens_tensors()
    for name, norm in (("gpt2-ln", "layer_norm"), ("avg", "expected_average_only_in")):
        write_saelens(Path("saes") / name, saelens_cfg("standard", normalize_activations=norm), t)
        messages.append(_message(lambda name=name: load(f"saes/{name}")))

    Path("saes/qwen-scope").mkdir()
    torch.save(qwen_tensors(), "saes/qwen-scope/layer7.sae.pt")
    messages.append(_message(lambda: load("saes/qwen-scope/layer7.sae.pt")))

    state = {
        "pre_bias": torch.zeros(8),
        "latent_bias": torch.zeros(48),
        "encoder.weight": torch.zeros(48, 8),
        "decoder.weight": torch.zeros(8, 48),
        "stats_last_nonzero": torch.zeros(48, dtype=torch.long),
        "activation": "TopK",
        "activation_state_dict": {"k": 32},
    }
    Path("saes/openai-gpt2").mkdir()
    torch.save(state, "saes/openai-gpt2/8.pt")
    messages.append(_message(lambda: load("saes/openai-gpt2/8.pt")))

    pickled = dl_tensors("AutoEncoder") | {"x": NotATensor()}
    write_dl(Path("saes/dl/trainer_0"), "AutoEncoder", pickled)
    messages.append(_message(lambda: load("saes/dl/trainer_0/ae.pt")))

    hand_written = gemma_like_saelens(Path("saes/hand-written"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(hand_written)
    messages += [f"MmieWarning: {w.message}" for w in caught if w.category is MmieWarning]
    assert len(messages) == 11

    model = tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0)
    mlp = mmie.SparseAutoencoder(
        mmie.SAEConfig(architecture="relu", d_in=32, d_sae=64, hook_name="blocks.6.hook_mlp_out")
    )
    with pytest.raises(ValueError) as info:
        mmie.SAEGate(model, {1: mlp}, {1: [0]})
    messages.append(f"ValueError: {info.value}")

    page = shown()
    missing = [m for m in messages if m not in page]
    assert missing == []


def _numbers_masked(text: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "#", text)


def test_the_reconstruction_example_is_real():
    """The page's recipe: a TopK SAE of one tiny random Llama, checked on another seed."""
    tok = byte_tokenizer()
    trained_on = tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0)
    other = tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=1)
    texts = mmie.load_texts("english_eval")[:24]
    acts = mmie.collect_activations(trained_on, tok, texts, [1]).tokens[1]
    sae, _ = mmie.train_sae(
        acts, architecture="topk", d_sae=64, k=8, steps=300, batch_size=256, lr=3e-3, seed=0
    )
    config = dataclasses.replace(sae.config, hook_name="blocks.1.hook_resid_post", hook_layer=1)
    sae = mmie.SparseAutoencoder.from_tensors(config, sae.tensors())
    own = mmie.check_reconstruction(trained_on, tok, sae, 1, texts)
    assert own.fvu < 0.1
    with pytest.raises(ReconstructionError) as info:
        mmie.check_reconstruction(other, tok, sae, 1, texts)
    message = f"ReconstructionError: {info.value}"
    (line,) = [x for x in shown() if x.startswith("ReconstructionError:")]
    assert _numbers_masked(message) == _numbers_masked(line)
    fvu = float(re.search(r"FVU ([0-9.]+) \(max", message).group(1))  # type: ignore[union-attr]
    assert abs(fvu - float(re.search(r"FVU ([0-9.]+) \(max", line).group(1))) < 0.05  # type: ignore[union-attr]
