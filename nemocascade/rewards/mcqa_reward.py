"""The ``mcqa`` reward (multiple-choice questions): 1 when the letter the answer picks is ``expected_answer``.

Rows follow NeMo Gym's ``mcqa`` format (the multi-domain RL data): ``options`` is a list of one-entry objects
``[{"A": "text"}, {"B": "text"}, ...]`` (or one object ``{"A": "text", ...}``), ``expected_answer`` one of
their letters. How the picked letter is read from the final answer (the text after the reasoning block):

* ``template_metadata.output_regex``, when the row has one: its last match (case-insensitive), group 1, a
  letter. An invalid regex falls back to the grading mode.
* ``grading_mode`` (per row; default ``strict_single_letter_boxed``):
  - ``strict_single_letter_boxed``: the last ``\\boxed{...}``, with any ``\\text{...}`` wrapper removed, holds
    a single letter (non-letter padding allowed: ``\\boxed{ [C] }``) or starts with a letter and a label
    delimiter (``:``, ``)``, ``.``, ``-``) followed by anything (``\\boxed{E: option text}``);
  - ``lenient_boxed``: the strict form, else the last box's text equals exactly one option's text
    (case and whitespace normalised);
  - ``lenient_answer_colon``: the text after the last ``Answer:`` (to the end of its line) is a single letter,
    or equals one option's text.

A letter that is not among the options counts as no answer. Info: ``extracted`` (the letter or None).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from nemocascade.rewards.base import RewardFn, Verification
from nemocascade.rewards.math_verify import extract_boxed

GRADING_MODES = ("strict_single_letter_boxed", "lenient_boxed", "lenient_answer_colon")
_TEXT_WRAPPER = re.compile(r"^\\text\s*\{(.*)\}$", re.DOTALL)
_PADDED_LETTER = re.compile(r"^[^A-Za-z0-9]*([A-Za-z])[^A-Za-z0-9]*$")
_LABELLED_LETTER = re.compile(r"^[^A-Za-z0-9]*([A-Za-z])\s*[:).\-]")
_ANSWER_COLON = re.compile(r"answer\s*:\s*([^\n]*)", re.IGNORECASE)


def option_texts(options: Any, where: str = "options") -> dict[str, str]:
    """``{letter: text}`` from ``[{"A": text}, ...]`` or ``{"A": text, ...}`` (raises ValueError naming
    ``where`` for anything else: a key that is not one letter, a repeated letter, a non-string text)."""
    if isinstance(options, Mapping):
        entries = [dict(options)]
    elif isinstance(options, list) and all(isinstance(o, Mapping) and len(o) == 1 for o in options):
        entries = options
    else:
        raise ValueError(f"{where} must be a list of one-entry objects like [{{'A': 'text'}}, ...] or one "
                         f"object {{'A': 'text', ...}}, got {options!r:.80}")
    texts: dict[str, str] = {}
    for entry in entries:
        for letter, text in entry.items():
            if not (isinstance(letter, str) and len(letter) == 1 and letter.isalpha()):
                raise ValueError(f"{where}: option key {letter!r} is not a single letter")
            if not isinstance(text, str):
                raise ValueError(f"{where}: option {letter!r} text must be a string, got {text!r:.40}")
            if letter.upper() in texts:
                raise ValueError(f"{where}: option letter {letter.upper()!r} appears twice")
            texts[letter.upper()] = text
    if not texts:
        raise ValueError(f"{where} is empty")
    return texts


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _unwrap_text(boxed: str) -> str:
    match = _TEXT_WRAPPER.match(boxed.strip())
    return match.group(1).strip() if match else boxed.strip()


def _strict_letter(boxed: str | None) -> str | None:
    if boxed is None:
        return None
    content = _unwrap_text(boxed)
    match = _PADDED_LETTER.match(content) or _LABELLED_LETTER.match(content)
    return match.group(1).upper() if match else None


def _letter_by_text(text: str, options: dict[str, str]) -> str | None:
    matches = [letter for letter, option in options.items() if _normalise(option) == _normalise(text)]
    return matches[0] if len(matches) == 1 else None


def extract_choice(answer: str, options: dict[str, str], *, grading_mode: str = GRADING_MODES[0],
                   output_regex: str | None = None) -> str | None:
    """The option letter ``answer`` picks (see the module docstring), or None."""
    if output_regex:
        try:
            matches = list(re.finditer(output_regex, answer, re.IGNORECASE))
        except re.error:
            matches = None
        if matches is not None:
            found = matches[-1].groups()[:1] if matches else ()
            letter = found[0].strip().upper() if found and found[0] else None
            return letter if letter in options else None
    if grading_mode == "lenient_answer_colon":
        matches = _ANSWER_COLON.findall(answer)
        if not matches:
            return None
        text = matches[-1].strip()
        letter = text.upper() if len(text) == 1 else _letter_by_text(text, options)
    else:
        boxed = extract_boxed(answer)
        letter = _strict_letter(boxed)
        if letter is None and grading_mode == "lenient_boxed" and boxed is not None:
            letter = _letter_by_text(_unwrap_text(boxed), options)
    return letter if letter in options else None


class MultipleChoiceReward(RewardFn):
    """Options: the ``RewardFn`` ones. Per-row fields: ``options``, ``expected_answer``, optional
    ``grading_mode`` and ``template_metadata.output_regex``."""
    domain = "mcqa"
    required_fields = {"options": (list, dict), "expected_answer": str}

    def validate_example(self, where: str, sample: dict) -> None:
        options = option_texts(sample["options"], f"{where}['options']")
        if sample["expected_answer"].strip().upper() not in options:
            raise ValueError(f"{where}['expected_answer'] = {sample['expected_answer']!r} is not one of "
                             f"the option letters {sorted(options)}")
        mode = sample.get("grading_mode") or GRADING_MODES[0]
        if mode not in GRADING_MODES:
            raise ValueError(f"{where}['grading_mode'] = {mode!r}; expected one of {GRADING_MODES}")
        metadata = sample.get("template_metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValueError(f"{where}['template_metadata'] must be an object, got {metadata!r:.60}")

    def verify(self, sample: dict, answer: str) -> Verification:
        options = option_texts(sample["options"])
        regex = (sample.get("template_metadata") or {}).get("output_regex")
        letter = extract_choice(answer, options, grading_mode=sample.get("grading_mode") or GRADING_MODES[0],
                                output_regex=regex)
        expected = sample["expected_answer"].strip().upper()
        if letter is None:
            return Verification(0.0, "no option letter found", False, {"extracted": None})
        reason = "" if letter == expected else f"picked {letter}, expected {expected}"
        return Verification(float(letter == expected), reason, True, {"extracted": letter})
