"""IFEval instruction checkers, keyed by IFEval's instruction ids, with their kwargs schemas.

Each checker is ``check(response: str, **kwargs) -> bool`` and follows the reference IFEval
implementation (google-research/instruction_following_eval) unless noted. Extensions: every count
relation accepts "less than", "at most", "exactly", "at least", "more than"; ``startend:start_checker``.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import operator
import re
from typing import Callable

from nemocascade.rewards.ifeval import text
from nemocascade.rewards.ifeval.language import SUPPORTED_LANGUAGES, detect_language

RELATIONS: dict[str, Callable[[int, int], bool]] = {
    "less than": operator.lt, "at most": operator.le, "exactly": operator.eq, "at least": operator.ge,
    "more than": operator.gt,
}


@dataclasses.dataclass(frozen=True)
class Checker:
    """``check(response, **kwargs)``; ``kwargs``: name -> expected type (int, str or list) for each argument;
    ``defaults``: optional arguments' values."""
    check: Callable[..., bool]
    kwargs: dict[str, type]
    defaults: dict = dataclasses.field(default_factory=dict)


def lowercase(response):
    return response.islower()


def uppercase(response):
    return response.isupper()


def capital_word_frequency(response, capital_frequency, capital_relation):
    return RELATIONS[capital_relation](text.count_capital_words(response), capital_frequency)


def number_words(response, num_words, relation):
    return RELATIONS[relation](text.count_words(response), num_words)


def number_sentences(response, num_sentences, relation):
    return RELATIONS[relation](text.count_sentences(response), num_sentences)


def number_paragraphs(response, num_paragraphs):
    """Paragraphs separated by the markdown divider ``***``; an empty paragraph inside fails."""
    paragraphs = re.split(r"\s?\*\*\*\s?", response)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def nth_paragraph_first_word(response, num_paragraphs, nth_paragraph, first_word):
    """``num_paragraphs`` paragraphs separated by blank lines, the nth starting with ``first_word``."""
    paragraphs = re.split(r"\n\n", response)
    count = sum(bool(p.strip()) for p in paragraphs)
    if nth_paragraph > count or nth_paragraph < 1 or not paragraphs[nth_paragraph - 1].strip():
        return False
    word = paragraphs[nth_paragraph - 1].strip().split()[0].lstrip("'\"")
    found = re.match(r"[^.,?!'\"]*", word).group(0).lower()
    return count == num_paragraphs and found == first_word.lower()


def keywords_exist(response, keywords):
    return all(re.search(re.escape(k), response, flags=re.IGNORECASE) for k in keywords)


def forbidden_words(response, forbidden_words):
    return not any(re.search(r"\b" + re.escape(w) + r"\b", response, flags=re.IGNORECASE) for w in forbidden_words)


def keyword_frequency(response, keyword, frequency, relation):
    return RELATIONS[relation](len(re.findall(re.escape(keyword), response, flags=re.IGNORECASE)), frequency)


def letter_frequency(response, letter, let_frequency, let_relation):
    return RELATIONS[let_relation](collections.Counter(response.lower())[letter.lower()], let_frequency)


def no_comma(response):
    return "," not in response


def title(response):
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


def json_format(response):
    value = response.strip()
    value = re.sub(r"^```(?:json|Json|JSON)?", "", value)
    value = re.sub(r"```$", "", value).strip()
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def number_bullet_lists(response, num_bullets):
    """Exactly ``num_bullets`` markdown bullets (lines starting with ``* `` or ``-``)."""
    stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


def number_highlighted_sections(response, num_highlights):
    """At least ``num_highlights`` non-empty ``*highlighted*`` (or ``**bold**``) spans."""
    spans = re.findall(r"\*[^\n\*]*\*", response) + re.findall(r"\*\*[^\n\*]*\*\*", response)
    return sum(bool(s.strip("*").strip()) for s in spans) >= num_highlights


def multiple_sections(response, section_spliter, num_sections):
    """At least ``num_sections`` sections, each introduced by ``<section_spliter> <number>``."""
    pattern = r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?"
    return len(re.split(pattern, response)) - 1 >= num_sections


def constrained_response(response):
    options = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
    return any(option in response.strip() for option in options)


def number_placeholders(response, num_placeholders):
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


def postscript(response, postscript_marker):
    value = response.lower()
    if postscript_marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif postscript_marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(postscript_marker.lower()) + r".*$"
    return bool(re.findall(pattern, value, flags=re.MULTILINE))


def end_checker(response, end_phrase):
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def start_checker(response, start_phrase):
    return response.strip().strip('"').lower().startswith(start_phrase.strip().lower())


def quotation(response):
    value = response.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'


def repeat_prompt(response, prompt_to_repeat):
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


def two_responses(response):
    """Two different non-empty responses separated by ``******``."""
    parts = response.split("******")
    valid = []
    for index, part in enumerate(parts):
        if part.strip():
            valid.append(part.strip())
        elif index not in (0, len(parts) - 1):
            return False
    return len(valid) == 2 and valid[0] != valid[1]


def response_language(response, language):
    return detect_language(response) == language


