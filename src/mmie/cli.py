"""The ``mmie`` command line.

Subcommands:

* ``mmie demo`` — the embedded default study (bundled demo model and data, every arm, three
  seeds) on the CPU; ``--quick`` for a smaller version.
* ``mmie run CONFIG`` — a study from a TOML or JSON config file; ``--seed``/``--arm`` run a
  subset, ``--task-index i --num-tasks n`` (or a SLURM array's ``SLURM_ARRAY_TASK_ID`` /
  ``SLURM_ARRAY_TASK_COUNT``) one task's share of the units, ``--workers N`` N processes on
  this node, ``--set KEY=VALUE`` overrides config fields; rerunning resumes from the shards.
* ``mmie plan CONFIG`` — the study's (seed, arm) units, one JSON object per line (or TSV).
* ``mmie prepare CONFIG`` — the base shard, references, per-seed SAEs and scrubbers, once,
  before a job array.
* ``mmie aggregate DIR...`` — merge the shards of several output directories into one
  report (base shards compared within ``--rtol``/``--atol``, or taken from ``--base-from``).
* ``mmie submit CONFIG --partition P`` — submit the study to SLURM (prepare, a job array,
  aggregate) with submitit (the ``slurm`` extra).
* ``mmie version`` — print the installed version and the versions of key dependencies.

Exit status: 0 on success, 1 when a (seed, arm) run failed (it is recorded in the report),
2 on a usage, configuration, data or file error (any :class:`~mmie.MmieError` or
:class:`OSError`, printed as one line ``mmie: error: ...``), 130 when interrupted (Ctrl-C:
one line says how many units finished; rerunning the same command resumes).

The CLI is the only place in mmie that configures logging handlers, seeds global RNGs or
sets torch's thread count.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mmie._version import __version__
from mmie.errors import ConfigError, MmieError

if TYPE_CHECKING:  # type names only; the modules load torch, so the commands import them late
    from mmie.study.config import ExperimentConfig
    from mmie.study.report import Report
    from mmie.study.runner import ExperimentResult

# The defaults of mmie.study.shards.DEFAULT_RTOL / DEFAULT_ATOL (that module loads torch;
# a test checks they agree).
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-8

logger = logging.getLogger(__name__)

_EPILOG = """\
examples:
  mmie demo                          # the whole embedded study, 1-2 minutes on a CPU
  mmie demo --quick --out /tmp/demo  # a smaller study
  mmie run study.toml                # run (or resume) a study from its config
  mmie run study.toml --set 'seeds=[0, 1]' --set sae.steps=500   # override fields
  mmie plan study.toml               # the units, one JSON object per line
  mmie prepare study.toml            # base shard and shared artefacts, once
  mmie run study.toml --task-index 3 --num-tasks 8   # one task of a job array
  mmie run study.toml --workers 4    # four processes, one GPU each when GPUs are visible
  mmie aggregate results/job*        # merge the jobs' shards into one report
  mmie submit study.toml --partition gpu   # prepare, job array and aggregate on SLURM

Outputs (in the output directory): shards/ (one JSON file per seed and arm), artifacts/
(SAEs per seed), report.json (schema: mmie/report_schema.json), report.md, plots/ (with
the plot extra). Exit status: 0 ok, 1 some (seed, arm) runs failed, 2 usage, config, data or
file error, 130 interrupted (rerun the same command to resume).
"""


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _tolerance(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _one_line(exc: BaseException) -> str:
    """An error as one line (the message only; no traceback, no chained causes)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    named = isinstance(exc, OSError) and exc.filename and str(exc.filename) in text
    if isinstance(exc, OSError) and exc.filename and not named:
        text = f"{text}: {exc.filename}"
    return text


