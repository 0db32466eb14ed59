"""The ``tool_call`` reward: 1 when the final answer makes exactly the expected tool calls.

A row has ``ground_truth``: the list of expected calls, each ``{"name", "arguments"}`` (arguments an object or
a JSON string; OpenAI's ``{"function": {...}}`` and the Responses API's ``{"type": "function_call", ...}``
shapes are accepted); an empty list means the model should answer without calling anything. The row's
``tools`` (the ones listed in its prompt) declare the parameter types.

The answer's calls are the ``<tool_call>`` blocks of the chat template (``chat_template.parse_assistant``:
a value is JSON unless its tool declares it ``string``). The expected calls go through the same render and
parse, so both sides are compared as the template carries them (``"42"`` for an undeclared parameter is 42 on
both sides); arguments then compare as JSON values (``1 == 1.0``). With ``ordered=False`` (default) the calls
may come in any order; ``aggregate="all"`` (default) gives 1 only for an exact match (every expected call made,
nothing else), ``"fraction"`` the matched calls over ``max(expected, made)``. A ``<tool_call>`` block that does
not parse counts as a call that matches nothing. Info: ``calls`` (names made), ``missing`` and ``unexpected``
(names).
"""
from __future__ import annotations

from typing import Any, Sequence

from nemocascade.data import schema
from nemocascade.data.chat_template import parse_assistant, render_tool_call
from nemocascade.data.tokenizer import TOOL_CALL_OPEN
from nemocascade.rewards.base import RewardFn, Verification
from nemocascade.rewards.json_schema import json_equal

AGGREGATES = ("all", "fraction")
_MALFORMED = {"name": None, "arguments": None}


def expected_calls(ground_truth: Sequence[Any], tools: Sequence[Any] | None, where: str = "") -> list:
    """The expected calls as the template carries them (rendered, then parsed back with ``tools``' types);
    a malformed call is a ValueError starting with ``where``."""
    calls = []
    for i, call in enumerate(ground_truth):
        field = f"ground_truth[{i}]"
        try:
            call = schema.normalize_tool_call(call)
        except ValueError as exc:
            raise ValueError(f"{where}: {field}: {exc}" if where else f"{field}: {exc}") from None
        schema.validate_tool_call(call, where, field)
        calls.extend(parse_assistant(render_tool_call(call), tools=tools)["tool_calls"])
    return calls


def made_calls(answer: str, tools: Sequence[Any] | None) -> list:
    """The calls in ``answer``; each ``<tool_call>`` block that does not parse adds a call that matches nothing."""
    parsed = parse_assistant(answer, tools=tools)
    return parsed["tool_calls"] + [_MALFORMED] * parsed["content"].count(TOOL_CALL_OPEN)


def _same(a: dict, b: dict) -> bool:
    return a["name"] == b["name"] and a["name"] is not None and json_equal(a["arguments"], b["arguments"])


def match_calls(made: list, expected: list, *, ordered: bool) -> tuple[int, list, list]:
    """(number matched, expected calls not made, made calls not expected)."""
    if ordered:
        matched = 0
        while matched < min(len(made), len(expected)) and _same(made[matched], expected[matched]):
            matched += 1
        return matched, expected[matched:], made[matched:]
    unmatched = list(expected)
    unexpected = []
    for call in made:
        hit = next((i for i, want in enumerate(unmatched) if _same(call, want)), None)
        if hit is None:
            unexpected.append(call)
        else:
            unmatched.pop(hit)
    return len(expected) - len(unmatched), unmatched, unexpected


class ToolCallReward(RewardFn):
    """Options: ``ordered`` (calls must come in the expected order), ``aggregate`` ("all" | "fraction"),
    plus the ``RewardFn`` options."""
    domain = "tool_call"
    required_fields = {"ground_truth": list}

    def __init__(self, *, ordered: bool = False, aggregate: str = "all", **options):
        super().__init__(**options)
        if not isinstance(ordered, bool):
            raise TypeError(f"ordered must be bool, got {ordered!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.ordered, self.aggregate = ordered, aggregate

    def validate_example(self, where: str, sample: dict) -> None:
        tools = sample.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise ValueError(f"{where}['tools'] must be a list, got {type(tools).__name__}")
        expected_calls(sample["ground_truth"], tools, where)

    def verify(self, sample: dict, answer: str) -> Verification:
        tools = sample.get("tools")
        expected = expected_calls(sample["ground_truth"], tools)
        made = made_calls(answer, tools)
        matched, missing, unexpected = match_calls(made, expected, ordered=self.ordered)
        exact = not missing and not unexpected
        if self.aggregate == "all":
            reward = float(exact)
        else:
            reward = matched / max(len(expected), len(made)) if (expected or made) else 1.0
        info = {"calls": [c["name"] for c in made], "missing": [c["name"] for c in missing],
                "unexpected": [c["name"] for c in unexpected]}
        reason = "" if exact else f"missing {info['missing']}, unexpected {info['unexpected']}"
        format_ok = _MALFORMED not in made and (bool(made) or not expected)
        return Verification(reward, reason, format_ok, info)
