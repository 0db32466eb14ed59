"""IFEval-style instruction-following verification (strict and loose), one result per instruction."""
from __future__ import annotations

import dataclasses
from typing import Sequence

from nemocascade.rewards.ifeval.checkers import CHECKERS, RELATIONS, follows, loose_variants, validate_kwargs
from nemocascade.rewards.ifeval.language import SUPPORTED_LANGUAGES, detect_language


@dataclasses.dataclass(frozen=True)
class InstructionResult:
    instruction_id: str
    strict: bool
    loose: bool


def validate_instructions(instruction_id_list, kwargs_list) -> list[dict]:
    """Validates a prompt's instructions (ids and one kwargs dict each); returns the cleaned kwargs."""
    if isinstance(instruction_id_list, str) or not isinstance(instruction_id_list, Sequence):
        raise TypeError(f"instruction_id_list must be a list of str, got {type(instruction_id_list).__name__}")
    if isinstance(kwargs_list, dict) or not isinstance(kwargs_list, Sequence):
        raise TypeError(f"kwargs must be a list of dicts (one per instruction), got {type(kwargs_list).__name__}")
    if len(kwargs_list) != len(instruction_id_list):
        raise ValueError(f"kwargs has {len(kwargs_list)} entries for {len(instruction_id_list)} instructions")
    if not instruction_id_list:
        raise ValueError("instruction_id_list is empty")
    return [validate_kwargs(i, k) for i, k in zip(instruction_id_list, kwargs_list)]


def check_instructions(response: str, instruction_id_list: Sequence[str],
                       kwargs_list: Sequence[dict]) -> list[InstructionResult]:
    """Strict and loose verdicts for each instruction of a prompt on ``response`` (thinking already removed)."""
    cleaned = validate_instructions(instruction_id_list, kwargs_list)
    return [InstructionResult(i, follows(i, response, k), follows(i, response, k, loose=True))
            for i, k in zip(instruction_id_list, cleaned)]


__all__ = ["CHECKERS", "RELATIONS", "SUPPORTED_LANGUAGES", "InstructionResult", "check_instructions",
           "detect_language", "follows", "loose_variants", "validate_instructions", "validate_kwargs"]