def _interrupted(exc: KeyboardInterrupt) -> str:
    computed = getattr(exc, "computed", None)
    where = getattr(exc, "output_dir", None)
    if computed is None:
        return "interrupted; rerun the same command to resume from the shards written so far"
    done = f"{len(computed)} (seed, arm) unit(s) finished in this run"
    listed = ", ".join(f"seed {s} {a}" for s, a in computed[:6])
    if listed:
        done += f" ({listed}{', ...' if len(computed) > 6 else ''})"
    return f"interrupted: {done}; their shards are in {where}; rerun the same command to resume"


def _cmd_version(args: argparse.Namespace) -> int:
    from importlib import metadata

    print(f"mmie {__version__}")
    if args.verbose:
        for dist in ("torch", "transformers", "peft", "numpy", "scipy", "safetensors"):
            try:
                print(f"  {dist} {metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                print(f"  {dist} (not installed)")
    return 0


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)
    logger.info("torch uses %d CPU thread(s)", threads)


def _print_outcome(result: ExperimentResult) -> int:
    _print_report(result.report)
    print()
    for key in ("markdown", "json"):
        if key in result.paths:
            print(f"{key:>8}: {result.paths[key]}")
    for key, path in sorted(result.paths.items()):
        if key.startswith("plot:"):
            print(f"{'plot':>8}: {path}")
    if result.failures:
        print(f"\n{len(result.failures)} run(s) failed (rerun the same command to retry them):")
        for f in result.failures:
            print(f"  seed {f.seed}, {f.arm}: {f.error}")
        return 1
    return 0


def _print_report(report: Report) -> None:
    print(report.data["summary"]["text"])
    print()
    for name, decision in report.decisions.items():
        print(f"  {name:<24} {decision}")


