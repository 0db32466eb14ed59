"""JSONL sources: conversation rows and RL prompt rows, with line-numbered errors.

Accepted row shapes (one JSON object per line; blank lines are ignored):
  * SFT conversations: ``{"messages": [{"role", "content", ...}, ...], ...}`` (OpenAI chat format);
  * RL prompts: ``{"domain": str, "prompt": str | [messages], ...domain fields}`` or the same with
    ``"messages"``, or the released data's ``{"responses_create_params": {"input": str | [messages],
    "tools": [...]}, "agent_ref": {"name": ...}, ...}``.
Rows become examples ``{"domain", "id", "messages", "origin": "path:line", **other fields}``; a row's
``tools`` (else those of its ``responses_create_params``) are kept as ``tools`` (checked, and listed in the
prompt's system turn). A missing ``domain`` comes from a NeMo Gym ``agent_ref.name`` whose row format a reward
fn here reads (``GYM_AGENT_DOMAINS``), else it becomes ``"general"``; a missing ``id`` becomes
``"<file name>:<line>"``. Assistant messages
may carry the reasoning as ``reasoning`` / ``reasoning_content`` or as a leading ``<think>...</think>``
block in ``content``; tool calls may be ``{"name", "arguments"}`` or OpenAI's
``{"function": {"name", "arguments": JSON string}}``. Both are normalised to ``reasoning`` / ``{"name",
"arguments": dict}``.

A bad row either stops the read (``on_error="raise"``: ``JsonlError`` naming ``path:line`` and the problem)
or is skipped (``on_error="skip"``): each skip is logged as a warning with its ``path:line`` and recorded
in ``JsonlExamples.bad_rows``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator, Mapping, Sequence

from absl import logging

from nemocascade.data import schema
from nemocascade.data.chat_template import normalize_tool, parse_assistant
from nemocascade.data.tokenizer import THINK_CLOSE

ON_ERROR = ("raise", "skip")
DEFAULT_DOMAIN = "general"
# NeMo Gym agents whose rows carry the fields of one of this project's reward fns (same names and meaning).
GYM_AGENT_DOMAINS = {"mcqa_simple_agent": "mcqa", "structured_outputs_simple_agent": "structured_output",
                     "instruction_following_simple_agent": "if"}
PROMPT_KEYS = ("messages", "prompt", "responses_create_params")


class JsonlError(ValueError):
    """A bad JSONL row; ``str(error)`` starts with ``path:line``."""

    def __init__(self, path: str, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclasses.dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


@dataclasses.dataclass
class JsonlExamples(Sequence[dict]):
    """The examples read from ``path`` (a sequence of dicts) and the rows that were skipped."""
    path: str
    examples: list[dict]
    bad_rows: list[BadRow]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index):
        return self.examples[index]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.examples)


def _normalize_message(message: Any) -> Any:
    if not isinstance(message, Mapping) or message.get("role") != "assistant":
        return message
    message = dict(message)
    if "reasoning_content" in message:
        message["reasoning"] = message.pop("reasoning_content")
    content = message.get("content")
    if content is None and message.get("tool_calls"):
        message["content"] = content = ""
    if isinstance(content, str) and content.lstrip().startswith("<think>") and THINK_CLOSE in content \
            and not message.get("reasoning"):
        reasoning, rest = content.split(THINK_CLOSE, 1)
        message["reasoning"] = parse_assistant(reasoning + THINK_CLOSE)["reasoning"]
        message["content"] = rest.strip()
    if message.get("tool_calls") is not None and isinstance(message["tool_calls"], list):
        message["tool_calls"] = [schema.normalize_tool_call(c) for c in message["tool_calls"]]
    return message


def _messages_of(row: Mapping) -> Any:
    if "messages" in row:
        messages = row["messages"]
    elif "prompt" in row:
        messages = row["prompt"]
    else:
        params = row["responses_create_params"]
        if not isinstance(params, Mapping) or "input" not in params:
            raise ValueError("'responses_create_params' must be an object with an 'input' field")
        messages = params["input"]
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, list):
        return [_normalize_message(m) for m in messages]
    return messages


def _tools_of(row: Mapping) -> list | None:
    params = row.get("responses_create_params")
    tools = row["tools"] if "tools" in row else params.get("tools") if isinstance(params, Mapping) else None
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise ValueError(f"'tools' must be a list of function specs, got {type(tools).__name__}")
    for i, tool in enumerate(tools):
        normalize_tool(tool, i)
    return tools


def _domain_of(row: Mapping) -> str:
    agent = row.get("agent_ref")
    name = agent.get("name") if isinstance(agent, Mapping) else None
    return GYM_AGENT_DOMAINS.get(name, DEFAULT_DOMAIN)


def example_from_row(row: Any, *, path: str, line: int) -> dict:
    """One validated example from a parsed JSONL row (raises ValueError describing the problem)."""
    if not isinstance(row, Mapping):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    if not any(key in row for key in PROMPT_KEYS):
        raise ValueError(f"missing 'messages' (or 'prompt' / 'responses_create_params'); row has keys "
                         f"{sorted(row)[:10]}")
    example = {k: v for k, v in row.items() if k not in PROMPT_KEYS}
    example["messages"] = _messages_of(row)
    tools = _tools_of(row)
    if tools:
        example["tools"] = tools
    example.setdefault("domain", _domain_of(row))
    if isinstance(example.get("id"), int):
        example["id"] = str(example["id"])
    example.setdefault("id", f"{os.path.basename(path)}:{line}")
    example["origin"] = f"{path}:{line}"
    schema.validate_example(example, "")
    return example


def read_jsonl(path: str, *, on_error: str = "raise") -> JsonlExamples:
    """Reads every row of the JSONL file ``path`` (see the module docstring).

    Raises FileNotFoundError for a missing file, ``JsonlError`` for the first bad row when
    ``on_error="raise"``, and ValueError when no row is usable.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"JSONL file not found: {path!r}")
    examples: list[dict] = []
    bad_rows: list[BadRow] = []
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                reason = f"not valid UTF-8 ({e.reason} at byte {e.start})"
            else:
                if not text.strip():
                    continue
                try:
                    examples.append(example_from_row(json.loads(text), path=path, line=line_number))
                    continue
                except json.JSONDecodeError as e:
                    reason = f"invalid JSON ({e.msg} at column {e.colno})"
                except ValueError as e:
                    reason = str(e)
            if on_error == "raise":
                raise JsonlError(path, line_number, reason)
            logging.warning("skipping bad row %s:%d: %s", path, line_number, reason)
            bad_rows.append(BadRow(line_number, reason))
    if bad_rows:
        logging.warning("%s: skipped %d bad row(s) of %d", path, len(bad_rows), len(bad_rows) + len(examples))
    if not examples:
        raise ValueError(f"{path}: no usable rows ({len(bad_rows)} bad, see the warnings above)")
    return JsonlExamples(path=path, examples=examples, bad_rows=bad_rows)
