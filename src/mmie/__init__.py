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
    "ConfidenceInterval": "mmie.stats",
    "PermutationTestResult": "mmie.stats",
    "bootstrap_ci": "mmie.stats",
    "holm_bonferroni": "mmie.stats",
    "paired_permutation_test": "mmie.stats",
    "permutation_test": "mmie.stats",
    # core: seeding
    "seed_context": "mmie.seeding",
    "set_seed": "mmie.seeding",
    # model plumbing: models, hooks, activations
    "block_device": "mmie.models",
    "block_dtype": "mmie.models",
    "count_live_models": "mmie.models",
    "free_memory": "mmie.models",
    "get_block": "mmie.models",
    "get_blocks": "mmie.models",
    "hidden_size": "mmie.models",
    "input_device": "mmie.models",
    "load_causal_lm": "mmie.models",
    "loaded_model": "mmie.models",
    "num_layers": "mmie.models",
    "prepare_tokenizer": "mmie.models",
    "tokenize": "mmie.models",
    "unwrap_model": "mmie.models",
    "BlockIntervention": "mmie.hooks",
    "HookSet": "mmie.hooks",
    "assert_no_mmie_hooks": "mmie.hooks",
    "interventions": "mmie.hooks",
    "mmie_hooks": "mmie.hooks",
    "remove_mmie_hooks": "mmie.hooks",
    "Activations": "mmie.activations",
    "collect_activations": "mmie.activations",
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
    from mmie.activations import Activations, collect_activations
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
    from mmie.hooks import (
        BlockIntervention,
        HookSet,
        assert_no_mmie_hooks,
        interventions,
        mmie_hooks,
        remove_mmie_hooks,
    )
    from mmie.models import (
        block_device,
        block_dtype,
        count_live_models,
        free_memory,
        get_block,
        get_blocks,
        hidden_size,
        input_device,
        load_causal_lm,
        loaded_model,
        num_layers,
        prepare_tokenizer,
        tokenize,
        unwrap_model,
    )
    from mmie.seeding import seed_context, set_seed
    from mmie.stats import (
        ConfidenceInterval,
        PermutationTestResult,
        bootstrap_ci,
        holm_bonferroni,
        paired_permutation_test,
        permutation_test,
    )
