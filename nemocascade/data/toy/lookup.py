"""Toy ``long_context`` domain: find one fact in a document of several, answered in a sentence and judged by an LLM.

The document is a list of ``MIN_RECORDS``..``MAX_RECORDS`` records ``Kai has 48 stamps.`` (each name once, every
count in [``MIN_COUNT``, ``MAX_COUNT``]) inside ``<text>...</text>``, followed by ``QUESTION: How many stamps does
Kai have?`` (the layout NeMo Gym's long-context judge reads with ``question_regex = QUESTION_REGEX``). The
reference answer is a sentence (``Kai has 48 stamps.``); ``expected_answer`` is the count alone, and the reward is
an LLM judge's verdict on the two (``rewards/answer_judge.py``). The toy judge sees the answer's last number
(``answer_regex = ANSWER_REGEX``): the tiny model learns to compare two numbers in CPU minutes, not to read a
sentence (2026-12-07: trained on sentences too, its verdicts followed the answer's form, not its count). Example
fields: ``expected_answer`` (str), ``name``, ``item``.

At toy scale "long" is a handful of records: the tiny model learns this lookup in a few CPU minutes (a quarter of
its greedy answers right after SFT), but not with 6-12 records and three-digit counts (2026-12-07: no answer right,
so long-context RL had no reward to learn from).
"""
from __future__ import annotations

import random

from nemocascade.data.toy.arithmetic import ITEMS, NAMES
from nemocascade.data.toy.common import ToyTask, reference_message

MIN_RECORDS, MAX_RECORDS = 2, 4
MIN_COUNT, MAX_COUNT = 10, 99
QUESTION_REGEX = r"^QUESTION:\s*(.*)$"
ANSWER_REGEX = r"(\d+)"                   # with answer_judge.last_match: the answer's last number


def question(name: str, item: str) -> str:
    return f"How many {item} does {name} have?"


def answer_sentence(name: str, item: str, count: int) -> str:
    return f"{name} has {count} {item}."


def records(rng: random.Random) -> list[tuple[str, str, int]]:
    """The document's ``(name, item, count)`` records, each name once."""
    names = rng.sample(NAMES, rng.randint(MIN_RECORDS, MAX_RECORDS))
    return [(name, rng.choice(ITEMS), rng.randint(MIN_COUNT, MAX_COUNT)) for name in names]


def draw(rng: random.Random) -> ToyTask:
    facts = records(rng)
    name, item, count = rng.choice(facts)
    document = "\n".join(answer_sentence(*fact) for fact in facts)
    prompt = f"<text>\n{document}\n</text>\n\nQUESTION: {question(name, item)}"
    return ToyTask(prompt=prompt, fields={"expected_answer": str(count), "name": name, "item": item},
                   reference=reference_message(answer_sentence(name, item, count),
                                               f"The text says {answer_sentence(name, item, count)}"))
