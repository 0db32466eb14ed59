"""The reward-fn contract shared by every domain, and the optional reward shaping.

``score(samples) -> (rewards f32[N], infos)``: a sample is ``{"response": str, **example}`` (optionally
``"finished": bool`` and ``"response_tokens": int``). Every info dict has ``"reason"`` ("" when the
response fully passed, else why not), ``"verified_reward"`` (the domain check alone, before shaping),
``"format_ok"``, ``"overlong_penalty"``, plus the domain's own fields.

Shaping, applied in this order (all off by default):
1. ``format_bonus`` is added to well-formed responses, ``format_penalty`` subtracted from the others
   (well-formed: reasoning closed, and the domain's answer found, e.g. a ``\\boxed{}`` or a code block);
2. the DAPO soft overlong penalty: with ``max_response_tokens`` L and ``overlong_buffer_tokens`` B, a
   response of n tokens loses ``overlong_penalty * clip((n - (L - B)) / B, 0, 1)``;
3. ``unfinished_reward``: when set, a sample with ``finished=False`` gets exactly this reward.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from nemocascade.rewards.thinking import split_thinking


SAMPLE_FIELDS = ("response", "finished", "response_tokens", "rollout_group", "turns", "assistant_turns")


@dataclasses.dataclass(frozen=True)
class Verification:
    """A domain's verdict on one answer: ``reward`` in [0, 1], ``reason`` ("" when fully correct)."""
    reward: float
    reason: str
    format_ok: bool
    info: dict = dataclasses.field(default_factory=dict)


