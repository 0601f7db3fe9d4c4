"""Run a whole study from its config, resumably, and aggregate results into reports.

:func:`run_experiment` does, in order:

0. check everything that can be checked without the model (:mod:`mmie.study.preflight`:
   output directory, device, model paths or hub cache, plots; the text sets), fingerprint
   the inputs (:mod:`mmie.study.inputs`) and claim the output directory
   (:mod:`mmie.study.outdir`: another study's results are refused, or with ``resume`` off
   discarded, only then);
1. load the model once (``config.model``, or the bundled demo model for ``"demo"``) and
   check that the config fits it (SAE size, layers) before any work;
2. the **base shard** (once per output directory): layer selection and the base model's
   metrics, with per-item values;
3. for each seed and each arm: build the arm on the single base model, train, evaluate,
   release (:meth:`mmie.study.arms.Study.arm`), and write the (seed, arm) result to its own shard,
   atomically, before the next starts. Each unit runs inside :func:`mmie.seed_context`
   ``(seed)``, so its result does not depend on which units ran before it in the process;
4. the report, computed from the shards alone: ``report.json`` (validated against the
   schema), ``report.md`` and, with matplotlib, plots.

Rerunning the same command skips every unit whose shard exists with status ``"ok"`` and the
same config, so a killed run resumes where it stopped and yields the same report. Several
runs may write into one directory at once: every shard and shared artefact is computed
under an inter-process lock, so none is computed twice and none is lost. An interrupted run
(Ctrl-C) raises :class:`StudyInterrupted`, a :class:`KeyboardInterrupt` that says which
units it finished. A unit
that raises is logged with its traceback (``logger.exception``) and recorded as
``"failed"`` with the error; it is retried on the next run. ``seeds=``/``arms=`` run a
subset and ``task_index=``/``num_tasks=`` one task's share of the units
(:mod:`mmie.study.plan`), as separate jobs writing into separate directories or the same
shared one; :func:`prepare_study` computes the references, the base shard and the per-seed
ingredients once before such jobs start, and :func:`aggregate` merges the shards of several
directories into one report, comparing copies within a tolerance.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from mmie._io import atomic_write_json
from mmie._validation import choice
from mmie._version import __version__
from mmie.errors import ConfigError, DataError, InterventionError
from mmie.evaluation.layer_selection import ActivationCache, select_layers
from mmie.language.detectors import make_detector
from mmie.models.blocks import hidden_size, num_layers
from mmie.models.loading import free_memory, load_causal_lm
from mmie.seeding import seed_context
from mmie.study.arms import Study
from mmie.study.config import ArmConfig, ExperimentConfig
from mmie.study.demo import DEMO_MODELS, DemoModel, demo_model_path, load_demo_model
from mmie.study.environment import environment_manifest
from mmie.study.inputs import input_changes, study_inputs, text_fingerprints
from mmie.study.outdir import check_study, claim_output, lock, read_study
from mmie.study.plan import StudyUnit, assign_units, plan_study
from mmie.study.plots import plot_report
from mmie.study.preflight import (
    check_before_loading,
    check_model_fits,
    check_model_sources,
    config_model_shape,
)
from mmie.study.report import Report, build_report
from mmie.study.robustness import attack_model, fit_directions, load_directions, save_directions
from mmie.study.schema import validate_report
from mmie.study.shards import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    SHARD_FORMAT_VERSION,
    SHARD_KINDS,
    _check_shard,
    arm_fingerprint,
    base_shard_path,
    config_fingerprint,
    load_shards,
    read_json,
    reference_shard_path,
    unit_shard_path,
)
from mmie.study.suite import EvalSets, evaluate_model, fluency_record, load_eval_sets

__all__ = [
    "ExperimentResult",
    "PreparedStudy",
    "StudyInterrupted",
    "UnitFailure",
    "aggregate",
    "prepare_study",
    "run_experiment",
]

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


class StudyInterrupted(KeyboardInterrupt):
    """A study run was interrupted (Ctrl-C); every shard written so far is complete.

    Attributes:
        output_dir: the output directory.
        computed: the (seed, arm) units this run finished before the interrupt.
    """

    def __init__(self, output_dir: Path, computed: Sequence[tuple[int, str]]) -> None:
        super().__init__(f"interrupted after {len(computed)} unit(s)")
        self.output_dir = output_dir
        self.computed = tuple(computed)


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


def _reusable(
    path: Path,
    fingerprint: str,
    arm_fp: str | None,
    inputs: Mapping[str, Any] | None = None,
) -> bool:
    """Whether the shard at ``path`` is a complete, valid result of this study (same config,
    arm options and, when given, inputs). An unreadable or malformed shard is not (it is
    logged, naming the file, and recomputed)."""
    if not path.is_file():
        return False
    try:
        shard = read_json(path)
        if not isinstance(shard, dict) or shard.get("kind") not in SHARD_KINDS:
            raise DataError(f"{path}: not an mmie shard")
        if shard.get("format_version") != SHARD_FORMAT_VERSION:
            return False
        _check_shard(shard, path, str(shard["kind"]))
    except (DataError, OSError) as exc:
        logger.warning("ignoring unreadable shard %s (it will be recomputed): %s", path, exc)
        return False
    if shard.get("fingerprint") != fingerprint:
        return False
    if arm_fp is not None and shard.get("arm_fingerprint") != arm_fp:
        logger.info("%s was written with other arm options; recomputing it", path.name)
        return False
    if inputs is not None and input_changes(shard.get("inputs"), inputs):
        logger.info("%s was written with other inputs; recomputing it", path.name)
        return False
    return bool(shard.get("status", "ok") == "ok")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """The file's identity and modification time (None: absent), to see a rewrite."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _done_meanwhile(
    path: Path,
    stamp: tuple[int, int, int] | None,
    fingerprint: str,
    arm_fp: str | None,
    inputs: Mapping[str, Any] | None,
    *,
    resume: bool,
) -> bool:
    """Inside a shard's lock: whether it need not be computed. With ``resume``, when it is
    reusable; without, only when another run wrote it after this one planned it."""
    if not _reusable(path, fingerprint, arm_fp, inputs):
        return False
    return resume or _stamp(path) != stamp


