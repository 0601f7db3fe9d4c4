"""Seeding of the global random number generators, scoped or not.

Library code in mmie never draws from global RNG state (functions take a ``seed``); these two
utilities are for scripts, notebooks, tests and the CLI, which call code that does (model
initialisation, dropout, samplers of other libraries).

* :func:`seed_context` seeds Python's :mod:`random`, NumPy's global generator and torch's CPU
  generator (and the CUDA generators when CUDA is already initialised) for the duration of a
  ``with`` block, and puts every one of them back as it was afterwards, also when the block
  raises.
* :func:`set_seed` seeds the same generators and leaves them seeded.

Neither ever initialises CUDA or queues a CUDA seed for later: :func:`torch.manual_seed`
would queue one that fires whenever CUDA is first used, possibly long after the block ended.

Example:
    >>> import random
    >>> from mmie.seeding import seed_context
    >>> with seed_context(0):
    ...     first = random.random()
    >>> with seed_context(0):
    ...     again = random.random()
    >>> first == again
    True
"""

from __future__ import annotations

import logging
import numbers
import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
import torch

__all__ = ["seed_context", "set_seed"]

logger = logging.getLogger(__name__)

_SEED_LIMIT = 2**32  # numpy.random.seed accepts [0, 2**32)


def _check_seed(seed: object) -> int:
    """``seed`` as an int in ``[0, 2**32)``; raises before anything is touched."""
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    value = int(seed)
    if not 0 <= value < _SEED_LIMIT:
        raise ValueError(f"seed must satisfy 0 <= seed < 2**32, got {value}")
    return value


def _seed_all(seed: int, *, cuda: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)  # seeding global state is this module's purpose
    # Through the default generator: torch.manual_seed would also queue a CUDA seed that
    # runs whenever CUDA is first initialised.
    torch.random.default_generator.manual_seed(seed)
    if cuda:  # initialised, so this seeds every device now instead of queueing
        torch.cuda.manual_seed_all(seed)


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's CPU generator.

    The CUDA generators of all devices are seeded too when CUDA is already initialised;
    otherwise CUDA is left alone (not initialised, no seed queued), so code that first uses
    CUDA later draws from CUDA's own default (or earlier queued) seed. Call
    ``torch.cuda.init()`` first if CUDA draws must follow ``seed``. Nothing is restored:
    use :func:`seed_context` for a scoped seed.

    Args:
        seed: an int with ``0 <= seed < 2**32`` (NumPy's legacy seeding limit).

    Raises:
        TypeError: if ``seed`` is not an int (``bool`` is rejected).
        ValueError: if ``seed`` is outside ``[0, 2**32)``.
    """
    seed = _check_seed(seed)
    _seed_all(seed, cuda=torch.cuda.is_initialized())


def seed_context(seed: int) -> AbstractContextManager[None]:
    """Context manager: seed the global generators for a block, then restore them.

    On entry it captures the state of Python's ``random`` (including the Gaussian it may
    have cached), NumPy's global ``RandomState`` (including its cached Gaussian), torch's CPU
    generator and, only when CUDA is already initialised, every CUDA device's generator; it
    then seeds all of them with ``seed``. On exit, also when the block raises, it restores
    every captured state; an exception from the block propagates unchanged. Nested blocks
    restore level by level.

    CUDA is never initialised by this function and no CUDA seed is queued. If the block
    itself initialises CUDA, CUDA draws inside it are not controlled by ``seed`` and the CUDA
    state is not restored afterwards; call ``torch.cuda.init()`` before the block to include
    CUDA.

    The seed is validated when ``seed_context`` is called, before any state is captured or
    changed.

    Args:
        seed: an int with ``0 <= seed < 2**32``.

    Returns:
        A context manager; ``with seed_context(seed):`` yields ``None``.

    Raises:
        TypeError: if ``seed`` is not an int (``bool`` is rejected).
        ValueError: if ``seed`` is outside ``[0, 2**32)``.

    Example:
        >>> import numpy as np
        >>> with seed_context(123):
        ...     a = np.random.rand()
        >>> with seed_context(123):
        ...     b = np.random.rand()
        >>> a == b
        True
    """
    return _seed_context(_check_seed(seed))


@contextmanager
def _seed_context(seed: int) -> Iterator[None]:
    cuda = torch.cuda.is_initialized()
    py_state = random.getstate()
    np_state: Any = np.random.get_state()
    torch_state = torch.random.default_generator.get_state()
    cuda_states = torch.cuda.get_rng_state_all() if cuda else None
    try:
        _seed_all(seed, cuda=cuda)
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.default_generator.set_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
