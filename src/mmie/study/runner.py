"""Run a whole study from its config, resumably, and aggregate results into reports.

:func:`run_experiment` does, in order:

1. load the model once (``config.model``, or the bundled demo model for ``"demo"``) and the
   text sets;
2. the **base shard** (once per output directory): layer selection and the base model's
   metrics, with per-item values;
3. for each seed and each arm: build the arm on the single base model, train, evaluate,
   release (:meth:`mmie.study.arms.Study.arm`), and write the (seed, arm) result to its own shard,
   atomically, before the next starts. Each unit runs inside :func:`mmie.seed_context`
   ``(seed)``, so its result does not depend on which units ran before it in the process;
4. the report, computed from the shards alone: ``report.json`` (validated against the
   schema), ``report.md`` and, with matplotlib, plots.

Rerunning the same command skips every unit whose shard exists with status ``"ok"`` and the
same config, so a killed run resumes where it stopped and yields the same report. A unit
that raises is logged with its traceback (``logger.exception``) and recorded as
``"failed"`` with the error; it is retried on the next run. ``seeds=``/``arms=`` run a
subset (separate jobs writing into separate directories, or the same shared one), and
:func:`aggregate` merges the shards of several directories into one report.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from mmie._io import atomic_write_json
from mmie._validation import choice
from mmie.errors import ConfigError, DataError
from mmie.evaluation.layer_selection import ActivationCache, select_layers
from mmie.models.blocks import num_layers
from mmie.models.loading import free_memory, load_causal_lm
from mmie.seeding import seed_context
from mmie.study.arms import Study
from mmie.study.config import ArmConfig, ExperimentConfig
from mmie.study.demo import DEMO_MODELS, DemoModel, demo_model_path, load_demo_model
from mmie.study.environment import environment_manifest
from mmie.study.plots import plot_report
from mmie.study.report import Report, build_report
from mmie.study.robustness import attack_model, fit_directions, load_directions, save_directions
from mmie.study.schema import validate_report
from mmie.study.shards import (
    SHARD_FORMAT_VERSION,
    arm_fingerprint,
    base_shard_path,
    config_fingerprint,
    load_shards,
    read_json,
    reference_shard_path,
    unit_shard_path,
)
from mmie.study.suite import EvalSets, evaluate_model, fluency_record, load_eval_sets

__all__ = ["ExperimentResult", "UnitFailure", "aggregate", "run_experiment"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitFailure:
    """A (seed, arm) that raised.

    Attributes:
        seed: the seed.
        arm: the arm name.
        error: ``"ExceptionType: message"``.
    """

    seed: int
    arm: str
    error: str


@dataclass(frozen=True)
class ExperimentResult:
    """What :func:`run_experiment` did.

    Attributes:
        report: the report over every shard in the output directory.
        output_dir: the output directory.
        paths: files written (``"json"``, ``"markdown"``, and ``"plot:<name>"`` entries).
        computed: (seed, arm) units computed by this call.
        resumed: (seed, arm) units taken from existing shards.
        failures: units that raised in this call.
    """

    report: Report
    output_dir: Path
    paths: dict[str, Path]
    computed: tuple[tuple[int, str], ...] = ()
    resumed: tuple[tuple[int, str], ...] = ()
    failures: tuple[UnitFailure, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Whether no unit failed in this call."""
        return not self.failures


def _resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def _load_model(
    config: ExperimentConfig, device: str, name: str | None = None
) -> Iterator[tuple[nn.Module, PreTrainedTokenizerBase]]:
    """Load ``name`` (default: the study's model); ``"demo"``/``"demo:<which>"`` are the
    bundled demo models."""
    import torch

    name = config.model if name is None else name
    dtype = getattr(torch, config.dtype)
    demo: DemoModel | None = None
    if name == "demo":
        demo = "base"
    elif name.startswith("demo:"):
        demo = cast(DemoModel, choice(name.split(":", 1)[1], "model", DEMO_MODELS))
    if device == "sharded":  # every intervention places its tensors per block
        path = demo_model_path(demo) if demo is not None else name
        model, tokenizer = load_causal_lm(path, dtype=dtype, device_map="auto")
    elif demo is not None:
        model, tokenizer = load_demo_model(demo, dtype=dtype, device=device)
    else:
        model, tokenizer = load_causal_lm(name, dtype=dtype, device=device)
    try:
        yield model, tokenizer
    finally:
        del model
        free_memory(collect=True)


