"""Template input schemas and the checking of a run's inputs against them. Pure.

A field: ``{name, label, type: text|textarea|number|select, default?, required?,
min?, max?, options?, placeholder?}``. Inputs are checked, not silently coerced: a
number out of range or an option not offered is a 400 naming the input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from inference_club.errors import InvalidRequest

FIELD_TYPES = frozenset({"text", "textarea", "number", "select"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_FIELD_KEYS = {"name", "label", "type", "default", "required", "min", "max", "options", "placeholder"}
MAX_TEXT = 20_000


class SchemaError(ValueError):
    pass


def check_schema(fields: Any) -> list[dict[str, Any]]:
    """Validate an input schema (a template's); raises :class:`SchemaError`."""
    if not isinstance(fields, list):
        raise SchemaError("inputs must be a list of fields")
    names: set[str] = set()
    for i, field in enumerate(fields):
        if not isinstance(field, dict):
            raise SchemaError(f"inputs[{i}] must be an object")
        extra = set(field) - _FIELD_KEYS
        if extra:
            raise SchemaError(f"inputs[{i}]: unknown key {sorted(extra)[0]!r}")
        name = field.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name in names:
            raise SchemaError(f"inputs[{i}].name must be a unique identifier")
        names.add(name)
        if field.get("type") not in FIELD_TYPES:
            raise SchemaError(f"inputs[{i}].type must be one of {', '.join(sorted(FIELD_TYPES))}")
        if not isinstance(field.get("label"), str):
            raise SchemaError(f"inputs[{i}].label must be a string")
        if field["type"] == "select" and (
            not isinstance(field.get("options"), list)
            or not field["options"]
            or not all(isinstance(o, str) for o in field["options"])
        ):
            raise SchemaError(f"inputs[{i}]: a select needs 'options', a list of strings")
        if "default" in field:
            try:
                clean_value(field, field["default"])
            except InvalidRequest as exc:
                raise SchemaError(f"inputs[{i}].default: {exc.message}") from None
    return fields


def clean_value(field: Mapping[str, Any], value: Any) -> Any:
    name = field["name"]
    kind = field["type"]
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            if isinstance(value, str):
                try:
                    value = float(value) if "." in value else int(value)
                except ValueError:
                    raise InvalidRequest(f"inputs.{name} must be a number.", param=f"inputs.{name}") from None
            else:
                raise InvalidRequest(f"inputs.{name} must be a number.", param=f"inputs.{name}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        low, high = field.get("min"), field.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise InvalidRequest(
                f"inputs.{name} must be between {low if low is not None else '-∞'} and "
                f"{high if high is not None else '∞'}; got {value}.",
                param=f"inputs.{name}",
            )
        return value
    if not isinstance(value, str):
        raise InvalidRequest(f"inputs.{name} must be a string.", param=f"inputs.{name}")
    if len(value) > MAX_TEXT:
        raise InvalidRequest(f"inputs.{name} is longer than {MAX_TEXT} characters.", param=f"inputs.{name}")
    if kind == "select" and value not in field.get("options", []):
        raise InvalidRequest(
            f"inputs.{name} must be one of {', '.join(field['options'])}; got {value!r}.",
            param=f"inputs.{name}",
        )
    return value


def clean_inputs(fields: Sequence[Mapping[str, Any]], given: Any) -> dict[str, Any]:
    """Inputs checked against ``fields``: defaults applied, required ones present."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidRequest("'inputs' must be an object.", param="inputs")
    known = {f["name"] for f in fields}
    unknown = [k for k in given if k not in known]
    if unknown:
        raise InvalidRequest(
            f"inputs.{unknown[0]} is not an input of this template (it takes {', '.join(sorted(known))}).",
            param=f"inputs.{unknown[0]}",
        )
    out: dict[str, Any] = {}
    for field in fields:
        name = field["name"]
        value = given.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if "default" in field:
                out[name] = field["default"]
                continue
            if field.get("required"):
                raise InvalidRequest(f"inputs.{name} ({field['label']}) is required.", param=f"inputs.{name}")
            out[name] = None
            continue
        out[name] = clean_value(field, value)
    return out
