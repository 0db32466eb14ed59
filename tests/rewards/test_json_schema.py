"""Our JSON Schema validator against the ``jsonschema`` library (Draft 2020-12) on many mutated instances."""
import copy
import json
import random

import jsonschema
import pytest

from nemocascade.rewards import json_schema

PHOTO = {  # shaped like NeMo Gym's structured-output rows (nested objects, enums, patterns, bounds)
    "type": "object", "required": ["technique", "capture", "tags"],
    "properties": {
        "technique": {"type": "object", "required": ["name", "year"], "additionalProperties": False,
                      "properties": {"name": {"type": "string", "enum": ["long_exposure", "macro", "hdr"]},
                                     "year": {"type": "string", "pattern": "^[0-9]{4}$"}}},
        "capture": {"type": "object", "required": ["iso", "aperture", "stabilized"], "additionalProperties": False,
                    "properties": {"iso": {"type": "integer", "minimum": 50, "maximum": 12800},
                                   "aperture": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 64},
                                   "stabilized": {"type": "boolean"}}},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 12},
                 "minItems": 1, "maxItems": 4, "uniqueItems": True},
        "note": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}
PHOTO_VALUE = {"technique": {"name": "long_exposure", "year": "1840"},
               "capture": {"iso": 100, "aperture": 11.0, "stabilized": True},
               "tags": ["water", "clouds"], "note": None}

COMBINED = {
    "$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                        "required": ["x", "y"]}},
    "type": "object",
    "properties": {
        "shape": {"oneOf": [{"const": "circle"}, {"const": "polygon"}]},
        "code": {"oneOf": [{"type": "integer"}, {"minimum": 10}]},
        "center": {"$ref": "#/$defs/point"},
        "vertices": {"type": "array", "items": {"$ref": "#/$defs/point"}, "contains": {"properties": {
            "x": {"const": 0}}}, "maxContains": 2},
        "radius": {"anyOf": [{"type": "integer", "multipleOf": 2}, {"type": "null"}]},
        "label": {"allOf": [{"type": "string"}, {"not": {"enum": ["", "none"]}}]},
        "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
        "meta": {"type": "object", "patternProperties": {"^x-": {"type": "string"}},
                 "propertyNames": {"maxLength": 6}, "minProperties": 1, "maxProperties": 3,
                 "dependentRequired": {"x-a": ["x-b"]}},
    },
    "if": {"properties": {"shape": {"const": "circle"}}}, "then": {"required": ["radius"]},
    "else": {"required": ["vertices"]},
}
COMBINED_VALUE = {"shape": "circle", "code": 3, "center": {"x": 0, "y": 1.5}, "radius": 4, "label": "a",
                  "vertices": [{"x": 0, "y": 0}, {"x": 1, "y": 1}], "pair": ["a", 1],
                  "meta": {"x-a": "1", "x-b": "2"}}

REPLACEMENTS = [None, True, False, 0, 1, 2.0, 2.5, -7, 12, 10.5, 100000, "", "x", "1840", "long_exposure", "circle", [],
                ["water"], ["water", "water"], {}, {"x": 0, "y": 0}, {"x-a": "1"}]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, prefix + (i,))


def _at(value, path):
    for part in path:
        value = value[part]
    return value


def _mutate(value, rng: random.Random, pool):
    value = copy.deepcopy(value)
    paths = [p for p in _paths(value) if p]
    path = rng.choice(paths)
    parent = value
    for part in path[:-1]:
        parent = parent[part]
    action = rng.random()
    if action < 0.2 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action < 0.35 and isinstance(parent, dict):
        parent[rng.choice(["extra", "x-c", "longname", "note"])] = rng.choice(pool)
    elif action < 0.45 and isinstance(parent, list):
        parent.append(copy.deepcopy(rng.choice(pool + parent)))
    else:  # half the time a value of the same JSON type (near misses: enums, patterns, bounds, lengths)
        same_type = [v for v in pool if type(v) is type(parent[path[-1]])]
        parent[path[-1]] = copy.deepcopy(rng.choice(same_type if same_type and rng.random() < 0.5 else pool))
    return value


