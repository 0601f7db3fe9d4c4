"""Train mmie's bundled demo model: a tiny Llama-style causal LM (deterministic, CPU).

The model backs ``mmie demo`` and the tutorials: it is small enough to ship inside the
package (about 1 MB of fp32 safetensors) and to run a whole unlearning study on a laptop CPU,
yet it has learnt to continue Hindi prompts in Devanagari Hindi and English prompts in
English, which is what the study needs to show an effect.

* Tokenizer: byte-level BPE (``tokenizers``) with ``VOCAB_SIZE`` entries trained on the same
  texts as the model, special tokens ``<pad>`` (0), ``<s>`` (1), ``</s>`` (2); ``<s>`` is
  prepended by the tokenizer's post-processor; wrapped as a ``PreTrainedTokenizerFast``
  with left padding.
* Model: ``LlamaForCausalLM`` with ``CONFIG`` (hidden 64, 4 layers, 4 heads, tied
  embeddings).
* Data: the bundled ``hindi_train`` and ``english_train`` sets in full, plus the first
  ``AUX_LINES`` lines of ``hinglish``, ``hindi_romanized``, ``urdu``, ``punjabi`` and
  ``bengali`` (so that mixed-prompt and cross-lingual evaluations are meaningful). No
  evaluation split is ever trained on.
* Training: AdamW, linear warm-up then cosine decay, ``STEPS`` steps of ``BATCH`` sequences,
  pad tokens masked out of the loss. Seeds are fixed, ``torch.use_deterministic_algorithms``
  is on and one CPU thread is used, so the same torch/tokenizers versions on the same CPU
  architecture reproduce the weights bit for bit (about 3 minutes on one core).

Run from the repository root::

    python3 scripts/train_demo_model.py                 # writes src/mmie/data/demo_model/
    python3 scripts/train_demo_model.py --out /tmp/demo # elsewhere
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

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
OUT = ROOT / "src" / "mmie" / "data" / "demo_model"

SEED = 1234
VOCAB_SIZE = 1024
AUX_SETS = ("hinglish", "hindi_romanized", "urdu", "punjabi", "bengali")
AUX_LINES = 40  # lines of each auxiliary set used for training
STEPS = 1200
BATCH = 32
LR = 3e-3
WARMUP = 60
WEIGHT_DECAY = 0.01
MAX_TOKENS = 96  # longest training sequence (tokens, <s> and </s> included)

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


def training_texts() -> list[str]:
    texts = load_texts("hindi_train") + load_texts("english_train")
    for name in AUX_SETS:
        texts += load_texts(name)[:AUX_LINES]
    return texts


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


def batches(sequences: list[list[int]], pad_id: int, generator: torch.Generator):  # type: ignore[no-untyped-def]
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


def lr_at(step: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, STEPS - WARMUP)
    return LR * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    parser.add_argument("--steps", type=int, default=STEPS, help="optimisation steps")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)

    texts = training_texts()
    tokenizer = train_tokenizer(texts)
    sequences = encode(tokenizer, texts)
    n_tokens = sum(len(s) for s in sequences)
    sys.stdout.write(
        f"{len(texts)} texts, {n_tokens} tokens, vocab {len(tokenizer)}, "
        f"{n_tokens / sum(len(t) for t in texts):.2f} tokens/char\n"
    )

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **CONFIG,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    sys.stdout.write(f"{n_params} parameters\n")
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
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        ids, mask, labels = next(stream)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 100 == 0 or step == args.steps - 1:
            sys.stdout.write(
                f"step {step:5d}  loss {loss.item():.3f}  smoothed {running:.3f}  "
                f"{time.perf_counter() - start:.0f}s\n"
            )
            sys.stdout.flush()
    seconds = time.perf_counter() - start
    model.eval()

    args.out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=32,
    )
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    # transformers 5 records its backend class name; the generic fast-tokenizer name loads
    # the same tokenizer.json under transformers 4 and 5.
    config_path = args.out / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")
    info = {
        "description": "mmie demo model: tiny Llama-style LM trained by scripts/train_demo_model.py",
        "seed": SEED,
        "steps": args.steps,
        "batch_size": BATCH,
        "learning_rate": LR,
        "final_smoothed_loss": round(running, 4),
        "training_texts": {
            "hindi_train": "all",
            "english_train": "all",
            **{name: f"first {AUX_LINES} lines" for name in AUX_SETS},
        },
        "n_parameters": n_params,
        "torch": torch.__version__,
    }
    (args.out / "training_info.json").write_text(
        json.dumps(info, indent=2) + "\n", encoding="utf-8"
    )
    sys.stdout.write(f"saved to {args.out} ({seconds:.0f}s of training)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