def _run(config: ExperimentConfig, args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    # deferred: `mmie --help` and `mmie version` must not import torch
    from mmie.seeding import set_seed
    from mmie.study.plan import array_task  # deferred as well
    from mmie.study.runner import run_experiment  # deferred as well

    task = array_task(args.task_index, args.num_tasks)
    if args.workers is not None and args.workers > 1:
        return _run_workers(config, args, task)
    _set_threads(args.threads)
    set_seed(min(config.seeds))
    with logging_redirect_tqdm():  # log lines above the progress bar, not through it
        result = run_experiment(
            config,
            seeds=args.seed,
            arms=args.arm,
            resume=not args.no_resume,
            show_progress=not args.no_progress,
            task_index=None if task is None else task[0],
            num_tasks=None if task is None else task[1],
        )
    return _print_outcome(result)


def _run_workers(
    config: ExperimentConfig, args: argparse.Namespace, task: tuple[int, int] | None
) -> int:
    # deferred: `mmie --help` and `mmie version` must not import torch
    from mmie.study.jobs import run_workers

    if args.no_resume:
        raise ConfigError(
            "--no-resume cannot be combined with --workers (every worker would recompute "
            "the shared base shard); run once without --workers, or use a new --out"
        )
    index, count = task if task is not None else (0, 1)
    result = run_workers(
        config,
        args.workers,
        seeds=args.seed,
        arms=args.arm,
        task_index=index,
        num_tasks=count,
        threads=args.threads,
        log_level=args.log_level,
    )
    if result.report is not None:
        _print_report(result.report)
        print(f"\n  report: {result.output_dir / 'report.md'}")
    print("\nprocesses (exit status, log):")
    names = ["prepare", *(f"worker {k}" for k in range(len(result.returncodes)))]
    for name, rc, log in zip(names, (result.prepare_returncode, *result.returncodes), result.logs):
        print(f"  {name:<10} {rc:>4}  {log}")
    codes = (result.prepare_returncode, *result.returncodes)
    if any(rc == 130 for rc in codes):
        return 130
    if any(rc not in (0, 1) for rc in codes):
        print("mmie: error: a process failed; its log says why", file=sys.stderr)
        return 2
    return 1 if any(codes) else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    # deferred: `mmie --help` and `mmie version` must not import torch
    from mmie.study.config import apply_overrides, demo_config

    config = apply_overrides(demo_config(quick=args.quick), args.overrides or [])
    return _run(config.replace(output_dir=args.out), args)


def _config(args: argparse.Namespace) -> ExperimentConfig:
    """The config file with ``--set`` overrides applied, then ``--out``."""
    # deferred: `mmie --help` and `mmie version` must not import torch
    from mmie.study.config import apply_overrides, load_config

    config = apply_overrides(load_config(args.config), args.overrides or [])
    if args.out is not None:
        config = config.replace(output_dir=args.out)
    return config


def _cmd_run(args: argparse.Namespace) -> int:
    return _run(_config(args), args)


def _cmd_plan(args: argparse.Namespace) -> int:
    # deferred: `mmie --help` and `mmie version` must not import torch
    from mmie.study.plan import assign_units, plan_study

    units = plan_study(_config(args), seeds=args.seed, arms=args.arm)
    if (args.task_index is None) != (args.num_tasks is None):
        raise ConfigError("--task-index and --num-tasks go together")
    if args.task_index is not None:
        units = assign_units(units, args.task_index, args.num_tasks)
    for unit in units:
        if args.format == "tsv":
            print(f"{unit.index}\t{unit.seed}\t{unit.arm}\t{unit.shard}")
        else:
            print(json.dumps(unit.to_dict(), ensure_ascii=False))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    # deferred: `mmie --help` and `mmie version` must not import torch
    from mmie.study.runner import prepare_study

    if (args.task_index is None) != (args.num_tasks is None):
        raise ConfigError("--task-index and --num-tasks go together")
    _set_threads(args.threads)
    prepared = prepare_study(
        _config(args),
        seeds=args.seed,
        arms=args.arm,
        task_index=args.task_index,
        num_tasks=args.num_tasks,
        resume=not args.no_resume,
    )
    print(f"prepared {prepared.output_dir} (layers {list(prepared.layers)})")
    print(f"  computed: {', '.join(prepared.computed) or 'nothing (all there already)'}")
    for name in prepared.artifacts:
        print(f"  ready: {name}")
    print(f"  for {len(prepared.units)} unit(s); now run them (mmie run ... --task-index i)")
    return 0


def _cmd_aggregate(args: argparse.Namespace) -> int:
    # deferred: `mmie --help` and `mmie version` must not import torch
    from mmie.study.runner import aggregate

    out = args.out if args.out is not None else (args.base_from or args.dirs[0])
    report = aggregate(
        args.dirs,
        output_dir=out,
        plots=False if args.no_plots else None,
        rtol=args.rtol,
        atol=args.atol,
        base_from=args.base_from,
    )
    _print_report(report)
    print(f"\nreport: {Path(out) / 'report.md'}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    # deferred: `mmie --help` and `mmie version` must not import torch
    from mmie.study.jobs import submit_study

    try:
        submitted = submit_study(
            _config(args),
            partition=args.partition,
            num_tasks=args.num_tasks,
            seeds=args.seed,
            arms=args.arm,
            timeout_min=args.time,
            gpus_per_task=args.gpus,
            cpus_per_task=args.cpus,
            mem_gb=args.mem_gb,
            array_parallelism=args.array_parallelism,
            log_level=args.log_level,
        )
    except ImportError as exc:
        print(f"mmie: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(f"submitted {submitted.output_dir}")
    print(f"  prepare   {submitted.prepare}")
    print(f"  run       {len(submitted.tasks)} task(s), array {submitted.tasks[0].split('_')[0]}")
    print(f"  aggregate {submitted.aggregate}")
    print(f"  config    {submitted.config}")
    return 0


def _add_run_options(p: argparse.ArgumentParser, *, out_default: str | None) -> None:
    _add_override_option(p)
    _add_subset_options(p)
    p.add_argument(
        "--out",
        default=out_default,
        metavar="DIR",
        help=(
            "output directory for shards, artifacts and reports"
            + (f" (default: {out_default})" if out_default else " (default: the config's)")
        ),
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="recompute the requested runs even when their shards exist",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="torch CPU threads, >= 1 (default: torch's own choice"
        + ("; the demo uses 1, fastest for its tiny model)" if out_default else ")"),
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_task_options(p, slurm=True)
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run the units in N processes on this node (after one `mmie prepare` process): "
        "one GPU each when GPUs are visible, the CPU threads split otherwise; logs in "
        "OUT/logs/",
    )


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="path of a .toml or .json config")
    _add_override_option(p)
    _add_subset_options(p)
    p.add_argument(
        "--out", default=None, metavar="DIR", help="output directory (default: the config's)"
    )


def _add_override_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field (repeatable): KEY a dotted path (data.n_eval), VALUE a "
        'TOML value (8, 0.5, true, [0, 1], "text"; other text is a string)',
    )


def _add_subset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed",
        type=int,
        action="append",
        metavar="S",
        help="only this seed (repeatable; must be in the config's seeds)",
    )
    p.add_argument(
        "--arm",
        action="append",
        metavar="A",
        help="only this arm, by name (repeatable; must be in the config's arms)",
    )


