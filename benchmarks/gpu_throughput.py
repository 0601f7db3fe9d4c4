"""The throughput work at real size: a Qwen2-1.5B-shaped random model, built from its config.

Nothing is downloaded: the model is ``benchmarks/gate.py``'s ``qwen2-1.5b`` preset (random
weights, vocabulary 151936) and the tokenizer is :func:`mmie.testing.byte_tokenizer` (its
259 ids index the first rows of the embedding), on the bundled texts. Items:

* ``lora``: :func:`mmie.unlearn_lora` (NPO + KL, rank 8, batch 8) with the reference
  computed every step (``reference_cache_mb=0``), with the default cache (256 MiB: the NPO
  forget reference; the KL retain logits only if they fit) and with a budget that holds
  every retain text's logits; seconds per step, ratios to the uncached loop and how far
  the losses are from it.
* ``generation``: greedy :func:`mmie.generate` of prompts of mixed lengths, one call per
  batch of 16 in input order (mmie 0.1) against one token-budget pass
  (``max_batch_tokens``, the study's CUDA default 65536); the ratio and the share of
  outputs that are identical (bf16 rounding depends on the batch, so a few may differ).
* ``recovery``: :func:`mmie.relearning_attack` (LoRA, evaluated at steps 0, 5 and 10) and
  :func:`mmie.steering_recovery` (one layer, two scales) on held-out Hindi texts: seconds,
  forward passes and the numbers they report.

GPU (one run of ``benchmarks/gpu_checks.sh``)::

    python benchmarks/gpu_throughput.py --device cuda --dtype bfloat16

CPU smoke test (a 2-block, 512-wide model, a few steps and prompts)::

    python benchmarks/gpu_throughput.py --tiny
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gate import build_model

import mmie
from mmie.study.datasets import load_texts
from mmie.testing import byte_tokenizer
from mmie.unlearning.lora_checkpoint import remove_lora

ITEMS = ("lora", "generation", "recovery")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    value = fn()
    sync(device)
    return time.perf_counter() - t0, value


def bench_lora(model: Any, tok: Any, args: argparse.Namespace, device: torch.device) -> None:
    forget = load_texts("hindi_train")[: args.texts]
    retain = load_texts("english_train")[: args.texts]
    cfg = mmie.UnlearnConfig(
        objective="npo",
        steps=args.steps,
        lr=1e-4,
        kl_weight=1.0,
        batch_size=8,
        max_length=args.max_length,
        seed=0,
    )
    flags = [p.requires_grad for p in model.parameters()]
    vocab = model.config.vocab_size
    element = torch.finfo(next(model.parameters()).dtype).bits // 8
    # every retain text's logits: texts x max_length x vocabulary x element size
    all_mb = args.texts * args.max_length * vocab * element / 2**20 * 1.1
    variants = {"uncached": 0.0, "default (256 MiB)": 256.0, f"all ({all_mb:.0f} MiB)": all_mb}
    times: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, list[float]] = {}
    for round_ in range(1 + args.repeats):
        for name, budget in variants.items():

            def run(budget: float = budget) -> Any:
                return mmie.unlearn_lora(
                    model, tok, forget, retain, config=cfg, rank=8, reference_cache_mb=budget
                )

            seconds, result = timed(run, device)
            losses[name] = [h.loss for h in result.history]
            remove_lora(result.model, flags)
            del result
            if round_:
                times[name].append(seconds / args.steps)
    base = statistics.median(times["uncached"])
    print(
        f"lora: unlearn_lora NPO + KL, rank 8, batch 8, {args.steps} steps, {args.texts} texts "
        f"per side, max_length {args.max_length}; median of {args.repeats} after a warm-up"
    )
    print("| reference | ms per step | vs uncached | max rel. loss difference |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        diff = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(losses[name], losses["uncached"]))
        med = statistics.median(values)
        print(f"| {name} | {1e3 * med:.1f} | {med / base:.3f}x | {diff:.1e} |")


def prompts(n: int) -> list[str]:
    """``n`` prompts of mixed lengths (2 to 12 words) from the held-out Hindi and English."""
    lines = [*load_texts("hindi_eval"), *load_texts("english_eval")]
    out = []
    for i in range(n):
        words = lines[i % len(lines)].split()
        out.append(" ".join(words[: 2 + (i * 7) % 11]))
    return list(dict.fromkeys(out))


def bench_generation(model: Any, tok: Any, args: argparse.Namespace, device: torch.device) -> None:
    ps = prompts(args.prompts)
    kw: dict[str, Any] = {"max_new_tokens": args.new_tokens}
    runs = {
        "per batch of 16 (0.1)": lambda: mmie.generate(model, tok, ps, batch_size=16, **kw),
        "token budget 65536": lambda: mmie.generate(model, tok, ps, max_batch_tokens=65536, **kw),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, list[str]] = {}
    for round_ in range(1 + args.repeats):
        for name, fn in runs.items():
            seconds, outputs[name] = timed(fn, device)
            if round_:
                times[name].append(seconds)
    old, new = (statistics.median(times[n]) for n in runs)
    a, b = (outputs[n] for n in runs)
    same = sum(x == y for x, y in zip(a, b))
    print(
        f"generation: {len(ps)} greedy prompts (2-12 words, byte tokens), {args.new_tokens} new "
        f"tokens; median of {args.repeats} after a warm-up"
    )
    print(
        f"| per batch of 16 s | token budget s | ratio | identical outputs |\n|---:|---:|---:|---:|\n"
        f"| {old:.2f} | {new:.2f} | {new / old:.3f}x | {same}/{len(ps)} |"
    )


def bench_recovery(model: Any, tok: Any, args: argparse.Namespace, device: torch.device) -> None:
    relearn = load_texts("hindi_train")[-args.texts :]
    evaluate = load_texts("hindi_eval")[: args.texts]
    other = load_texts("english_train")[-args.texts :]
    seconds, curve = timed(
        lambda: mmie.relearning_attack(
            model,
            tok,
            relearn,
            evaluate,
            steps=(0, 5, 10),
            batch_size=8,
            max_length=args.max_length,
            seed=0,
        ),
        device,
    )
    print(
        f"recovery: relearning_attack (LoRA rank 8, steps 0/5/10, {len(relearn)} relearning "
        f"and {len(evaluate)} evaluation texts): {seconds:.1f} s, {curve.n_forward} forward and "
        f"{curve.n_backward} backward passes; forget log-ppl by step "
        f"{[round(v, 3) for v in curve.log_ppl]}"
    )
    layer = model.config.num_hidden_layers // 2
    seconds, steer = timed(
        lambda: mmie.steering_recovery(
            model,
            tok,
            relearn,
            other,
            evaluate,
            layers=[layer],
            scales=(1.0, 4.0),
            batch_size=8,
            max_length=args.max_length,
        ),
        device,
    )
    print(
        f"recovery: steering_recovery (layer {layer}, scales 1 and 4, with its random "
        f"control): {seconds:.1f} s, {steer.n_forward} forward passes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", nargs="+", choices=ITEMS, default=list(ITEMS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: a tiny model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="LoRA steps")
    parser.add_argument("--texts", type=int, default=64, help="texts per side (LoRA, recovery)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # tiny CPU matmuls slow down with contending threads
    warnings.simplefilter("ignore")  # byte tokens truncate long Hindi lines
    if args.tiny:
        args.repeats, args.steps, args.texts, args.max_length = 1, 3, 16, 64
        args.prompts, args.new_tokens = 24, 4
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = build_model(
        "small" if args.tiny else "qwen2-1.5b", device, dtype, 2 if args.tiny else None
    )
    tok = byte_tokenizer()
    n = sum(p.numel() for p in model.parameters())
    print(
        f"# {n / 1e6:.0f}M parameters, {model.config.num_hidden_layers} blocks, {args.dtype} on "
        f"{device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    benches = {"lora": bench_lora, "generation": bench_generation, "recovery": bench_recovery}
    for item in args.items:
        benches[item](model, tok, args, device)


if __name__ == "__main__":
    main()
