"""Benchmark: memory of a multi-seed LoRA + ReFT unlearning run, mmie vs the original lifecycle.

Two variants train the same arms (NPO forget term + KL retain term, same texts, batch sizes
and steps) on the same randomly initialised Llama-architecture model, saved once to a
temporary directory and loaded from there as a real run would:

* ``mmie``: one base model loaded once; per seed ``mmie.lora_arm`` then ``mmie.reft_arm``
  (adapters built on the base model, reference = the same weights under
  ``disable_adapter()`` / detached hooks, released on exit).
* ``replay``: the original script's lifecycle: a base model loaded once and kept; per seed a
  LoRA-arm copy and a ReFT-arm copy loaded and never freed (the variables are rebound at the
  next seed, as in the original loop), and a reference copy reloaded inside each training.

Each variant runs in its own subprocess so peak figures do not mix. At every phase (after a
load, at the first forward pass of every training, after training, after evaluation, after
each seed) the benchmark records (a) the number of resident base-weight copies: bytes of
the parameters of every live ``PreTrainedModel`` (adapter tensors excluded, shared storage
counted once) divided by the bytes of one copy, and (b) the process memory: resident set
size on CPU, ``torch.cuda.memory_allocated`` on a GPU. It reports the peaks side by side
(peak RSS from ``getrusage``; ``torch.cuda.max_memory_allocated`` on a GPU) and, for mmie,
the memory after each seed, which must stay flat.

Targets (issue 5): peak copies 1 for mmie (the original held 4); peak memory below the
replay's by at least the three weight copies it saves; on a GPU, memory allocated after each
of 10 seeds flat within 1%.

Run: ``python3 benchmarks/memory.py`` (CPU: d_model 1024, 8 layers, 3 seeds, about 2-3
minutes on 2 cores) or ``python3 benchmarks/memory.py --device cuda --seeds 10``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import mmie
from mmie.edits.reft import LoReFTConfig, ReFTAdapter
from mmie.models.loading import load_causal_lm
from mmie.models.tokenization import tokenize
from mmie.testing import byte_tokenizer
from mmie.unlearning.objectives import kl_retain_loss, npo_loss, sequence_logprobs

FORGET = [
    "नमस्ते दुनिया",
    "मेरा नाम राम है",
    "यह परीक्षण है",
    "हिंदी पाठ",
]
RETAIN = ["hello world, how are you", "my name is ram", "this is a test", "english text"]
EVAL = FORGET + RETAIN


# ------------------------------------------------------------------------ measuring


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def live_base_bytes() -> int:
    """Bytes of base-model parameters held by live PreTrainedModels (storage counted once)."""
    from transformers import PreTrainedModel

    gc.collect()
    seen: set[int] = set()
    total = 0
    for obj in gc.get_objects():
        if not issubclass(type(obj), PreTrainedModel):
            continue
        for name, p in obj.named_parameters():
            if "lora_" in name:
                continue
            ptr = p.untyped_storage().data_ptr()
            if ptr in seen:
                continue
            seen.add(ptr)
            total += p.untyped_storage().nbytes()
    return total


class Recorder:
    """Samples weight copies and memory at named phases."""

    def __init__(self, device: str, copy_bytes: int) -> None:
        self.device = device
        self.copy_bytes = copy_bytes
        self.samples: list[dict[str, Any]] = []

    def memory(self) -> int:
        if self.device == "cuda":
            torch.cuda.synchronize()
            return int(torch.cuda.memory_allocated())
        return rss_bytes()

    def sample(self, phase: str) -> dict[str, Any]:
        record = {
            "phase": phase,
            "copies": live_base_bytes() / self.copy_bytes,
            "memory": self.memory(),
        }
        self.samples.append(record)
        return record

    def on_first_forward(self, model: torch.nn.Module, phase: str) -> Callable[[], None]:
        """Sample once, at the first forward pass of ``model`` (inside training)."""
        done = [False]

        def hook(*_: Any) -> None:
            if not done[0]:
                done[0] = True
                self.sample(phase)

        handle = model.register_forward_pre_hook(hook)
        return handle.remove


# ------------------------------------------------------------------------- variants


def make_model(path: Path, d_model: int, layers: int, dtype: torch.dtype) -> None:
    """Save a random Llama-architecture model and the byte tokenizer to ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=d_model,
        intermediate_size=int(2.75 * d_model),
        num_hidden_layers=layers,
        num_attention_heads=d_model // 64,
        num_key_value_heads=d_model // 64,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)  # benchmark script: global seeding is fine here
    model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)


