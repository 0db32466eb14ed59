"""The ``code`` reward: the response's Python solution run against the example's tests in the sandbox."""
from __future__ import annotations

import re
from typing import Sequence

from nemocascade.rewards.base import RewardFn, Verification
from nemocascade.sandbox.code_sandbox import Sandbox, SandboxLimits, Submission, SubmissionResult, shared_sandbox

AGGREGATES = ("all", "fraction")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.S)
_PYTHON_TAGS = ("python", "py", "python3")


def extract_code(text: str) -> str | None:
    """The last fenced block tagged python/py/python3; else the last untagged fenced block; else None."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    for wanted in (_PYTHON_TAGS, ("",)):
        tagged = [body for tag, body in blocks if tag in wanted]
        if tagged:
            return tagged[-1]
    return None


class CodeReward(RewardFn):
    """Runs each sample's code block with ``example["tests"]`` (and ``entry_point``, if given) in a
    ``Sandbox``. ``aggregate="all"`` (the recipe's binary code-RL reward) gives 1 only when every test
    passes; ``"fraction"`` the pass fraction. Options: ``limits`` (a ``SandboxLimits`` or a dict of its
    fields), ``isolation``, ``max_workers`` (the process-wide ``shared_sandbox`` for them is used), or a
    ready ``sandbox``. Info: ``pass_fraction``,
    ``test_status`` (per test), ``sandbox_status``, ``isolation``."""
    domain = "code"
    required_fields = {"tests": list}

    def __init__(self, *, aggregate: str = "all", sandbox: Sandbox | None = None,
                 limits: SandboxLimits | dict | None = None, isolation: str = "auto",
                 max_workers: int | None = None, **options):
        super().__init__(**options)
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if sandbox is not None and limits is not None:
            raise ValueError("pass either sandbox or limits, not both")
        if isinstance(limits, dict):
            limits = SandboxLimits(**limits)
        self.aggregate = aggregate
        self.sandbox = sandbox or shared_sandbox(limits, isolation=isolation, max_workers=max_workers)

    def validate_example(self, where: str, sample: dict) -> None:
        if not sample["tests"] or not all(isinstance(t, str) for t in sample["tests"]):
            raise ValueError(f"{where}['tests'] must be a non-empty list of str statements")
        if not isinstance(sample.get("entry_point", ""), str):
            raise TypeError(f"{where}['entry_point'] must be str, got {sample['entry_point']!r}")

    def verify_batch(self, samples: Sequence[dict], answers: Sequence[str]) -> list[Verification]:
        codes = [extract_code(a) for a in answers]
        runnable = [i for i, code in enumerate(codes) if code is not None]
        results = self.sandbox.run_many([Submission(codes[i], list(samples[i]["tests"]),
                                                    samples[i].get("entry_point", "")) for i in runnable])
        by_index = dict(zip(runnable, results))
        return [self.verification(by_index[i]) if i in by_index else
                Verification(0.0, "no ```python code block found", False,
                             {"pass_fraction": 0.0, "test_status": [], "sandbox_status": ""})
                for i in range(len(samples))]

    def verification(self, result: SubmissionResult) -> Verification:
        """The verdict on a sandbox run: all tests passed (``aggregate="all"``) or the pass fraction."""
        fraction = result.pass_fraction
        reward = fraction if self.aggregate == "fraction" else float(fraction == 1.0)
        reason = "" if fraction == 1.0 else (f"{result.status}: {result.num_passed}/{len(result.tests)} tests "
                                             f"passed {result.detail}".strip())
        return Verification(reward, reason, True, {
            "pass_fraction": fraction, "test_status": [t.status for t in result.tests],
            "sandbox_status": result.status, "isolation": self.sandbox.isolation})
