"""Environments of multi-turn domains: what answers an assistant turn before the episode goes on.

A domain with an environment is played as an episode (``rollout.generate_episodes``): after each assistant
turn, ``environment.respond(example, turns)`` (``turns``: the episode's assistant turns so far, the one to answer
last) returns the messages that answer it (tool results, as ``tool`` messages), rendered into the conversation
before the next assistant turn, or None when the turn ends the episode (its final answer, which the domain's
reward fn scores). Environments hold no state between calls: one whose tools change something (the ``swe``
repository) replays the earlier turns. Domains without one are single-turn.

Registered: ``tool_use`` (the toy ``convert`` tool, ``ToolEnvironment``) and ``swe`` (a repository to repair,
``RepositoryEnvironment``).

``get_environment(domain)`` gives the registered environment or None; ``register(domain, environment)`` adds
one.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from nemocascade.environments.repository import RepositoryEnvironment
from nemocascade.environments.tools import ToolEnvironment
from nemocascade.environments.toy_tools import TOY_TOOL_FUNCTIONS


class Environment(Protocol):
    def respond(self, example: dict, turns: Sequence[str]) -> list[dict] | None:
        """The messages answering ``turns[-1]`` (each turn: the assistant's text after its generation prompt,
        without ``<|im_end|>``) in the episode of ``example``, or None when the episode is over."""

    def check_examples(self, examples: Sequence[dict]) -> None:
        """ValueError (naming the row) for an example this environment cannot play, before any rollout."""


_ENVIRONMENTS: dict[str, Environment] = {}


def register(domain: str, environment: Environment, *, overwrite: bool = False) -> None:
    """Registers ``environment`` for ``domain``; re-registering needs ``overwrite=True``."""
    if not all(callable(getattr(environment, name, None)) for name in ("respond", "check_examples")):
        raise TypeError(f"the environment for {domain!r} must have respond(example, turns) and "
                        f"check_examples(examples), got {type(environment).__name__}")
    if domain in _ENVIRONMENTS and not overwrite:
        raise ValueError(f"an environment is already registered for {domain!r} (pass overwrite=True to replace it)")
    _ENVIRONMENTS[domain] = environment


def get_environment(domain: str) -> Environment | None:
    return _ENVIRONMENTS.get(domain)


def multi_turn_domains(domains: Sequence[str]) -> list[str]:
    """The domains of ``domains`` that have an environment, sorted."""
    return sorted(d for d in set(domains) if d in _ENVIRONMENTS)


def check_turns(domains: Sequence[str], max_turns: int, field: str) -> None:
    """ValueError when ``max_turns`` (named ``field``) does not suit ``domains``: a domain with an environment
    needs at least 2 turns (else every tool result would be thrown away), and more than one turn needs such a
    domain (else the setting does nothing)."""
    multi = multi_turn_domains(domains)
    if multi and max_turns < 2:
        raise ValueError(f"{field}={max_turns}: domains {multi} are multi-turn (an environment answers their "
                         f"tool calls); set {field} >= 2")
    if max_turns > 1 and not multi:
        raise ValueError(f"{field}={max_turns}: none of the domains {sorted(set(domains))} has an environment "
                         f"(multi-turn domains: {sorted(_ENVIRONMENTS)}); set {field}=1")


register("tool_use", ToolEnvironment(TOY_TOOL_FUNCTIONS, example_fields={"rates": dict}))
register("swe", RepositoryEnvironment())

__all__ = ["Environment", "RepositoryEnvironment", "ToolEnvironment", "check_turns", "get_environment",
           "multi_turn_domains", "register"]
