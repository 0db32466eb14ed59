"""Toy ``code`` domain: tiny Python functions described in one sentence, with unit tests.

Each task family is a description template, a one-line body and an input sampler; a constant ``k`` (in
the function name and the body) and the function/argument names vary. The tests' expected values come
from running the reference solution on sampled inputs (tests/data checks the families independently).
Example fields: ``entry_point`` (str) and ``tests`` (``["assert f(1) == 2", ...]``).
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable

from nemocascade.data.toy.common import ToyTask, reference_message

NUM_TESTS = 3


def _int(rng: random.Random) -> int:
    return rng.randint(-20, 20)


def _int_list(rng: random.Random) -> list[int]:
    return [rng.randint(-9, 9) for _ in range(rng.randint(1, 5))]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdexyz") for _ in range(rng.randint(1, 5)))


INT_ARGS = ("x", "n", "a", "num", "value")
LIST_ARGS = ("xs", "nums", "values", "items")
STR_ARGS = ("s", "text", "word")
WIDE = (2, 99)


@dataclasses.dataclass(frozen=True)
class Family:
    """``names``: function-name choices ({k} is the constant); ``args``: argument-name choices;
    ``text``: the task sentence ({x}, {k}); ``body``: the return expression ({x}, {k}); ``k_range``:
    inclusive range of the constant, or None for a family without one."""
    names: tuple[str, ...]
    args: tuple[str, ...]
    text: str
    body: str
    sample: Callable[[random.Random], object]
    k_range: tuple[int, int] | None = None

    @property
    def num_prompts(self) -> int:
        """How many distinct prompts the family can produce."""
        num_k = self.k_range[1] - self.k_range[0] + 1 if self.k_range else 1
        return len(self.names) * len(self.args) * num_k


FAMILIES = (
    Family(("add_{k}", "plus_{k}"), INT_ARGS, "returns {x} plus {k}", "{x} + {k}", _int, WIDE),
    Family(("sub_{k}", "minus_{k}"), INT_ARGS, "returns {x} minus {k}", "{x} - {k}", _int, WIDE),
    Family(("times_{k}", "mul_{k}"), INT_ARGS, "returns {x} times {k}", "{x} * {k}", _int, WIDE),
    Family(("is_multiple_of_{k}",), INT_ARGS, "returns True if {x} is divisible by {k}, else False",
           "{x} % {k} == 0", _int, WIDE),
    Family(("cap_at_{k}", "min_with_{k}"), INT_ARGS, "returns the smaller of {x} and {k}", "min({x}, {k})", _int,
           WIDE),
    Family(("floor_at_{k}", "max_with_{k}"), INT_ARGS, "returns the larger of {x} and {k}", "max({x}, {k})", _int,
           WIDE),
    Family(("count_{k}",), LIST_ARGS, "returns how many times {k} appears in the list {x}", "{x}.count({k})",
           _int_list, (0, 9)),
    Family(("count_above_{k}",), LIST_ARGS, "returns how many numbers in the list {x} are greater than {k}",
           "sum(1 for v in {x} if v > {k})", _int_list, (0, 9)),
    Family(("repeat_{k}",), STR_ARGS, "returns the string {x} repeated {k} times", "{x} * {k}", _word, (2, 5)),
    Family(("first_{k}",), STR_ARGS, "returns the first {k} characters of the string {x}", "{x}[:{k}]", _word,
           (1, 5)),
    Family(("square", "squared"), INT_ARGS, "returns {x} squared", "{x} * {x}", _int),
    Family(("is_even",), INT_ARGS, "returns True if {x} is even, else False", "{x} % 2 == 0", _int),
    Family(("is_odd",), INT_ARGS, "returns True if {x} is odd, else False", "{x} % 2 == 1", _int),
    Family(("absolute", "abs_value"), INT_ARGS, "returns the absolute value of {x}", "abs({x})", _int),
    Family(("negate",), INT_ARGS, "returns {x} with its sign flipped", "-{x}", _int),
    Family(("list_sum", "total"), LIST_ARGS, "returns the sum of the list {x}", "sum({x})", _int_list),
    Family(("list_max", "largest"), LIST_ARGS, "returns the largest number in the list {x}", "max({x})", _int_list),
    Family(("list_min", "smallest"), LIST_ARGS, "returns the smallest number in the list {x}", "min({x})",
           _int_list),
    Family(("list_len", "size"), LIST_ARGS, "returns the number of items in the list {x}", "len({x})", _int_list),
    Family(("first_item",), LIST_ARGS, "returns the first item of the list {x}", "{x}[0]", _int_list),
    Family(("last_item",), LIST_ARGS, "returns the last item of the list {x}", "{x}[-1]", _int_list),
    Family(("reverse", "backwards"), STR_ARGS, "returns the string {x} reversed", "{x}[::-1]", _word),
    Family(("shout", "to_upper"), STR_ARGS, "returns the string {x} in upper case", "{x}.upper()", _word),
    Family(("double_it",), STR_ARGS, "returns the string {x} written twice", "{x} + {x}", _word),
    Family(("is_palindrome",), STR_ARGS, "returns True if the string {x} reads the same backwards, else False",
           "{x} == {x}[::-1]", _word),
)


# Families are drawn in proportion to their number of prompts, capped, so that small families are not drawn
# over and over once exhausted while the wide ones do not crowd them out.
MAX_FAMILY_WEIGHT = 100
FAMILY_WEIGHTS = tuple(min(f.num_prompts, MAX_FAMILY_WEIGHT) for f in FAMILIES)


def _compile(solution: str, entry_point: str) -> Callable[[object], object]:
    namespace: dict = {}
    exec(solution, namespace)  # the solution is this module's own template output, never model text
    return namespace[entry_point]


def draw(rng: random.Random) -> ToyTask:
    family = rng.choices(FAMILIES, weights=FAMILY_WEIGHTS)[0]
    k = rng.randint(*family.k_range) if family.k_range else None
    name = rng.choice(family.names).format(k=k)
    arg = rng.choice(family.args)
    body = family.body.format(x=arg, k=k)
    solution = f"def {name}({arg}):\n    return {body}\n"
    inputs = []
    while len(inputs) < NUM_TESTS:
        value = family.sample(rng)
        if value not in inputs:
            inputs.append(value)
    function = _compile(solution, name)
    tests = [f"assert {name}({value!r}) == {function(value)!r}" for value in inputs]
    prompt = f"Write a Python function {name}({arg}) that {family.text.format(x=arg, k=k)}."
    content = f"```python\n{solution}```"
    return ToyTask(prompt=prompt, fields={"entry_point": name, "tests": tests},
                   reference=reference_message(content, f"The function returns {body}."))
