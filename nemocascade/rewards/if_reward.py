"""The ``if`` (instruction-following) reward from IFEval-style rule checkers."""
from __future__ import annotations

from nemocascade.rewards import ifeval
from nemocascade.rewards.base import RewardFn, Verification

MODES = ("strict", "loose")
AGGREGATES = ("all", "fraction")


class InstructionFollowingReward(RewardFn):
    """Reward from the prompt's instructions, checked in ``mode`` ("strict", or IFEval's "loose"):
    ``aggregate="all"`` gives 1 only when every instruction is followed (IFEval's prompt-level accuracy),
    ``"fraction"`` the fraction followed. Info: ``instruction_ids``, ``strict`` / ``loose`` (per
    instruction), ``strict_all`` / ``loose_all``."""
    domain = "if"
    required_fields = {"instruction_id_list": list, "kwargs": list}

    def __init__(self, *, mode: str = "strict", aggregate: str = "all", **options):
        super().__init__(**options)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.mode, self.aggregate = mode, aggregate

    def validate_example(self, where: str, sample: dict) -> None:
        try:
            ifeval.validate_instructions(sample["instruction_id_list"], sample["kwargs"])
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{where}: {exc}") from None

    def verify(self, sample: dict, answer: str) -> Verification:
        results = ifeval.check_instructions(answer, sample["instruction_id_list"], sample["kwargs"])
        followed = [getattr(r, self.mode) for r in results]
        reward = float(all(followed)) if self.aggregate == "all" else sum(followed) / len(followed)
        missed = [r.instruction_id for r, ok in zip(results, followed) if not ok]
        info = {"instruction_ids": [r.instruction_id for r in results], "strict": [r.strict for r in results],
                "loose": [r.loose for r in results], "strict_all": all(r.strict for r in results),
                "loose_all": all(r.loose for r in results)}
        reason = f"not followed ({self.mode}): {', '.join(missed)}" if missed else ""
        return Verification(reward, reason, bool(answer.strip()), info)
