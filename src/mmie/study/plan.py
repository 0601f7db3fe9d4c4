"""The units of a study, and how the tasks of a job array share them.

A study is the base evaluation (the base shard, the reference models and the per-seed
ingredients: SAEs and scrubbers, see :func:`~mmie.prepare_study`) and then a list of
independent **units**, one (seed, arm) pair each, that each write one result shard.
:func:`plan_study` lists the units in a fixed order: seed by seed in the config's order,
and within a seed the arms in the config's order (controls last); an arm into which nothing
random goes (``seed_invariant``: most controls, a plain scrubber) is one unit, at the
config's first seed. The ``index`` of a unit is its position in that list.

:func:`assign_units` gives task ``i`` of ``n`` the units ``i, i + n, i + 2n, ...`` (round
robin), so every unit goes to exactly one task whatever ``n`` is, tasks differ by at most
one unit, and splitting a task's units again over ``w`` workers is the same as splitting the
study over ``n * w`` tasks (worker ``k`` of task ``i`` is task ``i + n * k``).
:func:`array_task` reads a SLURM array's task id and count from the environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmie._validation import is_integer
from mmie.errors import ConfigError
from mmie.study.config import ExperimentConfig

__all__ = ["StudyUnit", "array_task", "assign_units", "plan_study", "select"]

logger = logging.getLogger(__name__)

# mmie.study.shards.SHARD_DIR (not imported: that module loads transformers, and `mmie plan`
# needs only the config; a test checks they agree)
_SHARD_DIR = "shards"


@dataclass(frozen=True)
class StudyUnit:
    """One (seed, arm) unit of a study.

    Attributes:
        index: its position in :func:`plan_study`'s list.
        seed: the seed.
        arm: the arm's name (may hold ``@``, ``+`` and ``.``).
    """

    index: int
    seed: int
    arm: str

    @property
    def shard(self) -> str:
        """The unit's result shard, relative to the output directory."""
        return f"{_SHARD_DIR}/seed{self.seed}__{self.arm}.json"

    def to_dict(self) -> dict[str, Any]:
        """``{"index", "seed", "arm", "shard"}`` (one line of ``mmie plan``)."""
        return {"index": self.index, "seed": self.seed, "arm": self.arm, "shard": self.shard}


def select(requested: Sequence[Any] | None, available: Sequence[Any], what: str) -> list[Any]:
    """The requested subset of ``available`` in ``available``'s order (all when ``None``).

    Raises:
        TypeError: ``requested`` is a single string or int instead of a sequence.
        ConfigError: a requested value is not available (named ``what``).
    """
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


def plan_study(
    config: ExperimentConfig,
    *,
    seeds: Sequence[int] | None = None,
    arms: Sequence[str] | None = None,
) -> tuple[StudyUnit, ...]:
    """The (seed, arm) units of a study, in their fixed order (module docstring).

    Example:
        >>> from mmie import demo_config
        >>> units = plan_study(demo_config(seeds=(0, 1)), arms=["lora", "scrub"])
        >>> [(u.index, u.seed, u.arm) for u in units]
        [(0, 0, 'lora'), (1, 0, 'scrub'), (2, 1, 'lora')]

    Args:
        config: the study.
        seeds: only these seeds (a subset of ``config.seeds``).
        arms: only these arms (names from ``config.arms`` and the controls).

    Returns:
        The units; ``index`` numbers them from 0 in this list.

    Raises:
        ConfigError: a seed or arm that is not in the config.
    """
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    run_seeds = select(seeds, config.seeds, "seeds")
    run_arms = select(arms, [a.name for a in config.all_arms], "arms")
    canonical = config.seeds[0]
    pairs = [
        (seed, name)
        for seed in run_seeds
        for name in run_arms
        if not config.arm(name).seed_invariant or seed == canonical
    ]
    return tuple(StudyUnit(i, seed, name) for i, (seed, name) in enumerate(pairs))


