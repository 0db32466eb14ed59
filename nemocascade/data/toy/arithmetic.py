"""Toy ``math`` domain: word problems with 2-3 operations (+, -, *) on small numbers.

Every value stays in [1, ``MAX_VALUE``]; added and subtracted numbers are at most ``MAX_OPERAND`` and only values up
to ``MAX_MULTIPLICAND`` are doubled, so the table of arithmetic facts (~200 of them) is small enough for the tiny
model to learn within its few CPU minutes while the problems stay multi-step word problems. The reference solution
writes one equation per step and ends with ``\\boxed{answer}``, e.g. ``3 + 4 = 7. 7 - 2 = 5. The answer is
\\boxed{5}.``; its reasoning (thinking mode) names the operations in words. Example field: ``answer`` (str).
"""
from __future__ import annotations

import random

from nemocascade.data.toy.common import ToyTask, reference_message

NAMES = ("Tom", "Ana", "Ben", "Mia", "Sam", "Lea", "Max", "Ivy", "Leo", "Zoe", "Kai", "Eva")
ITEMS = ("apples", "pens", "books", "coins", "stickers", "cards", "shells", "marbles", "cookies", "stamps")
ADD_VERBS = ("buys", "finds", "gets", "wins")
SUB_VERBS = ("gives away", "loses", "sells", "uses")
MAX_VALUE = 20
MAX_START = 12
MAX_OPERAND = 5          # for + and -
MAX_MULTIPLICAND = 10    # only values up to this are multiplied (by 2 .. MAX_FACTOR)
MAX_FACTOR = 2
NUM_OPS = (2, 3)


def _step(rng: random.Random, value: int) -> tuple[str, int] | None:
    """One random operation applicable to ``value`` (keeping the result in [0, MAX_VALUE])."""
    choices = []
    if value < MAX_VALUE:
        choices.append("+")
    if value > 1:
        choices.append("-")
    if 0 < value <= MAX_MULTIPLICAND:
        choices.append("*")
    op = rng.choice(choices)
    if op == "+":
        return op, rng.randint(1, min(MAX_OPERAND, MAX_VALUE - value))
    if op == "-":
        return op, rng.randint(1, min(MAX_OPERAND, value - 1))
    return op, rng.randint(2, MAX_FACTOR)


def _apply(op: str, a: int, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def draw(rng: random.Random) -> ToyTask:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(2, MAX_START)
    sentences = [f"{name} has {value} {item}."]
    equations, words = [], [f"Start with {value}"]
    for _ in range(rng.choice(NUM_OPS)):
        op, operand = _step(rng, value)
        result = _apply(op, value, operand)
        if op == "+":
            sentences.append(f"{name} {rng.choice(ADD_VERBS)} {operand} more.")
            words.append(f"add {operand}")
        elif op == "-":
            sentences.append(f"{name} {rng.choice(SUB_VERBS)} {operand}.")
            words.append(f"subtract {operand}")
        else:
            sentences.append(f"Then {name} has {operand} times as many.")
            words.append(f"multiply by {operand}")
        equations.append(f"{value} {op} {operand} = {result}.")
        value = result
    sentences.append(f"How many {item} does {name} have now?")
    content = " ".join(equations) + f" The answer is \\boxed{{{value}}}."
    return ToyTask(prompt=" ".join(sentences), fields={"answer": str(value)},
                   reference=reference_message(content, ", then ".join(words) + "."))
