"""The ``tool_use`` reward (multi-turn): 1 when the episode's final answer states the expected result.

The sample's ``response`` is the final assistant turn of the episode (``stages/prompts.decode_samples``: the
tokens after the last tool result); the earlier turns made the tool calls that found the result. A final turn
that still calls a tool (the episode ran out of turns or tokens) gets 0; otherwise the answer's last integer is
compared with the row's ``answer`` (``"437"``). Info: ``found`` (the integer read, or None).
"""
from __future__ import annotations

import re

from nemocascade.data.tokenizer import TOOL_CALL_OPEN
from nemocascade.rewards.base import RewardFn, Verification

_INTEGER = re.compile(r"-?\d+")


class ToolUseReward(RewardFn):
    """Options: the ``RewardFn`` options."""
    domain = "tool_use"
    required_fields = {"answer": str}

    def validate_example(self, where: str, sample: dict) -> None:
        if not re.fullmatch(r"-?\d+", sample["answer"].strip()):
            raise ValueError(f"{where}['answer'] must be an integer written as a string, got {sample['answer']!r}")

    def verify(self, sample: dict, answer: str) -> Verification:
        if TOOL_CALL_OPEN in answer:
            return Verification(0.0, "the final turn calls a tool (no answer)", False, {"found": None})
        numbers = _INTEGER.findall(answer)
        if not numbers:
            return Verification(0.0, "no integer in the final answer", False, {"found": None})
        found = int(numbers[-1])
        correct = found == int(sample["answer"])
        return Verification(float(correct), "" if correct else f"answered {found}, expected {sample['answer']}",
                            True, {"found": found})
