"""Toy ``mcqa`` domain: a sum of two small numbers with four lettered options, answered as ``\\boxed{LETTER}``.

The options are the sum and three near misses (sum +- 1..3) in a random order, written NeMo Gym's way (``A: 12``
lines, example fields ``options = [{"A": "12"}, ...]`` and ``expected_answer``), so the ``mcqa`` reward's default
``strict_single_letter_boxed`` mode reads the answer. The reference reasoning (thinking mode) computes the sum.
"""
from __future__ import annotations

import random

from nemocascade.data.toy.common import ToyTask, reference_message

LETTERS = "ABCD"
MAX_TERM = 9


def draw(rng: random.Random) -> ToyTask:
    a, b = rng.randint(1, MAX_TERM), rng.randint(1, MAX_TERM)
    total = a + b
    values = [total] + rng.sample([v for v in range(total - 3, total + 4) if v != total and v >= 0], 3)
    rng.shuffle(values)
    options = [{letter: str(value)} for letter, value in zip(LETTERS, values)]
    expected = LETTERS[values.index(total)]
    lines = "\n".join(f"{letter}: {value}" for letter, value in zip(LETTERS, values))
    prompt = f"What is {a} + {b}?\n{lines}\nPut the letter of the answer in \\boxed{{}}."
    return ToyTask(prompt=prompt, fields={"options": options, "expected_answer": expected},
                   reference=reference_message(f"\\boxed{{{expected}}}", f"{a} + {b} = {total}, option {expected}."))