def _check_task(task_index: Any, num_tasks: Any) -> tuple[int, int]:
    if not is_integer(num_tasks) or num_tasks < 1:
        raise ConfigError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    if not is_integer(task_index) or not 0 <= task_index < num_tasks:
        raise ConfigError(
            f"task_index must be an integer in [0, {num_tasks}) for {num_tasks} task(s), "
            f"got {task_index!r}"
        )
    return int(task_index), int(num_tasks)


def assign_units(
    units: Sequence[StudyUnit], task_index: int, num_tasks: int
) -> tuple[StudyUnit, ...]:
    """The units task ``task_index`` of ``num_tasks`` runs: every ``num_tasks``-th unit from
    position ``task_index`` (round robin; a task beyond the number of units gets none).

    Example:
        >>> units = [StudyUnit(i, 0, f"arm{i}") for i in range(5)]
        >>> [u.index for u in assign_units(units, 1, 2)]
        [1, 3]

    Raises:
        ConfigError: ``num_tasks < 1`` or ``task_index`` outside ``[0, num_tasks)``.
    """
    i, n = _check_task(task_index, num_tasks)
    return tuple(units[i::n])


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not an integer") from None


def array_task(
    task_index: int | None = None,
    num_tasks: int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[int, int] | None:
    """``(task_index, num_tasks)`` of this job: the arguments, else a SLURM job array's.

    Values given win; a missing one is read from ``SLURM_ARRAY_TASK_ID`` and
    ``SLURM_ARRAY_TASK_COUNT``. SLURM numbers tasks as the array was given
    (``--array=1-8``, ``--array=0-20:4``), so the index is ``(SLURM_ARRAY_TASK_ID -
    SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`` (minimum 0 and step 1 when unset); the
    count falls back on ``(MAX - MIN) / STEP + 1``. An array given as a list
    (``--array=1,5,7``) has no such numbering: pass ``--task-index`` for it.

    Example:
        >>> array_task(environ={"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1",
        ...                     "SLURM_ARRAY_TASK_COUNT": "8"})
        (2, 8)
        >>> array_task(environ={}) is None
        True

    Args:
        task_index: this task's index (``--task-index``), or ``None``.
        num_tasks: the number of tasks (``--num-tasks``), or ``None``.
        environ: the environment (default ``os.environ``).

    Returns:
        ``(task_index, num_tasks)``, or ``None`` when neither is given nor in a SLURM array.

    Raises:
        ConfigError: only one of them is known, a SLURM variable is not an integer, or the
            index is outside ``[0, num_tasks)``.
    """
    env = os.environ if environ is None else environ
    if task_index is None:
        task_id = _env_int(env, "SLURM_ARRAY_TASK_ID")
        if task_id is not None:
            low = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
            step = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
            if step < 1 or (task_id - low) % step:
                raise ConfigError(
                    f"SLURM_ARRAY_TASK_ID={task_id} is not on the array's grid (min {low}, "
                    f"step {step}); pass --task-index and --num-tasks explicitly"
                )
            task_index = (task_id - low) // step
            logger.info("SLURM array task id %d: task index %d", task_id, task_index)
    if num_tasks is None and (task_index is not None or "SLURM_ARRAY_TASK_ID" in env):
        num_tasks = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
        high = _env_int(env, "SLURM_ARRAY_TASK_MAX")
        if num_tasks is None and high is not None:
            low = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
            step = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
            num_tasks = (high - low) // step + 1
    if task_index is None and num_tasks is None:
        return None
    if task_index is None or num_tasks is None:
        missing = "--task-index" if task_index is None else "--num-tasks"
        raise ConfigError(
            f"{missing} is required with "
            f"{'--num-tasks' if task_index is None else '--task-index'} outside a SLURM job "
            "array (SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT are not set)"
        )
    return _check_task(task_index, num_tasks)
