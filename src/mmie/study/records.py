"""Typed metric records: one value per item, and how they aggregate.

Every metric a study computes is a :class:`MetricRecord`: the aggregate ``value``, one
``per_item`` value per prompt, text or member (in the item order of the study's sets, so
records of the base model and of every arm pair up item by item), and its ``scale``, which
says how the items aggregate:

* ``"mean"``: ``value`` is the plain mean of ``per_item`` (extraction strength, script mass,
  AUC placement values);
* ``"log_perplexity"``: ``per_item`` are per-text mean NLLs (nats per token) and ``weights``
  their token counts; ``value`` is the token-weighted perplexity ``exp(Σ w x / Σ w)``.

A ``mean`` record may lack a value for an item (NaN in memory, ``null`` in JSON): e.g. the
fluency of an empty continuation. ``items`` names the item list the values are aligned with
(``"prompts.forget"``, ``"retain_eval"``, see :meth:`EvalSets.items`), which is what the
selection/test split of a study indexes. Records are stored in shards as JSON objects
(:meth:`MetricRecord.to_dict`); extra metric-specific facts (``tpr_at_1pct_fpr``,
``control_auc``, ``unresolved``) travel in ``extra``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mmie.errors import DataError

__all__ = ["MetricRecord", "Records", "Scale"]

Scale = Literal["mean", "log_perplexity"]
_SCALES: tuple[str, ...] = ("mean", "log_perplexity")
_KEYS = ("value", "per_item", "scale", "weights", "items")


@dataclass(frozen=True)
class MetricRecord:
    """One metric of one model: its aggregate, its per-item values and their scale.

    Attributes:
        value: the aggregate (the mean of ``per_item``, or the token-weighted perplexity).
        per_item: one value per item.
        scale: ``"mean"`` or ``"log_perplexity"`` (see the module docstring).
        weights: token counts per item (``log_perplexity`` only).
        items: name of the item list the values are aligned with.
        extra: JSON-ready metric-specific facts.

    Raises:
        DataError: ``weights`` missing or malformed for a perplexity record, or present for
            a mean record; an unknown scale.
    """

    value: float
    per_item: tuple[float, ...]
    scale: Scale = "mean"
    weights: tuple[int, ...] | None = None
    items: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scale not in _SCALES:
            raise DataError(f"record scale must be one of {_SCALES}, got {self.scale!r}")
        object.__setattr__(self, "per_item", tuple(float(v) for v in self.per_item))
        if self.scale == "log_perplexity":
            if self.weights is None or len(self.weights) != len(self.per_item):
                raise DataError("a perplexity record needs one token count per item as weights")
            weights = tuple(int(w) for w in self.weights)
            if not all(w > 0 for w in weights):
                raise DataError("perplexity weights must be positive token counts")
            object.__setattr__(self, "weights", weights)
            if not all(math.isfinite(v) for v in self.per_item):
                raise DataError("a perplexity record needs a finite mean NLL for every item")
        elif self.weights is not None:
            raise DataError(f"only log_perplexity records carry weights, not {self.scale!r} ones")

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.per_item)

    @property
    def finite(self) -> np.ndarray:
        """``[n_items]`` bool: which items have a value."""
        return np.isfinite(np.asarray(self.per_item, dtype=np.float64))

    def item_values(self) -> np.ndarray:
        """The per-item values whose plain mean is the record's aggregate on its test scale.

        For ``mean`` records these are ``per_item``. Perplexity records aggregate a
        *token-weighted* mean NLL ``m = Σ w_i x_i / Σ w_i`` of the per-text mean NLLs
        ``x_i``; their item values are the linearised pseudo-values
        ``m + (w_i / w̄)(x_i − m)``, whose plain mean is ``m = log(perplexity)`` (the delta
        method for a ratio estimator). Tests and intervals on them are about the log of the
        token-weighted perplexity, the number the report shows.

        Returns:
            ``[n_items]`` float64 values.
        """
        x = np.asarray(self.per_item, dtype=np.float64)
        if self.scale == "mean":
            return x
        w = np.asarray(self.weights, dtype=np.float64)
        m = float(np.sum(w * x) / np.sum(w))
        result: np.ndarray = m + (w / w.mean()) * (x - m)
        return result

    def to_dict(self) -> dict[str, Any]:
        """The record as stored in shards and reports."""
        out: dict[str, Any] = {
            "value": float(self.value) if math.isfinite(self.value) else None,
            "per_item": [v if math.isfinite(v) else None for v in self.per_item],
            "scale": self.scale,
        }
        if self.weights is not None:
            out["weights"] = list(self.weights)
        if self.items:
            out["items"] = self.items
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "record") -> MetricRecord:
        """Inverse of :meth:`to_dict`.

        Raises:
            DataError: a missing or malformed field (the message names ``source``).
        """
        if not isinstance(data, Mapping):
            raise DataError(f"{source}: a metric record must be an object")
        missing = [k for k in ("value", "per_item", "scale") if k not in data]
        if missing:
            raise DataError(f"{source}: metric record lacks {missing}")
        value, per_item = data["value"], data["per_item"]
        if value is None:
            value = math.nan
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise DataError(f"{source}: value must be a number, got {value!r}")
        if not isinstance(per_item, Sequence) or isinstance(per_item, str):
            raise DataError(f"{source}: per_item must be a list of numbers")
        per_item = [math.nan if v is None else v for v in per_item]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in per_item):
            raise DataError(f"{source}: per_item must hold numbers (or null) only")
        items = data.get("items", "")
        if not isinstance(items, str):
            raise DataError(f"{source}: items must be a string, got {items!r}")
        try:
            return cls(
                value=float(value),
                per_item=tuple(per_item),
                scale=data["scale"],
                weights=tuple(data["weights"]) if data.get("weights") is not None else None,
                items=items,
                extra={k: v for k, v in data.items() if k not in _KEYS},
            )
        except (TypeError, ValueError) as exc:
            raise DataError(f"{source}: {exc}") from exc


Records = dict[str, MetricRecord]
"""Record key (``"forget_es"``, ``"related_ppl.urdu"``) -> :class:`MetricRecord`."""
