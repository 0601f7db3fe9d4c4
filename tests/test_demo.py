"""The bundled demo model: files, loading, language of its continuations, token masks."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

import mmie
from mmie.language.detectors import ScriptDetector
from mmie.language.unicode import script_token_mask
from mmie.study.datasets import load_texts
from mmie.study.demo import DEMO_MODEL_FILES, demo_model_path, load_demo_model

N_PROMPTS = 20
PROMPT_WORDS = 3
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def demo() -> tuple[LlamaForCausalLM, object]:
    return load_demo_model()


def test_files_and_size() -> None:
    path = demo_model_path()
    assert mmie.demo_model_path() == path
    for name in DEMO_MODEL_FILES:
        assert (path / name).is_file()
    total = sum(p.stat().st_size for p in path.iterdir())
    assert total < 3_000_000
    assert not list(path.glob("*.bin"))
    assert not list(path.glob("*.pt"))
    info = json.loads((path / "training_info.json").read_text(encoding="utf-8"))
    assert info["training_texts"]["hindi_train"] == "all"
    assert "hindi_eval" not in info["training_texts"]


def test_loads_as_tiny_llama(demo: tuple[LlamaForCausalLM, object]) -> None:
    model, tok = demo
    assert isinstance(model, LlamaForCausalLM)
    assert not model.training
    assert model.config.num_hidden_layers == 4
    assert model.config.hidden_size == 64
    assert next(model.parameters()).dtype == torch.float32
    assert tok.padding_side == "left"
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert model.config.pad_token_id == tok.pad_token_id
    assert len(tok) == model.config.vocab_size
    ids = tok("नमस्ते")["input_ids"]
    assert ids[0] == tok.bos_token_id  # <s> is prepended by the tokenizer
    assert tok.decode(ids, skip_special_tokens=True) == "नमस्ते"


def test_load_validates_dtype() -> None:
    with pytest.raises(TypeError, match=r"dtype must be a torch\.dtype"):
        load_demo_model(dtype="float32")  # type: ignore[arg-type]


def test_bfloat16_load() -> None:
    model, _ = load_demo_model(dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


def continuations(model: LlamaForCausalLM, tok: object, prompts: list[str]) -> list[str]:
    enc = tok(prompts, return_tensors="pt", padding=True)  # type: ignore[operator]
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=tok.pad_token_id,  # type: ignore[attr-defined]
        )
    new = out[:, enc["input_ids"].shape[1] :]
    return tok.batch_decode(new, skip_special_tokens=True)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "label"), [("hindi_eval", "hi"), ("english_eval", "en")])
def test_continues_prompts_in_their_language(
    demo: tuple[LlamaForCausalLM, object], name: str, label: str
) -> None:
    model, tok = demo
    prompts = [" ".join(t.split()[:PROMPT_WORDS]) for t in load_texts(name)[:N_PROMPTS]]
    texts = continuations(model, tok, prompts)
    labels = [d.label for d in ScriptDetector().detect_batch(texts)]
    assert labels.count(label) / N_PROMPTS >= 0.8, list(zip(prompts, texts))


def test_members_have_lower_loss_than_non_members(demo: tuple[LlamaForCausalLM, object]) -> None:
    # The signal membership-inference metrics need: training texts are fitted better.
    model, tok = demo

    def mean_loss(texts: list[str]) -> float:
        enc = tok(texts, return_tensors="pt", padding=True)  # type: ignore[operator]
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        with torch.no_grad():
            return float(model(**enc, labels=labels).loss)

    for lang in ("hindi", "english"):
        train = mean_loss(load_texts(f"{lang}_train")[:20])
        held_out = mean_loss(load_texts(f"{lang}_eval")[:20])
        assert train < held_out


def _byte_decoder() -> dict[str, int]:
    # GPT-2's byte <-> printable-unicode table, rebuilt here independently of tokenizers.
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def test_devanagari_mask_by_hand(demo: tuple[LlamaForCausalLM, object]) -> None:
    _, tok = demo
    decoder = _byte_decoder()
    special = set(tok.all_special_ids)  # type: ignore[attr-defined]
    devanagari = re.compile(r"[\u0900-\u0963\u0971-\u097F]")  # letters and signs, no danda/digits
    expected = []
    for i, token in enumerate(tok.convert_ids_to_tokens(list(range(len(tok))))):  # type: ignore[arg-type]
        if i in special:
            expected.append(False)
            continue
        text = bytes(decoder[c] for c in token).decode("utf-8", errors="replace")
        expected.append(bool(devanagari.search(text)))
    mask = script_token_mask(tok, "Deva")
    assert mask.tolist() == expected
    assert mask.sum() > 50  # whole-character merges exist for Devanagari


@pytest.mark.slow
def test_training_script_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"
    spec = importlib.util.spec_from_file_location("train_demo_model", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_demo_model", module)
    spec.loader.exec_module(module)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        with torch.random.fork_rng():
            for run in ("a", "b"):
                assert module.main(["--out", str(tmp_path / run), "--steps", "5"]) == 0
    finally:  # the script configures torch globally, as a CLI may
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    for name in DEMO_MODEL_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # The shipped tokenizer is the one the script trains (it does not depend on the steps).
    shipped = (demo_model_path() / "tokenizer.json").read_bytes()
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == shipped
