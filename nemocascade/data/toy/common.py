"""Deterministic, split-disjoint sampling shared by the toy domains.

A domain supplies ``draw(rng) -> ToyTask``. Which split a task belongs to depends only on its prompt
text (a hash), never on the seed, so ``train`` and ``heldout`` can never share a prompt whatever seeds
are used; within one call prompts are distinct.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Callable

SPLITS = ("train", "heldout")
HELDOUT_PERCENT = 10
MAX_DRAWS_PER_EXAMPLE = 50


@dataclasses.dataclass(frozen=True)
class ToyTask:
    """One generated task.

    prompt: the user message text.
    fields: the domain's example fields (``answer``, ``tests``, ``instruction_id_list``/``kwargs``,
      ``chosen``/``rejected`` ...), merged into the example dict.
    reference: the reference assistant message ``{"role": "assistant", "reasoning", "content"}``.
    turns: prompt turns after the user message (e.g. the ``judge`` domain's two answers).
    followup: messages after the reference turn (a multi-turn domain's tool results and later assistant turns).
    """
    prompt: str
    fields: dict
    reference: dict
    turns: tuple = ()
    followup: tuple = ()


def reference_message(content: str, reasoning: str) -> dict:
    return {"role": "assistant", "reasoning": reasoning, "content": content}


def prompt_digest(domain: str, prompt: str) -> str:
    return hashlib.sha256(f"{domain}\x00{prompt}".encode()).hexdigest()


def split_of(domain: str, prompt: str) -> str:
    """``heldout`` for ``HELDOUT_PERCENT`` % of prompts (by hash), else ``train``."""
    return "heldout" if int(prompt_digest(domain, prompt)[:8], 16) % 100 < HELDOUT_PERCENT else "train"


def generate_tasks(domain: str, draw: Callable[[random.Random], ToyTask], split: str, n: int,
                   seed: int, *, split_domain: str | None = None) -> list[tuple[str, ToyTask]]:
    """``n`` distinct tasks of ``split`` as ``(id, task)``, the same for the same (domain, split, n, seed).
    ``split_domain`` (default ``domain``): the domain whose split a prompt belongs to (``split_of``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n (number of examples) must be a non-negative int, got {n!r}")
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    rng = random.Random(f"{domain}/{split}/{seed}")
    seen: set[str] = set()
    tasks = []
    for _ in range(MAX_DRAWS_PER_EXAMPLE * n + 100):
        if len(tasks) == n:
            return tasks
        task = draw(rng)
        if task.prompt in seen or split_of(split_domain or domain, task.prompt) != split:
            continue
        seen.add(task.prompt)
        tasks.append((f"{domain}-{prompt_digest(domain, task.prompt)[:12]}", task))
    if len(tasks) == n:
        return tasks
    raise ValueError(f"toy domain {domain!r} produced only {len(tasks)} distinct {split} prompts after "
                     f"{MAX_DRAWS_PER_EXAMPLE * n + 100} draws; ask for fewer than {n}")
