"""Built-in toy task domains, generated deterministically from a seed.

``toy_examples(domain, split, n, seed=...)`` gives RL/eval prompts (the schema of
``nemocascade.data.schema``: a single user turn plus the domain's fields); ``toy_sft_examples`` gives the
same prompts with the reference assistant turn appended (SFT data). The ``train`` and ``heldout`` splits
never share a prompt (see ``common.split_of``).
"""
from __future__ import annotations

from nemocascade.data.toy import arithmetic, chat, code, instruct
from nemocascade.data.toy.common import SPLITS, generate_tasks

DOMAINS = {"math": arithmetic.draw, "if": instruct.draw, "code": code.draw, "chat": chat.draw}


def _tasks(domain: str, split: str, n: int, seed: int):
    if domain not in DOMAINS:
        raise ValueError(f"unknown toy domain {domain!r}; known: {sorted(DOMAINS)}")
    return generate_tasks(domain, DOMAINS[domain], split, n, seed)


def toy_examples(domain: str, split: str, n: int, *, seed: int = 0) -> list[dict]:
    """``n`` prompt examples ``{"domain", "id", "messages": [user turn], **fields}`` of ``split``."""
    return [{"domain": domain, "id": task_id, "messages": [{"role": "user", "content": task.prompt}], **task.fields}
            for task_id, task in _tasks(domain, split, n, seed)]


def toy_sft_examples(domain: str, split: str, n: int, *, seed: int = 0) -> list[dict]:
    """The examples of ``toy_examples`` (same seed, same prompts) with the reference assistant turn
    ``{"role": "assistant", "reasoning", "content"}`` appended to ``messages``."""
    return [{"domain": domain, "id": task_id,
             "messages": [{"role": "user", "content": task.prompt}, dict(task.reference)], **task.fields}
            for task_id, task in _tasks(domain, split, n, seed)]


__all__ = ["DOMAINS", "SPLITS", "toy_examples", "toy_sft_examples"]
