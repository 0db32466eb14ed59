"""The ``structured_output`` reward: 1 when the final answer parses in the row's format and fits its schema.

Rows follow NeMo Gym's ``structured_outputs`` format (the multi-domain RL data): ``schema`` (a JSON Schema, as a
JSON string or an object; ``schema_str`` is accepted too) and ``schema_type``: ``json`` (default), ``toml`` or
``csv`` (rows of objects; cell strings are converted to the item schema's ``integer`` / ``number`` /
``boolean`` / ``null`` types where they parse). ``yaml`` and ``xml`` are refused with a clear error: their
parsers (PyYAML, xmltodict) are not dependencies of this project.

As in NeMo Gym's verifier, only schema adherence counts, not the content; the whole final answer (the text
after the reasoning block) must parse (a Markdown code fence around it is a parse error), and with
``strict=True`` (default) the schema is made strict first (``json_schema.strict_schema``: all properties
required, no others). Info: ``error_type`` (None, ``"parse_error"`` or ``"validation_error"``).
"""
from __future__ import annotations

import csv
import functools
import io
import json
import tomllib
from typing import Any

from nemocascade.rewards import json_schema
from nemocascade.rewards.base import RewardFn, Verification

SCHEMA_TYPES = ("json", "toml", "csv")
UNSUPPORTED_SCHEMA_TYPES = {"yaml": "PyYAML", "xml": "xmltodict"}
_CSV_SCALARS = {"integer": int, "number": float}


def _schema_text(sample: dict) -> Any:
    return sample["schema"] if "schema" in sample else sample.get("schema_str")


@functools.lru_cache(maxsize=4096)
def _parsed_schema(text: str, strict: bool) -> Any:
    schema = json.loads(text)
    return json_schema.strict_schema(schema) if strict else schema


def _csv_cell(value: str | None, type_name: Any) -> Any:
    names = type_name if isinstance(type_name, list) else [type_name]
    if value in (None, "") and "null" in names:
        return None
    for name in names:
        try:
            if name in _CSV_SCALARS:
                return _CSV_SCALARS[name](value)
            if name == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
        except (TypeError, ValueError):
            continue
    return value


def parse_structured(text: str, schema_type: str, schema: Any) -> Any:
    """``text`` parsed as ``schema_type`` (raises ValueError when it does not parse)."""
    if schema_type == "json":
        return json.loads(text)
    if schema_type == "toml":
        return tomllib.loads(text)
    rows = list(csv.DictReader(io.StringIO(text)))
    items = schema.get("items", {}) if isinstance(schema, dict) else {}
    properties = items.get("properties", {}) if isinstance(items, dict) else {}
    return [{key: _csv_cell(value, (properties.get(key) or {}).get("type", "string")) for key, value in row.items()}
            for row in rows]


class StructuredOutputReward(RewardFn):
    """Options: ``strict`` (make the schema strict first, NeMo Gym's behaviour; default True), plus the
    ``RewardFn`` options."""
    domain = "structured_output"

    def __init__(self, *, strict: bool = True, **options):
        super().__init__(**options)
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be bool, got {strict!r}")
        self.strict = strict

    def _schema(self, sample: dict) -> Any:
        schema = _schema_text(sample)
        text = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True)
        return _parsed_schema(text, self.strict)

    def validate_example(self, where: str, sample: dict) -> None:
        schema = _schema_text(sample)
        if not isinstance(schema, (str, dict)):
            raise ValueError(f"{where} needs 'schema' (a JSON Schema as a JSON string or an object), got "
                             f"{schema!r:.60}")
        schema_type = sample.get("schema_type", "json")
        if schema_type in UNSUPPORTED_SCHEMA_TYPES:
            raise ValueError(f"{where}['schema_type'] = {schema_type!r} needs {UNSUPPORTED_SCHEMA_TYPES[schema_type]}, "
                             f"which is not a dependency; supported: {SCHEMA_TYPES}")
        if schema_type not in SCHEMA_TYPES:
            raise ValueError(f"{where}['schema_type'] = {schema_type!r}; expected one of {SCHEMA_TYPES}")
        try:
            json_schema.check_schema(self._schema(sample))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}['schema'] is not valid JSON ({exc.msg} at column {exc.colno})") from None
        except json_schema.SchemaError as exc:
            raise ValueError(f"{where}['schema']: {exc}") from None

    def verify(self, sample: dict, answer: str) -> Verification:
        schema = self._schema(sample)
        try:
            value = parse_structured(answer, sample.get("schema_type", "json"), schema)
        except (ValueError, TypeError, csv.Error) as exc:
            return Verification(0.0, f"does not parse: {exc}"[:200], False, {"error_type": "parse_error"})
        errors = json_schema.schema_errors(value, schema)
        if errors:
            return Verification(0.0, f"schema: {errors[0]}"[:200], True, {"error_type": "validation_error"})
        return Verification(1.0, "", True, {"error_type": None})
