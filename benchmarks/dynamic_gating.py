"""Benchmark: decode time with mmie.DynamicGatingProcessor vs without, and vs the original.

One run times, side by side and interleaved (``--repeats`` rounds, median reported), greedy
decoding of a batch of 8 prompts (4 Hindi, 4 English) for exactly 128 new tokens with an
:class:`mmie.SAEGate` attached in every configuration:

* ``none``: no processor (the gate at its scalar alpha);
* ``mmie``: :class:`mmie.DynamicGatingProcessor` (incremental lookup table, per-group state);
* ``mmie+penalty``: the same with a logit penalty on target-script tokens;
* ``original``: a reimplementation of the original script's processor, the anchor: it decodes
  the whole vocabulary once per batch of prompts (to find Devanagari tokens), decodes every
  continuation at every step to decide, keeps the per-row alpha in a dict keyed by row index
  and builds the gate's alpha tensor from it. Its "decide" is a cheap script count (the
  original called a language detector), so its cost here is a lower bound.

It prints the time per configuration, the ratio to ``none`` (median and best round; target
for ``mmie``: <= 1.02x), the anchor's one-off vocabulary decode, and the cost of one processor
call measured alone (same shapes, no model) as a share of a decoding step -- the least noisy
number on a shared machine. The model is a randomly initialised Llama built
from a config (``--hidden-size``, ``--layers``) and the tokenizer a byte-level BPE trained
here on a synthetic Hindi/English corpus (``--vocab-size``); nothing is downloaded.

Run: ``python3 benchmarks/dynamic_gating.py [--device cuda] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import transformers
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerFast

import mmie
from mmie.edits.dynamic_gating import DynamicGatingProcessor
from mmie.edits.sae_gate import SAEGate
from mmie.language.unicode import script_counts
from mmie.sae.config import SAEConfig
from mmie.sae.model import SparseAutoencoder
from mmie.testing import tiny_causal_lm

HINDI = [
    "भारत एक विशाल देश है और इसकी",
    "मेरे गाँव में हर साल",
    "आज सुबह बाज़ार में",
    "हिंदी भाषा की सबसे बड़ी",
]
ENGLISH = [
    "The history of the river valley shows",
    "In the morning the market was",
    "A good teacher always",
    "Scientists recently discovered that",
]


# ----------------------------------------------------------------------------- set-up


def synthetic_corpus(n_words: int, seed: int = 0) -> list[str]:
    """Lines of random Latin and Devanagari 'words' built from syllables."""
    rng = np.random.default_rng(seed)
    consonants = [chr(c) for c in range(0x0915, 0x0939)]
    vowels = ["", "ा", "ि", "ी", "ु", "ू", "े", "ै", "ो", "ौ", "ं", "्"]
    latin_on = [*"bcdfghjklmnprstvwyz", "th", "sh", "ch", "st", "tr", "pl"]
    latin_v = ["a", "e", "i", "o", "u", "ea", "ou", "ai"]
    lines, words = [], []
    for i in range(n_words):
        n_syl = int(rng.integers(1, 4))
        if i % 2:
            word = "".join(
                consonants[int(rng.integers(len(consonants)))]
                + vowels[int(rng.integers(len(vowels)))]
                for _ in range(n_syl)
            )
        else:
            word = "".join(
                latin_on[int(rng.integers(len(latin_on)))]
                + latin_v[int(rng.integers(len(latin_v)))]
                for _ in range(n_syl)
            )
        words.append(word)
        if len(words) == 12:
            lines.append(" ".join(words) + ("।" if i % 2 else "."))
            words = []
    return lines


def train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE with ``vocab_size`` tokens trained on the synthetic corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = synthetic_corpus(max(200_000, 12 * vocab_size)) + HINDI + ENGLISH
    backend.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="left",
    )


def build(args: argparse.Namespace) -> tuple[Any, PreTrainedTokenizerFast, SAEGate]:
    tok = train_tokenizer(args.vocab_size)
    dtype = getattr(torch, args.dtype)
    model = tiny_causal_lm(
        "llama",
        vocab_size=len(tok),
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_heads=max(1, args.hidden_size // 64),
        dtype=dtype,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    ).to(args.device)
    layer = args.layers // 2
    sae = SparseAutoencoder(
        SAEConfig(architecture="relu", d_in=args.hidden_size, d_sae=4 * args.hidden_size),
        seed=0,
    )
    gate = SAEGate(model, {layer: sae}, {layer: list(range(16))}, alpha=1.0)
    return model, tok, gate


# ----------------------------------------------------------------------------- the anchor


class OriginalProcessor(LogitsProcessor):
    """The original script's processor, reimplemented: decode the vocabulary per batch, decode
    every continuation every step, per-row alpha in a dict keyed by row index."""

    def __init__(
        self,
        gate: SAEGate,
        tokenizer: PreTrainedTokenizerFast,
        *,
        base_alpha: float = 0.0,
        high_alpha: float = 1.0,
        penalty: float | None = None,
    ) -> None:
        self.gate, self.tokenizer = gate, tokenizer
        self.base_alpha, self.high_alpha, self.penalty = base_alpha, high_alpha, penalty
        # the full vocabulary decode the original ran for every batch of prompts
        self.hindi_ids = [
            i for i in range(len(tokenizer)) if "Deva" in script_counts(tokenizer.decode([i]))
        ]
        self.alpha: dict[int, float] = {}
        self.prompt_len: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
        for row in range(input_ids.shape[0]):
            text = self.tokenizer.decode(
                input_ids[row, self.prompt_len :], skip_special_tokens=True
            )
            counts = script_counts(text)
            letters = sum(counts.values())
            hindi = letters > 0 and counts.get("Deva", 0) / letters >= 0.3
            self.alpha[row] = self.high_alpha if hindi else self.base_alpha
        alpha = torch.tensor(
            [self.alpha[i] for i in range(input_ids.shape[0])], device=scores.device
        )
        self.gate.set_sequence_alpha(alpha)
        if self.penalty is not None:
            scores[:, self.hindi_ids] -= self.penalty  # the original edited in place
        return scores


# ----------------------------------------------------------------------------- timing


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=None, help="cpu: 256, cuda: 2048")
    parser.add_argument("--layers", type=int, default=None, help="cpu: 4, cuda: 16")
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--dtype", default=None, help="cpu: float32, cuda: bfloat16")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.hidden_size = args.hidden_size or (2048 if cuda else 256)
    args.layers = args.layers or (16 if cuda else 4)
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model, tok, gate = build(args)
    dtype = getattr(torch, args.dtype)
    print(
        f"mmie {mmie.__version__}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, Python {platform.python_version()}; device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if cuda else f", {torch.get_num_threads()} threads")
    )
    print(
        f"model: Llama d_model={args.hidden_size}, {args.layers} layers, vocab {len(tok)}, "
        f"{args.dtype}; batch {len(HINDI) + len(ENGLISH)}, {args.new_tokens} new tokens, "
        f"greedy; set-up {time.perf_counter() - t0:.1f} s"
    )
    prompts = [p for pair in zip(HINDI, ENGLISH) for p in pair]
    batch = tok(prompts, padding=True, return_tensors="pt").to(args.device)
    options: dict[str, Any] = {
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,  # every run decodes exactly the same number of steps
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
    }

    def run(make: Callable[[], LogitsProcessor | None]) -> tuple[float, float]:
        """(seconds of generate, seconds spent building the processor)."""
        sync(args.device)
        start = time.perf_counter()
        proc = make()
        built = time.perf_counter() - start
        procs = LogitsProcessorList([proc] if proc is not None else [])
        if isinstance(proc, DynamicGatingProcessor):
            with proc.session():
                model.generate(**batch, logits_processor=procs, **options)
        else:
            try:
                model.generate(**batch, logits_processor=procs, **options)
            finally:
                gate.clear_sequence_alpha()
        sync(args.device)
        return time.perf_counter() - start - built, built

    configs: dict[str, Callable[[], LogitsProcessor | None]] = {
        "none": lambda: None,
        "mmie": lambda: DynamicGatingProcessor(gate, tok),
        "mmie+penalty": lambda: DynamicGatingProcessor(gate, tok, penalty=5.0),
        "original": lambda: OriginalProcessor(gate, tok),
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    vocab_decode: list[float] = []
    with gate, torch.inference_mode():
        for make in configs.values():  # warm-up (kernels, caches, the lid mask)
            run(make)
        for _ in range(args.repeats):
            for name, make in configs.items():
                seconds, built = run(make)
                times[name].append(seconds)
                if name == "original":
                    vocab_decode.append(built)
        # Per-call cost of each processor alone, on the same batch shapes (growing input_ids,
        # fixed scores), without the model: far less noisy than differences of decode times.
        gen = torch.Generator().manual_seed(0)
        rows, plen, steps = (
            batch["input_ids"].shape[0],
            batch["input_ids"].shape[1],
            args.new_tokens,
        )
        ids = torch.randint(0, len(tok), (rows, plen + steps), generator=gen).to(args.device)
        scores = torch.randn(rows, len(tok), generator=gen).to(args.device, dtype)
        call_us: dict[str, float] = {}
        for name, make in configs.items():
            if name == "none":
                continue
            best = float("inf")
            for _ in range(3):
                proc = make()
                assert proc is not None
                ctx = (
                    proc.session()
                    if isinstance(proc, DynamicGatingProcessor)
                    else contextlib.nullcontext()
                )
                with ctx:
                    proc(ids[:, :plen], scores)  # first call builds per-generation state
                    sync(args.device)
                    start = time.perf_counter()
                    for t in range(1, steps):
                        proc(ids[:, : plen + t], scores)
                    sync(args.device)
                    best = min(best, (time.perf_counter() - start) / (steps - 1))
                gate.clear_sequence_alpha()
            call_us[name] = best * 1e6
    base = statistics.median(times["none"])
    print(f"median of {args.repeats} interleaved rounds")
    step_s = base / args.new_tokens
    print(
        f"| {'processor':<13} | {'decode s':>9} | {'ms/step':>8} | {'vs none':>8} | "
        f"{'best vs none':>12} | {'us/call alone':>13} | {'call/step':>9} |"
    )
    print(f"|{'-' * 15}|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 14}|{'-' * 15}|{'-' * 11}|")
    best_base = min(times["none"])
    for name, values in times.items():
        med = statistics.median(values)
        us = call_us.get(name)
        alone = f"{us:>13.0f}" if us is not None else f"{'-':>13}"
        share = f"{us * 1e-6 / step_s:>8.1%}" if us is not None else f"{'-':>8}"
        print(
            f"| {name:<13} | {med:>9.3f} | {med / args.new_tokens * 1e3:>8.2f} | "
            f"{med / base:>7.3f}x | {min(values) / best_base:>11.3f}x | {alone} | {share} |"
        )
    vd = statistics.median(vocab_decode)
    orig = statistics.median(times["original"])
    print(
        f"original: full-vocabulary decode per batch of prompts {vd:.3f} s "
        f"({len(tok)} single-token decodes); with it {(orig + vd) / base:.3f}x none"
    )


if __name__ == "__main__":
    main()
