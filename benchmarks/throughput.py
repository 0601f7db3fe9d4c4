"""Side-by-side timings of the throughput changes against the code before them.

Every item runs today's code and the code of ``--baseline`` (default: the revision before
the throughput work, imported as the package ``mmie_base`` by ``benchmarks/_baseline.py``)
in one process, one torch thread, interleaving their repeats, and reports the ratio of the
medians (new / old) together with what the results agree to:

* ``lora``: the demo study's LoRA NPO arm (``unlearn_lora``, 100 steps) -- the reference
  computed once and the LoRA layers toggled directly;
* ``generation``: ``evaluate_model`` with the output metric groups on the demo model, and
  its generation alone -- every greedy prompt set in one length-sorted, token-packed pass;
* ``next_char``: ``script_mass(mode="next_char")`` on the demo model and on a random tiny
  Llama over a byte tokenizer (high entropy: many expansions) with short and long prompts;
* ``small``: ``tokenize(..., max_length=...)`` and ``free_memory()``;
* ``topk``: the TopK gate's activation: the baseline's fp32 gate vs today's default
  (``topk_precision="auto"``: the fp32 pass on a CPU) and ``"mixed"``, with the cost of a
  bf16 against an fp32 ``x @ W_enc`` alone (whether this CPU has fast bf16 matmuls), for
  ``d_model`` 512/1536, ``d_sae`` 8192/24576, ``k`` 64 and 1, 8 or 256 tokens per call.

Run: ``python benchmarks/throughput.py [--items lora generation ...] [--repeats 3]``
(about 5 minutes on 2 cores for every item).
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _baseline import BASELINE_REV, baseline

import mmie

ITEMS = ("lora", "generation", "next_char", "small", "topk")


def interleaved(
    runs: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds of each callable per round, their repeats interleaved (one round runs each
    callable once, in order), after ``warmup`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(warmup + repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if rep >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def ratio_line(label: str, old: list[float], new: list[float], note: str = "") -> None:
    """Medians of both, and the median (range) of the per-round ratios new/old: the two runs
    of one round are seconds apart, so their ratio is the steadier number on a loaded CPU."""
    ratios = sorted(b / a for a, b in zip(old, new))
    spread = f"[{ratios[0]:.2f}-{ratios[-1]:.2f}]" if len(ratios) > 1 else ""
    print(
        f"  {label:<44} old {statistics.median(old):9.4f}s  new {statistics.median(new):9.4f}s"
        f"  new/old {statistics.median(ratios):5.2f}x {spread:<11} {note}"
    )


# ------------------------------------------------------------------------------ items


def bench_lora(base: Any, repeats: int) -> None:
    from mmie.study.suite import load_eval_sets

    config = mmie.demo_config()
    sets = load_eval_sets(config)
    model, tok = mmie.load_demo_model()
    outputs: dict[str, Any] = {}

    def run(pkg: Any, name: str, **kw: Any) -> None:
        cfg = pkg.UnlearnConfig(
            objective="npo", steps=100, lr=5e-3, kl_weight=3.0, max_length=128, seed=0
        )
        with pkg.lora_arm(
            model, tok, sets.forget_train, sets.retain_train, config=cfg, rank=8
        ) as result:
            weights = [
                p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n
            ]
            outputs[name] = ([h.loss for h in result.history], weights)

    med = interleaved({"old": lambda: run(base, "old"), "new": lambda: run(mmie, "new")}, repeats)
    (loss_old, w_old), (loss_new, w_new) = outputs["old"], outputs["new"]
    d_loss = max(abs(a - b) / max(1.0, abs(a)) for a, b in zip(loss_old, loss_new))
    d_w = max(float((a - b).abs().max()) for a, b in zip(w_old, w_new))
    print("lora: unlearn_lora on the demo model (NPO + KL, 100 steps, rank 8)")
    ratio_line(
        "LoRA NPO arm",
        med["old"],
        med["new"],
        f"max rel |dloss| {d_loss:.1e}, max |dw| {d_w:.1e}",
    )


def bench_generation(base: Any, repeats: int) -> None:
    from mmie_base.study.suite import evaluate_model as evaluate_old
    from mmie_base.study.suite import load_eval_sets as load_old

    from mmie.study.suite import evaluate_model, load_eval_sets

    metrics = ("forget_es", "mixed_es", "leakage", "redistribution", "english")
    config = mmie.demo_config(metrics=metrics)
    config_old = base.demo_config(metrics=metrics)
    sets, sets_old = load_eval_sets(config), load_old(config_old)
    model, tok = mmie.load_demo_model()
    names = [k for k in sets.prompts]  # the sets these metric groups continue
    outputs: dict[str, Any] = {}

    def generate_old() -> None:  # what evaluate_model did: one generate call per set
        outputs["gen_old"] = {
            name: base.generate(
                model, tok, sets_old.prompts[name], max_new_tokens=32, batch_size=16
            )
            for name in names
        }

    def generate_new() -> None:
        from mmie.study.suite import _generate_sets

        outputs["gen_new"] = _generate_sets(model, tok, sets, names, config, [], 8192, False)

    def evaluate(which: str) -> None:
        if which == "old":
            outputs["old"] = evaluate_old(model, tok, sets_old, config_old)
        else:
            outputs["new"] = evaluate_model(model, tok, sets, config)

    med = interleaved({"old": generate_old, "new": generate_new}, repeats)
    same = all(outputs["gen_old"][n] == outputs["gen_new"][n] for n in names)
    n_prompts = sum(len(sets.prompts[n]) for n in names)
    print(f"generation: the demo model, {len(names)} greedy prompt sets ({n_prompts} prompts)")
    ratio_line("greedy generation of every set", med["old"], med["new"], f"identical: {same}")
    med = interleaved({"old": lambda: evaluate("old"), "new": lambda: evaluate("new")}, repeats)
    rec_old = {k: r.to_dict() for k, r in outputs["old"][0].items()}
    rec_new = {k: r.to_dict() for k, r in outputs["new"][0].items()}
    differ = sorted(k for k in rec_old.keys() | rec_new.keys() if rec_old.get(k) != rec_new.get(k))
    # english_fluency is scored against each prompt's own continuation since aaef526 (a fix
    # merged after the baseline revision): another definition, not a throughput change
    unexplained = [k for k in differ if k != "english_fluency"]
    ratio_line(
        "evaluate_model (" + ", ".join(metrics) + ")",
        med["old"],
        med["new"],
        f"{len(rec_new) - len(differ)}/{len(rec_new)} records identical"
        + (f"; differ: {', '.join(differ)}" if differ else "")
        + ("" if unexplained else " (fluency: redefined since the baseline)"),
    )


def bench_next_char(base: Any, repeats: int) -> None:
    from mmie.study.suite import load_eval_sets
    from mmie.testing import byte_tokenizer, tiny_causal_lm

    model, tok = mmie.load_demo_model()
    prompts = load_eval_sets(mmie.demo_config()).prompts["forget"]
    print("next_char: script_mass(mode='next_char')")
    cases = [("demo model, 48 forget prompts", model, tok, list(prompts), 16, 1e-3)]
    rand, btok = tiny_causal_lm("llama", seed=0, hidden_size=64, num_layers=4), byte_tokenizer()
    word = "नमस्ते दुनिया, आज "
    for n_bytes in (16, 64, 256):
        text = (word * 20).encode()[:n_bytes].decode("utf-8", "ignore")
        cases.append(
            (f"random Llama, byte tokens, {n_bytes}-byte prompts", rand, btok, [text] * 8, 8, 1e-3)
        )
    for label, m, t, ps, bs, tol in cases:
        results: dict[str, Any] = {}

        def run(pkg: Any, name: str, *, args: tuple[Any, ...], out: dict[str, Any]) -> None:
            m, t, ps, bs, tol = args
            out[name] = pkg.script_mass(
                m, t, ps, "hi", mode="next_char", batch_size=bs, max_length=512, tol=tol
            )

        case = {"args": (m, t, ps, bs, tol), "out": results}
        med = interleaved(
            {
                "old": functools.partial(run, base, "old", **case),
                "new": functools.partial(run, mmie, "new", **case),
            },
            repeats,
        )
        old, new = results["old"], results["new"]
        diff = max(
            abs(a - b) for a, b in zip(old.values + old.unresolved, new.values + new.unresolved)
        )
        ratio_line(
            label, med["old"], med["new"], f"max |diff| {diff:.1e}, {new.n_forward} sequences"
        )


def bench_small(base: Any, repeats: int) -> None:
    from mmie_base.models.tokenization import tokenize as tokenize_old

    from mmie.models.tokenization import tokenize
    from mmie.study.datasets import load_texts

    _, tok = mmie.load_demo_model()
    texts = load_texts("hindi_eval")[:16]
    n = 200
    n_free = 20  # the baseline's gc.collect() per call is slow with many live objects

    def many(fn: Callable[[], Any], times: int = n) -> Callable[[], None]:
        def run() -> None:
            for _ in range(times):
                fn()

        return run

    print("small: tokenize with max_length; free_memory")
    med = interleaved(
        {
            "old": many(lambda: tokenize_old(tok, texts, max_length=128)),
            "new": many(lambda: tokenize(tok, texts, max_length=128)),
        },
        repeats,
    )
    a, b = tokenize_old(tok, texts, max_length=128), tokenize(tok, texts, max_length=128)
    same = all(torch.equal(a[k], b[k]) for k in a)
    ratio_line(
        f"tokenize, 16 texts, max_length=128 (x{n})", med["old"], med["new"], f"identical: {same}"
    )
    # free_memory per arm, with a study's objects alive (the demo sets, a model, a peft model)
    from peft import LoraConfig, get_peft_model

    from mmie.study.suite import load_eval_sets

    keep = [
        load_eval_sets(mmie.demo_config()),
        get_peft_model(mmie.load_demo_model()[0], LoraConfig(r=4, target_modules=["q_proj"])),
    ]
    med = interleaved(
        {"old": many(base.free_memory, n_free), "new": many(mmie.free_memory, n_free)}, repeats
    )
    ratio_line(
        f"free_memory() with a study's objects alive (x{n_free})",
        med["old"],
        med["new"],
        f"{len(gc.get_objects())} tracked objects",
    )
    del keep


def cpu_bf16_flags() -> list[str]:
    """The CPU's bf16 instruction sets (``avx512_bf16``, ``amx_bf16``) from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return sorted(f for f in flags if f in {"avx512_bf16", "amx_bf16", "amx_tile"})


