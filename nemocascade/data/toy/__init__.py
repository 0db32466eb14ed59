"""Built-in toy task domains, generated deterministically from a seed.

``toy_examples(domain, split, n, seed=...)`` gives RL/eval prompts (the schema of
``nemocascade.data.schema``: a user turn, for ``judge`` followed by the two answers to compare, plus the domain's
fields); ``toy_sft_examples`` gives the same prompts with the reference assistant turn appended (SFT data). The
``train`` and ``heldout`` splits never share a prompt (see ``common.split_of``).
"""
from __future__ import annotations

from nemocascade.data.toy import (answer_verdicts, arithmetic, chat, choice, code, instruct, judge, lookup, structured,
                                  swe, tool_use, tools)
from nemocascade.data.toy.common import SPLITS, generate_tasks

DOMAINS = {"math": arithmetic.draw, "if": instruct.draw, "code": code.draw, "chat": chat.draw, "judge": judge.draw,
           "mcqa": choice.draw, "tool_call": tools.draw, "structured_output": structured.draw,
           "long_context": lookup.draw, "answer_judge": answer_verdicts.draw, "tool_use": tool_use.draw,
           "swe": swe.draw}
SPLIT_DOMAINS = {"judge": "chat"}    # a judge transcript is in the split of its chat question


def _tasks(domain: str, split: str, n: int, seed: int):
    if domain not in DOMAINS:
        raise ValueError(f"unknown toy domain {domain!r}; known: {sorted(DOMAINS)}")
    return generate_tasks(domain, DOMAINS[domain], split, n, seed, split_domain=SPLIT_DOMAINS.get(domain))


def toy_examples(domain: str, split: str, n: int, *, seed: int = 0) -> list[dict]:
    """``n`` prompt examples ``{"domain", "id", "messages": [user turn, *task turns], **fields}`` of ``split``."""
    return [{"domain": domain, "id": task_id, "messages": _prompt_turns(task), **task.fields}
            for task_id, task in _tasks(domain, split, n, seed)]


def toy_sft_examples(domain: str, split: str, n: int, *, seed: int = 0) -> list[dict]:
    """The examples of ``toy_examples`` (same seed, same prompts) with the reference assistant turn
    ``{"role": "assistant", "reasoning", "content"}`` appended to ``messages`` (and, for a multi-turn domain, the
    tool results and assistant turns that follow it)."""
    return [{"domain": domain, "id": task_id, **task.fields,
             "messages": _prompt_turns(task) + [dict(task.reference)] + [dict(m) for m in task.followup]}
            for task_id, task in _tasks(domain, split, n, seed)]


def _prompt_turns(task) -> list[dict]:
    return [{"role": "user", "content": task.prompt}] + [dict(turn) for turn in task.turns]


__all__ = ["DOMAINS", "SPLITS", "toy_examples", "toy_sft_examples"]
