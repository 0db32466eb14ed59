"""Toy ``swe`` domain (multi-turn software repair): a one-file repository whose function has a wrong operator.

The row's repository (field ``repo``) is one module ``<module>.py`` with two functions of ``a, b``; one of them
computes with the wrong operator (``return a - b`` where ``a + b`` is meant). The user message reports the
symptom (``shop.total(4, 3) returns 1, but it should return 7.``); the row's ``tests`` (two asserts on the
broken function and one on the other) fail until the operator is fixed. The tools are the repository
environment's (``environments/repository.py``): ``read_file``, ``replace_in_file`` and ``run_tests``.

The reference conversation reads the file, replaces the broken line, runs the tests and says what it fixed
(4 assistant turns); the ``swe`` reward replays the episode's edits and runs the tests.
"""
from __future__ import annotations

import json
import random

from nemocascade.data.toy.common import ToyTask, reference_message

MODULES = ("shop", "stats", "geometry", "ledger", "scores", "inventory")
FUNCTIONS = ("total", "combine", "area", "balance", "merge", "span", "gain", "blend")
OPERATORS = ("+", "-", "*")
MAX_ARGUMENT = 9
STRING = {"type": "string"}
TOOLS = [
    {"type": "function", "name": "read_file", "description": "Reads a file",
     "parameters": {"type": "object", "required": ["path"], "properties": {"path": STRING}}},
    {"type": "function", "name": "replace_in_file", "description": "Replaces old by new",
     "parameters": {"type": "object", "required": ["path", "old", "new"],
                    "properties": {"path": STRING, "old": STRING, "new": STRING}}},
    {"type": "function", "name": "run_tests", "description": "Runs the tests",
     "parameters": {"type": "object", "properties": {}}}]


def _apply(operator: str, a: int, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[operator]


def _function(name: str, operator: str) -> str:
    return f"def {name}(a, b):\n    return a {operator} b\n"


def _assertion(module: str, name: str, operator: str, a: int, b: int) -> str:
    return f"from {module} import {name}; assert {name}({a}, {b}) == {_apply(operator, a, b)}"


def _arguments(rng: random.Random, right: str, wrong: str) -> tuple[int, int]:
    """Arguments on which the right and the wrong operator disagree."""
    while True:
        a, b = rng.randint(1, MAX_ARGUMENT), rng.randint(1, MAX_ARGUMENT)
        if _apply(right, a, b) != _apply(wrong, a, b):
            return a, b


def _call(name: str, **arguments) -> dict:
    return {"role": "assistant", "reasoning": f"Call {name}.", "content": "",
            "tool_calls": [{"name": name, "arguments": arguments}]}


def draw(rng: random.Random) -> ToyTask:
    module = rng.choice(MODULES)
    broken, other = rng.sample(FUNCTIONS, 2)
    right, wrong = rng.sample(OPERATORS, 2)
    other_operator = rng.choice(OPERATORS)
    path = f"{module}.py"
    source = _function(broken, wrong) + "\n\n" + _function(other, other_operator)
    if rng.random() < 0.5:
        source = _function(other, other_operator) + "\n\n" + _function(broken, wrong)
    shown, second = _arguments(rng, right, wrong), _arguments(rng, right, wrong)
    tests = [_assertion(module, broken, right, *shown), _assertion(module, broken, right, *second),
             _assertion(module, other, other_operator, rng.randint(1, MAX_ARGUMENT), rng.randint(1, MAX_ARGUMENT))]
    prompt = (f"{module}.{broken}({shown[0]}, {shown[1]}) returns {_apply(wrong, *shown)}, but it should return "
              f"{_apply(right, *shown)}. Fix {path}.")
    old, new = f"return a {wrong} b", f"return a {right} b"
    if source.count(old) != 1:               # the other function has the same body: replace the whole def
        old, new = _function(broken, wrong), _function(broken, right)
    followup = (
        {"role": "tool", "content": json.dumps({"content": source})},
        _call("replace_in_file", path=path, old=old, new=new),
        {"role": "tool", "content": json.dumps({"replaced": path})},
        _call("run_tests"),
        {"role": "tool", "content": json.dumps({"passed": len(tests), "failed": 0})},
        reference_message(f"Fixed {broken}: it now returns a {right} b.", "The tests pass."))
    return ToyTask(prompt=prompt, fields={"tools": TOOLS, "repo": {path: source}, "tests": tests},
                   reference=_call("read_file", path=path), followup=followup)
