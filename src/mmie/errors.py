"""Exception and warning classes used across mmie.

Every error mmie raises on purpose derives from :class:`MmieError`, so callers can catch
the library's own failures without catching unrelated bugs. Errors that are also a user
mistake derive from the matching built-in (``ValueError``) as well, so ``except ValueError``
keeps working.

Warnings derive from :class:`MmieWarning`; they are raised with ``stacklevel=2`` so that they
point at the caller's line.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "IncompatibleModelError",
    "InterventionError",
    "MmieError",
    "MmieWarning",
    "NumericalError",
    "ReconstructionError",
    "SmallSampleWarning",
    "TrainingError",
    "TruncationWarning",
]


class MmieError(Exception):
    """Base class of every error raised on purpose by mmie."""


class ConfigError(MmieError, ValueError):
    """A configuration value is missing, of the wrong type or inconsistent with another.

    The message names the field (``arms[1].alpha``) and says what was expected.
    """


class DataError(MmieError, ValueError):
    """A data file or record does not follow its schema; the message names the file and line."""


class IncompatibleModelError(MmieError, TypeError):
    """The model's architecture is not supported by an operation, or its shapes do not match.

    Raised, for example, when transformer blocks cannot be located in an unknown
    architecture (pass ``block_path`` explicitly) or when an SAE's ``d_in`` does not match
    the model's hidden size.
    """


class InterventionError(MmieError, RuntimeError):
    """An intervention was used in a state that does not allow it (e.g. hooks left behind)."""


class CheckpointError(MmieError, ValueError):
    """A checkpoint is missing keys, has unexpected keys or tensors of the wrong shape."""


class NumericalError(MmieError, FloatingPointError):
    """A model produced non-finite numbers (NaN or inf logits) where a metric needs finite ones.

    Raised by the scoring functions instead of returning a NaN perplexity or an empty
    result; the message names the first transformer block whose output is not finite, when
    it can be found (broken weights, a diverged training run, float16 overflow).
    """


class ReconstructionError(MmieError, ValueError):
    """An SAE reconstructs real activations so badly that it cannot belong to that layer.

    Typical causes: the wrong architecture in the config (a TopK SAE read as ReLU), weights
    stored transposed, or the SAE was trained on another layer or model.
    """


class TrainingError(MmieError, RuntimeError):
    """Training failed to do anything useful: a loss became non-finite, or the trained
    weights did not change (e.g. LoRA's ``lora_B`` stayed zero because no gradient reached it).
    """


class MmieWarning(UserWarning):
    """Base class of the warnings emitted by mmie."""


class SmallSampleWarning(MmieWarning):
    """A statistic was computed on so few values that its nominal guarantee does not hold.

    With 3-5 seeds, nominal-95% bootstrap intervals cover the true mean only 73-83% of the
    time; use ``method="t"`` for such sample sizes.
    """


class TruncationWarning(MmieWarning):
    """An input was truncated to fit the model's maximum length."""
