"""Toy ``judge`` domain: transcripts that teach a model to be a generative pairwise judge of toy ``chat`` answers.

A task is a toy ``chat`` question with its ``chosen`` and ``rejected`` answers shown as the ``response_1`` and
``response_2`` turns, in a random order, and the verdict a judge should write (``rewards/pairwise_judge.py``'s
format) as the reference assistant turn: the chosen answer scores ``CHOSEN_SCORE``, the rejected one
``REJECTED_SCORE``, and the ranking is 1 (answer 1 much better) or 6 (answer 2 much better). Example fields:
``chosen_position`` (1 or 2) and ``rejected_kind``. The prompt text is the chat question, so a question held out
of ``chat`` is held out of ``judge`` too (``SPLIT_DOMAINS``). Pairs whose two answers are the same text (a
``chat`` off-topic answer can be) are drawn again.
"""
from __future__ import annotations

import json
import random

from nemocascade.data.toy import chat
from nemocascade.data.toy.common import ToyTask, reference_message

CHOSEN_SCORE = 5
REJECTED_SCORE = 1


def verdict(chosen_position: int) -> str:
    """The verdict JSON for a pair whose chosen answer is ``response_<chosen_position>``."""
    first_better = chosen_position == 1
    scores = (CHOSEN_SCORE, REJECTED_SCORE) if first_better else (REJECTED_SCORE, CHOSEN_SCORE)
    return json.dumps({"score_1": scores[0], "score_2": scores[1], "ranking": 1 if first_better else 6})


def draw(rng: random.Random) -> ToyTask:
    pair = chat.draw(rng)
    while pair.fields["chosen"] == pair.fields["rejected"]:   # an off-topic answer that happens to be the same text
        pair = chat.draw(rng)
    chosen, rejected = pair.fields["chosen"], pair.fields["rejected"]
    chosen_position = rng.choice((1, 2))
    answers = (chosen, rejected) if chosen_position == 1 else (rejected, chosen)
    return ToyTask(prompt=pair.prompt,
                   fields={"chosen_position": chosen_position, "rejected_kind": pair.fields["rejected_kind"]},
                   reference=reference_message(verdict(chosen_position), "Compare the two answers."),
                   turns=({"role": "response_1", "content": answers[0]},
                          {"role": "response_2", "content": answers[1]}))
