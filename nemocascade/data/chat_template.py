"""ChatML chat template with thinking / non-thinking modes and XML tool calls (Nemotron-Cascade 2 style).

Turns are ``<|im_start|>{role}\\n{body}<|im_end|>\\n``. An assistant body is

  thinking mode:      ``<think>\\n`` + ``{reasoning}\\n`` (if any) + ``</think>\\n`` + ``{content}`` + tool calls
  non-thinking mode:  ``<think></think>`` + ``{content}`` + tool calls

A generation prompt ends with the assistant header plus the mode's prefix (``<think>\\n`` or
``<think></think>``), so the model writes everything after it, up to and including ``<|im_end|>``.
Tools are listed in the system turn inside ``<tools>...</tools>``; a tool call is
``<tool_call>\\n<function=NAME>\\n<parameter=P>\\nVALUE\\n</parameter>\\n</function>\\n</tool_call>``
(string values raw, others as JSON); a ``tool`` message comes back as a user turn inside
``<tool_response>...</tool_response>``.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping, Protocol, Sequence

from nemocascade.data import schema
from nemocascade.data.tokenizer import (IM_END, IM_START, THINK_CLOSE, THINK_OPEN, TOOL_CALL_CLOSE,
                                       TOOL_CALL_OPEN, TOOL_RESPONSE_CLOSE, TOOL_RESPONSE_OPEN, TOOLS_CLOSE,
                                       TOOLS_OPEN)

THINKING_PREFIX = THINK_OPEN + "\n"
NON_THINKING_PREFIX = THINK_OPEN + THINK_CLOSE
TOOL_INSTRUCTIONS = (
    "If you call a function, reply with:\n"
    f"{TOOL_CALL_OPEN}\n<function=NAME>\n<parameter=NAME>\nVALUE\n</parameter>\n</function>\n{TOOL_CALL_CLOSE}")

_TOOL_CALL_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)
_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>(.*?)</function>\s*\Z", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.DOTALL)


class TextEncoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


# ----------------------------------------------------------------------------------------------- tools
def normalize_tool(tool: Any, index: int = 0) -> dict:
    """``{"name", "description", "parameters"}`` from that shape or OpenAI's ``{"type": "function",
    "function": {...}}``; ``parameters`` is a JSON schema object (``properties``, ``required``)."""
    where = f"tools[{index}]"
    if isinstance(tool, Mapping) and "function" in tool:
        tool = tool["function"]
    if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str) or not tool["name"]:
        raise ValueError(f"{where} must be an object with a non-empty 'name', got {tool!r:.80}")
    parameters = tool.get("parameters") or {}
    if not isinstance(parameters, Mapping) or not isinstance(parameters.get("properties", {}), Mapping):
        raise ValueError(f"{where}.parameters must be a JSON schema object with 'properties', got {parameters!r:.80}")
    return {"name": tool["name"], "description": str(tool.get("description", "")),
            "parameters": {"properties": dict(parameters.get("properties", {})),
                           "required": list(parameters.get("required", []))}}


def _render_tool(tool: dict) -> str:
    lines = ["<function>", f"<name>{tool['name']}</name>", f"<description>{tool['description']}</description>",
             "<parameters>"]
    for name, spec in tool["parameters"]["properties"].items():
        spec = spec if isinstance(spec, Mapping) else {}
        lines += ["<parameter>", f"<name>{name}</name>", f"<type>{spec.get('type', 'string')}</type>"]
        if spec.get("description"):
            lines.append(f"<description>{spec['description']}</description>")
        lines.append("</parameter>")
    if tool["parameters"]["required"]:
        lines.append(f"<required>{json.dumps(tool['parameters']['required'])}</required>")
    lines += ["</parameters>", "</function>"]
    return "\n".join(lines)


def render_tools(tools: Sequence[Any]) -> str:
    """The system-prompt block that lists ``tools`` (see ``normalize_tool`` for accepted shapes)."""
    body = "\n".join(_render_tool(normalize_tool(t, i)) for i, t in enumerate(tools))
    return f"# Tools\n\n{TOOLS_OPEN}\n{body}\n{TOOLS_CLOSE}\n\n{TOOL_INSTRUCTIONS}"


def _format_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def render_tool_call(call: Mapping) -> str:
    params = "".join(f"<parameter={name}>\n{_format_value(value)}\n</parameter>\n"
                     for name, value in (call.get("arguments") or {}).items())
    return f"{TOOL_CALL_OPEN}\n<function={call['name']}>\n{params}</function>\n{TOOL_CALL_CLOSE}"


# ------------------------------------------------------------------------------------------- rendering
def assistant_prefix(thinking: bool) -> str:
    """The part of an assistant body that belongs to the prompt (written before the model starts)."""
    return THINKING_PREFIX if thinking else NON_THINKING_PREFIX


def assistant_completion(message: Mapping, *, thinking: bool) -> str:
    """The part of an assistant body the model writes (after the prefix), without ``<|im_end|>``.

    Non-thinking mode drops ``reasoning``.
    """
    parts = [message["content"]] if message["content"] else []
    parts += [render_tool_call(call) for call in message.get("tool_calls") or []]
    answer = "\n".join(parts)
    if not thinking:
        return answer
    reasoning = message.get("reasoning") or ""
    return (reasoning + "\n" if reasoning else "") + THINK_CLOSE + "\n" + answer


def render_segments(messages: Sequence[Mapping], *, tools: Sequence[Any] | None = None, thinking: bool = True,
                    add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
    """The rendered conversation as ``(text, is_model_written)`` pieces; ``"".join`` of the texts is
    ``render(...)``. ``is_model_written`` is True exactly on each assistant turn's completion and its
    ``<|im_end|>`` (what a model trained on the conversation must predict)."""
    schema.validate_messages(list(messages), "render")
    segments: list[tuple[str, bool]] = []
    messages = list(messages)
    if tools:
        tools_block = render_tools(tools)
        if messages[0]["role"] == "system":
            content = messages[0]["content"]
            messages[0] = {"role": "system", "content": f"{content}\n\n{tools_block}" if content else tools_block}
        else:
            messages.insert(0, {"role": "system", "content": tools_block})
    for message in messages:
        role = message["role"]
        if role == "assistant":
            segments.append((f"{IM_START}assistant\n{assistant_prefix(thinking)}", False))
            segments.append((assistant_completion(message, thinking=thinking) + IM_END, True))
            segments.append(("\n", False))
        elif role == "tool":
            body = f"{TOOL_RESPONSE_OPEN}\n{message['content']}\n{TOOL_RESPONSE_CLOSE}"
            segments.append((f"{IM_START}user\n{body}{IM_END}\n", False))
        else:
            segments.append((f"{IM_START}{role}\n{message['content']}{IM_END}\n", False))
    if add_generation_prompt:
        segments.append((f"{IM_START}assistant\n{assistant_prefix(thinking)}", False))
    return segments


def render(messages: Sequence[Mapping], *, tools: Sequence[Any] | None = None, thinking: bool = True,
           add_generation_prompt: bool = False) -> str:
    """The conversation as ChatML text (see the module docstring)."""
    return "".join(text for text, _ in render_segments(messages, tools=tools, thinking=thinking,
                                                       add_generation_prompt=add_generation_prompt))


def render_prompt(messages: Sequence[Mapping], *, tools: Sequence[Any] | None = None,
                  thinking: bool = True) -> str:
    """A generation prompt: the prompt turns followed by the assistant header and the mode's prefix.

    ``messages`` must not end with an assistant turn (the model is to write it).
    """
    if messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "assistant":
        raise ValueError("render_prompt: the last message is an assistant turn; a prompt ends with a "
                         "system, user or tool turn")
    return render(messages, tools=tools, thinking=thinking, add_generation_prompt=True)


def render_observation(messages: Sequence[Mapping], *, thinking: bool = True) -> str:
    """What ``render`` writes between an assistant turn's ``<|im_end|>`` and the next assistant turn's completion
    when ``messages`` (tool results, user turns) come between them: the newline, their turns, the assistant header
    and the mode's prefix. A multi-turn episode appends it after a sampled turn (``rollout.generate_episodes``)."""
    return "\n" + render(messages, thinking=thinking, add_generation_prompt=True)