@pytest.mark.parametrize("schema,value", [(PHOTO, PHOTO_VALUE), (COMBINED, COMBINED_VALUE),
                                          (json_schema.strict_schema(PHOTO), PHOTO_VALUE)],
                         ids=["photo", "combined", "photo-strict"])
def test_agrees_with_jsonschema_on_mutated_instances(schema, value):
    reference = jsonschema.Draft202012Validator(schema)
    json_schema.check_schema(schema)
    rng = random.Random(0)
    # Replacements: odd values, and the valid value's own parts (which often keep the instance valid).
    pool = REPLACEMENTS + [_at(value, p) for p in _paths(value) if p] * 2
    instances = [value]
    for _ in range(800):
        instance = value
        for _ in range(rng.choice([1, 1, 2])):
            if isinstance(instance, (dict, list)) and instance:
                instance = _mutate(instance, rng, pool)
        instances.append(instance)
    verdicts = []
    for instance in instances:
        ours = json_schema.schema_errors(instance, schema)
        expected = reference.is_valid(instance)
        assert (not ours) == expected, (json.dumps(instance), ours,
                                        [e.message for e in reference.iter_errors(instance)])
        assert json_schema.is_valid(instance, schema) == expected
        verdicts.append(expected)
    assert verdicts[0] and 0.1 < sum(verdicts) / len(verdicts) < 0.9, "the mutations must hit both verdicts"


def test_values_compare_as_json():
    assert json_schema.is_valid(1.0, {"type": "integer"}) and not json_schema.is_valid(1.5, {"type": "integer"})
    assert not json_schema.is_valid(True, {"type": "number"}) and not json_schema.is_valid(1, {"type": "boolean"})
    assert json_schema.is_valid(1.0, {"enum": [1]}) and not json_schema.is_valid(True, {"enum": [1]})
    assert not json_schema.is_valid([1, 1.0], {"uniqueItems": True})
    assert json_schema.is_valid([1, True], {"uniqueItems": True})


def test_errors_name_the_path():
    errors = json_schema.schema_errors({"technique": {"name": "pinhole", "year": "18"}, "capture": {}},
                                       PHOTO)
    assert "$: missing required property 'tags'" in errors
    assert any(e.startswith("$.technique.name: 'pinhole' is not one of") for e in errors)
    assert any(e.startswith("$.technique.year: '18' does not match pattern") for e in errors)
    assert "$.capture: missing required property 'iso'" in errors


def test_strict_schema_requires_every_property_and_forbids_others():
    loose = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}}}}
    before = copy.deepcopy(loose)
    strict = json_schema.strict_schema(loose)
    assert loose == before  # a copy: the row's schema is left as it was
    assert json_schema.is_valid({}, loose) and not json_schema.is_valid({}, strict)
    assert json_schema.is_valid({"a": {"b": 1}}, strict)
    assert not json_schema.is_valid({"a": {"b": 1, "c": 2}}, strict)
    assert not json_schema.is_valid({"a": {"b": 1}, "z": 0}, strict)


@pytest.mark.parametrize("schema,message", [
    ({"type": "obj"}, "unknown type 'obj'"),
    ({"properties": {"a": {"unevaluatedProperties": False}}}, r"\['unevaluatedProperties'\] at \$.properties.a"),
    ({"properties": {"a": {"pattern": "("}}}, "not a valid regex"),
    ({"items": {"$ref": "#/$defs/missing"}}, "does not resolve"),
    ({"$ref": "https://example.com/s.json"}, "only local references"),
    ({"minimum": "3"}, "'minimum' at \\$ must be a number"),
    ({"items": [{"type": "string"}]}, "use 'prefixItems'"),
    ({"anyOf": [3]}, "must be an object or a boolean"),
])
def test_malformed_or_unsupported_schemas_are_refused(schema, message):
    with pytest.raises(json_schema.SchemaError, match=message):
        json_schema.check_schema(schema)
