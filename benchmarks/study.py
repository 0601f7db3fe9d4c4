"""Where a study's time goes, and what a real-model study would cost on one GPU.

Runs a study in this process (default: ``mmie demo``; ``--quick``: ``mmie demo --quick``)
with a meter on every model it loads, then prints

1. **the per-phase breakdown**: wall seconds per phase (exclusive: a phase's time excludes
   the phases inside it), with forward tokens, backward tokens, forward calls and 1-token
   (decoding) steps. Phases: ``imports``, ``load`` (models), ``selection``, ``eval:<phase>``
   (the evaluation suite's own phases, :func:`mmie.study.suite.evaluate_model`'s
   ``profile``; for the base model, the references and every unit), ``robustness`` (the
   recoverability attacks and their steering directions), ``sae_activations``,
   ``sae_training``, ``sae_features``, ``scrubber``, ``train:lora`` / ``train:reft``
   (adapter training, reference cache included), ``report``, and ``other`` (the rest of
   ``run_experiment``: building arms, shards, the runner itself).
2. **a cost model**: each phase's measured token counts scaled to a real-model study by the
   work it does (prompts, texts, new tokens, training steps, evaluated models, trainings),
   converted to GPU time: forward ``2·N`` and (frozen-base adapter training) backward
   ``2·N`` FLOPs per token at ``--mfu`` of ``--peak-tflops``; decoding steps at
   ``--step-ms`` each (HF ``generate`` on a GPU is kernel-launch bound:
   ``benchmarks/dynamic_gating.py`` measured ~15 ms per step for a 16-block 0.9B model on an
   H100, ~0.9 ms per block); SAE training ``12·d·d_sae`` FLOPs per activation per step.
   The projected study: Qwen2-1.5B (``N`` = 1.54e9 matmul parameters, d_model 1536, 28
   blocks), 5 seeds × 8 arms (the demo's 7 and ``reft+sae_gate``) plus the 4 controls and
   the 2 references, 200 prompts per prompt set and 200 held-out texts, 64 new tokens, 256
   training texts per side, 200 adapter steps, 2000 SAE steps, and the demo's robustness
   group (every attack on the base, the references and each arm's first seed; its texts
   and prompts are fixed by ``robustness.n_texts``/``n_prompts``, so it scales with the
   attacked models). Token lengths are the demo tokenizer's (Qwen2's tokenizer is not
   available offline); every forward call costs at least ``--step-ms`` (small batches of a
   1.5B model on a GPU are launch bound like decoding steps).

Run: ``python benchmarks/study.py [--quick] [--out DIR]`` (the full demo: ~3-5 minutes on
2 cores).
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

import mmie  # noqa: E402
from mmie.study import arms as study_arms  # noqa: E402
from mmie.study import runner  # noqa: E402
from mmie.study.config import ArmConfig, ExperimentConfig, demo_config  # noqa: E402

T_IMPORTED = time.perf_counter()


# ------------------------------------------------------------------------------ the meter
@dataclass
class Phase:
    """What one phase cost."""

    seconds: float = 0.0
    forward_tokens: int = 0  # every position of every forward pass (padding included)
    backward_tokens: int = 0  # positions of forward passes made with gradients enabled
    forward_calls: int = 0
    backward_calls: int = 0
    decode_steps: int = 0  # forward calls of one position per row (generation steps)
    decode_rows: int = 0  # rows of those calls
    prefill_rows: int = 0  # rows of the other calls
    entries: int = 0  # times the phase was entered (e.g. evaluated models)


@dataclass
class Meter:
    """Exclusive wall time and token counts per phase (a stack of open phases)."""

    phases: dict[str, Phase] = field(default_factory=lambda: defaultdict(Phase))
    stack: list[list[Any]] = field(default_factory=list)  # [name, start, time in children]

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        frame: list[Any] = [name, time.perf_counter(), 0.0]
        self.phases[name].entries += 1
        self.stack.append(frame)
        try:
            yield
        finally:
            self.stack.pop()
            elapsed = time.perf_counter() - frame[1]
            self.phases[name].seconds += elapsed - frame[2]
            if self.stack:
                self.stack[-1][2] += elapsed

    @property
    def current(self) -> Phase:
        return self.phases[self.stack[-1][0] if self.stack else "other"]

    def count(self, _module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook of a model's input embedding: ``args[0]`` is ``input_ids``."""
        ids = args[0] if args else None
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            return
        p = self.current
        n = int(ids.numel())
        p.forward_calls += 1
        p.forward_tokens += n
        if torch.is_grad_enabled():
            p.backward_tokens += n
            p.backward_calls += 1
        if ids.shape[1] == 1:
            p.decode_steps += 1
            p.decode_rows += int(ids.shape[0])
        else:
            p.prefill_rows += int(ids.shape[0])


