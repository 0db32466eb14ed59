"""Toy ``answer_judge`` domain: transcripts that teach a model to be the answer judge (``rewards/answer_judge.py``)
of toy ``long_context`` answers.

A task is the judge's user turn (``data.judge_prompts.ANSWER_JUDGE_TEMPLATE``) for a ``long_context`` question, its
expected count and a candidate answer, with the verdict (``EQUAL_LABEL`` or ``NOT_EQUAL_LABEL``) as the reference
assistant turn. The candidate is what the toy judge sees of a rollout (its last number, ``lookup.ANSWER_REGEX``):
half the time the expected count, else another count, the kinds of miss a policy makes: a near miss, the digits
in another order, or another record's count. Example fields: ``agrees`` (bool), ``candidate_kind`` (``right``,
``near_miss``, ``reordered`` or ``other_record``).
"""
from __future__ import annotations

import random

from nemocascade.data.judge_prompts import ANSWER_JUDGE_TEMPLATE, EQUAL_LABEL, NOT_EQUAL_LABEL
from nemocascade.data.toy import lookup
from nemocascade.data.toy.common import ToyTask, reference_message

NEAR_MISSES = (-10, -2, -1, 1, 2, 10)


def wrong_counts(count: int, others: list[int]) -> dict[str, list[int]]:
    """``{kind: counts other than count in [lookup.MIN_COUNT, lookup.MAX_COUNT]}`` for each kind of miss."""
    reordered = int(str(count)[::-1])
    kinds = {"near_miss": [count + d for d in NEAR_MISSES], "reordered": [reordered], "other_record": others}
    return {kind: [c for c in counts if c != count and lookup.MIN_COUNT <= c <= lookup.MAX_COUNT]
            for kind, counts in kinds.items()}


def candidate(rng: random.Random, count: int, others: list[int]) -> tuple[int, str]:
    """``(candidate count, kind)``: the expected count (``right``) half the time, else a miss of a kind drawn
    among those that have one."""
    misses = {kind: counts for kind, counts in wrong_counts(count, others).items() if counts}
    if rng.random() < 0.5:
        return count, "right"
    kind = rng.choice(sorted(misses))
    return rng.choice(misses[kind]), kind


def draw(rng: random.Random) -> ToyTask:
    facts = lookup.records(rng)
    name, item, count = rng.choice(facts)
    answer, kind = candidate(rng, count, [c for n, _, c in facts if n != name])
    prompt = ANSWER_JUDGE_TEMPLATE.format(question=lookup.question(name, item), expected_answer=str(count),
                                          generated_answer=str(answer))
    agrees = kind == "right"
    return ToyTask(prompt=prompt, fields={"agrees": agrees, "candidate_kind": kind},
                   reference=reference_message(EQUAL_LABEL if agrees else NOT_EQUAL_LABEL, "Compare the two answers."))
