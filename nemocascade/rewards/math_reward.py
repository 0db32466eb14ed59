"""The ``math`` reward: 1 when the response's final answer is equivalent to ``example["answer"]``, else 0."""
from __future__ import annotations

import re

from nemocascade.rewards.base import RewardFn, Verification
from nemocascade.rewards.math_verify import MathVerifier, extract_answer


class MathReward(RewardFn):
    """Options: ``sympy_timeout`` (seconds per symbolic check), ``answer_pattern`` (a regex with one group,
    used when the response has no ``\\boxed{}``), plus the ``RewardFn`` options. Info: ``extracted``."""
    domain = "math"
    required_fields = {"answer": str}

    def __init__(self, *, sympy_timeout: float = 3.0, answer_pattern: str | None = None, **options):
        super().__init__(**options)
        if answer_pattern is not None:
            try:
                groups = re.compile(answer_pattern).groups
            except (re.error, TypeError) as exc:
                raise ValueError(f"answer_pattern is not a valid regex: {exc}") from None
            if groups < 1:
                raise ValueError(f"answer_pattern must have a capturing group, got {answer_pattern!r}")
        self.answer_pattern = answer_pattern
        self.verifier = MathVerifier(sympy_timeout)

    def verify(self, sample: dict, answer: str) -> Verification:
        extracted = extract_answer(answer, self.answer_pattern)
        if extracted is None:
            wanted = "\\boxed{} answer" + (" or answer_pattern match" if self.answer_pattern else "")
            return Verification(0.0, f"no {wanted} found", False, {"extracted": None})
        verdict = self.verifier.verify(extracted, sample["answer"])
        return Verification(float(verdict.equal), verdict.reason, True, {"extracted": extracted})