def instrument(meter: Meter, stack: contextlib.ExitStack) -> None:
    """Wrap the runner's and the study's steps in meter phases (restored on exit)."""
    patches: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, new: Any) -> None:
        patches.append((owner, name, getattr(owner, name)))
        setattr(owner, name, new)

    def timed(owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kw: Any) -> Any:
            with meter.phase(phase):
                return original(*args, **kw)

        patch(owner, name, wrapper)

    def timed_enter(owner: Any, name: str, phase: str) -> None:
        """A context-manager function: only its ``__enter__`` (training) is the phase."""
        original = getattr(owner, name)

        @contextlib.contextmanager
        def wrapper(*args: Any, **kw: Any) -> Iterator[Any]:
            cm = original(*args, **kw)
            with meter.phase(phase):
                value = cm.__enter__()
            try:
                yield value
            except BaseException as exc:
                if not cm.__exit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                cm.__exit__(None, None, None)

        patch(owner, name, wrapper)

    load = runner._load_model

    @contextlib.contextmanager
    def load_model(*args: Any, **kw: Any) -> Iterator[Any]:
        with meter.phase("load"):
            cm = load(*args, **kw)
            model, tok = cm.__enter__()
            embedding: torch.nn.Module = model.get_input_embeddings()  # type: ignore[operator]
            handle = embedding.register_forward_pre_hook(meter.count)
        try:
            yield model, tok
        finally:
            handle.remove()
            cm.__exit__(None, None, None)

    patch(runner, "_load_model", load_model)
    evaluate = runner.evaluate_model

    def evaluate_model(*args: Any, profile: Any = None, **kw: Any) -> Any:
        @contextlib.contextmanager
        def metered(name: str) -> Iterator[None]:
            with meter.phase(f"eval:{name}"):
                if profile is None:
                    yield
                else:
                    with profile(name):
                        yield

        return evaluate(*args, profile=metered, **kw)

    patch(runner, "evaluate_model", evaluate_model)
    timed(runner, "_select_layers", "selection")
    timed(runner, "attack_model", "robustness")
    timed(runner, "_directions", "robustness")
    timed(runner, "build_report", "report")
    timed(runner, "_write_report", "report")
    timed(study_arms, "collect_activations", "sae_activations")
    timed(study_arms, "train_sae", "sae_training")
    timed(study_arms.Study, "_pick", "sae_features")
    timed(study_arms, "fit_scrubber", "scrubber")
    timed_enter(study_arms, "lora_arm", "train:lora")
    timed_enter(study_arms, "reft_arm", "train:reft")

    def restore() -> None:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)

    stack.callback(restore)


def run_study(config: ExperimentConfig) -> tuple[Meter, float, Any]:
    meter = Meter()
    meter.phases["imports"].seconds = T_IMPORTED - T_START
    with contextlib.ExitStack() as stack:
        instrument(meter, stack)
        t0 = time.perf_counter()
        with meter.phase("other"):
            result = mmie.run_experiment(config, show_progress=False, resume=False)
        wall = time.perf_counter() - t0
    return meter, wall + meter.phases["imports"].seconds, result


