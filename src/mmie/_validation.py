"""Argument validators shared by every public function and config class.

One vocabulary for the whole library, in the style of scipy's ``_bootstrap_iv``: each
validator takes the value and the argument's name, returns the value normalised (NumPy
integers become ``int``, NumPy floats ``float``, sequences tuples) and raises

* :class:`TypeError` when the value has the wrong *type* (a string where a number is
  expected, a float where an integer is expected, ``True`` where a number is expected), and
* :class:`ValueError` when it has the right type but a value outside the allowed range.

Messages name the argument, what was expected and what was received. Config classes call
the same validators through :mod:`mmie._config`, which turns both errors into a
:class:`~mmie.ConfigError` naming the field path.

Example:
    >>> positive_int(np.int64(8), "batch_size")
    8
    >>> positive_int("8", "batch_size")
    Traceback (most recent call last):
    ...
    TypeError: batch_size must be an int >= 1, got str '8'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "FrozenMapping",
    "boolean",
    "choice",
    "finite_float",
    "integer",
    "integer_sequence",
    "is_integer",
    "is_real",
    "nonnegative_float",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "text_list",
    "unit_interval",
]

T = TypeVar("T")


def _got(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number (Python or NumPy int/float), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def integer(
    value: object, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (either bound optional).

    Raises:
        TypeError: not an integer (floats such as ``1.7`` or ``2.0``, strings and bools
            are rejected, never rounded).
        ValueError: outside the bounds.
    """
    if minimum is not None and maximum is not None:
        expected = f"an int in [{minimum}, {maximum}]"
    elif minimum is not None:
        expected = f"an int >= {minimum}"
    elif maximum is not None:
        expected = f"an int <= {maximum}"
    else:
        expected = "an int"
    if not is_integer(value):
        raise TypeError(f"{name} must be {expected}, got {_got(value)}")
    out = int(value)  # type: ignore[call-overload]
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        raise ValueError(f"{name} must be {expected}, got {out}")
    return out


def positive_int(value: object, name: str) -> int:
    """``value`` as an ``int >= 1`` (see :func:`integer`)."""
    return integer(value, name, minimum=1)


def nonnegative_int(value: object, name: str) -> int:
    """``value`` as an ``int >= 0`` (see :func:`integer`)."""
    return integer(value, name, minimum=0)


def finite_float(
    value: object,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` in the interval from ``low`` to ``high``.

    Args:
        value: the value.
        name: the argument's name, for messages.
        low: lower bound.
        high: upper bound.
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.

    Raises:
        TypeError: not a real number (strings, bools, tensors, ...).
        ValueError: NaN, infinite, or outside the interval.
    """
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    if low == -math.inf and high == math.inf:
        expected = "a finite float"
    elif high == math.inf:
        expected = f"a finite float {'>' if low_open else '>='} {low:g}"
    elif low == -math.inf:
        expected = f"a finite float {'<' if high_open else '<='} {high:g}"
    else:
        expected = f"a float in {left}{low:g}, {high:g}{right}"
    if not is_real(value):
        raise TypeError(f"{name} must be {expected}, got {_got(value)}")
    out = float(value)  # type: ignore[arg-type]
    ok = math.isfinite(out)
    ok = ok and (out > low if low_open else out >= low)
    ok = ok and (out < high if high_open else out <= high)
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return out


def positive_float(value: object, name: str) -> float:
    """``value`` as a finite ``float > 0``."""
    return finite_float(value, name, low=0.0, low_open=True)


def nonnegative_float(value: object, name: str) -> float:
    """``value`` as a finite ``float >= 0``."""
    return finite_float(value, name, low=0.0)


def unit_interval(value: object, name: str) -> float:
    """``value`` as a ``float`` in ``[0, 1]`` (no clamping is ever done)."""
    return finite_float(value, name, low=0.0, high=1.0)


def boolean(value: object, name: str) -> bool:
    """``value`` as a ``bool`` (Python or NumPy); ``0``/``1`` and strings are rejected."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_got(value)}")
    return bool(value)


def choice(value: T, name: str, options: Sequence[T]) -> T:
    """``value`` if it equals one of ``options`` and has the same type (``True`` is not ``1``).

    Raises:
        ValueError: it is not one of them (the message lists the options).
    """
    for option in options:
        if type(value) is type(option) and value == option:
            return value
    listed = ", ".join(repr(o) for o in options)
    raise ValueError(f"{name} must be one of {listed}; got {value!r}")


def integer_sequence(
    values: object, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> tuple[int, ...]:
    """``values`` (a sequence or 1-D integer array/tensor) as a tuple of ``int``.

    Raises:
        TypeError: a string, a mapping, a non-sequence, or an element that is not an
            integer (``"12"`` is not ``(1, 2)``; ``1.7`` is not ``1``).
        ValueError: an element outside the bounds.
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of ints, got {_got(values)}")
    if isinstance(values, dict):
        raise TypeError(f"{name} must be a sequence of ints, got a mapping")
    tolist = getattr(values, "tolist", None)
    items: Any = tolist() if callable(tolist) else list(values)
    if not isinstance(items, list):
        raise TypeError(f"{name} must be a 1-D sequence of ints, got a scalar {_got(values)}")
    return tuple(
        integer(v, f"{name}[{i}]", minimum=minimum, maximum=maximum) for i, v in enumerate(items)
    )


def text_list(texts: object, name: str, *, allow_empty: bool = False) -> list[str]:
    """``texts`` as a list of strings.

    Raises:
        TypeError: a single string (wrap it in a list), a non-sequence, or a non-string
            element (the message gives its index).
        ValueError: an empty sequence (unless ``allow_empty``).
    """
    if isinstance(texts, str):
        raise TypeError(
            f"{name} must be a sequence of strings, not a single string; wrap it: [text]"
        )
    if not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(texts).__name__}")
    out = list(texts)
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
    return out


K = TypeVar("K")
V = TypeVar("V")


class FrozenMapping(Mapping[K, V]):
    """A read-only mapping for a documented module constant.

    Like :class:`types.MappingProxyType` over a private copy, but it carries the constant's
    docstring (``help(mmie.LANGUAGE_NAMES)`` shows it), which a mapping proxy cannot.

    Args:
        data: the entries (copied).
        doc: the docstring.
    """

    def __init__(self, data: Mapping[K, V], doc: str) -> None:
        self._data: dict[K, V] = dict(data)
        self.__doc__ = doc

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"