def render_tokens(messages: Sequence[Mapping], tokenizer: TextEncoder, *, tools: Sequence[Any] | None = None,
                  thinking: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of ``render(messages)`` and a 0/1 mask that is 1 exactly on the ids the model writes
    (each assistant turn's completion and its ``<|im_end|>``), 0 on system/user/tool turns and headers.

    Runs of equal mask are encoded as whole strings, so the prompt part of a conversation encodes to the
    same ids as ``render_prompt`` of that prompt.
    """
    runs: list[tuple[str, bool]] = []
    for text, written in render_segments(messages, tools=tools, thinking=thinking):
        if runs and runs[-1][1] == written:
            runs[-1] = (runs[-1][0] + text, written)
        else:
            runs.append((text, written))
    ids: list[int] = []
    mask: list[int] = []
    for text, written in runs:
        piece = tokenizer.encode(text)
        ids.extend(piece)
        mask.extend([int(written)] * len(piece))
    return ids, mask


# --------------------------------------------------------------------------------------------- parsing
def _parse_value(raw: str, declared_type: str | None) -> Any:
    if declared_type == "string":
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _parameter_types(tools: Sequence[Any] | None) -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = {}
    for i, tool in enumerate(tools or []):
        tool = normalize_tool(tool, i)
        types[tool["name"]] = {name: spec.get("type") for name, spec in tool["parameters"]["properties"].items()
                               if isinstance(spec, Mapping)}
    return types


def parse_assistant(text: str, *, tools: Sequence[Any] | None = None) -> dict:
    """Splits an assistant completion into ``{"reasoning": str | None, "content": str, "tool_calls": [...]}``.

    ``text`` may start with ``<think>`` (or the non-thinking ``<think></think>``) or right after it (the
    completion of a thinking-mode prompt) and may end with ``<|im_end|>`` (ignored, with anything after it).
    Text before ``</think>`` is the reasoning (None when empty or when there is no ``</think>``, unless the
    text opens ``<think>`` and never closes it: then it is all reasoning). Each well-formed
    ``<tool_call>`` block becomes ``{"name", "arguments"}``; parameter values are parsed as JSON unless
    ``tools`` declares them ``string`` (a value that is not valid JSON stays a string). Malformed blocks
    stay in ``content``. Reasoning and content are stripped of surrounding whitespace.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_assistant expects a str, got {type(text).__name__}")
    text = text.split(IM_END, 1)[0]
    reasoning: str | None = None
    if THINK_CLOSE in text:
        reasoning, text = text.split(THINK_CLOSE, 1)
        reasoning = reasoning.strip().removeprefix(THINK_OPEN).strip() or None
    elif text.lstrip().startswith(THINK_OPEN):
        return {"reasoning": text.lstrip().removeprefix(THINK_OPEN).strip() or None, "content": "",
                "tool_calls": []}
    types = _parameter_types(tools)
    calls = []

    def take_call(match: re.Match) -> str:
        function = _FUNCTION.match(match.group(1))
        if function is None:
            return match.group(0)
        name = function.group(1).strip()
        declared = types.get(name, {})
        arguments = {p.strip(): _parse_value(v, declared.get(p.strip()))
                     for p, v in _PARAMETER.findall(function.group(2))}
        calls.append({"name": name, "arguments": arguments})
        return ""

    content = _TOOL_CALL_BLOCK.sub(take_call, text)
    return {"reasoning": reasoning, "content": content.strip(), "tool_calls": calls}