def bench_topk(base: Any, repeats: int) -> None:
    from mmie_base.edits.sae_gate import _build_plan as build_old

    from mmie.edits.sae_gate import _build_plan
    from mmie.sae.config import SAEConfig
    from mmie.sae.model import SparseAutoencoder

    cpu = torch.device("cpu")
    flags = cpu_bf16_flags()
    print(
        "topk: the TopK gate's activation per call; old = the fp32 gate of the baseline, "
        "auto = SAEGate's default (the fp32 pass on a CPU), mixed = topk_precision='mixed'"
    )
    print(f"  CPU bf16 instructions: {', '.join(flags) if flags else 'none'}")
    for d, d_sae in ((512, 8192), (1536, 24576)):
        sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=d, d_sae=d_sae, k=64), seed=0)
        features = tuple(range(0, d_sae, d_sae // 64))
        old = build_old(sae, 0, features, cpu)
        auto = _build_plan(sae, 0, features, cpu, topk_precision="auto")
        mixed = _build_plan(sae, 0, features, cpu, topk_precision="mixed")
        w32 = old.w_enc
        w16 = w32.to(torch.bfloat16)
        for tokens in (1, 8, 256):
            x = torch.randn(1, tokens, d, generator=torch.Generator().manual_seed(tokens))
            ref = old.feature_acts(x)
            same = torch.equal(ref, auto.feature_acts(x)) and torch.equal(
                ref, mixed.feature_acts(x)
            )
            cols = (
                mixed.mixed.candidates(x - mixed.b_dec_in, mixed.b_enc, 64) if mixed.mixed else None
            )
            note = f"exact: {same}; " + (
                f"{cols.numel()} candidate columns"
                if cols is not None
                else "fp32 pass (wide union)"
            )
            calls = 8 if tokens > 64 else 20
            x16 = x.to(torch.bfloat16)

            def many(plan: Any, x: torch.Tensor = x, calls: int = calls) -> None:
                for _ in range(calls):
                    plan.feature_acts(x)

            def matmul(a: torch.Tensor, w: torch.Tensor, calls: int = calls) -> None:
                for _ in range(calls):
                    a @ w

            med = interleaved(
                {
                    "old": functools.partial(many, old),
                    "auto": functools.partial(many, auto),
                    "mixed": functools.partial(many, mixed),
                    "mm32": functools.partial(matmul, x, w32),
                    "mm16": functools.partial(matmul, x16, w16),
                },
                max(repeats, 5),
            )
            label = f"d={d} d_sae={d_sae} k=64, {tokens} token(s) (x{calls})"
            ratio_line(label + " auto", med["old"], med["auto"], f"exact: {same}")
            ratio_line(label + " mixed", med["old"], med["mixed"], note)
            ratio_line(label + " bf16/fp32 matmul", med["mm32"], med["mm16"], "x @ W_enc alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", nargs="+", choices=ITEMS, default=list(ITEMS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision of the old code")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # truncation notices of long texts, deprecations
    base = baseline(args.baseline)
    print(
        f"baseline {args.baseline}; torch {torch.__version__}; 1 thread; medians of {args.repeats}"
    )
    benches = {
        "lora": bench_lora,
        "generation": bench_generation,
        "next_char": bench_next_char,
        "small": bench_small,
        "topk": bench_topk,
    }
    for item in args.items:
        benches[item](base, args.repeats)


if __name__ == "__main__":
    main()
