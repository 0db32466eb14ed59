"""A JSON Schema validator (the 2020-12 assertion keywords that structured-output data uses), no dependency.

``schema_errors(instance, schema)`` lists every violation as ``"$.path: what"`` (empty: valid);
``is_valid`` is its boolean. Supported assertions: ``type`` (one or a list; an integer-valued float counts as
``integer``, a bool is never a number), ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties``, ``patternProperties``, ``propertyNames``, ``minProperties`` / ``maxProperties``,
``dependentRequired``, ``items``, ``prefixItems``, ``contains`` / ``minContains`` / ``maxContains``,
``minItems`` / ``maxItems``, ``uniqueItems``, ``minLength`` / ``maxLength`` (code points), ``pattern``
(``re.search``), ``minimum`` / ``maximum`` / ``exclusiveMinimum`` / ``exclusiveMaximum``, ``multipleOf``,
``allOf`` / ``anyOf`` / ``oneOf`` / ``not``, ``if`` / ``then`` / ``else``, boolean schemas and local
``$ref`` (``#``, ``#/$defs/...``, ``#/definitions/...``). Values compare as JSON values (``1 == 1.0``,
``True != 1``). Annotations (``title``, ``description``, ``format``, ``default``, ...) and unknown keywords
are ignored, as the specification says; the assertion keywords this module does not implement
(``unevaluatedProperties``, ``$dynamicRef``, ...) raise ``SchemaError`` rather than pass silently, and so
does a malformed schema.

``strict_schema(schema)`` is the copy that NeMo Gym's structured-output verifier validates against: every
object schema with ``properties`` requires all of them and allows no others.
"""
from __future__ import annotations

import copy
import math
import re
from typing import Any, Iterator, Mapping

UNSUPPORTED = ("unevaluatedProperties", "unevaluatedItems", "$dynamicRef", "$recursiveRef", "dependentSchemas",
               "dependencies")
TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


