"""mmie: multilingual machine-unlearning interventions and their evaluation.

The public API is re-exported here lazily: ``import mmie`` is cheap and imports neither
torch, transformers nor peft until a name that needs them is first used.

Example:
    >>> import mmie
    >>> ci = mmie.bootstrap_ci([0.1, 0.4, 0.35, 0.2, 0.3], method="t")
    >>> ci.low <= ci.estimate <= ci.high
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmie._version import __version__

# Public name -> module that defines it. Kept sorted by module; ``__all__`` is derived.
_EXPORTS: dict[str, str] = {
    # core: errors
    "CheckpointError": "mmie.errors",
    "ConfigError": "mmie.errors",
    "DataError": "mmie.errors",
    "IncompatibleModelError": "mmie.errors",
    "InterventionError": "mmie.errors",
    "MmieError": "mmie.errors",
    "MmieWarning": "mmie.errors",
    "ReconstructionError": "mmie.errors",
    "SmallSampleWarning": "mmie.errors",
    "TruncationWarning": "mmie.errors",
    # core: stats
    # core: seeding
    # model plumbing: models, hooks, activations
    # interventions: sae, gate, scrub, reft, generation
    # evaluation: lid, metrics, selection
    # experiment: unlearn, data, experiment
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmie' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from mmie.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        IncompatibleModelError,
        InterventionError,
        MmieError,
        MmieWarning,
        ReconstructionError,
        SmallSampleWarning,
        TruncationWarning,
    )