def print_breakdown(meter: Meter, wall: float) -> None:
    print(f"\nper-phase breakdown (wall {wall:.1f} s, imports included)")
    print(
        f"  {'phase':<20} {'seconds':>8} {'share':>6} {'fwd tokens':>11} {'bwd tokens':>11}"
        f" {'fwd calls':>9} {'1-token steps':>13}"
    )
    for name, p in sorted(meter.phases.items(), key=lambda kv: -kv[1].seconds):
        print(
            f"  {name:<20} {p.seconds:8.2f} {p.seconds / wall:6.1%} {p.forward_tokens:11d}"
            f" {p.backward_tokens:11d} {p.forward_calls:9d} {p.decode_steps:13d}"
        )


# ------------------------------------------------------------------------------ cost model
@dataclass(frozen=True)
class Work:
    """What a study's config asks for, in the units the phases scale with."""

    evaluated: int  # evaluate_model calls: base + references + (seed, arm) units
    trainings: dict[str, int]  # adapter trainings per kind (shared parts trained once)
    training_steps: int
    prompts: int  # prompts per prompt set
    texts: int  # held-out texts scored teacher-forced
    train_texts: int  # training texts per side
    new_tokens: int
    sae_steps: int
    sae_units: int  # SAEs trained (seeds x layers)
    units: int  # (seed, arm) units
    attacked: int  # models the robustness group attacks (base, references, arms)


def work(config: ExperimentConfig) -> Work:
    """The work of ``config`` (seed-invariant arms once; shared trained parts once)."""
    arms = list(config.all_arms)
    units = sum(1 if a.seed_invariant else len(config.seeds) for a in arms)
    trained = {(a.trained_part, a.steps, a.lr, a.rank) for a in arms if a.trained_part}
    trainings = {
        kind: len(config.seeds) * sum(1 for t in trained if t[0] == kind)
        for kind in ("lora", "reft")
    }
    steps = max((a.steps for a in arms if a.trained_part), default=0)
    gated = any(a.gate_part for a in arms)
    r = config.robustness
    attacked = 0
    if "robustness" in config.metrics:
        seeds = len(config.seeds) if r.seeds == "all" else 1
        per_seed = [a for a in arms if r.controls or a.control is None]
        attacked = (
            1
            + len(config.references.named())
            + sum(1 if a.seed_invariant else seeds for a in per_seed)
        )
    return Work(
        evaluated=1 + len(config.references.named()) + units,
        trainings=trainings,
        training_steps=steps,
        prompts=config.data.n_eval,
        texts=config.data.n_scored,
        train_texts=config.data.n_forget,
        new_tokens=config.generation.max_new_tokens,
        sae_steps=config.sae.steps,
        sae_units=len(config.seeds) * config.selection.n_layers if gated else 0,
        units=units,
        attacked=attacked,
    )


def real_config() -> ExperimentConfig:
    """The projected study (see the module docstring)."""
    extra = ArmConfig(kind="reft+sae_gate", rank=4, steps=200, lr=5e-3, kl_weight=3.0)
    arms = tuple(a.replace(steps=200) if a.trained_part else a for a in demo_config().arms)
    return demo_config(
        seeds=(0, 1, 2, 3, 4),
        arms=(*arms, extra),
        data={"n_eval": 200, "n_eval_texts": 200, "n_forget": 256, "n_retain": 256},
        generation={"max_new_tokens": 64},
        sae={"steps": 2000},
    )


@dataclass(frozen=True)
class GPU:
    """The GPU the projection assumes."""

    peak_tflops: float
    mfu: float
    step_ms: float  # one decoding step of the projected model (launch bound)
    params: float  # matmul parameters of the projected model
    d_model: int
    sae_multiple: int