CHECKERS: dict[str, Checker] = {
    "change_case:english_lowercase": Checker(lowercase, {}),
    "change_case:english_capital": Checker(uppercase, {}),
    "change_case:capital_word_frequency": Checker(capital_word_frequency,
                                                  {"capital_frequency": int, "capital_relation": str}),
    "length_constraints:number_words": Checker(number_words, {"num_words": int, "relation": str}),
    "length_constraints:number_sentences": Checker(number_sentences, {"num_sentences": int, "relation": str}),
    "length_constraints:number_paragraphs": Checker(number_paragraphs, {"num_paragraphs": int}),
    "length_constraints:nth_paragraph_first_word": Checker(
        nth_paragraph_first_word, {"num_paragraphs": int, "nth_paragraph": int, "first_word": str}),
    "keywords:existence": Checker(keywords_exist, {"keywords": list}),
    "keywords:forbidden_words": Checker(forbidden_words, {"forbidden_words": list}),
    "keywords:frequency": Checker(keyword_frequency, {"keyword": str, "frequency": int, "relation": str}),
    "keywords:letter_frequency": Checker(letter_frequency, {"letter": str, "let_frequency": int, "let_relation": str}),
    "punctuation:no_comma": Checker(no_comma, {}),
    "detectable_format:title": Checker(title, {}),
    "detectable_format:json_format": Checker(json_format, {}),
    "detectable_format:number_bullet_lists": Checker(number_bullet_lists, {"num_bullets": int}),
    "detectable_format:number_highlighted_sections": Checker(number_highlighted_sections, {"num_highlights": int}),
    "detectable_format:multiple_sections": Checker(multiple_sections, {"section_spliter": str, "num_sections": int},
                                                   {"section_spliter": "Section"}),
    "detectable_format:constrained_response": Checker(constrained_response, {}),
    "detectable_content:number_placeholders": Checker(number_placeholders, {"num_placeholders": int}),
    "detectable_content:postscript": Checker(postscript, {"postscript_marker": str}),
    "startend:end_checker": Checker(end_checker, {"end_phrase": str}),
    "startend:start_checker": Checker(start_checker, {"start_phrase": str}),
    "startend:quotation": Checker(quotation, {}),
    "combination:repeat_prompt": Checker(repeat_prompt, {"prompt_to_repeat": str}),
    "combination:two_responses": Checker(two_responses, {}),
    "language:response_language": Checker(response_language, {"language": str}),
}
_RELATION_ARGS = ("relation", "capital_relation", "let_relation")


def validate_kwargs(instruction_id: str, kwargs: dict | None) -> dict:
    """Checks one instruction's kwargs against its schema; returns them cleaned (None values dropped,
    defaults filled). Raises ValueError/TypeError naming the instruction and argument."""
    if instruction_id not in CHECKERS:
        raise ValueError(f"unknown instruction id {instruction_id!r}; known: {sorted(CHECKERS)}")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"{instruction_id}: kwargs must be a dict, got {type(kwargs).__name__}")
    checker = CHECKERS[instruction_id]
    cleaned = {**checker.defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    unknown = sorted(set(cleaned) - set(checker.kwargs))
    if unknown:
        raise ValueError(f"{instruction_id}: unexpected kwargs {unknown}; expected {sorted(checker.kwargs)}")
    for name, kind in checker.kwargs.items():
        if name not in cleaned:
            raise ValueError(f"{instruction_id}: missing kwarg {name!r} ({kind.__name__})")
        value = cleaned[name]
        if kind is int and isinstance(value, float) and value.is_integer():
            value = cleaned[name] = int(value)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise TypeError(f"{instruction_id}: kwarg {name!r} must be {kind.__name__}, got {value!r}")
        if kind is list and not all(isinstance(item, str) for item in value):
            raise TypeError(f"{instruction_id}: kwarg {name!r} must be a list of str, got {value!r}")
        if name in _RELATION_ARGS and value not in RELATIONS:
            raise ValueError(f"{instruction_id}: kwarg {name!r} must be one of {sorted(RELATIONS)}, got {value!r}")
    if instruction_id == "language:response_language" and cleaned["language"] not in SUPPORTED_LANGUAGES:
        raise ValueError(f"{instruction_id}: language {cleaned['language']!r} is not supported by the offline "
                         f"detector; supported: {sorted(SUPPORTED_LANGUAGES)}")
    if instruction_id == "keywords:letter_frequency" and len(cleaned["letter"]) != 1:
        raise ValueError(f"{instruction_id}: kwarg 'letter' must be a single character, got {cleaned['letter']!r}")
    return cleaned


def loose_variants(response: str) -> list[str]:
    """IFEval's loose-mode variants: without the first line, the last line, both, and with ``*`` removed."""
    lines = response.split("\n")
    trimmed = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return trimmed + [t.replace("*", "") for t in trimmed]


def follows(instruction_id: str, response: str, kwargs: dict, *, loose: bool = False) -> bool:
    """Whether ``response`` follows the instruction (kwargs already validated); loose: any variant does."""
    check = CHECKERS[instruction_id].check
    if not loose:
        return bool(response.strip()) and check(response, **kwargs)
    return any(variant.strip() and check(variant, **kwargs) for variant in loose_variants(response))
