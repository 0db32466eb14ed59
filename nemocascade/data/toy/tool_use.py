"""Toy ``tool_use`` domain (multi-turn): a currency question that only a call of the ``convert`` tool answers.

Every example hides exchange rates of its own (field ``rates``: currency -> the value of one unit, drawn per
example), so the converted amount cannot be known without calling ``convert(amount, source, target)``; the
environment (``environments/toy_tools.py``) answers a call with ``{"amount": convert_amount(...)}`` computed from
the row's rates, also for a call with the wrong amount or currencies. The reference conversation is the call, its
result as a ``tool`` message, then the answer ``43 EUR``; ``answer`` is the converted amount (str), which the
``tool_use`` reward compares with the final answer's last number (two digits,
``MIN_RESULT``-``MAX_RESULT``). Amounts are small (1-``MAX_AMOUNT``): the tiny
model mis-copies larger ones (BENCHMARKS.md, the recipe mix).
"""
from __future__ import annotations

import json
import random

from nemocascade.data.toy.arithmetic import NAMES
from nemocascade.data.toy.common import ToyTask, reference_message
from nemocascade.data.toy.tools import CURRENCIES, TOOLS

MAX_AMOUNT = 30
RATE_RANGE = (0.2, 5.0)
MIN_RESULT, MAX_RESULT = 10, 99      # two-digit answers: a guess is right about once in 90
ASKS = ("{name} has {amount} {source}. How much is that in {target}?",
        "Convert {name}'s {amount} {source} to {target}.")


def convert_amount(rates: dict, amount: int, source: str, target: str) -> int:
    """``amount`` of ``source`` in ``target`` at ``rates``, rounded to a whole unit; ValueError for a currency
    ``rates`` does not have, TypeError for an amount that is not an integer."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"amount must be an integer, got {amount!r}")
    for currency in (source, target):
        if currency not in rates:
            raise ValueError(f"unknown currency {currency!r}; known: {sorted(rates)}")
    return round(amount * rates[source] / rates[target])


def draw(rng: random.Random) -> ToyTask:
    while True:
        rates = {currency: round(rng.uniform(*RATE_RANGE), 2) for currency in CURRENCIES}
        source, target = rng.sample(CURRENCIES, 2)
        amount = rng.randint(1, MAX_AMOUNT)
        result = convert_amount(rates, amount, source, target)
        if MIN_RESULT <= result <= MAX_RESULT and result != amount:   # not the question's amount copied

            break
    arguments = {"amount": amount, "source": source, "target": target}
    call = {"role": "assistant", "reasoning": "Call convert.", "content": "",
            "tool_calls": [{"name": "convert", "arguments": arguments}]}
    followup = ({"role": "tool", "content": json.dumps({"amount": result})},
                reference_message(f"{result} {target}", f"The tool says {result}."))
    return ToyTask(prompt=rng.choice(ASKS).format(name=rng.choice(NAMES), **arguments),
                   fields={"tools": TOOLS, "rates": rates, "answer": str(result)}, reference=call, followup=followup)