class SchemaError(ValueError):
    """The schema itself is malformed or uses an assertion keyword this validator does not implement."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _has_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "number":
        return _is_number(value)
    if name == "integer":
        return _is_number(value) and (isinstance(value, int) or (math.isfinite(value) and value.is_integer()))
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    raise SchemaError(f"unknown type {name!r}; expected one of {TYPES}")


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: numbers by value (``1 == 1.0``), booleans distinct from numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keywords(schema: Any, path: str) -> None:
    """A non-boolean schema must be an object without the assertion keywords this module does not implement."""
    if not isinstance(schema, Mapping):
        raise SchemaError(f"a schema must be an object or a boolean, got {_show(schema)} at {path}")
    unsupported = [k for k in UNSUPPORTED if k in schema]
    if unsupported:
        raise SchemaError(f"schema keyword(s) {unsupported} at {path} are not supported by this validator")


class _Validator:
    def __init__(self, root: Any):
        self.root = root

    def resolve(self, ref: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"$ref {ref!r}: only local references ('#/...') are supported")
        node = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SchemaError(f"$ref {ref!r} does not resolve (no {part!r})")
        return node

    def errors(self, value: Any, schema: Any, path: str) -> Iterator[str]:
        if schema is True:
            return
        if schema is False:
            yield f"{path}: no value is allowed here"
            return
        _check_keywords(schema, path)
        if "$ref" in schema:
            yield from self.errors(value, self.resolve(schema["$ref"]), path)
        yield from self._type_and_values(value, schema, path)
        yield from self._combinators(value, schema, path)
        if isinstance(value, dict):
            yield from self._object(value, schema, path)
        elif isinstance(value, list):
            yield from self._array(value, schema, path)
        elif isinstance(value, str):
            yield from self._string(value, schema, path)
        elif _is_number(value):
            yield from self._number(value, schema, path)

    def valid(self, value: Any, schema: Any, path: str) -> bool:
        return next(iter(self.errors(value, schema, path)), None) is None

    def _type_and_values(self, value, schema, path):
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_has_type(value, n) for n in names):
                yield f"{path}: expected {' or '.join(map(str, names))}, got {_show(value)}"
        if "enum" in schema:
            if not isinstance(schema["enum"], list):
                raise SchemaError(f"'enum' at {path} must be a list")
            if not any(json_equal(value, option) for option in schema["enum"]):
                yield f"{path}: {_show(value)} is not one of {_show(schema['enum'])}"
        if "const" in schema and not json_equal(value, schema["const"]):
            yield f"{path}: expected {_show(schema['const'])}, got {_show(value)}"

    def _combinators(self, value, schema, path):
        for sub in schema.get("allOf", []):
            yield from self.errors(value, sub, path)
        if "anyOf" in schema and not any(self.valid(value, sub, path) for sub in schema["anyOf"]):
            yield f"{path}: matches none of the anyOf schemas"
        if "oneOf" in schema:
            matches = sum(self.valid(value, sub, path) for sub in schema["oneOf"])
            if matches != 1:
                yield f"{path}: matches {matches} of the oneOf schemas (expected exactly 1)"
        if "not" in schema and self.valid(value, schema["not"], path):
            yield f"{path}: matches the 'not' schema"
        if "if" in schema:
            branch = "then" if self.valid(value, schema["if"], path) else "else"
            if branch in schema:
                yield from self.errors(value, schema[branch], path)

    def _object(self, value: dict, schema, path):
        for name in schema.get("required", []):
            if name not in value:
                yield f"{path}: missing required property {name!r}"
        for name, needed in schema.get("dependentRequired", {}).items():
            if name in value:
                for other in needed:
                    if other not in value:
                        yield f"{path}: property {name!r} requires {other!r}"
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            yield f"{path}: {len(value)} properties, fewer than minProperties={schema['minProperties']}"
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            yield f"{path}: {len(value)} properties, more than maxProperties={schema['maxProperties']}"
        properties = schema.get("properties", {})
        patterns = [(re.compile(p), sub) for p, sub in schema.get("patternProperties", {}).items()]
        for name, item in value.items():
            item_path = f"{path}.{name}"
            if "propertyNames" in schema:
                yield from self.errors(name, schema["propertyNames"], f"{item_path} (name)")
            matched = name in properties
            if matched:
                yield from self.errors(item, properties[name], item_path)
            for pattern, sub in patterns:
                if pattern.search(name):
                    matched = True
                    yield from self.errors(item, sub, item_path)
            if not matched and "additionalProperties" in schema:
                if schema["additionalProperties"] is False:
                    yield f"{path}: property {name!r} is not allowed"
                else:
                    yield from self.errors(item, schema["additionalProperties"], item_path)

    def _array(self, value: list, schema, path):
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield f"{path}: {len(value)} items, fewer than minItems={schema['minItems']}"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield f"{path}: {len(value)} items, more than maxItems={schema['maxItems']}"
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            if i < len(prefix):
                yield from self.errors(item, prefix[i], f"{path}[{i}]")
            elif "items" in schema:
                if isinstance(schema["items"], list):
                    raise SchemaError(f"'items' at {path} is a list (draft 4-2019 tuple form); use 'prefixItems'")
                yield from self.errors(item, schema["items"], f"{path}[{i}]")
        if schema.get("uniqueItems"):
            for i in range(len(value)):
                if any(json_equal(value[i], value[j]) for j in range(i)):
                    yield f"{path}: item {i} repeats an earlier item (uniqueItems)"
                    break
        if "contains" in schema:
            count = sum(self.valid(item, schema["contains"], path) for item in value)
            low, high = schema.get("minContains", 1), schema.get("maxContains")
            if count < low or (high is not None and count > high):
                yield f"{path}: {count} items match 'contains' (expected {low}..{high if high is not None else ''})"

    def _string(self, value: str, schema, path):
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield f"{path}: {len(value)} characters, fewer than minLength={schema['minLength']}"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield f"{path}: {len(value)} characters, more than maxLength={schema['maxLength']}"
        if "pattern" in schema:
            try:
                found = re.search(schema["pattern"], value)
            except re.error as exc:
                raise SchemaError(f"'pattern' at {path} is not a valid regex: {exc}") from None
            if not found:
                yield f"{path}: {_show(value)} does not match pattern {schema['pattern']!r}"

    def _number(self, value, schema, path):
        bounds = (("minimum", lambda v, b: v >= b), ("maximum", lambda v, b: v <= b),
                  ("exclusiveMinimum", lambda v, b: v > b), ("exclusiveMaximum", lambda v, b: v < b))
        for keyword, within in bounds:
            if keyword in schema:
                if not _is_number(schema[keyword]):
                    raise SchemaError(f"{keyword!r} at {path} must be a number, got {_show(schema[keyword])}")
                if not within(value, schema[keyword]):
                    yield f"{path}: {value} violates {keyword}={schema[keyword]}"
        if "multipleOf" in schema:
            step = schema["multipleOf"]
            if not _is_number(step) or step <= 0:
                raise SchemaError(f"'multipleOf' at {path} must be a number > 0, got {_show(step)}")
            quotient = value / step
            if not (math.isfinite(quotient) and abs(quotient - round(quotient)) < 1e-9):
                yield f"{path}: {value} is not a multiple of {step}"


_SUBSCHEMA = ("additionalProperties", "propertyNames", "items", "contains", "not", "if", "then", "else")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_NUMBERS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
            "minItems", "maxItems", "minProperties", "maxProperties", "minContains", "maxContains")


def check_schema(schema: Any) -> None:
    """Raises ``SchemaError`` (naming the place) when ``schema`` or any subschema is malformed: not an object or
    boolean, an unknown ``type``, a bad ``pattern``, a non-numeric bound, an unresolved ``$ref``, a keyword
    this validator does not implement."""
    validator = _Validator(schema)

    def visit(node: Any, path: str) -> None:
        if isinstance(node, bool):
            return
        _check_keywords(node, path)
        for name in node["type"] if isinstance(node.get("type"), list) else [node.get("type", "null")]:
            _has_type(None, name)
        for keyword in _NUMBERS:
            if keyword in node and not _is_number(node[keyword]):
                raise SchemaError(f"{keyword!r} at {path} must be a number, got {_show(node[keyword])}")
        patterns = ([node["pattern"]] if "pattern" in node else []) + list(node.get("patternProperties", {}))
        for pattern in patterns:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise SchemaError(f"pattern {_show(pattern)} at {path} is not a valid regex: {exc}") from None
        if "$ref" in node:
            validator.resolve(node["$ref"])
        if isinstance(node.get("items"), list):
            raise SchemaError(f"'items' at {path} is a list (draft 4-2019 tuple form); use 'prefixItems'")
        for keyword in _SUBSCHEMA:
            if keyword in node:
                visit(node[keyword], f"{path}.{keyword}")
        for keyword in _SUBSCHEMA_LISTS:
            for i, sub in enumerate(node.get(keyword, [])):
                visit(sub, f"{path}.{keyword}[{i}]")
        for keyword in _SUBSCHEMA_MAPS:
            for name, sub in node.get(keyword, {}).items():
                visit(sub, f"{path}.{keyword}.{name}")

    visit(schema, "$")


def schema_errors(instance: Any, schema: Any) -> list[str]:
    """Every violation of ``schema`` by ``instance`` (a parsed JSON value), as ``"$.path: what"``."""
    return list(_Validator(schema).errors(instance, schema, "$"))


def is_valid(instance: Any, schema: Any) -> bool:
    validator = _Validator(schema)
    return validator.valid(instance, schema, "$")


def strict_schema(schema: Any) -> Any:
    """A copy of ``schema`` in which every object schema with ``properties`` requires all of them and sets
    ``additionalProperties: false`` (NeMo Gym's ``strictify``)."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("properties"), dict):
                node["required"] = list(node["properties"])
                node["additionalProperties"] = False
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    visit(schema)
    return schema
