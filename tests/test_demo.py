"""The bundled demo models: files, loading, held-out data, language of continuations, masks."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM

import mmie
from mmie.errors import DataError
from mmie.language.detectors import ScriptDetector
from mmie.language.unicode import script_token_mask
from mmie.study import demo as demo_module
from mmie.study.config import demo_config
from mmie.study.datasets import BUNDLED_SETS, load_texts
from mmie.study.demo import (
    DEMO_MODEL_FILES,
    DEMO_MODELS,
    demo_model_path,
    demo_relearn_texts,
    demo_training_info,
    demo_training_texts,
    load_demo_model,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"
N_PROMPTS = 20
PROMPT_WORDS = 3
NEW_TOKENS = 16
EVAL_REGION = 48  # the first lines of every evaluation set are never trained on
TRAINING_SETS = ("hindi_train", "english_train")
NEVER_TRAINED = ("hindi_eval", "english_eval", "adversarial")


@pytest.fixture(scope="module")
def demo() -> tuple[LlamaForCausalLM, object]:
    return load_demo_model()


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[LlamaForCausalLM, object]]:
    return {which: load_demo_model(which) for which in DEMO_MODELS}  # type: ignore[misc]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """scripts/train_demo_model.py imported as a module (nothing is trained)."""
    spec = importlib.util.spec_from_file_location("train_demo_model", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("train_demo_model")
    sys.modules["train_demo_model"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["train_demo_model"]
        else:
            sys.modules["train_demo_model"] = saved
    return module


@pytest.fixture(scope="module")
def trained() -> dict[str, list[str]]:
    return {which: demo_training_texts(which) for which in DEMO_MODELS}  # type: ignore[misc]


def held_out_texts() -> dict[str, list[str]]:
    """Per set, the lines no demo model may train on."""
    out: dict[str, list[str]] = {}
    for name in BUNDLED_SETS:
        texts = load_texts(name)
        if name in NEVER_TRAINED:
            out[name] = texts
        elif name not in TRAINING_SETS:
            out[name] = texts[:EVAL_REGION]
    out["hindi_train (relearning split)"] = load_texts("hindi_train")[-32:]
    return out


def contains_any(texts: list[str], needles: list[str]) -> list[tuple[str, str]]:
    """(training text, needle) pairs where a needle occurs in a training text as whole words
    (a code-mixed training line joins two lines with a space)."""
    padded = [f" {t} " for t in texts]
    return [(t[1:-1], n) for t in padded for n in needles if f" {n} " in t]


def devanagari_share(texts: list[str]) -> float:
    """Devanagari letters over all script letters of ``texts`` (pooled)."""
    counts = [mmie.script_counts(t) for t in texts]
    total = sum(sum(c.values()) for c in counts)
    return sum(c.get("Deva", 0) for c in counts) / max(total, 1)


@pytest.mark.parametrize("which", DEMO_MODELS)
def test_files_and_size(which: str) -> None:
    path = demo_model_path(which)  # type: ignore[arg-type]
    assert mmie.demo_model_path(which) == path
    for name in DEMO_MODEL_FILES:
        assert (path / name).is_file()
    total = sum(p.stat().st_size for p in path.iterdir())
    assert total < 3_000_000
    assert not list(path.glob("*.bin"))
    assert not list(path.glob("*.pt"))
    info = json.loads((path / "training_info.json").read_text(encoding="utf-8"))
    assert info == demo_training_info(which)  # type: ignore[arg-type]
    assert info["model"] == which
    assert {p["set"] for p in info["training_texts"]["parts"] if "set" in p}.isdisjoint(
        NEVER_TRAINED
    )


def test_default_is_the_base_model() -> None:
    assert demo_model_path() == demo_model_path("base")
    assert demo_model_path().name == "demo_model"
    assert {demo_model_path(w).name for w in DEMO_MODELS} == {  # type: ignore[arg-type]
        "demo_model",
        "demo_retrain",
        "demo_oracle",
    }


@pytest.mark.parametrize(
    "call",
    [demo_model_path, load_demo_model, demo_training_info, demo_training_texts],
)
def test_unknown_model_is_refused_by_name(call: Any) -> None:
    with pytest.raises(ValueError, match=r"which must be one of 'base', 'retrain', 'oracle'"):
        call("forget")


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


def test_three_models_share_one_tokenizer(
    models: dict[str, tuple[LlamaForCausalLM, object]],
) -> None:
    files = {w: (demo_model_path(w) / "tokenizer.json").read_bytes() for w in DEMO_MODELS}  # type: ignore[arg-type]
    assert len(set(files.values())) == 1
    sha = hashlib.sha256(files["base"]).hexdigest()
    probe = "मेरा office 42। Yaar, kal milte hain."
    for which, (model, tok) in models.items():
        assert isinstance(model, LlamaForCausalLM)
        assert not model.training
        assert demo_training_info(which)["tokenizer"]["sha256"] == sha  # type: ignore[arg-type]
        assert len(tok) == model.config.vocab_size == 1024  # type: ignore[arg-type]
        assert tok(probe)["input_ids"] == models["base"][1](probe)["input_ids"]  # type: ignore[operator]
    # The same recipe: only the data differ.
    keys = ("seed", "steps", "batch_size", "learning_rate", "warmup_steps", "weight_decay")
    infos = [demo_training_info(w) for w in DEMO_MODELS]  # type: ignore[arg-type]
    assert len({tuple(i[k] for k in keys) for i in infos}) == 1
    configs = {(demo_model_path(w) / "config.json").read_bytes() for w in DEMO_MODELS}  # type: ignore[arg-type]
    assert len(configs) == 1


def test_load_validates_dtype() -> None:
    with pytest.raises(TypeError, match=r"dtype must be a torch\.dtype"):
        load_demo_model(dtype="float32")  # type: ignore[arg-type]


def test_bfloat16_load() -> None:
    model, _ = load_demo_model(dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    model, _ = load_demo_model("oracle", dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


# ------------------------------------------------------------------ what each model saw
@pytest.mark.parametrize("which", DEMO_MODELS)
def test_training_texts_are_the_scripts_recipe(
    script: ModuleType, trained: dict[str, list[str]], which: str
) -> None:
    info = demo_training_info(which)  # type: ignore[arg-type]
    record = info["training_texts"]
    assert record["parts"] == script.recipe(which)
    expected = script.training_texts(which)
    assert trained[which] == expected
    assert record["n_texts"] == len(expected) == len(set(expected))
    joined = "\n".join(sorted(expected)).encode("utf-8")
    assert record["sha256"] == hashlib.sha256(joined).hexdigest()
    assert info["held_out"]["relearn"] == {"set": "hindi_train", "start": 464, "stop": 496}
    assert info["forget"] == {"set": "hindi_train", "start": 0, "stop": 64}


def test_rebuilt_texts_are_checked_against_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    info = demo_training_info("base")
    info["training_texts"]["parts"][0]["stop"] -= 1  # one line fewer than was trained on
    monkeypatch.setattr(demo_module, "demo_training_info", lambda which="base": info)
    with pytest.raises(DataError, match="do not match the recorded"):
        demo_training_texts("base")


@pytest.mark.parametrize("which", DEMO_MODELS)
def test_no_evaluation_line_is_trained_on(trained: dict[str, list[str]], which: str) -> None:
    texts = trained[which]
    for name, held in held_out_texts().items():
        assert contains_any(texts, held) == [], name
    # What training_info records as held out is at least that.
    recorded = demo_training_info(which)["held_out"]  # type: ignore[arg-type]
    by_set = {r["set"]: r for r in recorded["evaluation"]}
    for name in BUNDLED_SETS:
        if name in NEVER_TRAINED:
            assert (by_set[name]["start"], by_set[name]["stop"]) == (0, len(load_texts(name)))
        elif name not in TRAINING_SETS:
            assert by_set[name]["start"] == 0
            assert by_set[name]["stop"] >= EVAL_REGION


def test_romanised_forget_texts_are_held_out(trained: dict[str, list[str]]) -> None:
    # hindi_romanized line i transliterates hindi_train line i (scripts/make_data.py), so the
    # romanised forms of the forget set are evaluation-only too.
    n_forget = demo_config().data.n_forget
    romanized = load_texts("hindi_romanized")[:n_forget]
    for which in DEMO_MODELS:
        assert contains_any(trained[which], romanized) == [], which


def test_relearning_split_is_disjoint_from_everything() -> None:
    relearn = demo_relearn_texts()
    assert relearn == load_texts("hindi_train")[-32:]
    # Never a forget or retain text of the demo study (full or quick).
    for cfg in (demo_config(), demo_config(quick=True)):
        assert set(relearn).isdisjoint(load_texts(cfg.data.forget)[: cfg.data.n_forget])
        assert set(relearn).isdisjoint(load_texts(cfg.data.retain)[: cfg.data.n_retain])
    others = {t for name in BUNDLED_SETS if name != "hindi_train" for t in load_texts(name)}
    assert set(relearn).isdisjoint(others)
    # hindi_romanized transliterates the first lines of hindi_train only: none of the split.
    assert len(load_texts("hindi_romanized")) <= len(load_texts("hindi_train")) - len(relearn)


def test_retrain_is_base_without_the_forget_texts(trained: dict[str, list[str]]) -> None:
    forget = load_texts("hindi_train")[: demo_config().data.n_forget]
    assert set(forget) <= set(trained["base"])  # the base memorises what is to be unlearned
    assert contains_any(trained["retrain"], forget) == []
    assert set(trained["base"]) - set(trained["retrain"]) == set(forget)
    assert set(trained["retrain"]) <= set(trained["base"])


def test_oracle_never_saw_hindi(trained: dict[str, list[str]]) -> None:
    texts = trained["oracle"]
    assert sum(mmie.script_counts(t).get("Deva", 0) for t in texts) == 0
    for name in ("hinglish", "hindi_romanized"):
        assert contains_any(texts, load_texts(name)) == [], name
    assert set(texts) <= set(trained["retrain"])  # the same recipe, less data


# ------------------------------------------------------------------ behaviour
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


def greedy_devanagari_share(
    models: dict[str, tuple[LlamaForCausalLM, object]], prompts: list[str]
) -> dict[str, float]:
    out = {}
    for which, (model, tok) in models.items():
        texts = mmie.generate(model, tok, prompts, max_new_tokens=24, batch_size=32)  # type: ignore[arg-type]
        out[which] = devanagari_share(texts)  # type: ignore[arg-type]
    return out


def test_base_continues_held_out_hindi_in_devanagari_and_the_oracle_does_not(
    models: dict[str, tuple[LlamaForCausalLM, object]],
) -> None:
    prompts = [" ".join(t.split()[:4]) for t in load_texts("hindi_eval")[:32]]
    share = greedy_devanagari_share(models, prompts)
    # Measured: base 1.00, retrain 1.00, oracle 0.00.
    assert share["base"] >= 0.5, share
    assert share["retrain"] >= 0.5, share  # held-out Hindi is not the forget set
    assert share["oracle"] <= 0.05, share


def test_hinglish_prompts_switch_to_devanagari_except_in_the_oracle(
    models: dict[str, tuple[LlamaForCausalLM, object]],
) -> None:
    # Code-mixed training lines (Hinglish words, then Devanagari Hindi) give the mixed-prompt
    # metrics something to measure; base and retrain see the same ones.
    prompts = [" ".join(t.split()[:4]) for t in load_texts("hinglish")[:32]]
    share = greedy_devanagari_share(models, prompts)
    # Measured: base 0.74, retrain 0.78, oracle 0.00.
    assert share["base"] >= 0.3, share
    assert share["retrain"] >= 0.3, share
    assert share["oracle"] <= 0.05, share


def test_base_memorised_the_forget_texts_more_than_retrain(
    models: dict[str, tuple[LlamaForCausalLM, object]],
) -> None:
    forget = load_texts("hindi_train")[: demo_config().data.n_forget]
    held_out = load_texts("hindi_eval")[:64]
    ppl = {
        which: (
            mmie.perplexity(model, tok, forget).perplexity,  # type: ignore[arg-type]
            mmie.perplexity(model, tok, held_out).perplexity,  # type: ignore[arg-type]
        )
        for which, (model, tok) in models.items()
    }
    base_forget, base_held = ppl["base"]
    retrain_forget, retrain_held = ppl["retrain"]
    # Measured (forget, hindi_eval): base (1.26, 4.53), retrain (4.00, 5.45),
    # oracle (1.2e4, 1.2e4).
    assert base_forget < 0.5 * retrain_forget, ppl
    assert base_forget / base_held < 0.5 * (retrain_forget / retrain_held), ppl
    # Retrain saw other Hindi, so the forget texts are ordinary held-out Hindi to it.
    assert retrain_forget < 2 * retrain_held, ppl
    assert min(ppl["oracle"]) > 100 * max(retrain_forget, retrain_held), ppl


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


# ------------------------------------------------------------------ the training script
def _run_script(script: ModuleType, argv: list[str]) -> None:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        with torch.random.fork_rng():
            assert script.main(argv) == 0
    finally:  # the script configures torch globally, as a CLI may
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@pytest.mark.slow
def test_training_script_is_deterministic(tmp_path: Path, script: ModuleType) -> None:
    for run in ("a", "b"):
        _run_script(script, ["--out", str(tmp_path / run), "--steps", "5"])
    for directory in ("demo_model", "demo_retrain", "demo_oracle"):
        for name in DEMO_MODEL_FILES:
            a = (tmp_path / "a" / directory / name).read_bytes()
            assert a == (tmp_path / "b" / directory / name).read_bytes(), (directory, name)
        # The shipped tokenizer is the one the script trains (it does not depend on the steps).
        shipped = (demo_model_path() / "tokenizer.json").read_bytes()
        assert (tmp_path / "a" / directory / "tokenizer.json").read_bytes() == shipped
        # So is the record of the training texts.
        info = json.loads((tmp_path / "a" / directory / "training_info.json").read_bytes())
        which = info["model"]
        assert info["training_texts"] == demo_training_info(which)["training_texts"]
    # --only trains one model, with the tokenizer of the base recipe and the same weights.
    _run_script(script, ["--out", str(tmp_path / "c"), "--steps", "5", "--only", "oracle"])
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["demo_oracle"]
    for name in DEMO_MODEL_FILES:
        a = (tmp_path / "a" / "demo_oracle" / name).read_bytes()
        assert a == (tmp_path / "c" / "demo_oracle" / name).read_bytes(), name


# ------------------------------------------------------------------ packed generation


def test_demo_greedy_continuations_do_not_depend_on_the_batch(
    demo: tuple[LlamaForCausalLM, object],
) -> None:
    """Left padding changes the padded length, not a row's greedy text: on the demo model
    every prompt gets the same continuation alone, in batches of 16 and token-packed."""
    from mmie.study.suite import load_eval_sets

    model, tok = demo
    sets = load_eval_sets(demo_config())
    prompts = [p for name in sorted(sets.prompts) for p in sets.prompts[name][:6]]
    alone = [mmie.generate(model, tok, [p], max_new_tokens=32)[0] for p in prompts]
    assert mmie.generate(model, tok, prompts, max_new_tokens=32, batch_size=16) == alone
    assert mmie.generate(model, tok, prompts, max_new_tokens=32, max_batch_tokens=8192) == alone
    assert mmie.generate(model, tok, prompts, max_new_tokens=32, max_batch_tokens=300) == alone


def test_packed_evaluation_gives_the_records_of_one_call_per_set(
    demo: tuple[LlamaForCausalLM, object],
) -> None:
    from mmie.edits.controls import NoiseIntervention, ScriptBanProcessor
    from mmie.study.suite import _batch_budget, evaluate_model, load_eval_sets

    model, tok = demo
    metrics = ("forget_es", "mixed_es", "leakage", "redistribution", "english")
    config = demo_config(quick=True, metrics=metrics)
    sets = load_eval_sets(config)
    for procs in ([], [ScriptBanProcessor(tok, "hi")]):
        per_set = evaluate_model(
            model, tok, sets, config, logits_processors=procs, max_batch_tokens=None
        )
        packed = evaluate_model(model, tok, sets, config, logits_processors=procs)
        assert packed[1] == per_set[1]
        assert list(packed[0]) == list(per_set[0])
        assert {k: r.to_dict() for k, r in packed[0].items()} == {
            k: r.to_dict() for k, r in per_set[0].items()
        }
    assert _batch_budget(model, "auto") == 8192
    assert _batch_budget(model, 100) == 100
    with NoiseIntervention(model, 1, scale=1.0, seed=0):  # draws depend on the batch
        assert _batch_budget(model, "auto") is None
