"""Counting units of text the way IFEval does: words, sentences, paragraphs, capitalised words."""
from __future__ import annotations

import re

_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd", "co",
                  "no", "fig", "approx", "u.s")
_ABBREVIATION = re.compile(r"\b(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")\.", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<=[.!?])[\"')\]]*$|\n\s*\n")


def words(text: str) -> list[str]:
    """Word tokens as IFEval counts them (nltk ``RegexpTokenizer(r"\\w+")``)."""
    return re.findall(r"\w+", text)


def count_words(text: str) -> int:
    return len(words(text))


def sentences(text: str) -> list[str]:
    """Sentences: split after ``.``/``!``/``?`` (plus closing quotes/brackets) followed by whitespace, and at
    blank lines; a period in a common abbreviation (``Dr.``, ``e.g.``) or inside a number (``3.14``) does not
    end a sentence. Pieces without any word character (``"..."``) are dropped."""
    protected = _ABBREVIATION.sub(lambda m: m.group(1).replace(".", "\0") + "\0", text)
    pieces = _SENTENCE_END.split(protected)
    return [p.replace("\0", ".").strip() for p in pieces if p and re.search(r"\w", p)]


def count_sentences(text: str) -> int:
    return len(sentences(text))


def count_capital_words(text: str) -> int:
    """Words written entirely in capitals (``NASA``, ``I``)."""
    return sum(word.isupper() for word in words(text))