def _number(name: str, value, *, allow_none: bool = False, minimum: float | None = None):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number{' or None' if allow_none else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Shaping:
    """Optional reward shaping (see the module docstring)."""
    unfinished_reward: float | None = None
    format_bonus: float = 0.0
    format_penalty: float = 0.0
    max_response_tokens: int | None = None
    overlong_buffer_tokens: int = 0
    overlong_penalty: float = 1.0

    def __post_init__(self):
        _number("unfinished_reward", self.unfinished_reward, allow_none=True)
        _number("format_bonus", self.format_bonus, minimum=0)
        _number("format_penalty", self.format_penalty, minimum=0)
        _number("overlong_penalty", self.overlong_penalty, minimum=0)
        _number("max_response_tokens", self.max_response_tokens, allow_none=True, minimum=1)
        _number("overlong_buffer_tokens", self.overlong_buffer_tokens, minimum=0)
        if self.max_response_tokens is not None and not 0 < self.overlong_buffer_tokens <= self.max_response_tokens:
            raise ValueError("overlong_buffer_tokens must be in (0, max_response_tokens] when max_response_tokens "
                             f"is set, got {self.overlong_buffer_tokens} for {self.max_response_tokens}")

    def overlong(self, response_tokens: int | None) -> float:
        """The soft overlong penalty (>= 0) for a response of ``response_tokens`` tokens."""
        if self.max_response_tokens is None:
            return 0.0
        start = self.max_response_tokens - self.overlong_buffer_tokens
        return self.overlong_penalty * float(np.clip((response_tokens - start) / self.overlong_buffer_tokens, 0, 1))


class RewardFn:
    """Base class: validates samples, strips reasoning, calls the domain's ``verify_batch``, shapes.

    Subclasses set ``domain`` and ``required_fields`` (example field -> type or tuple of types) and implement
    ``verify`` (or ``verify_batch`` for parallel checks). Keyword options: ``require_thinking`` (see
    ``thinking.split_thinking``) and the ``Shaping`` fields.
    """
    domain = ""
    required_fields: dict[str, type | tuple[type, ...]] = {}

    def __init__(self, *, require_thinking: bool = False, **shaping: Any):
        if not isinstance(require_thinking, bool):
            raise TypeError(f"require_thinking must be bool, got {require_thinking!r}")
        self.require_thinking = require_thinking
        self.shaping = Shaping(**shaping)

    # ---------------------------------------------------------------- domain hooks
    def validate_example(self, where: str, sample: dict) -> None:
        """Domain-specific checks beyond field types; errors start with ``where`` (e.g. ``samples[3]``), which
        names the sample, followed by the field (``samples[3]['tests']``)."""

    def verify(self, sample: dict, answer: str) -> Verification:
        raise NotImplementedError

    def verify_batch(self, samples: Sequence[dict], answers: Sequence[str]) -> list[Verification]:
        return [self.verify(s, a) for s, a in zip(samples, answers)]

    # ---------------------------------------------------------------- the contract
    def _check_fields(self, where: str, sample: Any, fields: dict) -> None:
        if not isinstance(sample, dict):
            raise TypeError(f"{where} must be a dict, got {type(sample).__name__}")
        for name, kind in fields.items():
            kind_name = " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
            if name not in sample:
                raise ValueError(f"{where} has no field {name!r} ({kind_name}), required by the {self.domain!r} reward")
            if not isinstance(sample[name], kind):
                raise TypeError(f"{where}[{name!r}] must be {kind_name}, got {type(sample[name]).__name__}")
        self.validate_example(where, sample)

    def _validate(self, samples) -> list[dict]:
        if isinstance(samples, dict) or not isinstance(samples, Sequence):
            raise TypeError(f"samples must be a list of dicts, got {type(samples).__name__}")
        fields = {"response": str, **self.required_fields}
        for i, sample in enumerate(samples):
            self._check_fields(f"samples[{i}]", sample, fields)
            if "finished" in sample and not isinstance(sample["finished"], (bool, np.bool_)):
                raise TypeError(f"samples[{i}]['finished'] must be bool, got {sample['finished']!r}")
            if self.shaping.max_response_tokens is not None:
                tokens = sample.get("response_tokens")
                if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)):
                    raise ValueError(f"samples[{i}] needs an int 'response_tokens' for the overlong penalty "
                                     f"(max_response_tokens is set), got {tokens!r}")
        return list(samples)

    def check_examples(self, examples: Sequence[dict]) -> None:
        """Checks the task fields ``score`` will need (all but those of a sampled response: ``SAMPLE_FIELDS``)
        before any rollout; the error names the example's ``origin`` (``path:line``) or ``id``."""
        fields = {k: v for k, v in self.required_fields.items() if k not in SAMPLE_FIELDS}
        for example in examples:
            where = example.get("origin") or f"example {example.get('id')!r}"
            self._check_fields(f"{where} ({self.domain!r} reward): the row", example, fields)

    def score(self, samples: Sequence[dict]) -> tuple[np.ndarray, list[dict]]:
        """Rewards f32[N] and one info dict per sample (see the module docstring)."""
        samples = self._validate(samples)
        splits = [split_thinking(s["response"], require_thinking=self.require_thinking) for s in samples]
        to_verify = [i for i, split in enumerate(splits) if split.closed]
        verified = self.verify_batch([samples[i] for i in to_verify], [splits[i].answer for i in to_verify])
        verifications = {i: v for i, v in zip(to_verify, verified)}
        rewards = np.zeros(len(samples), np.float32)
        infos = []
        for i, sample in enumerate(samples):
            v = verifications.get(i, Verification(0.0, "reasoning block not closed", False))
            reward, info = self._shape(sample, v)
            rewards[i] = reward
            infos.append(info)
        return rewards, infos

    def _shape(self, sample: dict, v: Verification) -> tuple[float, dict]:
        s = self.shaping
        reward = v.reward + (s.format_bonus if v.format_ok else -s.format_penalty)
        overlong = s.overlong(sample.get("response_tokens"))
        reward -= overlong
        reason = v.reason
        finished = bool(sample.get("finished", True))
        if not finished and s.unfinished_reward is not None:
            reward = s.unfinished_reward
            reason = "unfinished response (no stop token)"
        elif overlong > 0 and not reason:
            reason = f"overlong response (penalty {overlong:.3f})"
        info = {**v.info, "reason": reason, "verified_reward": float(v.reward), "format_ok": v.format_ok,
                "overlong_penalty": overlong, "finished": finished}
        return reward, info
