"""Separating a response's reasoning block (``<think>...</think>``) from its final answer."""
from __future__ import annotations

import dataclasses

OPEN, CLOSE = "<think>", "</think>"


@dataclasses.dataclass(frozen=True)
class SplitResponse:
    """``answer``: the text after the last ``</think>`` (the whole response when there is no reasoning block);
    ``thinking``: the reasoning text; ``closed``: False when reasoning was opened (or required) but never
    closed, in which case there is no answer."""
    answer: str
    thinking: str
    closed: bool


def split_thinking(response: str, *, require_thinking: bool = False) -> SplitResponse:
    """Splits ``response``. In thinking mode the prompt itself ends with ``<think>``, so the response holds
    ``reasoning</think>answer`` with no opening tag: pass ``require_thinking=True`` there, so that a response
    that never closes its reasoning gets no answer instead of having its reasoning checked as the answer."""
    if not isinstance(response, str):
        raise TypeError(f"response must be str, got {type(response).__name__}")
    close = response.rfind(CLOSE)
    if close >= 0:
        before = response[:close]
        start = before.find(OPEN)
        thinking = before[start + len(OPEN):] if start >= 0 else before
        return SplitResponse(response[close + len(CLOSE):].strip(), thinking.strip(), True)
    if OPEN in response:
        return SplitResponse("", response.split(OPEN, 1)[1].strip(), False)
    if require_thinking:
        return SplitResponse("", response.strip(), False)
    return SplitResponse(response.strip(), "", True)