def factors(name: str, demo: Work, real: Work) -> tuple[float, float] | None:
    """How a phase's (teacher-forced or prefill tokens, generated tokens) grow from the demo
    to the projected study, or ``None`` for a phase that is not projected."""
    models = real.evaluated / demo.evaluated
    prompts = real.prompts / demo.prompts
    texts = real.texts / demo.texts
    train = real.train_texts / demo.train_texts
    new = real.new_tokens / demo.new_tokens
    per_phase = {
        "eval:generation": (models * prompts, models * prompts * new),
        "eval:sampled": (models * prompts, models * prompts * new),
        "eval:fluency": (models * prompts * (1 + new) / 2, 0.0),  # prompt + continuation
        "eval:script_mass": (models * prompts, models * prompts),
        "eval:leakage": (models * prompts, 0.0),  # related texts: n_eval per language
        "eval:retain_ppl": (models * texts, 0.0),
        "eval:forget_ppl": (models * texts, 0.0),
        "eval:probe": (models * texts, 0.0),
        "eval:mia": (models * train, 0.0),  # the members (non-members: forget_ppl's pass)
        "selection": (1.0, 0.0),  # selection.n_texts is the same
        "sae_activations": (train, 0.0),
        "scrubber": (train, 0.0),
    }
    if demo.attacked:  # the attacks' texts and prompts are fixed (robustness.n_texts, ...)
        ratio = real.attacked / demo.attacked
        per_phase["robustness"] = (ratio, ratio)
    for kind in ("lora", "reft"):
        if demo.trainings.get(kind):
            ratio = real.trainings[kind] / demo.trainings[kind]
            per_phase[f"train:{kind}"] = (ratio * real.training_steps / demo.training_steps, 0.0)
    return per_phase.get(name)


GPU_BATCH_TOKENS = 65536  # mmie.models.generation.DEFAULT_MAX_BATCH_TOKENS["cuda"]


@dataclass(frozen=True)
class Projected:
    """A phase of the projected study."""

    name: str
    tokens: float = 0.0  # forward positions
    calls: float = 0.0  # forward calls (passes and decoding steps)
    backward_tokens: float = 0.0
    backward_calls: float = 0.0
    steps: float = 0.0  # of the calls, decoding steps
    flops: float = 0.0  # FLOPs outside the model (SAE training)

    def seconds(self, gpu: GPU) -> float:
        """Each call costs at least ``step_ms`` (launch bound) and at least its FLOPs at the
        effective rate: forward ``2N`` per position, backward through a frozen base ``2N``
        (activation gradients only; adapter weight gradients are negligible)."""
        rate = gpu.peak_tflops * 1e12 * gpu.mfu
        floor = gpu.step_ms / 1e3
        forward = max(self.calls * floor, 2 * gpu.params * self.tokens / rate)
        backward = max(self.backward_calls * floor, 2 * gpu.params * self.backward_tokens / rate)
        return forward + backward + self.flops / rate


def project_phase(name: str, p: Phase, demo: Work, real: Work, cfg: ExperimentConfig) -> Projected:
    """A measured phase, scaled to the projected study (see :func:`factors`)."""
    scale = factors(name, demo, real)
    assert scale is not None
    tf, gen = scale
    prefill_tokens = p.forward_tokens - p.decode_rows
    prefill_calls = p.forward_calls - p.decode_steps
    tokens = prefill_tokens * tf + p.decode_rows * gen
    models = p.entries * real.evaluated / demo.evaluated
    if name == "eval:generation":  # every greedy prompt set in token-budget batches
        rows = p.prefill_rows / p.entries * real.prompts / demo.prompts
        prompt = prefill_tokens / max(p.prefill_rows, 1)
        batches = models * math.ceil(rows * (prompt + real.new_tokens) / GPU_BATCH_TOKENS)
        steps = batches * real.new_tokens
    elif name == "eval:sampled":  # generation.batch_size prompts x n_samples rows a batch
        batches = models * math.ceil(real.prompts / cfg.generation.batch_size)
        steps = batches * real.new_tokens
    else:  # the same batches, more of them (script mass: its branch expansions too)
        batches = prefill_calls * tf
        steps = p.decode_steps * gen
    calls = batches + steps
    backward, backward_calls = p.backward_tokens * tf, p.backward_calls * tf
    if name.startswith("train:"):  # the reference cache grows with texts, not with steps
        kind = name.split(":", 1)[1]
        ratio = real.train_texts / demo.train_texts * real.trainings[kind] / demo.trainings[kind]
        tokens = backward + (p.forward_tokens - p.backward_tokens) * ratio
        calls = backward_calls + (p.forward_calls - p.backward_calls) * ratio
    return Projected(name, tokens, calls, backward, backward_calls, steps)


