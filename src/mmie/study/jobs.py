"""Run a study's units in parallel: worker processes on one node, or a SLURM job array.

Both start ``mmie`` commands in fresh processes (never ``fork``: CUDA and torch's thread
pools do not survive it) on a **frozen copy of the config**: the resolved config, with any
``--set`` overrides applied and ``output_dir`` made absolute, is written to
``OUTPUT_DIR/.mmie/jobs/config-<hash>.json`` and every process reads that file, so editing
the TOML file while jobs run changes nothing.

* :func:`run_workers` (``mmie run CONFIG --workers N``) runs ``mmie prepare`` in one process
  (base shard, references, per-seed SAEs, scrubbers), then ``N`` ``mmie run`` processes at
  once, worker ``k`` of task ``i`` of ``n`` running task ``i + n*k`` of ``n*N`` (the same
  units as splitting task ``i``'s units over the workers, see :mod:`mmie.study.plan`). With
  GPUs visible (``CUDA_VISIBLE_DEVICES``, else every device torch sees) worker ``k`` sees
  only GPU ``k mod G`` through its own ``CUDA_VISIBLE_DEVICES``; every worker gets
  ``threads`` CPU threads (default: the CPUs this process may use, split evenly, at least
  one), also as ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``. Each process logs to
  ``OUTPUT_DIR/logs/task<i>-prepare.log`` / ``task<i>-worker<k>.log``; the report is
  written once all have finished.
* :func:`submit_study` (``mmie submit CONFIG --partition P``, the ``slurm`` extra) submits
  three steps with `submitit <https://github.com/facebookincubator/submitit>`_: one
  ``mmie prepare`` job, a job array of ``mmie run --task-index i --num-tasks n`` (started
  when the prepare job succeeded), and one ``mmie aggregate`` job (started when every task
  has ended, successfully or not, so the report lists what is missing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mmie._io import atomic_write_json
from mmie._validation import is_integer
from mmie.errors import ConfigError
from mmie.study.config import ExperimentConfig
from mmie.study.outdir import STATE_DIR, lock
from mmie.study.plan import assign_units, plan_study
from mmie.study.report import Report
from mmie.study.runner import aggregate
from mmie.study.shards import base_shard_path

__all__ = [
    "Executor",
    "MmieCommand",
    "SubmittedStudy",
    "WorkersResult",
    "frozen_config",
    "run_workers",
    "submit_study",
    "visible_gpus",
]

logger = logging.getLogger(__name__)

_JOBS_DIR = "jobs"
_LOGS_DIR = "logs"


def frozen_config(config: ExperimentConfig) -> Path:
    """Write ``config`` (``output_dir`` made absolute) for the processes of a parallel run
    and return the file: ``OUTPUT_DIR/.mmie/jobs/config-<sha256 of it>.json``."""
    out = Path(config.output_dir).expanduser().resolve()
    data = config.replace(output_dir=str(out)).to_dict()
    text = json.dumps(data, sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    path = out / STATE_DIR / _JOBS_DIR / f"config-{digest}.json"
    if not path.is_file():
        atomic_write_json(path, data)
    return path


def visible_gpus(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The GPUs this process may give to workers: the entries of ``CUDA_VISIBLE_DEVICES``
    when it is set (up to the first invalid one, as CUDA reads it: ``""`` and ``"-1"`` hide
    every GPU), else ``0 .. torch.cuda.device_count() - 1`` when CUDA is available."""
    env = os.environ if environ is None else environ
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        gpus: list[str] = []
        for entry in (part.strip() for part in listed.split(",")):
            if not entry or entry.startswith("-"):
                break
            gpus.append(entry)
        return tuple(gpus)
    import torch

    if not torch.cuda.is_available():
        return ()
    return tuple(str(i) for i in range(torch.cuda.device_count()))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _mmie(python: str, log_level: str) -> list[str]:
    return [python, "-m", "mmie", "--log-level", log_level]


def _subset_args(seeds: Sequence[int] | None, arms: Sequence[str] | None) -> list[str]:
    args: list[str] = []
    for seed in seeds or ():
        args += ["--seed", str(seed)]
    for arm in arms or ():
        args += ["--arm", arm]
    return args