def _plan_units(
    config: ExperimentConfig,
    out: Path,
    fingerprint: str,
    wanted: Sequence[tuple[int, str]],
    *,
    resume: bool,
    inputs: Mapping[str, Any] | None = None,
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The (seed, arm) units of ``wanted`` (from :func:`~mmie.plan_study`) to compute, and
    those whose shards can be reused."""
    todo = [
        (seed, name)
        for seed, name in wanted
        if not (
            resume
            and _reusable(
                unit_shard_path(out, seed, name),
                fingerprint,
                arm_fingerprint(config.arm(name)),
                inputs,
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
    inputs: Mapping[str, Any] | None = None,
    done: list[str] | None = None,
) -> None:
    """Evaluate each reference model like the base model, one model in memory at a time
    (each under its shard's lock: a reference another run evaluated meanwhile is kept);
    ``done`` collects ``"reference.<name>"`` for each one evaluated.

    The fluency of a reference's English continuations is scored later by the base model
    (:func:`_score_reference_fluency`), when it is loaded.
    """
    for name, source in config.references.named().items():
        path = reference_shard_path(out, name)
        stamp = _stamp(path)
        if resume and _reusable(path, fingerprint, None, inputs):
            continue
        with lock(out, f"reference.{name}"):
            if _done_meanwhile(path, stamp, fingerprint, None, inputs, resume=resume):
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
                    "inputs": inputs,
                    "name": name,
                    "model": source,
                    "metrics": {k: r.to_dict() for k, r in records.items()},
                    "generations": generations,
                    "fluency_scored": False,
                    "environment": env,
                    "timings": {"evaluation_s": time.perf_counter() - t0},
                },
            )
        if done is not None:
            done.append(f"reference.{name}")
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
        with lock(out, f"reference.{name}"):
            shard = read_json(path)
            if shard.get("fluency_scored"):
                continue
            english = shard["generations"]["english"]
            record = fluency_record(model, tokenizer, sets, config, english)
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
    inputs: Mapping[str, Any] | None = None,
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
            "inputs": inputs,
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
    task_index: int | None = None,
    num_tasks: int | None = None,
) -> ExperimentResult:
    """Run (or resume) a study and write its shards and reports to ``config.output_dir``.

    Args:
        config: the study.
        seeds: run only these seeds (a subset of ``config.seeds``), e.g. one job per seed.
        arms: run only these arms (names from ``config.arms``).
        task_index: with ``num_tasks``, run only this task's share of the units
            (:func:`~mmie.assign_units` of :func:`~mmie.plan_study` ``(config, seeds=seeds,
            arms=arms)``): one task of a job array. The base shard and references are
            computed by whichever task needs them first (or beforehand by
            :func:`~mmie.prepare_study`); the others wait for it and reuse it.
        num_tasks: the number of tasks of the array.
        resume: reuse existing shards of the same config and inputs (``False`` recomputes
            every unit of this call and discards the shards of another config, or of other
            inputs, in the directory -- only the files mmie wrote, and only after the whole
            run was checked).
        show_progress: show a progress bar over the (seed, arm) units.
        model: an already loaded base model to use instead of loading ``config.model`` (the
            caller keeps it; ``config.model`` is still what the report names, and its
            fingerprint is the inputs' when it names a model that can be found; else the
            model's tensors are fingerprinted).
        tokenizer: its tokenizer (required with ``model``).

    Returns:
        An :class:`ExperimentResult`; its report covers every shard in the directory
        (missing units are listed as such).

    Raises:
        ConfigError: a requested seed/arm is not in the config; ``task_index`` without
            ``num_tasks`` (or outside ``[0, num_tasks)``); the config cannot work here
            (output directory, device, model path or hub cache, plots, the SAE's size or
            layers against the model), checked before the model loads where possible; or
            the directory holds results of another config or other inputs while ``resume``
            is on (or while another run of another study writes there).
        DataError: a bad line in a data file (the message names the file and line).
        InterventionError: an arm could not be released cleanly (the study stops rather
            than contaminate later arms).
        OSError: a file could not be written (the message names it).
        KeyboardInterrupt: the run was interrupted (Ctrl-C); the exception (a
            ``StudyInterrupted``) lists in ``computed`` the units that finished.

    Errors inside a (seed, arm) unit do not stop the study: they are logged with their
    traceback and recorded in the shard and the report as ``"failed"``.
    """

    wanted = _wanted(config, seeds, arms, task_index, num_tasks, model, tokenizer)
    start = _start(config, wanted, resume=resume, model=model)
    out = start.out
    computed: list[tuple[int, str]] = []
    try:
        with claim_output(out, start.fingerprint, start.inputs, resume=resume):
            atomic_write_json(out / "config.json", config.to_dict())
            resumed, failures = _run_claimed(
                config,
                start,
                wanted,
                computed,
                resume=resume,
                show_progress=show_progress,
                model=model,
                tokenizer=tokenizer,
            )
            with lock(out, "report"):  # the last report written covers every shard
                report = build_report(load_shards([out]))
                validate_report(report.data)
                paths = _write_report(report, out, config.plots)
    except StudyInterrupted:
        raise
    except KeyboardInterrupt:
        raise StudyInterrupted(out, computed) from None
    return ExperimentResult(
        report=report,
        output_dir=out,
        paths=paths,
        computed=tuple(computed),
        resumed=tuple(resumed),
        failures=tuple(failures),
    )


def _wanted(
    config: ExperimentConfig,
    seeds: Sequence[int] | None,
    arms: Sequence[str] | None,
    task_index: int | None,
    num_tasks: int | None,
    model: nn.Module | None,
    tokenizer: PreTrainedTokenizerBase | None,
) -> list[tuple[int, str]]:
    """The (seed, arm) units a call asks for: the plan, cut to one task of an array."""
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    if (model is None) != (tokenizer is None):
        raise TypeError("pass model and tokenizer together, or neither")
    units = plan_study(config, seeds=seeds, arms=arms)
    if (task_index is None) != (num_tasks is None):
        raise ConfigError("task_index and num_tasks go together: pass both or neither")
    if task_index is not None and num_tasks is not None:
        units = assign_units(units, task_index, num_tasks)
        logger.info(
            "task %d of %d: %d unit(s)%s",
            task_index,
            num_tasks,
            len(units),
            f" ({', '.join(f'seed {u.seed} {u.arm}' for u in units[:4])}"
            f"{', ...' if len(units) > 4 else ''})"
            if units
            else "",
        )
    return [(u.seed, u.arm) for u in units]


@dataclass(frozen=True)
class _Start:
    """What every run computes before it claims its output directory."""

    out: Path
    sets: EvalSets
    fingerprint: str
    inputs: dict[str, Any]
    device: str
    env: dict[str, Any]


def _start(
    config: ExperimentConfig,
    wanted: Sequence[tuple[int, str]],
    *,
    resume: bool,
    model: nn.Module | None,
    needs_model: bool = False,
) -> _Start:
    """Checks that need no model, the text sets, the inputs and the model's shape."""
    out = Path(config.output_dir)
    check_before_loading(config, models=False)
    sets = load_eval_sets(config)  # data errors surface before any model is loaded
    make_detector(config.languages.detector)  # ... and a missing optional detector backend
    fingerprint = config_fingerprint(config)
    if needs_model:
        check_model_sources(config, model_given=model is not None)
        inputs = study_inputs(config, sets, model=model)
    else:
        inputs = _study_inputs(config, sets, out, fingerprint, wanted, resume=resume, model=model)
    shape = (num_layers(model), hidden_size(model)) if model is not None else None
    shape = shape or config_model_shape(config.model)
    if shape is not None:
        check_model_fits(config, *shape)
    device = _resolve_device(config.device)
    return _Start(out, sets, fingerprint, inputs, device, environment_manifest(device))


@dataclass(frozen=True)
class PreparedStudy:
    """What :func:`prepare_study` made ready.

    Attributes:
        output_dir: the output directory.
        layers: the selected layers (from the base shard).
        computed: the shared shards this call computed (``"base"``,
            ``"reference.<name>"``); empty when they were there already.
        artifacts: the ingredients now cached under ``artifacts/`` (computed by this call
            or found there), e.g. ``"SAEs of seed 0 (layers [1])"``.
        units: the units the ingredients were prepared for.
    """

    output_dir: Path
    layers: tuple[int, ...]
    computed: tuple[str, ...]
    artifacts: tuple[str, ...]
    units: tuple[StudyUnit, ...]


def prepare_study(
    config: ExperimentConfig,
    *,
    seeds: Sequence[int] | None = None,
    arms: Sequence[str] | None = None,
    task_index: int | None = None,
    num_tasks: int | None = None,
    resume: bool = True,
    model: nn.Module | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> PreparedStudy:
    """Compute what the units of a study share, once, before a job array runs them.

    In ``config.output_dir``: the reference models' shards, the base shard (layer selection
    and the base model's metrics) and, for the units of :func:`~mmie.plan_study` ``(config,
    seeds=seeds, arms=arms)`` (cut to one task with ``task_index``/``num_tasks``), the
    per-seed SAEs with their picked features and the scrubbers, cached under
    ``artifacts/`` exactly as a unit would compute them (each under its lock, inside
    :func:`~mmie.seed_context` ``(seed)``). Trained adapters are not made: they belong to
    one arm (``lora`` and ``lora+sae_gate`` share one, trained by the first of them, the
    other waits for it). Whatever is already there is reused; no unit shard and no report
    is written. ``mmie prepare CONFIG`` calls it.

    Args:
        config: the study.
        seeds: prepare only for these seeds.
        arms: prepare only for these arms.
        task_index: with ``num_tasks``, prepare only for that task's units.
        num_tasks: the number of tasks.
        resume: reuse shards and artefacts already there (``False`` recomputes the base
            and reference shards, as ``run_experiment(resume=False)`` does).
        model: an already loaded base model (as for :func:`run_experiment`).
        tokenizer: its tokenizer.

    Returns:
        A :class:`PreparedStudy`.

    Raises:
        ConfigError: as :func:`run_experiment` (a model that cannot be loaded is always an
            error here).
        InterventionError: the base model carries hooks or an adapter.
        KeyboardInterrupt: interrupted; what was written is complete and is reused.
    """
    wanted = _wanted(config, seeds, arms, task_index, num_tasks, model, tokenizer)
    units = plan_study(config, seeds=seeds, arms=arms)
    if task_index is not None and num_tasks is not None:
        units = assign_units(units, task_index, num_tasks)
    start = _start(config, wanted, resume=resume, model=model, needs_model=True)
    done: list[str] = []
    made: list[str] = []
    with claim_output(start.out, start.fingerprint, start.inputs, resume=resume):
        atomic_write_json(start.out / "config.json", config.to_dict())
        with _base_study(
            config,
            start,
            resume=resume,
            needed=True,
            model=model,
            tokenizer=tokenizer,
            done=done,
        ) as study:
            assert study is not None
            for i, unit in enumerate(units):
                try:
                    with seed_context(unit.seed):
                        names = study.prepare(config.arm(unit.arm), unit.seed)
                except InterventionError as exc:
                    logger.warning(
                        "seed %d, arm %s: its ingredients cannot be made (%s); the unit will "
                        "fail the same way when it runs",
                        unit.seed,
                        unit.arm,
                        exc,
                    )
                    continue
                made.extend(name for name in names if name not in made)
                if i + 1 == len(units) or units[i + 1].seed != unit.seed:
                    study.release_seed(unit.seed)
            layers = study.layers
    logger.info(
        "prepared %s: %s computed; %d artefact(s) ready for %d unit(s)",
        start.out,
        ", ".join(done) or "nothing",
        len(made),
        len(units),
    )
    return PreparedStudy(
        output_dir=start.out,
        layers=tuple(layers),
        computed=tuple(done),
        artifacts=tuple(made),
        units=tuple(units),
    )


def _study_inputs(
    config: ExperimentConfig,
    sets: EvalSets,
    out: Path,
    fingerprint: str,
    wanted: Sequence[tuple[int, str]],
    *,
    resume: bool,
    model: nn.Module | None,
) -> dict[str, Any]:
    """The run's inputs (:func:`~mmie.study.inputs.study_inputs`), after checking that its
    models can be loaded. When one cannot, but every result this run asks for is already in
    ``out`` for the same config and texts, no model is needed: the inputs recorded there are
    used (and the report is written from the shards)."""
    try:
        check_model_sources(config, model_given=model is not None)
    except ConfigError:
        if resume:
            check_study(out, fingerprint)  # another study's results: the first thing to say
        recorded = read_study(out) if resume else None
        if recorded is None or recorded["fingerprint"] != fingerprint or not recorded["inputs"]:
            raise
        old = recorded["inputs"]
        candidate = {
            "texts": text_fingerprints(config, sets),
            "model": old.get("model"),
            "references": old.get("references", {}),
            "mmie_version": __version__,
        }
        if input_changes(old, candidate) or not _nothing_to_do(
            config, out, fingerprint, candidate, wanted
        ):
            raise
        logger.warning(
            "the model cannot be loaded, but %s already holds every result this run asks for; "
            "writing the report from the shards",
            out,
        )
        return candidate
    return study_inputs(config, sets, model=model)


def _nothing_to_do(
    config: ExperimentConfig,
    out: Path,
    fingerprint: str,
    inputs: Mapping[str, Any],
    wanted: Sequence[tuple[int, str]],
) -> bool:
    """Whether every shard the run would compute exists and is reusable."""
    todo, _ = _plan_units(config, out, fingerprint, wanted, resume=True, inputs=inputs)
    shards = [base_shard_path(out)]
    shards += [reference_shard_path(out, name) for name in config.references.named()]
    return (
        not todo
        and all(_reusable(p, fingerprint, None, inputs) for p in shards)
        and not _needs_fluency(config, out)
    )


def _artifact_key(fingerprint: str, inputs: Mapping[str, Any]) -> str:
    """The artefacts directory of a study: its config and every input that shapes the
    ingredients (texts, model, mmie version; a hub model's revision aside, see
    :func:`~mmie.study.inputs.input_changes`)."""
    model = dict(inputs.get("model") or {})
    if model.get("kind") == "hub":
        model.pop("revision", None)
    data = {
        "fingerprint": fingerprint,
        "texts": inputs.get("texts"),
        "model": model,
        "mmie_version": inputs.get("mmie_version"),
    }
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@contextlib.contextmanager
def _base_study(
    config: ExperimentConfig,
    start: _Start,
    *,
    resume: bool,
    needed: bool,
    model: nn.Module | None,
    tokenizer: PreTrainedTokenizerBase | None,
    done: list[str] | None = None,
) -> Iterator[Study | None]:
    """In a claimed directory: the references, then the base model loaded (or the one
    given), the base shard (under its lock) and the references' fluency; yields the
    :class:`~mmie.study.arms.Study` of the base model, or ``None`` when nothing needs the
    model (``needed`` is false and the shared shards are complete). ``done`` collects what
    was computed (``"base"``, ``"reference.<name>"``)."""
    out, fingerprint, inputs = start.out, start.fingerprint, start.inputs
    base_path = base_shard_path(out)
    base_stamp = _stamp(base_path)
    need_base = not (resume and _reusable(base_path, fingerprint, None, inputs))
    # references are evaluated alone, each loaded and freed before the base model is used
    _evaluate_references(
        config,
        start.sets,
        fingerprint,
        start.env,
        out,
        start.device,
        resume=resume,
        inputs=inputs,
        done=done,
    )
    artifacts = out / "artifacts" / _artifact_key(fingerprint, inputs)
    directions_path = artifacts / "steering_directions.safetensors"
    if not (needed or need_base or _needs_fluency(config, out)):
        _attack_references(config, start.sets, out, start.device, directions_path)
        yield None
        return
    loader = (
        contextlib.nullcontext((model, tokenizer))
        if model is not None
        else _load_model(config, start.device)
    )
    with loader as (base_model, tok):
        assert base_model is not None
        assert tok is not None
        base_model.eval()
        check_model_fits(config, num_layers(base_model), hidden_size(base_model))
        with lock(out, "base"):
            if need_base and not _done_meanwhile(
                base_path, base_stamp, fingerprint, None, inputs, resume=resume
            ):
                _evaluate_base(
                    base_model,
                    tok,
                    config,
                    start.sets,
                    fingerprint,
                    start.env,
                    base_path,
                    directions_path,
                    inputs,
                )
                if done is not None:
                    done.append("base")
        base_shard = read_json(base_path)
        layers = tuple(base_shard["layers"])
        _score_reference_fluency(base_model, tok, config, start.sets, out)
        study = Study(
            base_model,
            tok,
            config,
            start.sets,
            layers,
            artifacts=artifacts,
            show_progress=False,
            base_shard=base_shard,  # arms that score as the base reuse its records
        )
        if "robustness" in config.metrics:  # fitted on the clean base, before any arm
            with lock(out, "artifact.steering_directions"):
                study.directions = _directions(
                    base_model, tok, config, start.sets, layers, directions_path
                )
        yield study
    # after the base model is freed: one model in memory at a time
    _attack_references(config, start.sets, out, start.device, directions_path)


def _run_claimed(
    config: ExperimentConfig,
    start: _Start,
    wanted: Sequence[tuple[int, str]],
    computed: list[tuple[int, str]],
    *,
    resume: bool,
    show_progress: bool,
    model: nn.Module | None,
    tokenizer: PreTrainedTokenizerBase | None,
) -> tuple[list[tuple[int, str]], list[UnitFailure]]:
    """References, the base shard and the units, in a claimed directory; returns the units
    reused and the failures (``computed`` is filled as units finish)."""
    out, fingerprint, inputs = start.out, start.fingerprint, start.inputs
    todo, resumed = _plan_units(config, out, fingerprint, wanted, resume=resume, inputs=inputs)
    stamps = {unit: _stamp(unit_shard_path(out, *unit)) for unit in todo}
    failures: list[UnitFailure] = []
    with _base_study(
        config, start, resume=resume, needed=bool(todo), model=model, tokenizer=tokenizer
    ) as study:
        if study is None:
            return resumed, failures
        bar = tqdm(todo, desc="mmie study", unit="run", disable=not show_progress)
        for i, (seed, name) in enumerate(bar):
            bar.set_postfix_str(f"seed {seed} {name}")
            path = unit_shard_path(out, seed, name)
            arm_fp = arm_fingerprint(config.arm(name))
            with lock(out, f"unit.{path.stem}"):
                stamp = stamps[(seed, name)]
                if _done_meanwhile(path, stamp, fingerprint, arm_fp, inputs, resume=resume):
                    logger.info("seed %d, arm %s: computed by another run meanwhile", seed, name)
                    resumed.append((seed, name))
                else:
                    failure = _run_unit(
                        study, config, seed, name, fingerprint, start.env, out, inputs
                    )
                    computed.append((seed, name))
                    if failure is not None:
                        failures.append(failure)
            if i + 1 == len(todo) or todo[i + 1][0] != seed:
                study.release_seed(seed)  # this seed's SAEs are no longer needed
    return resumed, failures


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
        with lock(out, f"reference.{name}.robustness"):
            if not path.is_file():
                continue
            shard = read_json(path)
            if shard.get("robustness"):
                continue  # attacked by an earlier or a concurrent run
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
        try:
            if path.is_file() and not read_json(path).get("fluency_scored"):
                return True
        except (DataError, AttributeError) as exc:
            logger.warning("unreadable reference shard %s: %s", path, exc)
    return False


def _run_unit(
    study: Study,
    config: ExperimentConfig,
    seed: int,
    name: str,
    fingerprint: str,
    env: dict[str, Any],
    out: Path,
    inputs: Mapping[str, Any] | None = None,
) -> UnitFailure | None:
    """Build, train, evaluate and release one (seed, arm); write its shard."""

    arm = config.arm(name)
    shard: dict[str, Any] = {
        "format_version": SHARD_FORMAT_VERSION,
        "kind": "unit",
        "fingerprint": fingerprint,
        "inputs": inputs,
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
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    base_from: str | Path | None = None,
) -> Report:
    """Merge the shards of one or more study directories into one report.

    Base shards of several directories (each job of an array that wrote into its own
    directory evaluated the base model itself), and a unit or reference found in several,
    must agree within ``rtol``/``atol`` (:func:`~mmie.shard_differences`: numbers within
    the tolerance, generations and everything else exactly); the first directory's copy is
    used. ``base_from`` takes the base and reference results from one directory instead.

    Args:
        directories: output directories of runs of the same config (e.g. one per seed).
        output_dir: write ``report.json``/``report.md`` (and plots) there; ``None`` writes
            nothing.
        plots: as ``ExperimentConfig.plots``.
        rtol: relative tolerance (default ``1e-5``, ``mmie.study.shards.DEFAULT_RTOL``).
        atol: absolute tolerance (default ``1e-8``, ``mmie.study.shards.DEFAULT_ATOL``).
        base_from: the directory whose base (and reference) shards are used; the others'
            must have the same config, inputs, layers and items, but their values are not
            compared (see ``mmie.study.shards.load_shards``).

    Returns:
        The merged :class:`~mmie.Report`.

    Raises:
        DataError: directories of different configs or inputs, base results that differ
            beyond the tolerance, or two different results for the same (seed, arm); the
            message names the files and the first values that differ
            (``metrics.retain_ppl.value: 12.5 vs 12.6``).
        FileNotFoundError: a directory without a base shard.
        ValueError: a negative tolerance.
    """
    shards = load_shards([Path(d) for d in directories], rtol=rtol, atol=atol, base_from=base_from)
    report = build_report(shards)
    validate_report(report.data)
    if output_dir is not None:
        _write_report(report, Path(output_dir), plots)
    return report