def project(meter: Meter, demo_cfg: ExperimentConfig, gpu: GPU) -> float:
    """Print the projection; returns its GPU hours."""
    demo, real = work(demo_cfg), work(real_config())
    rows = [
        project_phase(name, p, demo, real, demo_cfg)
        for name, p in meter.phases.items()
        if factors(name, demo, real) is not None
    ]
    # SAE training: 12 d d_sae FLOPs per activation and step (encode, decode, backward)
    d_sae = gpu.d_model * gpu.sae_multiple
    sae = real.sae_units * real.sae_steps * demo_cfg.sae.batch_size * 12 * gpu.d_model * d_sae
    rows.append(Projected("sae_training", flops=sae))
    seconds = {r.name: r.seconds(gpu) for r in rows}
    total = sum(seconds.values())
    cfg = real_config()
    print(
        f"\nprojection: Qwen2-1.5B-sized study, {len(cfg.seeds)} seeds x {len(cfg.arms)} arms "
        f"+ {len(cfg.controls)} controls ({real.units} units, {real.evaluated} evaluated "
        f"models, trainings {real.trainings}), {real.prompts} prompts per set, "
        f"{real.texts} scored texts, {real.new_tokens} new tokens, robustness on "
        f"({real.attacked} attacked models)"
    )
    print(
        f"  GPU: {gpu.peak_tflops:.0f} TFLOP/s bf16 peak at {gpu.mfu:.0%} MFU; each forward "
        f"call (and backward) at least {gpu.step_ms:.0f} ms"
    )
    print(
        f"  {'phase':<20} {'fwd tokens':>10} {'bwd tokens':>10} {'fwd calls':>10}"
        f" {'1-token steps':>13} {'GPU hours':>9} {'share':>6}"
    )
    for r in sorted(rows, key=lambda r: -seconds[r.name]):
        print(
            f"  {r.name:<20} {r.tokens:10.3g} {r.backward_tokens:10.3g} {r.calls:10.0f}"
            f" {r.steps:13.0f} {seconds[r.name] / 3600:9.3f} {seconds[r.name] / total:6.1%}"
        )
    print(f"  {'total':<20} {'':>10} {'':>10} {'':>10} {'':>13} {total / 3600:9.2f}")
    flops = sum(2 * gpu.params * (r.tokens + r.backward_tokens) + r.flops for r in rows)
    rate = gpu.peak_tflops * 1e12 * gpu.mfu
    print(
        f"  model FLOPs {flops:.2g}: {flops / rate / 3600:.3f} GPU hours if no call were "
        "launch bound"
    )
    return total / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick demo")
    parser.add_argument("--out", default=None, help="output directory (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM bf16 dense")
    parser.add_argument("--mfu", type=float, default=0.4)
    parser.add_argument("--step-ms", type=float, default=26.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # truncation notices of long texts
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mmie-study-bench-"))
    config = demo_config(quick=args.quick, output_dir=str(out), plots=False)
    meter, wall, result = run_study(config)
    units = len(result.computed)
    print(
        f"{'mmie demo --quick' if args.quick else 'mmie demo'}: {units} units, "
        f"torch {torch.__version__}, {args.threads} thread(s)"
    )
    print_breakdown(meter, wall)
    gpu = GPU(
        peak_tflops=args.peak_tflops,
        mfu=args.mfu,
        step_ms=args.step_ms,
        params=1.54e9,
        d_model=1536,
        sae_multiple=config.sae.d_sae_multiple,
    )
    project(meter, config, gpu)
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
