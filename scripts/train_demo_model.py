"""Train mmie's bundled demo models: three tiny Llama-style causal LMs (deterministic, CPU).

The models back ``mmie demo`` and the tutorials: each is small enough to ship inside the
package (about 1 MB of fp32 safetensors) and to run a whole unlearning study on a laptop CPU.
All three are trained by one recipe (same tokenizer, seeds, optimiser, steps) on different
selections of the bundled text sets:

* ``base`` (``src/mmie/data/demo_model/``): Devanagari Hindi, English, a little romanised
  Hindi, Urdu, Punjabi and Bengali, and code-mixed lines: the first half, and separately the
  first third, of the words of each Hinglish training line, then a Devanagari Hindi training
  line that is not a forget text (Hinglish is trained on only in this form). It continues
  Hindi prompts in Devanagari Hindi and English prompts in English, which is what the study
  needs to show an effect, and switches to Devanagari after a few words of a Hinglish prompt
  (so mixed-prompt metrics measure something).
* ``retrain`` (``src/mmie/data/demo_retrain/``): the base selection minus the demo's forget
  texts (the first ``N_FORGET`` lines of ``hindi_train``), the TOFU/MUSE "retrained without
  the forget data" reference.
* ``oracle`` (``src/mmie/data/demo_oracle/``): the base selection minus every Hindi text in
  any form (``hindi_train``, ``hinglish``, ``hindi_romanized`` and the code-mixed lines), a
  model that never saw Hindi.

Data splits (line ranges of the bundled sets, ``[start, stop)``):

* Evaluation only, never trained on by any model: ``hindi_eval``, ``english_eval`` and
  ``adversarial`` in full, and the first ``EVAL_LINES`` lines of every auxiliary set
  (``hinglish``, ``urdu``, ``punjabi``, ``bengali``); the demo study evaluates on the first
  ``n_eval`` (at most 32) lines of each. For ``hindi_romanized`` the region is the first
  ``max(EVAL_LINES, N_FORGET)`` lines, because line *i* of ``hindi_romanized`` transliterates
  line *i* of ``hindi_train``: its first ``N_FORGET`` lines are the forget texts in Latin
  letters (the study's romanised-leakage probe), so no model sees the forget set romanised.
* Forget / retain: the first ``N_FORGET`` lines of ``hindi_train`` / ``english_train`` (the
  demo's ``n_forget``/``n_retain``). Base and oracle train on the English ones; base trains on
  the Hindi ones (so that there is something to unlearn), retrain and oracle do not.
* Relearning split: the last ``RELEARN_LINES`` lines of ``hindi_train``. No model trains on
  them and the demo never uses them as forget or retain texts; they are disjoint from every
  other set and held out for a relearning attack.
* Training: every other line. Auxiliary training lines come after the evaluation region.

Every model directory has its own copy of the one tokenizer and a ``training_info.json`` with
the recipe, the exact line ranges trained on (``training_texts.parts``), the sha256 of the
sorted training texts joined by newlines (UTF-8), the held-out splits and the final loss;
``mmie.study.demo.demo_training_texts`` rebuilds and checks the texts from it.

* Tokenizer: byte-level BPE (``tokenizers``) with ``VOCAB_SIZE`` entries trained once, on the
  base model's training texts, and shared by the three models (so teacher-forced metrics are
  comparable across them); special tokens ``<pad>`` (0), ``<s>`` (1), ``</s>`` (2); ``<s>`` is
  prepended by the tokenizer's post-processor; wrapped as a ``PreTrainedTokenizerFast`` with
  left padding.
* Model: ``LlamaForCausalLM`` with ``CONFIG`` (hidden 64, 4 layers, 4 heads, tied
  embeddings), initialised from ``SEED`` (the three models start from the same weights).
* Training: AdamW, linear warm-up then cosine decay, ``STEPS`` steps of ``BATCH`` sequences,
  pad tokens masked out of the loss. Seeds are fixed, ``torch.use_deterministic_algorithms``
  is on and one CPU thread is used, so the same torch/tokenizers versions on the same CPU
  architecture reproduce the weights bit for bit (a few minutes per model on one core).

Run from the repository root::

    python3 scripts/train_demo_model.py                  # all three, into src/mmie/data/
    python3 scripts/train_demo_model.py --only retrain   # one of them
    python3 scripts/train_demo_model.py --out /tmp/demo  # /tmp/demo/demo_model/, ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # deterministic BPE training
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from mmie.study.datasets import load_texts

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "mmie" / "data"
MODELS = ("base", "retrain", "oracle")
DIRECTORIES = {"base": "demo_model", "retrain": "demo_retrain", "oracle": "demo_oracle"}
RECIPES = {
    "base": "Devanagari Hindi, English, romanised Hindi, Urdu, Punjabi, Bengali and code-mixed "
    "lines (the first words of a Hinglish line, then a Devanagari Hindi line)",
    "retrain": "the base recipe minus the forget texts (the first N_FORGET lines of hindi_train)",
    "oracle": "the base recipe minus every Hindi text (hindi_train, hinglish, hindi_romanized, "
    "code-mixed lines)",
}

SEED = 1234
VOCAB_SIZE = 1024
N_FORGET = 64  # the demo's forget (hindi_train) and retain (english_train) texts
EVAL_LINES = 48  # first lines of each auxiliary set: evaluation only
RELEARN_LINES = 32  # last lines of hindi_train: the held-out relearning split
NEVER_TRAINED = ("hindi_eval", "english_eval", "adversarial")  # evaluation sets
AUX_SETS = ("hinglish", "hindi_romanized", "urdu", "punjabi", "bengali")
HINDI_SETS = ("hindi_train", "hinglish", "hindi_romanized")  # Hindi in any form
CODE_MIXED = True  # Hinglish only as code-mixed lines (its first words, then Devanagari Hindi)
CODE_MIXED_DIVISORS = (2, 3)  # one code-mixed line per divisor: the first 1/2, 1/3 of the words
CODE_MIXED_MIN_WORDS = 2  # ... but at least this many words
STEPS = 1200
BATCH = 32
LR = 3e-3
WARMUP = 60
WEIGHT_DECAY = 0.01
MAX_TOKENS = 96  # longest training sequence (tokens, <s> and </s> included)
SEPARATOR = " "  # between the two halves of a code-mixed line

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
CONFIG = {
    "hidden_size": 64,  # d_model
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 192,  # MLP width (3 x d_model)
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,  # halves the parameter count of a tiny model
    "attention_dropout": 0.0,
}

Part = dict[str, Any]


def span(name: str, start: int, stop: int | None = None) -> Part:
    """Lines ``[start, stop)`` of a bundled set (``stop=None``: to the end)."""
    return {"set": name, "start": start, "stop": len(load_texts(name)) if stop is None else stop}


def eval_region(name: str) -> Part:
    """The evaluation-only lines of a set (all of ``NEVER_TRAINED``, a prefix of the rest)."""
    if name in NEVER_TRAINED:
        return span(name, 0)
    if name == "hindi_romanized":  # line i transliterates hindi_train line i
        return span(name, 0, max(EVAL_LINES, N_FORGET))
    if name in AUX_SETS:
        return span(name, 0, EVAL_LINES)
    raise ValueError(f"{name} has no evaluation region")


def forget_split() -> Part:
    return span("hindi_train", 0, N_FORGET)


def relearn_split() -> Part:
    n = len(load_texts("hindi_train"))
    return span("hindi_train", n - RELEARN_LINES, n)


def recipe(which: str) -> list[Part]:
    """The training parts of model ``which``: plain line ranges, or joined pairs of ranges."""
    if which not in MODELS:
        raise ValueError(f"which must be one of {MODELS}, got {which!r}")
    hindi_stop = relearn_split()["start"]
    parts: list[Part] = []
    if which != "oracle":
        parts.append(span("hindi_train", N_FORGET if which == "retrain" else 0, hindi_stop))
    parts.append(span("english_train", 0))
    for name in AUX_SETS:
        if (which == "oracle" and name in HINDI_SETS) or (name == "hinglish" and CODE_MIXED):
            continue  # with CODE_MIXED, Hinglish is trained on inside code-mixed lines only
        parts.append(span(name, eval_region(name)["stop"]))
    if CODE_MIXED and which != "oracle":
        # The first half (then the first third) of the words of each Hinglish training line,
        # followed by a Devanagari Hindi training line that is not a forget text (so base and
        # retrain see the same code-mixed lines): Hinglish prompts then switch to Devanagari,
        # so mixed-prompt metrics measure something. With the Hinglish lines also trained on
        # in full, base and retrain disagreed on most Hinglish prompts (greedy continuations
        # flipped between Latin and Devanagari), which made retrain a poor reference there.
        hinglish = span("hinglish", eval_region("hinglish")["stop"])
        n = hinglish["stop"] - hinglish["start"]
        for i, divisor in enumerate(CODE_MIXED_DIVISORS):
            hindi = span("hindi_train", N_FORGET + i * n, N_FORGET + (i + 1) * n)
            assert hindi["stop"] <= hindi_stop, "code-mixed lines would reach the relearning split"
            parts.append(
                {
                    "join": [hinglish, hindi],
                    "separator": SEPARATOR,
                    "first_words_divisor": divisor,
                    "first_words_min": CODE_MIXED_MIN_WORDS,
                }
            )
    return parts


def head_words(text: str, divisor: int, minimum: int) -> str:
    """The first ``max(minimum, n // divisor)`` of the ``n`` words of ``text``."""
    words = text.split()
    return " ".join(words[: max(minimum, len(words) // divisor)])


def part_texts(part: Part) -> list[str]:
    """The texts of a part: a line range, or a joined pair of ranges (line by line)."""
    if "join" in part:
        first, second = (part_texts(p) for p in part["join"])
        assert len(first) == len(second), "joined ranges must have the same length"
        divisor, minimum = part["first_words_divisor"], part["first_words_min"]
        first = [head_words(text, divisor, minimum) for text in first]
        return [part["separator"].join(pair) for pair in zip(first, second)]
    return load_texts(part["set"])[part["start"] : part["stop"]]


def training_texts(which: str = "base") -> list[str]:
    """The training texts of model ``which``, in training order."""
    return [text for part in recipe(which) for text in part_texts(part)]


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 of the sorted texts joined by newlines (UTF-8): independent of their order."""
    return hashlib.sha256("\n".join(sorted(texts)).encode("utf-8")).hexdigest()


def train_tokenizer(texts: Sequence[str]) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        model_max_length=CONFIG["max_position_embeddings"],
    )


def encode(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]) -> list[list[int]]:
    ids = tokenizer(list(texts))["input_ids"]
    out = [[*seq[: MAX_TOKENS - 1], tokenizer.eos_token_id] for seq in ids]
    n_cut = sum(len(seq) > MAX_TOKENS - 1 for seq in ids)
    if n_cut:
        sys.stdout.write(f"warning: {n_cut} training texts truncated to {MAX_TOKENS} tokens\n")
    return out


def batches(
    sequences: list[list[int]], pad_id: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches ``(input_ids, attention_mask, labels)``, right padded."""
    while True:
        order = torch.randperm(len(sequences), generator=generator).tolist()
        for start in range(0, len(order) - BATCH + 1, BATCH):
            chunk = [sequences[i] for i in order[start : start + BATCH]]
            width = max(len(s) for s in chunk)
            ids = torch.full((BATCH, width), pad_id, dtype=torch.long)  # (batch, seq)
            mask = torch.zeros((BATCH, width), dtype=torch.long)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            labels = ids.masked_fill(mask == 0, -100)
            yield ids, mask, labels


def lr_at(step: int, steps: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], steps: int, label: str
) -> tuple[LlamaForCausalLM, float, float]:
    """Train one model from ``SEED``; returns ``(model, final smoothed loss, seconds)``."""
    sequences = encode(tokenizer, texts)
    n_tokens = sum(len(s) for s in sequences)
    sys.stdout.write(
        f"[{label}] {len(texts)} texts, {n_tokens} tokens, "
        f"{n_tokens / sum(len(t) for t in texts):.2f} tokens/char\n"
    )
    torch.manual_seed(SEED)  # the same initial weights for every model
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **CONFIG,
    )
    model = LlamaForCausalLM(config)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=LR,
        betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(SEED)
    stream = batches(sequences, tokenizer.pad_token_id, generator)

    model.train()
    start = time.perf_counter()
    running = 0.0
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps)
        ids, mask, labels = next(stream)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 100 == 0 or step == steps - 1:
            sys.stdout.write(
                f"[{label}] step {step:5d}  loss {loss.item():.3f}  smoothed {running:.3f}  "
                f"{time.perf_counter() - start:.0f}s\n"
            )
            sys.stdout.flush()
    model.eval()
    return model, running, time.perf_counter() - start


def save(
    which: str,
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    loss: float,
    steps: int,
    out: Path,
) -> None:
    """Write the model, the tokenizer and ``training_info.json`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=32,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # transformers 5 records its backend class name; the generic fast-tokenizer name loads
    # the same tokenizer.json under transformers 4 and 5. Without model_input_names,
    # transformers 4 also returns token_type_ids, which generate() refuses.
    config_path = out / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_config["model_input_names"] = ["input_ids", "attention_mask"]
    config_path.write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")
    tokenizer_sha = hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    info = {
        "description": f"mmie demo model ({which}): tiny Llama-style LM trained by "
        "scripts/train_demo_model.py",
        "model": which,
        "recipe": RECIPES[which],
        "seed": SEED,
        "steps": steps,
        "batch_size": BATCH,
        "learning_rate": LR,
        "warmup_steps": WARMUP,
        "weight_decay": WEIGHT_DECAY,
        "max_tokens": MAX_TOKENS,
        "final_smoothed_loss": round(loss, 4),
        "tokenizer": {
            "trained_on": "the base model's training texts (shared by base, retrain, oracle)",
            "vocab_size": len(tokenizer),
            "sha256": tokenizer_sha,
        },
        "training_texts": {
            "parts": recipe(which),
            "n_texts": len(texts),
            "sha256": texts_sha256(texts),
            "sha256_of": "the UTF-8 of the sorted training texts joined by newlines",
        },
        "held_out": {
            "evaluation": [eval_region(name) for name in (*NEVER_TRAINED, *AUX_SETS)],
            "relearn": relearn_split(),
        },
        "forget": forget_split(),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }
    (out / "training_info.json").write_text(
        json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=OUT, help="parent directory of the model directories"
    )
    parser.add_argument("--steps", type=int, default=STEPS, help="optimisation steps")
    parser.add_argument("--only", choices=MODELS, help="train one model only")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    tokenizer = train_tokenizer(training_texts("base"))  # one tokenizer for all three
    sys.stdout.write(f"tokenizer: vocab {len(tokenizer)}\n")
    for which in (args.only,) if args.only else MODELS:
        texts = training_texts(which)
        model, loss, seconds = train(tokenizer, texts, args.steps, which)
        out = args.out / DIRECTORIES[which]
        save(which, model, tokenizer, texts, loss, args.steps, out)
        sys.stdout.write(f"[{which}] saved to {out} ({seconds:.0f}s of training)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