def _task_index(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _add_task_options(p: argparse.ArgumentParser, *, slurm: bool) -> None:
    fallback = " (default: SLURM_ARRAY_TASK_ID in a SLURM job array)" if slurm else ""
    p.add_argument(
        "--task-index",
        type=_task_index,
        default=None,
        metavar="I",
        help="run only task I's units of the plan: units I, I+N, I+2N, ..." + fallback,
    )
    p.add_argument(
        "--num-tasks",
        type=_positive_int,
        default=None,
        metavar="N",
        help="the number of tasks"
        + (" (default: SLURM_ARRAY_TASK_COUNT in a SLURM job array)" if slurm else ""),
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``mmie`` command (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="mmie",
        description=(
            "Multilingual machine-unlearning interventions and their evaluation on "
            "Hugging Face causal language models."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="verbosity of mmie's log messages on stderr (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_demo = sub.add_parser(
        "demo",
        help="run the embedded default study (demo model, bundled data, CPU)",
        description=(
            "Run the embedded default study: the bundled tiny demo model and multilingual "
            "data; layer selection, SAEs, the LoRA, ReFT, SAE-gate, scrub and dynamic-gate "
            "arms over three seeds; intervals, gates and a report. Resumes when rerun."
        ),
    )
    p_demo.add_argument(
        "--quick", action="store_true", help="fewer texts and two seeds (about a minute)"
    )
    _add_run_options(p_demo, out_default="mmie-demo")
    p_demo.set_defaults(func=_cmd_demo, threads_default=1)

    p_run = sub.add_parser(
        "run",
        help="run (or resume) a study from a TOML/JSON config",
        description=(
            "Run a study from a config file (TOML or JSON; see mmie.ExperimentConfig). Each "
            "(seed, arm) result is written to its own shard before the next starts; "
            "rerunning the command resumes from the shards."
        ),
    )
    p_run.add_argument("config", metavar="CONFIG", help="path of a .toml or .json config")
    _add_run_options(p_run, out_default=None)
    p_run.set_defaults(func=_cmd_run)

    p_agg = sub.add_parser(
        "aggregate",
        help="merge shards of several output directories into one report",
        description=(
            "Merge the result shards of several output directories written with the same "
            "config (e.g. one per job) into one report. Conflicting results for the same "
            "(seed, arm) are an error."
        ),
    )
    p_agg.add_argument("dirs", nargs="+", metavar="DIR", help="study output directories")
    p_agg.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where to write the report (default: --base-from, else the first DIR)",
    )
    p_agg.add_argument("--no-plots", action="store_true", help="do not draw plots")
    p_agg.add_argument(
        "--rtol",
        type=_tolerance,
        default=DEFAULT_RTOL,
        metavar="R",
        help="relative tolerance when comparing copies of a shard, e.g. the base shards of "
        f"several directories (default: {DEFAULT_RTOL:g})",
    )
    p_agg.add_argument(
        "--atol",
        type=_tolerance,
        default=DEFAULT_ATOL,
        metavar="A",
        help=f"absolute tolerance of that comparison (default: {DEFAULT_ATOL:g})",
    )
    p_agg.add_argument(
        "--base-from",
        default=None,
        metavar="DIR",
        help="take the base and reference results from DIR; the other base shards must have "
        "the same layers and items, their values are not compared",
    )
    p_agg.set_defaults(func=_cmd_aggregate)

    p_plan = sub.add_parser(
        "plan",
        help="list the study's (seed, arm) units, one per line",
        description=(
            "List the (seed, arm) units of a study in their fixed order, one per line: a "
            'JSON object {"index", "seed", "arm", "shard"} (--format jsonl) or the same '
            "fields tab-separated without a header (--format tsv). Task I of N runs the "
            "units whose index is I modulo N."
        ),
    )
    _add_config_options(p_plan)
    _add_task_options(p_plan, slurm=False)
    p_plan.add_argument("--format", choices=["jsonl", "tsv"], default="jsonl", help="output format")
    p_plan.set_defaults(func=_cmd_plan)

    p_prep = sub.add_parser(
        "prepare",
        help="compute the base shard and shared artefacts once, before a job array",
        description=(
            "Compute what the units share, once: the reference models' shards, the base "
            "shard (layer selection, base metrics) and the per-seed SAEs (with their "
            "features) and scrubbers under artifacts/. Then every task of a job array "
            "finds them and only runs its units. Resumes like mmie run."
        ),
    )
    _add_config_options(p_prep)
    _add_task_options(p_prep, slurm=False)
    p_prep.add_argument(
        "--no-resume", action="store_true", help="recompute the base and reference shards"
    )
    p_prep.add_argument(
        "--threads", type=_positive_int, default=None, metavar="N", help="torch CPU threads"
    )
    p_prep.set_defaults(func=_cmd_prepare)

    p_sub = sub.add_parser(
        "submit",
        help="submit the study to SLURM: prepare, a job array, aggregate (needs mmie[slurm])",
        description=(
            "Submit the study to SLURM with submitit (pip install 'mmie[slurm]'): one "
            "`mmie prepare` job, a job array of `mmie run --task-index i --num-tasks n` "
            "started after it, and one `mmie aggregate` job after every task. All read a "
            "frozen copy of the config in OUT/.mmie/jobs/."
        ),
    )
    _add_config_options(p_sub)
    p_sub.add_argument("--partition", required=True, help="the SLURM partition")
    p_sub.add_argument(
        "--num-tasks",
        type=_positive_int,
        default=None,
        metavar="N",
        help="tasks of the array (default: one per unit)",
    )
    p_sub.add_argument(
        "--time", type=_positive_int, default=240, metavar="MIN", help="time limit per job"
    )
    p_sub.add_argument("--gpus", type=int, default=1, metavar="G", help="GPUs per job (default: 1)")
    p_sub.add_argument("--cpus", type=_positive_int, default=None, metavar="C", help="CPUs per job")
    p_sub.add_argument("--mem-gb", type=_positive_int, default=None, metavar="GB", help="memory")
    p_sub.add_argument(
        "--array-parallelism",
        type=_positive_int,
        default=None,
        metavar="K",
        help="at most K tasks at once",
    )
    p_sub.set_defaults(func=_cmd_submit)

    p_version = sub.add_parser("version", help="print the installed mmie version")
    p_version.add_argument(
        "-v", "--verbose", action="store_true", help="also print key dependency versions"
    )
    p_version.set_defaults(func=_cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmie`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if getattr(args, "threads", None) is None and getattr(args, "threads_default", None):
        args.threads = args.threads_default
    try:
        return int(args.func(args))
    except (MmieError, OSError) as exc:
        logger.debug("command failed", exc_info=True)
        print(f"mmie: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"mmie: {_interrupted(exc)}", file=sys.stderr)
        return 130