@dataclass(frozen=True)
class WorkersResult:
    """What :func:`run_workers` did.

    Attributes:
        output_dir: the output directory.
        prepare_returncode: exit status of the ``mmie prepare`` process.
        returncodes: exit status of each worker (empty when prepare failed).
        logs: the log file of the prepare process, then of each worker.
        report: the report over every shard in the directory (``None`` when prepare
            failed).
    """

    output_dir: Path
    prepare_returncode: int
    returncodes: tuple[int, ...]
    logs: tuple[Path, ...]
    report: Report | None

    @property
    def ok(self) -> bool:
        """Whether every process exited with status 0."""
        return self.prepare_returncode == 0 and all(rc == 0 for rc in self.returncodes)


def _check_positive(value: Any, name: str) -> int:
    if not is_integer(value) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _interrupt(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Pass an interrupt on to the processes still running and wait for them to finish
    their current write (every shard they wrote is complete)."""
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in processes:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_workers(
    config: ExperimentConfig,
    workers: int,
    *,
    seeds: Sequence[int] | None = None,
    arms: Sequence[str] | None = None,
    task_index: int = 0,
    num_tasks: int = 1,
    threads: int | None = None,
    gpus: Sequence[str] | None = None,
    log_level: str = "INFO",
    python: str = sys.executable,
) -> WorkersResult:
    """Run a study's units (or one task's share of them) in ``workers`` processes at once.

    See the module docstring: one ``mmie prepare`` process, then the workers, each with its
    own GPU (``CUDA_VISIBLE_DEVICES``) when GPUs are visible and ``threads`` CPU threads;
    shards go to ``config.output_dir`` under its locks, and the report is written when
    every worker has finished. Rerunning resumes, as ``mmie run`` does.

    Args:
        config: the study.
        workers: the number of worker processes (>= 1).
        seeds: only these seeds.
        arms: only these arms.
        task_index: this node's task of a job array (its units are split over the workers).
        num_tasks: the number of tasks of the array.
        threads: CPU threads per worker (default: the CPUs available, split evenly).
        gpus: the GPU ids to hand out (default: the visible GPUs, ``CUDA_VISIBLE_DEVICES`` or
            torch's; empty: CPU only).
        log_level: the workers' ``--log-level``.
        python: the interpreter that runs ``python -m mmie``.

    Returns:
        A :class:`WorkersResult` (exit statuses: 0 ok, 1 some unit failed, 2 an error, 130
        interrupted; the reason is in that process's log).

    Raises:
        ConfigError: ``workers``/``threads`` below 1, or a seed, arm or task outside the
            config (checked before anything starts).
        KeyboardInterrupt: interrupted; the workers were interrupted too and every shard
            they wrote is complete (rerun to resume).
    """
    workers = _check_positive(workers, "workers")
    if threads is not None:
        threads = _check_positive(threads, "threads")
    plan_study(config, seeds=seeds, arms=arms)  # a bad seed or arm: before anything starts
    assign_units((), task_index, num_tasks)  # a bad task, likewise
    path = frozen_config(config)
    out = Path(config.output_dir).expanduser().resolve()
    logs = out / _LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    devices = tuple(visible_gpus() if gpus is None else gpus)
    per_worker = threads or max(1, _cpus() // workers)
    base = _mmie(python, log_level)
    subset = _subset_args(seeds, arms)

    def env_for(gpu: str | None, n_threads: int) -> dict[str, str]:
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(n_threads)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    prepare_log = logs / f"task{task_index}-prepare.log"
    prepare_cmd = [
        *base,
        "prepare",
        str(path),
        "--task-index",
        str(task_index),
        "--num-tasks",
        str(num_tasks),
        "--threads",
        str(threads or _cpus()),
        *subset,
    ]
    logger.info("preparing %s (log %s)", out, prepare_log)
    with prepare_log.open("wb") as fh:
        proc = subprocess.Popen(
            prepare_cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env_for(devices[0] if devices else None, threads or _cpus()),
        )
        try:
            prepare_rc = proc.wait()
        except KeyboardInterrupt:
            _interrupt([proc])
            raise
    if prepare_rc != 0:
        logger.error("mmie prepare exited with status %d; see %s", prepare_rc, prepare_log)
        return WorkersResult(out, prepare_rc, (), (prepare_log,), None)

    processes: list[subprocess.Popen[bytes]] = []
    worker_logs: list[Path] = []
    handles = []
    try:
        for k in range(workers):
            gpu = devices[k % len(devices)] if devices else None
            log = logs / f"task{task_index}-worker{k}.log"
            cmd = [
                *base,
                "run",
                str(path),
                "--task-index",
                str(task_index + num_tasks * k),
                "--num-tasks",
                str(num_tasks * workers),
                "--threads",
                str(per_worker),
                "--no-progress",
                *subset,
            ]
            fh = log.open("wb")
            handles.append(fh)
            processes.append(
                subprocess.Popen(
                    cmd, stdout=fh, stderr=subprocess.STDOUT, env=env_for(gpu, per_worker)
                )
            )
            worker_logs.append(log)
            logger.info(
                "worker %d: %s, %d thread(s), log %s",
                k,
                f"GPU {gpu}" if gpu is not None else "CPU",
                per_worker,
                log,
            )
        codes = tuple(proc.wait() for proc in processes)
    except KeyboardInterrupt:
        _interrupt(processes)
        raise
    finally:
        for fh in handles:
            fh.close()
    for k, rc in enumerate(codes):
        if rc != 0:
            logger.warning("worker %d exited with status %d; see %s", k, rc, worker_logs[k])
    report = None
    if base_shard_path(out).is_file():
        with lock(out, "report"):  # after every worker: this report covers every shard
            report = aggregate([out], output_dir=out, plots=config.plots)
    return WorkersResult(out, prepare_rc, codes, (prepare_log, *worker_logs), report)


# ----------------------------------------------------------------------------- SLURM
class Executor(Protocol):
    """What :func:`~mmie.submit_study` needs of a ``submitit`` executor (tests pass a fake)."""

    def update_parameters(self, **kwargs: Any) -> None:
        """Set the parameters of the next submissions."""

    def submit(self, fn: Any, *args: Any) -> Any:
        """Submit one job running ``fn(*args)``; returns a job with a ``job_id``."""

    def map_array(self, fn: Any, *iterables: Any) -> list[Any]:
        """Submit a job array running ``fn`` on each element; returns its jobs."""


@dataclass(frozen=True)
class MmieCommand:
    """A command a SLURM job runs (picklable, so ``submitit`` can ship it to the node):
    ``argv``, plus ``--task-index i --num-tasks n`` when called with a task index.

    Raises (when called):
        subprocess.CalledProcessError: the command exited with a status other than 0.
    """

    argv: tuple[str, ...]
    num_tasks: int | None = None

    def __call__(self, task_index: int | None = None) -> int:
        argv = list(self.argv)
        if task_index is not None:
            argv += ["--task-index", str(task_index), "--num-tasks", str(self.num_tasks)]
        done = subprocess.run(argv, check=False)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, argv)
        return done.returncode


@dataclass(frozen=True)
class SubmittedStudy:
    """The SLURM jobs of :func:`submit_study`.

    Attributes:
        prepare: the prepare job's id.
        tasks: the ids of the array's tasks (``ARRAY_i``).
        aggregate: the aggregate job's id.
        config: the frozen config file every job reads.
        output_dir: the output directory.
    """

    prepare: str
    tasks: tuple[str, ...]
    aggregate: str
    config: Path
    output_dir: Path


def _submitit_executor(folder: Path) -> Executor:
    try:
        import submitit
    except ImportError as err:
        raise ImportError(
            "mmie submit needs submitit, which is not installed: pip install 'mmie[slurm]' "
            "(or submit the sbatch script of the docs' scale-out page)"
        ) from err
    executor: Executor = submitit.AutoExecutor(folder=str(folder))
    return executor


def submit_study(
    config: ExperimentConfig,
    *,
    partition: str,
    num_tasks: int | None = None,
    seeds: Sequence[int] | None = None,
    arms: Sequence[str] | None = None,
    timeout_min: int = 240,
    gpus_per_task: int = 1,
    cpus_per_task: int | None = None,
    mem_gb: int | None = None,
    array_parallelism: int | None = None,
    slurm_options: dict[str, Any] | None = None,
    executor: Executor | None = None,
    log_level: str = "INFO",
    python: str = sys.executable,
) -> SubmittedStudy:
    """Submit a whole study to SLURM as prepare -> job array -> aggregate (module docstring).

    Args:
        config: the study.
        partition: the SLURM partition.
        num_tasks: tasks of the array (default: one per unit; at most the number of units).
        seeds: only these seeds.
        arms: only these arms.
        timeout_min: time limit of each job, in minutes.
        gpus_per_task: GPUs of each prepare and array job (the aggregate job gets none).
        cpus_per_task: CPUs of each job (default: the cluster's).
        mem_gb: memory of each job (default: the cluster's).
        array_parallelism: at most this many tasks at once (default: all).
        slurm_options: more ``sbatch`` options (``{"account": "x", "qos": "y"}``), passed as
            submitit's ``slurm_additional_parameters``.
        executor: a ``submitit`` executor (default: ``submitit.AutoExecutor`` with its
            folder ``OUTPUT_DIR/slurm``); tests pass a fake.
        log_level: the jobs' ``--log-level``.
        python: the interpreter on the nodes (default: this one; the nodes must share it).

    Returns:
        The jobs' ids (:class:`SubmittedStudy`).

    Raises:
        ImportError: submitit is not installed (``pip install 'mmie[slurm]'``).
        ConfigError: an empty partition, a bad count or time, or a seed or arm outside the
            config (checked before anything is submitted).
    """
    if not isinstance(partition, str) or not partition.strip():
        raise ConfigError(f"partition must be a non-empty string, got {partition!r}")
    timeout_min = _check_positive(timeout_min, "timeout_min")
    units = plan_study(config, seeds=seeds, arms=arms)
    if not units:
        raise ConfigError("the study has no units to run with these seeds and arms")
    n = len(units) if num_tasks is None else _check_positive(num_tasks, "num_tasks")
    if n > len(units):
        logger.info("%d task(s) asked for %d unit(s): submitting %d", n, len(units), len(units))
        n = len(units)
    if not is_integer(gpus_per_task) or gpus_per_task < 0:
        raise ConfigError(f"gpus_per_task must be an integer >= 0, got {gpus_per_task!r}")
    gpus = int(gpus_per_task)
    path = frozen_config(config)
    out = Path(config.output_dir).expanduser().resolve()
    if executor is None:
        executor = _submitit_executor(out / "slurm")
    extra = dict(slurm_options or {})
    common: dict[str, Any] = {"slurm_partition": partition, "timeout_min": timeout_min}
    if cpus_per_task is not None:
        common["cpus_per_task"] = _check_positive(cpus_per_task, "cpus_per_task")
    if mem_gb is not None:
        common["mem_gb"] = _check_positive(mem_gb, "mem_gb")
    base = _mmie(python, log_level)
    subset = _subset_args(seeds, arms)

    executor.update_parameters(
        name="mmie-prepare", gpus_per_node=gpus, slurm_additional_parameters=extra, **common
    )
    prepare = executor.submit(MmieCommand((*base, "prepare", str(path), *subset)))
    executor.update_parameters(
        name="mmie-run",
        gpus_per_node=gpus,
        slurm_array_parallelism=array_parallelism or n,
        slurm_additional_parameters={**extra, "dependency": f"afterok:{prepare.job_id}"},
        **common,
    )
    run_argv = (*base, "run", str(path), "--no-progress", *subset)
    tasks = executor.map_array(MmieCommand(run_argv, num_tasks=n), range(n))
    array_id = str(tasks[0].job_id).split("_", 1)[0]
    executor.update_parameters(
        name="mmie-aggregate",
        gpus_per_node=0,
        slurm_additional_parameters={**extra, "dependency": f"afterany:{array_id}"},
        **common,
    )
    merged = executor.submit(MmieCommand((*base, "aggregate", str(out))))
    logger.info(
        "submitted %s: prepare %s, %d task(s) in array %s, aggregate %s",
        out,
        prepare.job_id,
        n,
        array_id,
        merged.job_id,
    )
    return SubmittedStudy(
        prepare=str(prepare.job_id),
        tasks=tuple(str(t.job_id) for t in tasks),
        aggregate=str(merged.job_id),
        config=path,
        output_dir=out,
    )
