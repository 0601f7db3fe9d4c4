"""The base of every configuration class: typed, validated, dict round-trippable.

A config is a frozen, keyword-only dataclass that derives from :class:`ConfigBase` and
calls :func:`validate_fields` first in its ``__post_init__``. That checks every field
against its annotation (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, unions with
``None``, ``tuple[X, ...]`` and nested configs), with the validators of
:mod:`mmie._validation`, and normalises it (NumPy numbers become Python numbers, lists
tuples, mappings nested configs); cross-field rules follow with :func:`require`. Every
error is a :class:`~mmie.ConfigError` whose message starts with the field's path
(``arms[1].alpha: must be in [0, 1], got 1.5``). ``from_dict`` rejects unknown keys with
the closest known key as a suggestion, so a typo never falls back to a default silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from mmie._validation import is_integer, is_real
from mmie.errors import ConfigError

__all__ = ["ConfigBase", "FieldError", "require", "validate_fields"]

C = TypeVar("C", bound="ConfigBase")


class FieldError(ConfigError):
    """A :class:`ConfigError` that remembers which field it is about (for path prefixes)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def under(self, prefix: str) -> FieldError:
        """The same error with ``prefix`` prepended to the field path."""
        sep = "" if self.path.startswith("[") else "."
        return FieldError(f"{prefix}{sep}{self.path}", self.problem)


# ----------------------------------------------------------------------------- coercion
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it normalised (lists → tuples).

    Raises:
        FieldError: naming ``path`` when the value does not fit.
    """
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise FieldError(path, f"must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except FieldError as exc:
                errors.append(exc)
        raise FieldError(path, f"expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise FieldError(path, f"expected a list, got {value!r}")
        tolist = getattr(value, "tolist", None)  # NumPy arrays and tensors
        value = tolist() if callable(tolist) else list(value)
        if not isinstance(value, list):
            raise FieldError(path, f"expected a list, got a scalar {value!r}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _from_mapping(tp, value, path)
        raise FieldError(path, f"expected a table/object of {tp.__name__} fields, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise FieldError(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if not is_integer(value):
            raise FieldError(path, f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if not is_real(value):
            raise FieldError(path, f"expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise FieldError(path, f"must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise FieldError(path, f"expected a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported annotation {tp!r} at {path}")  # pragma: no cover


def _from_mapping(cls: type[Any], data: Mapping[str, Any], path: str) -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with a suggestion."""
    names = [f.name for f in dataclasses.fields(cls)]
    renamed: Mapping[str, str] = getattr(cls, "_RENAMED", {})
    for key in data:
        if key in renamed and key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise FieldError(where, f"this key was renamed; use {renamed[key]!r} instead")
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {names}"
            raise FieldError(where, f"unknown key{hint}")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in data
    ]
    if required:
        where = f"{path}.{required[0]}" if path else required[0]
        raise FieldError(where, "is required")
    try:
        return cls(**dict(data))
    except FieldError as exc:
        raise (exc.under(path) if path else exc) from None


def validate_fields(obj: Any) -> None:
    """Type-check and normalise every field of a frozen dataclass in ``__post_init__``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = _coerce(getattr(obj, f.name), hints[f.name], f.name)
        object.__setattr__(obj, f.name, value)


def require(ok: bool, path: str, problem: str) -> None:
    if not ok:
        raise FieldError(path, problem)


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


class ConfigBase:
    """``to_dict``/``from_dict``/``replace`` shared by every config dataclass.

    Subclasses may set ``_RENAMED = {"old_key": "new_key"}``: a mapping that still uses an
    old key is refused with a message naming the new one.
    """

    _RENAMED: typing.ClassVar[Mapping[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON/TOML-ready data (tuples become lists)."""
        out = _to_plain(self)
        assert isinstance(out, dict)
        return out

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build the config from a mapping such as :meth:`to_dict`'s output.

        Missing keys take their defaults; unknown keys are rejected.

        Raises:
            ConfigError: an unknown key (with the closest known key suggested), a renamed
                key (with its new name), a missing required key or a bad value; the message
                names the field path.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping of config fields, got {type(data).__name__}")
        result: C = _from_mapping(cls, data, "")
        return result

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied and validated again.

        Nested config sections may be given as mappings, which are merged into the current
        section (``replace(data={"n_eval": 8})`` keeps the other data fields).

        Raises:
            ConfigError: a change is invalid (the message names the field path).
        """
        data = self.to_dict()
        _deep_merge(data, changes, "")
        result: C = type(self).from_dict(data)
        return result


def _deep_merge(base: dict[str, Any], changes: Mapping[str, Any], path: str) -> None:
    for key, value in changes.items():
        is_config = dataclasses.is_dataclass(value) and not isinstance(value, type)
        if is_config or (isinstance(value, tuple) and any(map(dataclasses.is_dataclass, value))):
            value = _to_plain(value)
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value, f"{path}{key}.")
        else:
            base[key] = value
