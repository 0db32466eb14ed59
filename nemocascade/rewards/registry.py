"""Reward fns by domain name: ``get_reward_fn("math", **options)``; ``register("chat", factory)`` adds one.

A factory is any callable ``factory(**options)`` returning an object with
``score(samples) -> (np.ndarray f32[N], list[dict])`` (see ``base.RewardFn``); the reward model of the RLHF
stage registers itself under its own domain name the same way.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from nemocascade.rewards.code_reward import CodeReward
from nemocascade.rewards.if_reward import InstructionFollowingReward
from nemocascade.rewards.math_reward import MathReward
from nemocascade.rewards.mcqa_reward import MultipleChoiceReward
from nemocascade.rewards.structured_output_reward import StructuredOutputReward
from nemocascade.rewards.swe_reward import SweReward
from nemocascade.rewards.tool_call_reward import ToolCallReward
from nemocascade.rewards.tool_use_reward import ToolUseReward

# Domains whose answers an LLM judge scores against the reference answer (``answer_judge.AnswerJudgeFn``): an RL
# stage builds that reward fn from its ``rl.judge`` settings, so they have no factory here.
JUDGED_DOMAINS = ("long_context",)
_FACTORIES: dict[str, Callable[..., Any]] = {}
_LOCK = threading.Lock()


def register(domain: str, factory: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Registers ``factory`` for ``domain``; re-registering needs ``overwrite=True``."""
    if not isinstance(domain, str) or not domain:
        raise ValueError(f"domain must be a non-empty str, got {domain!r}")
    if not callable(factory):
        raise TypeError(f"factory for {domain!r} must be callable, got {type(factory).__name__}")
    with _LOCK:
        if domain in _FACTORIES and not overwrite:
            raise ValueError(f"a reward fn is already registered for {domain!r} (pass overwrite=True to replace it)")
        _FACTORIES[domain] = factory


def registered_domains() -> list[str]:
    with _LOCK:
        return sorted(_FACTORIES)


def get_reward_fn(domain: str, **options: Any):
    """A new reward fn for ``domain`` built with ``options`` (the factory's keyword arguments)."""
    with _LOCK:
        factory = _FACTORIES.get(domain)
    if factory is None and domain in JUDGED_DOMAINS:
        raise ValueError(f"domain {domain!r} is scored by an LLM judge against the reference answer "
                         f"(rewards/answer_judge.py): an RL stage builds it from rl.judge (checkpoint, or stage "
                         f"in a cascade)")
    if factory is None:
        raise ValueError(f"no reward fn registered for domain {domain!r}; registered: {registered_domains()}")
    reward_fn = factory(**options)
    if not callable(getattr(reward_fn, "score", None)):
        raise TypeError(f"the factory for {domain!r} returned {type(reward_fn).__name__}, which has no score()")
    return reward_fn


register("math", MathReward)
register("if", InstructionFollowingReward)
register("code", CodeReward)
register("mcqa", MultipleChoiceReward)
register("structured_output", StructuredOutputReward)
register("tool_call", ToolCallReward)
register("tool_use", ToolUseReward)
register("swe", SweReward)
