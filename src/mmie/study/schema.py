"""The JSON schema of a report document and a small validator for it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from mmie.errors import DataError

__all__ = ["REPORT_SCHEMA_VERSION", "report_schema", "validate_report"]

REPORT_SCHEMA_VERSION = "1.0"


_SCHEMA_FILE = "report_schema.json"


# ----------------------------------------------------------------------------- schema
def report_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of :attr:`Report.data`."""
    text = resources.files("mmie").joinpath(_SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES[name])


def _validate(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: str
) -> list[str]:
    """A small validator for the subset of JSON Schema the report schema uses."""
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        return _validate(value, root["$defs"][ref.split("/")[-1]], root, path)
    errors: list[str] = []
    if "anyOf" in schema:
        if all(_validate(value, s, root, path) for s in schema["anyOf"]):
            errors.append(f"{path}: matches none of the allowed forms")
        return errors
    types_ = schema.get("type")
    if types_ is not None:
        names = [types_] if isinstance(types_, str) else list(types_)
        if not any(_type_ok(value, t) for t in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required key {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            sub = f"{path}.{key}"
            if key in props:
                errors += _validate(item, props[key], root, sub)
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, Mapping):
                errors += _validate(item, extra, root, sub)
    if isinstance(value, (list, tuple)):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += _validate(item, schema["items"], root, f"{path}[{i}]")
    return errors


def validate_report(data: Mapping[str, Any]) -> None:
    """Check a report document against :func:`report_schema`.

    Uses a small built-in validator for the schema's keywords (type, properties, required,
    additionalProperties, items, enum, const, minimum, maximum, anyOf, $ref), so no extra
    package is needed; the test suite also checks the schema with ``jsonschema``.

    Raises:
        DataError: the document does not conform; the message lists the first problems
            with their JSON paths.
    """

    schema = report_schema()
    errors = _validate(data, schema, schema, "$")
    if errors:
        shown = "; ".join(errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise DataError(f"report does not match its schema: {shown}{more}")
