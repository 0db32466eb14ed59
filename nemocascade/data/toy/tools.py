"""Toy ``tool_call`` domain: a currency question answered by one call of the ``convert`` tool.

Every prompt lists the tool (example field ``tools``: ``convert(amount: integer, source, target)``) in its
system turn; the question names the arguments, and the reference assistant turn is the call that answers it
(example field ``ground_truth``: ``[{"name", "arguments"}]``) with no text around it. One short tool only: the
tools block of the chat template is most of the prompt (about 340 of its tokens with the toy tokenizer).
"""
from __future__ import annotations

import random

from nemocascade.data.toy.common import ToyTask

CURRENCIES = ("USD", "EUR", "JPY", "GBP", "INR")
MAX_AMOUNT = 100
TOOLS = [{"type": "function", "name": "convert", "description": "Converts money",
          "parameters": {"type": "object", "required": ["amount", "source", "target"],
                         "properties": {"amount": {"type": "integer"}, "source": {"type": "string"},
                                        "target": {"type": "string"}}}}]
ASKS = ("Convert {amount} {source} to {target}.", "How much is {amount} {source} in {target}?")


def draw(rng: random.Random) -> ToyTask:
    source, target = rng.sample(CURRENCIES, 2)
    arguments = {"amount": rng.randint(1, MAX_AMOUNT), "source": source, "target": target}
    call = {"name": "convert", "arguments": arguments}
    reference = {"role": "assistant", "reasoning": "Call convert.", "content": "", "tool_calls": [call]}
    return ToyTask(prompt=rng.choice(ASKS).format(**arguments), fields={"tools": TOOLS, "ground_truth": [call]},
                   reference=reference)
