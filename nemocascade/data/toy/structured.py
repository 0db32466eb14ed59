"""Toy ``structured_output`` domain: a short record to return as one JSON object that fits a given schema.

The prompt states a person's name, age and city and shows the JSON Schema (example fields ``schema``, a JSON
string, and ``schema_type = "json"``, NeMo Gym's structured-output format); the reference answer is the record as
compact JSON with the schema's keys in order. Which keys the schema asks for varies (two or three of them), so
the answer must follow the schema rather than a fixed shape.
"""
from __future__ import annotations

import json
import random

from nemocascade.data.toy.common import ToyTask, reference_message

CITIES = ("Paris", "Oslo", "Lima", "Rome", "Cairo", "Tokyo", "Quito", "Delhi", "Perth", "Dakar", "Riga", "Bern")
NAMES = ("Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jade", "Kim", "Lou")
FIELD_TYPES = {"name": "string", "age": "integer", "city": "string"}
FIELD_SETS = (("name", "age"), ("name", "city"), ("age", "city"), ("name", "age", "city"))


def draw(rng: random.Random) -> ToyTask:
    record = {"name": rng.choice(NAMES), "age": rng.randint(18, 60), "city": rng.choice(CITIES)}
    fields = rng.choice(FIELD_SETS)
    schema = json.dumps({"type": "object", "properties": {f: {"type": FIELD_TYPES[f]} for f in fields}})
    prompt = (f"{record['name']} is {record['age']} and lives in {record['city']}. "
              f"Reply with JSON for this schema: {schema}")
    answer = json.dumps({f: record[f] for f in fields})
    return ToyTask(prompt=prompt, fields={"schema": schema, "schema_type": "json"},
                   reference=reference_message(answer, f"Keys: {', '.join(fields)}."))
