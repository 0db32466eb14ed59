"""``ToolEnvironment``: runs the tool calls of an assistant turn and answers with their results.

A turn with no ``<tool_call>`` block is the episode's final answer (``respond`` returns None). Otherwise every
call becomes one ``tool`` message (in the order made) whose content is the JSON of the function's result, or of
``{"error": ...}`` when the call names no known function, its arguments do not fit the function, the function
refuses them (ValueError / TypeError / KeyError), or a ``<tool_call>`` block does not parse: the model reads the
error in the next turn, as from a real tool server. Calls are parsed with the row's ``tools`` declarations
(``chat_template.parse_assistant``: a value is JSON unless its tool declares it ``string``).
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Mapping

from nemocascade.data.chat_template import normalize_tool, parse_assistant
from nemocascade.data.tokenizer import TOOL_CALL_OPEN

ToolFunction = Callable[..., Any]   # function(example, **arguments) -> a JSON-serialisable result


class ToolEnvironment:
    """Executes calls of ``functions`` (name -> ``function(example, **arguments)``; the example carries the
    episode's hidden state, e.g. the toy exchange rates, in ``example_fields``: field name -> type)."""

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
            tools = example.get("tools")
            if not isinstance(tools, list) or not tools:
                raise ValueError(f"{where}: a tool-use row needs a non-empty 'tools' list, got {tools!r:.80}")
            for i, tool in enumerate(tools):
                name = normalize_tool(tool, i)["name"]
                if name not in self.functions:
                    raise ValueError(f"{where}: tool {name!r} has no function in this environment (functions: "
                                     f"{sorted(self.functions)}); register an environment for the rows' tools "
                                     f"(nemocascade.environments.register)")
            for field, kind in self.example_fields.items():
                if not isinstance(example.get(field), kind):
                    raise ValueError(f"{where}: the environment's functions read the row's {field!r} "
                                     f"({kind.__name__}), got {example.get(field)!r:.80}")

    def respond(self, example: dict, turn: str) -> list[dict] | None:
        parsed = parse_assistant(turn, tools=example.get("tools"))
        malformed = parsed["content"].count(TOOL_CALL_OPEN)
        if not parsed["tool_calls"] and not malformed:
            return None
        results = [self._call(example, call["name"], call["arguments"]) for call in parsed["tool_calls"]]
        results += [{"error": "the tool call does not parse"}] * malformed
        return [{"role": "tool", "content": json.dumps(result)} for result in results]

    def _call(self, example: dict, name: str, arguments: dict) -> Any:
        function = self.functions.get(name)
        if function is None:
            return {"error": f"unknown function {name!r}; known: {sorted(self.functions)}"}
        try:
            inspect.signature(function).bind(example, **arguments)
        except TypeError as exc:
            return {"error": f"{name}: {exc}"}
        try:
            return function(example, **arguments)
        except (ValueError, TypeError, KeyError) as exc:
            return {"error": f"{name}: {exc}"}
