"""``ToolEnvironment``: runs the tool calls of an assistant turn and answers with their results.

A turn with no ``<tool_call>`` block is the episode's final answer (``respond`` returns None). Otherwise every
call becomes one ``tool`` message (in the order made) whose content is the JSON of the function's result, or of
``{"error": ...}`` when the call names no known function, its arguments do not fit the function, the function
refuses them (ValueError / TypeError / KeyError), or a ``<tool_call>`` block does not parse: the model reads the
error in the next turn, as from a real tool server. Calls are parsed with the row's ``tools`` declarations
(``chat_template.parse_assistant``: a value is JSON unless its tool declares it ``string``).

``turn_calls``, ``call_function`` and ``tool_messages`` are the pieces, for environments whose functions act on
an episode's state (``repository.RepositoryEnvironment``).
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Mapping, Sequence

from nemocascade.data.chat_template import normalize_tool, parse_assistant
from nemocascade.data.tokenizer import TOOL_CALL_OPEN

ToolFunction = Callable[..., Any]   # function(target, **arguments) -> a JSON-serialisable result
MALFORMED_CALL = {"error": "the tool call does not parse"}


def turn_calls(turn: str, tools) -> tuple[list[dict], int] | None:
    """The ``{"name", "arguments"}`` calls of ``turn`` and its count of ``<tool_call>`` blocks that do not parse,
    or None when the turn makes no call (the episode's final answer)."""
    parsed = parse_assistant(turn, tools=tools)
    malformed = parsed["content"].count(TOOL_CALL_OPEN)
    if not parsed["tool_calls"] and not malformed:
        return None
    return parsed["tool_calls"], malformed


def call_function(functions: Mapping[str, ToolFunction], name: str, target: Any, arguments: dict) -> Any:
    """``functions[name](target, **arguments)``, or ``{"error": ...}`` for an unknown name, arguments that do not
    fit the function's signature, or a ValueError / TypeError / KeyError the function raised."""
    function = functions.get(name)
    if function is None:
        return {"error": f"unknown function {name!r}; known: {sorted(functions)}"}
    try:
        inspect.signature(function).bind(target, **arguments)
    except TypeError as exc:
        return {"error": f"{name}: {exc}"}
    try:
        return function(target, **arguments)
    except (ValueError, TypeError, KeyError) as exc:
        return {"error": f"{name}: {exc}"}


def tool_messages(results: Sequence[Any], malformed: int) -> list[dict]:
    """One ``tool`` message (the result's JSON) per result, then one error per malformed block."""
    return [{"role": "tool", "content": json.dumps(result)} for result in [*results, *[MALFORMED_CALL] * malformed]]


def check_declared_tools(example: dict, where: str, functions: Mapping[str, ToolFunction]) -> None:
    """ValueError naming ``where`` unless the row lists a non-empty ``tools`` that all have a function."""
    tools = example.get("tools")
    if not isinstance(tools, list) or not tools:
        raise ValueError(f"{where}: a tool-use row needs a non-empty 'tools' list, got {tools!r:.80}")
    for i, tool in enumerate(tools):
        name = normalize_tool(tool, i)["name"]
        if name not in functions:
            raise ValueError(f"{where}: tool {name!r} has no function in this environment (functions: "
                             f"{sorted(functions)}); register an environment for the rows' tools "
                             f"(nemocascade.environments.register)")


class ToolEnvironment:
    """Executes calls of ``functions`` (name -> ``function(example, **arguments)``; the example carries the
    episode's hidden state, e.g. the toy exchange rates, in ``example_fields``: field name -> type). The tools
    are stateless: a turn's results depend on that turn's calls only."""

    def __init__(self, functions: Mapping[str, ToolFunction], *, example_fields: Mapping[str, type] | None = None):
        if not functions:
            raise ValueError("a ToolEnvironment needs at least one function")
        self.functions = dict(functions)
        self.example_fields = dict(example_fields or {})

    def check_examples(self, examples) -> None:
        """Before any rollout: every example lists ``tools`` that all have a function here and carries the
        ``example_fields`` (ValueError naming the row's ``origin`` (``path:line``) or ``id``)."""
        for example in examples:
            where = example.get("origin") or f"example {example.get('id')!r}"
            check_declared_tools(example, where, self.functions)
            for field, kind in self.example_fields.items():
                if not isinstance(example.get(field), kind):
                    raise ValueError(f"{where}: the environment's functions read the row's {field!r} "
                                     f"({kind.__name__}), got {example.get(field)!r:.80}")

    def respond(self, example: dict, turns: Sequence[str]) -> list[dict] | None:
        calls = turn_calls(turns[-1], example.get("tools"))
        if calls is None:
            return None
        made, malformed = calls
        return tool_messages([call_function(self.functions, c["name"], example, c["arguments"]) for c in made],
                             malformed)