def _select_layers(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, config: ExperimentConfig, sets: EvalSets
) -> tuple[tuple[int, ...], dict[str, Any]]:
    sel = config.selection
    n_blocks = num_layers(model)
    if sel.mode == "fixed":
        bad = [layer for layer in sel.layers if layer >= n_blocks]
        if bad:
            raise ConfigError(
                f"selection.layers: {bad} out of range for this {n_blocks}-block model "
                f"(layers 0..{n_blocks - 1})"
            )
        return tuple(sel.layers), {"mode": "fixed"}
    if sel.n_layers > n_blocks:
        raise ConfigError(
            f"selection.n_layers: {sel.n_layers} exceeds the model's {n_blocks} blocks"
        )

    n = min(sel.n_texts, len(sets.forget_train), len(sets.retain_train))
    cache = ActivationCache(
        model,
        tokenizer,
        batch_size=config.data.batch_size,
        max_length=config.data.max_length,
        keep_tokens=False,
    )
    result = select_layers(
        cache,
        sets.forget_train[:n],
        sets.retain_train[:n],
        mode=sel.mode,
        top_k=sel.n_layers,
        stability_seeds=sel.stability_seeds,
        seed=0,
    )
    info = result.to_dict()
    info.pop("n_forward", None)
    return tuple(result.layers), info


def _check_subset(
    requested: Sequence[Any] | None, available: Sequence[Any], what: str
) -> list[Any]:
    if requested is None:
        return list(available)
    if isinstance(requested, (str, int)):
        raise TypeError(f"{what} must be a sequence, got {requested!r}")
    chosen = list(dict.fromkeys(requested))
    unknown = [x for x in chosen if x not in available]
    if unknown:
        raise ConfigError(
            f"{what}: {unknown} not in the config's {what} {list(available)}; add them to the "
            "config first"
        )
    return [x for x in available if x in chosen]  # config order


def _reusable(path: Path, fingerprint: str, arm_fp: str | None) -> bool:
    if not path.is_file():
        return False
    try:
        shard = read_json(path)
    except DataError:
        logger.warning("ignoring unreadable shard %s (it will be recomputed)", path, exc_info=True)
        return False
    if (
        shard.get("format_version") != SHARD_FORMAT_VERSION
        or shard.get("fingerprint") != fingerprint
    ):
        return False
    if arm_fp is not None and shard.get("arm_fingerprint") != arm_fp:
        logger.info("%s was written with other arm options; recomputing it", path.name)
        return False
    return bool(shard.get("status", "ok") == "ok")


def _prepare_output(out: Path, fingerprint: str, resume: bool) -> None:
    base = base_shard_path(out)
    if not base.is_file():
        return
    try:
        old = read_json(base).get("fingerprint")
    except DataError:
        logger.warning("unreadable base shard %s; recomputing it", base, exc_info=True)
        return
    if old == fingerprint:
        return
    if resume:
        raise ConfigError(
            f"output_dir {out} holds results of a different config (fingerprint {old}, this "
            f"config {fingerprint}); choose another output directory, or rerun without resume "
            "(--no-resume) to discard them"
        )
    stale = sorted(base.parent.glob("*.json"))
    logger.warning("discarding %d shard(s) of another config in %s", len(stale), base.parent)
    for path in stale:
        path.unlink()


