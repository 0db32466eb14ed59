"""Validation of conversations and task examples (the shape shared by sources, template and pipelines).

A *message* is ``{"role": str, "content": str}``; an assistant message may add ``"reasoning": str`` (the
thinking block's text) and ``"tool_calls": [{"name": str, "arguments": dict}, ...]``. A *tool* message
(``role == "tool"``) carries a tool result and is rendered as a user turn inside ``<tool_response>``.
``response_1`` / ``response_2`` turns are the two answers a generative pairwise judge compares (after the
prompt's turns; ``rewards/pairwise_judge.py``), rendered as turns of those roles.
An *example* is ``{"domain": str, "id": str, "messages": [message, ...], ...domain fields}``.

Every check raises ``ValueError`` whose message starts with ``where`` (e.g. ``"data.jsonl:7"`` or
``"example 'math-1a2b'"``; nothing when ``where`` is empty) and names the offending field and what was
expected.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

ROLES = ("system", "user", "assistant", "tool", "response_1", "response_2")
PROMPT_ROLES = ("system", "user", "tool", "response_1", "response_2")


def _fail(where: str, message: str) -> None:
    raise ValueError(f"{where}: {message}" if where else message)


def normalize_tool_call(call: Any) -> Any:
    """``{"name", "arguments": dict}`` from that shape, OpenAI's ``{"function": {"name", "arguments"}}`` or the
    Responses API's ``{"type": "function_call", "name", "arguments"}``, where ``arguments`` may be a JSON
    string (ValueError when it does not parse). Anything else is returned as it is, for
    ``validate_tool_call`` to reject."""
    if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
        call = call["function"]
    if not isinstance(call, Mapping):
        return call
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"tool call arguments are not valid JSON ({e.msg})") from e
    return {"name": call.get("name"), "arguments": arguments}


def validate_tool_call(call: Any, where: str, field: str) -> None:
    """A structured tool call ``{"name": str, "arguments": dict[str, Any]}``."""
    if not isinstance(call, Mapping):
        _fail(where, f"{field} must be an object {{'name', 'arguments'}}, got {type(call).__name__}")
    if not isinstance(call.get("name"), str) or not call["name"]:
        _fail(where, f"{field}.name must be a non-empty string, got {call.get('name')!r}")
    if not isinstance(call.get("arguments", {}), Mapping):
        _fail(where, f"{field}.arguments must be an object, got {type(call['arguments']).__name__}")


def validate_message(message: Any, where: str, field: str) -> None:
    """One chat message (see the module docstring)."""
    if not isinstance(message, Mapping):
        _fail(where, f"{field} must be an object with 'role' and 'content', got {type(message).__name__}")
    role = message.get("role")
    if role not in ROLES:
        _fail(where, f"{field}.role is {role!r}; expected one of {', '.join(ROLES)}")
    if not isinstance(message.get("content"), str):
        _fail(where, f"{field}.content must be a string, got {type(message.get('content')).__name__}")
    if role != "assistant":
        extra = sorted({"reasoning", "tool_calls"} & set(message))
        if extra:
            _fail(where, f"{field} has {extra}, which only assistant messages may have")
        return
    reasoning = message.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        _fail(where, f"{field}.reasoning must be a string, got {type(reasoning).__name__}")
    calls = message.get("tool_calls")
    calls = [] if calls is None else calls
    if not isinstance(calls, list):
        _fail(where, f"{field}.tool_calls must be a list, got {type(calls).__name__}")
    for i, call in enumerate(calls):
        validate_tool_call(call, where, f"{field}.tool_calls[{i}]")


def validate_messages(messages: Any, where: str, *, prompt_only: bool = False) -> None:
    """A non-empty list of messages; ``system`` only first; ``prompt_only`` forbids assistant turns."""
    if not isinstance(messages, list) or not messages:
        _fail(where, f"'messages' must be a non-empty list of messages, got {messages!r:.80}")
    for i, message in enumerate(messages):
        validate_message(message, where, f"messages[{i}]")
        if message["role"] == "system" and i > 0:
            _fail(where, f"messages[{i}] is a system message; only messages[0] may be one")
        if prompt_only and message["role"] == "assistant":
            _fail(where, f"messages[{i}] is an assistant turn, but a prompt may only have "
                         f"{', '.join(PROMPT_ROLES)} turns (the model writes the assistant turn)")


def validate_example(example: Any, where: str, *, needs_assistant: bool = False,
                     prompt_only: bool = False) -> None:
    """A task example: ``domain`` and ``id`` strings and valid ``messages``.

    needs_assistant: the conversation must contain an assistant turn (an SFT target).
    prompt_only: the conversation must not contain one (an RL prompt).
    """
    if not isinstance(example, Mapping):
        _fail(where, f"an example must be an object, got {type(example).__name__}")
    for key in ("domain", "id"):
        if not isinstance(example.get(key), str):
            _fail(where, f"'{key}' must be a string, got {example.get(key)!r}")
    if "messages" not in example:
        _fail(where, "missing 'messages'")
    validate_messages(example["messages"], where, prompt_only=prompt_only)
    if needs_assistant and not any(m["role"] == "assistant" for m in example["messages"]):
        _fail(where, "the conversation has no assistant turn, so there is nothing to train on")


def describe(example: Mapping, index: int | None = None) -> str:
    """``where`` text for an example: its JSONL origin (``path:line``) if it has one, else its id."""
    if isinstance(example, Mapping) and isinstance(example.get("origin"), str):
        return example["origin"]
    if isinstance(example, Mapping) and isinstance(example.get("id"), str):
        return f"example {example['id']!r}"
    return f"example #{index}"