def evaluate(model: torch.nn.Module, tok: Any, device: str) -> float:
    enc = tokenize(tok, EVAL, padding_side="right", device=device)
    with torch.no_grad():
        return float(model(**enc).logits.float().mean())


def run_mmie(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    model, tok = load_causal_lm(path, device=args.device)
    rec = Recorder(args.device, live_base_bytes())
    rec.sample("load base")
    info = {
        "n_params": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    cfg = mmie.UnlearnConfig(steps=args.steps, lr=1e-3, batch_size=args.batch_size)
    reft_cfg = LoReFTConfig(layers=(args.layers // 2,), rank=4)
    per_seed: list[int] = []
    for seed in range(args.seeds):
        remove = rec.on_first_forward(model, f"seed {seed}: LoRA training")
        with mmie.lora_arm(model, tok, FORGET, RETAIN, config=cfg.replace(seed=seed)) as arm:
            remove()
            rec.sample(f"seed {seed}: LoRA trained")
            evaluate(arm.model, tok, args.device)
            rec.sample(f"seed {seed}: LoRA evaluated")
        del arm
        remove = rec.on_first_forward(model, f"seed {seed}: ReFT training")
        with mmie.reft_arm(
            model,
            tok,
            FORGET,
            RETAIN,
            reft_config=reft_cfg.replace(seed=seed),
            config=cfg.replace(seed=seed),
        ) as arm:
            remove()
            rec.sample(f"seed {seed}: ReFT trained")
            evaluate(model, tok, args.device)
            rec.sample(f"seed {seed}: ReFT evaluated")
        del arm
        per_seed.append(rec.sample(f"seed {seed}: released")["memory"])
    return {"samples": rec.samples, "per_seed": per_seed, "copy_bytes": rec.copy_bytes, **info}


def _train_with_copy(
    arm: torch.nn.Module,
    ref: torch.nn.Module,
    params: list[torch.nn.Parameter],
    tok: Any,
    args: argparse.Namespace,
    seed: int,
) -> None:
    """The original training: the same NPO + KL objective, reference = a separate copy."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=1e-3)
    for _ in range(args.steps):
        fi = torch.randperm(len(FORGET), generator=gen)[: args.batch_size].tolist()
        ri = torch.randperm(len(RETAIN), generator=gen)[: args.batch_size].tolist()
        f = tokenize(tok, [FORGET[i] for i in fi], padding_side="right", device=args.device)
        r = tokenize(tok, [RETAIN[i] for i in ri], padding_side="right", device=args.device)
        with torch.no_grad():
            ref_f = sequence_logprobs(ref(**f).logits, f["input_ids"], f["attention_mask"])
            ref_r = ref(**r).logits
        logp = sequence_logprobs(arm(**f).logits, f["input_ids"], f["attention_mask"])
        npo_loss(logp, ref_f).backward()
        kl_retain_loss(arm(**r).logits, ref_r, r["attention_mask"]).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()


def run_replay(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    import warnings

    from peft import LoraConfig, get_peft_model

    base, tok = load_causal_lm(path, device=args.device)
    rec = Recorder(args.device, live_base_bytes())
    rec.sample("load base")
    per_seed: list[int] = []
    lora: Any = None
    reft: Any = None
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        lora, _ = load_causal_lm(path, device=args.device)  # the previous arm lives until here
        rec.sample(f"seed {seed}: load LoRA arm")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            lora = get_peft_model(
                lora,
                LoraConfig(
                    r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
                ),
            )
        ref, _ = load_causal_lm(path, device=args.device)  # reloaded inside training
        remove = rec.on_first_forward(lora, f"seed {seed}: LoRA training")
        params = [p for p in lora.parameters() if p.requires_grad]
        lora.train()
        _train_with_copy(lora, ref, params, tok, args, seed)
        remove()
        del ref
        lora.eval()
        rec.sample(f"seed {seed}: LoRA trained")
        reft_model, _ = load_causal_lm(path, device=args.device)
        rec.sample(f"seed {seed}: load ReFT arm")
        reft_model.requires_grad_(False)
        reft = ReFTAdapter(reft_model, LoReFTConfig(layers=(args.layers // 2,), rank=4, seed=seed))
        reft.attach()
        ref, _ = load_causal_lm(path, device=args.device)
        remove = rec.on_first_forward(reft_model, f"seed {seed}: ReFT training")
        _train_with_copy(reft_model, ref, list(reft.parameters()), tok, args, seed)
        remove()
        del ref
        rec.sample(f"seed {seed}: ReFT trained")
        evaluate(base, tok, args.device)
        evaluate(lora, tok, args.device)
        evaluate(reft_model, tok, args.device)
        per_seed.append(rec.sample(f"seed {seed}: evaluated (no cleanup)")["memory"])
    return {"samples": rec.samples, "per_seed": per_seed, "copy_bytes": rec.copy_bytes}


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    path = Path(args.model_dir)
    if args.device == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = run_mmie(args, path) if args.variant == "mmie" else run_replay(args, path)
    result["seconds"] = time.perf_counter() - t0
    result["peak_copies"] = max(s["copies"] for s in result["samples"])
    result["peak_rss"] = peak_rss_bytes()
    if args.device == "cuda":
        result["peak_cuda"] = int(torch.cuda.max_memory_allocated())
    print("RESULT " + json.dumps(result))


# --------------------------------------------------------------------------- driver


def spawn(args: argparse.Namespace, variant: str, model_dir: str, seeds: int) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--variant", variant, "--model-dir", model_dir,
        "--device", args.device, "--seeds", str(seeds), "--steps", str(args.steps),
        "--batch-size", str(args.batch_size), "--layers", str(args.layers),
        "--d-model", str(args.d_model), "--threads", str(args.threads),
    ]  # fmt: skip
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"the {variant} run failed (exit status {out.returncode})")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--flat-seeds", type=int, default=10, help="mmie seeds for flatness")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", choices=["mmie", "replay"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is not None:
        child(args)
        return

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        make_model(Path(tmp), args.d_model, args.layers, dtype)
        mm = spawn(args, "mmie", tmp, args.seeds)
        rp = spawn(args, "replay", tmp, args.seeds)
        flat = spawn(args, "mmie", tmp, args.flat_seeds) if args.device == "cuda" else None
    copy = mm["copy_bytes"]
    print(
        f"# mmie memory benchmark ({platform.machine()}, torch {torch.__version__}, {args.device})"
    )
    print(
        f"model: Llama, d_model {args.d_model}, {args.layers} layers, "
        f"{mm['n_params'] / 1e6:.1f}M parameters, {mm['dtype']}, one copy = {gib(copy)} GiB; "
        f"{args.seeds} seeds x (LoRA + ReFT), {args.steps} steps, batch {args.batch_size}"
    )
    print()
    mem_name = "peak CUDA allocated GiB" if args.device == "cuda" else "peak RSS GiB"
    print(f"| variant | peak base-weight copies | {mem_name} | seconds |")
    print("|---|---:|---:|---:|")
    for name, res in (("mmie", mm), ("original lifecycle (replay)", rp)):
        peak = res["peak_cuda"] if args.device == "cuda" else res["peak_rss"]
        print(f"| {name} | {res['peak_copies']:.2f} | {gib(peak)} | {res['seconds']:.1f} |")
    peak_mm = mm["peak_cuda"] if args.device == "cuda" else mm["peak_rss"]
    peak_rp = rp["peak_cuda"] if args.device == "cuda" else rp["peak_rss"]
    saved = (peak_rp - peak_mm) / copy
    print()
    print(
        f"saved: {gib(peak_rp - peak_mm)} GiB = {saved:.2f} weight copies "
        f"(target >= {rp['peak_copies'] - mm['peak_copies']:.0f})"
    )
    print(
        "memory after each seed (GiB): mmie "
        + ", ".join(gib(b) for b in mm["per_seed"])
        + "; replay "
        + ", ".join(gib(b) for b in rp["per_seed"])
    )
    print(
        "replay copies by phase: "
        + "; ".join(f"{s['phase']} {s['copies']:.0f}" for s in rp["samples"])
    )
    if flat is not None:
        per = flat["per_seed"]
        spread = (max(per) - min(per)) / min(per)
        print(
            f"CUDA allocated after each of {len(per)} mmie seeds (GiB): "
            + ", ".join(f"{b / 2**30:.4f}" for b in per)
            + f"; spread {spread:.3%} (target < 1%)"
        )
    print(f"total wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