def _plan_units(
    config: ExperimentConfig,
    out: Path,
    fingerprint: str,
    seeds: Sequence[int],
    arms: Sequence[str],
    *,
    resume: bool,
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The (seed, arm) units to compute, and those whose shards can be reused.

    A seed-invariant arm (nothing random goes into it: controls other than noise, a plain
    scrubber) is one unit, at the config's first seed; a run whose seeds do not include
    that seed leaves it to the run that does.
    """
    canonical = config.seeds[0]
    wanted = [
        (seed, name)
        for seed in seeds
        for name in arms
        if not config.arm(name).seed_invariant or seed == canonical
    ]
    todo = [
        (seed, name)
        for seed, name in wanted
        if not (
            resume
            and _reusable(
                unit_shard_path(out, seed, name), fingerprint, arm_fingerprint(config.arm(name))
            )
        )
    ]
    resumed = [unit for unit in wanted if unit not in todo]
    if resumed:
        logger.info(
            "resuming: %d of %d unit(s) already have shards", len(resumed), len(resumed) + len(todo)
        )
    return todo, resumed


def _evaluate_references(
    config: ExperimentConfig,
    sets: EvalSets,
    fingerprint: str,
    env: dict[str, Any],
    out: Path,
    device: str,
    *,
    resume: bool,
) -> None:
    """Evaluate each reference model like the base model, one model in memory at a time.

    The fluency of a reference's English continuations is scored later by the base model
    (:func:`_score_reference_fluency`), when it is loaded.
    """
    for name, source in config.references.named().items():
        path = reference_shard_path(out, name)
        if resume and _reusable(path, fingerprint, None):
            continue
        t0 = time.perf_counter()
        with _load_model(config, device, source) as (model, tok), seed_context(0):
            model.eval()
            records, generations = evaluate_model(model, tok, sets, config, score_fluency=False)
        atomic_write_json(
            path,
            {
                "format_version": SHARD_FORMAT_VERSION,
                "kind": "reference",
                "fingerprint": fingerprint,
                "name": name,
                "model": source,
                "metrics": {k: r.to_dict() for k, r in records.items()},
                "generations": generations,
                "fluency_scored": False,
                "environment": env,
                "timings": {"evaluation_s": time.perf_counter() - t0},
            },
        )
        logger.info("reference %s (%s) evaluated", name, source)


def _score_reference_fluency(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: ExperimentConfig,
    sets: EvalSets,
    out: Path,
) -> None:
    """Add the base model's fluency score of each reference's English continuations."""
    if "english" not in config.metrics:
        return
    for name in config.references.named():
        path = reference_shard_path(out, name)
        if not path.is_file():
            continue
        shard = read_json(path)
        if shard.get("fluency_scored"):
            continue
        record = fluency_record(model, tokenizer, sets, config, shard["generations"]["english"])
        shard["metrics"]["english_fluency"] = record.to_dict()
        shard["fluency_scored"] = True
        atomic_write_json(path, shard)


def _evaluate_base(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: ExperimentConfig,
    sets: EvalSets,
    fingerprint: str,
    env: dict[str, Any],
    path: Path,
    directions_path: Path,
) -> tuple[int, ...]:
    """Select the layers, evaluate (and attack) the base model and write the base shard."""
    t0 = time.perf_counter()
    phases = _PhaseTimer()
    with seed_context(0):
        layers, selection = _select_layers(model, tokenizer, config, sets)
        t1 = time.perf_counter()
        records, generations = evaluate_model(
            model, tokenizer, sets, config, probe_layers=layers, profile=phases
        )
    t2 = time.perf_counter()
    robustness: dict[str, Any] = {}
    if "robustness" in config.metrics:
        directions = _directions(model, tokenizer, config, sets, layers, directions_path)
        with seed_context(0):
            robustness = attack_model(
                model, tokenizer, sets, config, layers=layers, directions=directions
            )
    atomic_write_json(
        path,
        {
            "format_version": SHARD_FORMAT_VERSION,
            "kind": "base",
            "fingerprint": fingerprint,
            "config": config.to_dict(),
            "layers": list(layers),
            "selection": selection,
            "items": sets.items(),
            "metrics": {k: r.to_dict() for k, r in records.items()},
            "generations": generations,
            "robustness": robustness,
            "environment": env,
            "timings": {
                "selection_s": t1 - t0,
                "evaluation_s": t2 - t1,
                "robustness_s": time.perf_counter() - t2,
                "phases": phases.seconds,
            },
        },
    )
    logger.info("base model evaluated; layers %s", list(layers))
    return layers


def run_experiment(
    config: ExperimentConfig,
    *,
    seeds: Sequence[int] | None = None,
    arms: Sequence[str] | None = None,
    resume: bool = True,
    show_progress: bool = True,
    model: nn.Module | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> ExperimentResult:
    """Run (or resume) a study and write its shards and reports to ``config.output_dir``.

    Args:
        config: the study.
        seeds: run only these seeds (a subset of ``config.seeds``), e.g. one job per seed.
        arms: run only these arms (names from ``config.arms``).
        resume: reuse existing shards of the same config (``False`` recomputes every unit of
            this call and discards shards of another config in the directory).
        show_progress: show a progress bar over the (seed, arm) units.
        model: an already loaded base model to use instead of loading ``config.model`` (the
            caller keeps it; ``config.model`` is still what the report names).
        tokenizer: its tokenizer (required with ``model``).

    Returns:
        An :class:`ExperimentResult`; its report covers every shard in the directory
        (missing units are listed as such).

    Raises:
        ConfigError: a requested seed/arm is not in the config, or the directory holds
            results of another config while ``resume`` is on.
        DataError: a bad line in a data file (the message names the file and line).
        InterventionError: an arm could not be released cleanly (the study stops rather
            than contaminate later arms).

    Errors inside a (seed, arm) unit do not stop the study: they are logged with their
    traceback and recorded in the shard and the report as ``"failed"``.
    """

    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    if (model is None) != (tokenizer is None):
        raise TypeError("pass model and tokenizer together, or neither")
    run_seeds = _check_subset(seeds, config.seeds, "seeds")
    arm_names = [a.name for a in config.all_arms]
    run_arms = _check_subset(arms, arm_names, "arms")
    out = Path(config.output_dir)
    fingerprint = config_fingerprint(config)
    _prepare_output(out, fingerprint, resume)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_dict())
    sets = load_eval_sets(config)  # data errors surface before any model is loaded
    device = _resolve_device(config.device)
    env = environment_manifest(device)

    todo, resumed = _plan_units(config, out, fingerprint, run_seeds, run_arms, resume=resume)
    base_path = base_shard_path(out)
    artifacts = out / "artifacts" / fingerprint  # never mixes configs
    directions_path = artifacts / "steering_directions.safetensors"
    need_base = not (resume and _reusable(base_path, fingerprint, None))
    computed: list[tuple[int, str]] = []
    failures: list[UnitFailure] = []

    # references are evaluated alone, each loaded and freed before the base model is used
    _evaluate_references(config, sets, fingerprint, env, out, device, resume=resume)
    if todo or need_base or _needs_fluency(config, out):
        loader = (
            contextlib.nullcontext((model, tokenizer))
            if model is not None
            else _load_model(config, device)
        )
        with loader as (base_model, tok):
            assert base_model is not None
            assert tok is not None
            base_model.eval()
            if need_base:
                _evaluate_base(
                    base_model, tok, config, sets, fingerprint, env, base_path, directions_path
                )
            base_shard = read_json(base_path)
            layers = tuple(base_shard["layers"])
            _score_reference_fluency(base_model, tok, config, sets, out)
            study = Study(
                base_model,
                tok,
                config,
                sets,
                layers,
                artifacts=artifacts,
                show_progress=False,
                base_shard=base_shard,  # arms that score as the base reuse its records
            )
            if "robustness" in config.metrics:  # fitted on the clean base, before any arm
                study.directions = _directions(
                    base_model, tok, config, sets, layers, directions_path
                )
            bar = tqdm(todo, desc="mmie study", unit="run", disable=not show_progress)
            for i, (seed, name) in enumerate(bar):
                bar.set_postfix_str(f"seed {seed} {name}")
                failure = _run_unit(study, config, seed, name, fingerprint, env, out)
                computed.append((seed, name))
                if failure is not None:
                    failures.append(failure)
                if i + 1 == len(todo) or todo[i + 1][0] != seed:
                    study.release_seed(seed)  # this seed's SAEs are no longer needed

    _attack_references(config, sets, out, device, directions_path)
    report = build_report(load_shards([out]))
    validate_report(report.data)
    paths = _write_report(report, out, config.plots)
    return ExperimentResult(
        report=report,
        output_dir=out,
        paths=paths,
        computed=tuple(computed),
        resumed=tuple(resumed),
        failures=tuple(failures),
    )


def _attacked(config: ExperimentConfig, arm: ArmConfig, seed: int) -> bool:
    """Whether the robustness attacks run on this (seed, arm)."""
    r = config.robustness
    if "robustness" not in config.metrics or (arm.control is not None and not r.controls):
        return False
    return r.seeds == "all" or seed == config.seeds[0]


def _directions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: ExperimentConfig,
    sets: EvalSets,
    layers: Sequence[int],
    path: Path,
) -> dict[int, Tensor] | None:
    """The study's steering directions, fitted on the clean base model once and cached."""
    if "steering" not in config.robustness.attacks:
        return None
    if path.is_file():
        return load_directions(path)
    with seed_context(0):
        directions = fit_directions(model, tokenizer, sets, config, layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_directions(directions, path)
    return directions


def _attack_references(
    config: ExperimentConfig, sets: EvalSets, out: Path, device: str, directions_path: Path
) -> None:
    """Attack each reference model like the base (one model in memory at a time; after the
    base model is freed, since the attacks need its layers and steering directions)."""
    if "robustness" not in config.metrics:
        return
    base = read_json(base_shard_path(out))
    layers = tuple(base["layers"])
    directions = load_directions(directions_path) if directions_path.is_file() else None
    for name, source in config.references.named().items():
        path = reference_shard_path(out, name)
        if not path.is_file():
            continue
        shard = read_json(path)
        if shard.get("robustness"):
            continue
        t0 = time.perf_counter()
        with _load_model(config, device, source) as (model, tok), seed_context(0):
            model.eval()
            shard["robustness"] = attack_model(
                model, tok, sets, config, layers=layers, directions=directions
            )
        shard.setdefault("timings", {})["robustness_s"] = time.perf_counter() - t0
        atomic_write_json(path, shard)
        logger.info("reference %s attacked", name)


def _needs_fluency(config: ExperimentConfig, out: Path) -> bool:
    if "english" not in config.metrics:
        return False
    for name in config.references.named():
        path = reference_shard_path(out, name)
        if path.is_file() and not read_json(path).get("fluency_scored"):
            return True
    return False


def _run_unit(
    study: Study,
    config: ExperimentConfig,
    seed: int,
    name: str,
    fingerprint: str,
    env: dict[str, Any],
    out: Path,
) -> UnitFailure | None:
    """Build, train, evaluate and release one (seed, arm); write its shard."""

    arm = config.arm(name)
    shard: dict[str, Any] = {
        "format_version": SHARD_FORMAT_VERSION,
        "kind": "unit",
        "fingerprint": fingerprint,
        "arm_fingerprint": arm_fingerprint(arm),
        "seed": seed,
        "arm": name,
        "arm_config": arm.to_dict(),
        "seed_invariant": arm.seed_invariant,
        "environment": env,
    }
    t0 = time.perf_counter()
    failure: UnitFailure | None = None
    try:
        with seed_context(seed), study.arm(arm, seed) as state:
            t1 = time.perf_counter()
            phases = _PhaseTimer()
            reuse = study.reuse(state)
            records, generations = evaluate_model(
                state.model,
                study.tokenizer,
                study.sets,
                config,
                logits_processors=state.logits_processors,
                probe_layers=study.layers,
                reference=state.reference,
                profile=phases,
                **reuse,
            )
            robustness: dict[str, Any] = {}
            if _attacked(config, arm, seed):
                t2 = time.perf_counter()
                robustness = attack_model(
                    state.model,
                    study.tokenizer,
                    study.sets,
                    config,
                    layers=study.layers,
                    directions=study.directions,
                    kind=arm.kind,
                    logits_processors=state.logits_processors,
                )
                robustness["total_s"] = time.perf_counter() - t2
            info = state.info
        shard["reused"] = _reused(reuse, records)
        shard.update(
            status="ok",
            error=None,
            metrics={k: r.to_dict() for k, r in records.items()},
            info=info,
            generations=generations,
            robustness=robustness,
            timings={
                "build_train_s": t1 - t0,
                "total_s": time.perf_counter() - t0,
                "phases": phases.seconds,
            },
        )
        logger.info("seed %d, arm %s: done", seed, name)
    except Exception as exc:
        # Recorded, not swallowed: logged with its traceback and written to the shard.
        logger.exception("seed %d, arm %s failed", seed, name)
        error = {
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
        }
        shard.update(
            status="failed",
            error=error,
            metrics={},
            info={},
            generations={},
            timings={"total_s": time.perf_counter() - t0},
        )
        failure = UnitFailure(seed=seed, arm=name, error=f"{error['type']}: {error['message']}")
    atomic_write_json(unit_shard_path(out, seed, name), shard)
    return failure


class _PhaseTimer:
    """``evaluate_model``'s ``profile``: wall seconds per evaluation phase (summed)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0


def _reused(reuse: dict[str, Any], records: dict[str, Any]) -> dict[str, Any]:
    """What a unit took from the base shard instead of computing it (shard provenance)."""
    base = reuse.get("base_records", {})
    return {
        "records": sorted(k for k, r in records.items() if base.get(k) is r),
        "generations": "base_generations" in reuse,
    }


def _write_report(report: Report, out: Path, plots: bool | None) -> dict[str, Path]:
    paths = report.write(out)
    if plots is False:
        return dict(paths)
    try:
        figures = plot_report(report, out / "plots")
    except ImportError:
        if plots:
            raise
        logger.info("matplotlib is not installed: no plots (install mmie[plot])")
        return dict(paths)
    result = dict(paths)
    result.update({f"plot:{p.stem}": p for p in figures})
    return result


def aggregate(
    directories: Sequence[str | Path],
    *,
    output_dir: str | Path | None = None,
    plots: bool | None = None,
) -> Report:
    """Merge the shards of one or more study directories into one report.

    Args:
        directories: output directories of runs of the same config (e.g. one per seed).
        output_dir: write ``report.json``/``report.md`` (and plots) there; ``None`` writes
            nothing.
        plots: as ``ExperimentConfig.plots``.

    Returns:
        The merged :class:`~mmie.Report`.

    Raises:
        DataError: directories of different configs, or two different results for the same
            (seed, arm); the message names the files.
        FileNotFoundError: a directory without a base shard.
    """
    report = build_report(load_shards([Path(d) for d in directories]))
    validate_report(report.data)
    if output_dir is not None:
        _write_report(report, Path(output_dir), plots)
    return report
