"""Toy ``chat`` domain: questions with a preferred (``chosen``) and a dispreferred (``rejected``) answer.

``chosen`` is a short, correct, on-topic answer. ``rejected`` is one of four kinds of bad answer, picked
at random: off-topic (the answer to a different question), rude, repetitive (the right answer stuttered
three times) or too long (the right answer buried in filler). The reference assistant turn (the SFT
target) is ``chosen``. Example fields: ``chosen``, ``rejected`` (assistant texts) and ``rejected_kind``.
"""
from __future__ import annotations

import random
from typing import Callable

from nemocascade.data.toy.common import ToyTask, reference_message

ANIMALS = {"dog": ("four", "barks"), "cat": ("four", "meows"), "cow": ("four", "moos"), "duck": ("two", "quacks"),
           "horse": ("four", "neighs"), "chicken": ("two", "clucks"), "sheep": ("four", "bleats"),
           "owl": ("two", "hoots"), "lion": ("four", "roars"), "frog": ("four", "croaks")}
COLORS = {"the sky on a clear day": "blue", "grass": "green", "snow": "white", "a ripe banana": "yellow",
          "a ripe tomato": "red", "coal": "black", "an orange": "orange", "a lemon": "yellow",
          "milk": "white", "a strawberry": "red"}
OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "up": "down", "happy": "sad", "light": "dark",
             "open": "closed", "early": "late", "full": "empty", "old": "new", "wet": "dry", "hard": "soft"}
CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Germany": "Berlin",
            "Egypt": "Cairo", "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo"}
WORDS = ("apple", "banana", "cherry", "dog", "egg", "fish", "garden", "house", "island", "jacket", "kite", "lemon",
         "moon", "nest", "ocean", "pencil", "queen", "river", "sun", "table", "umbrella", "violin", "window",
         "yellow", "zebra")
RUDE = ("That is a silly question. Figure it out yourself.", "Why would I tell you that? Go away.",
        "Ugh, ask someone else. I am not helping.")
FILLER = ("Well, let me think about this for a long while before I answer.",
          "There are many things one could say about this and many ways to say them.",
          "It is worth noting that questions like this come up very often.",
          "Before answering, it helps to consider the question from every angle.")


def _legs(rng):
    animal = rng.choice(sorted(ANIMALS))
    return f"How many legs does a {animal} have?", f"A {animal} has {ANIMALS[animal][0]} legs."


def _sound(rng):
    animal = rng.choice(sorted(ANIMALS))
    return f"What sound does a {animal} make?", f"A {animal} {ANIMALS[animal][1]}."


def _color(rng):
    thing = rng.choice(sorted(COLORS))
    return f"What color is {thing}?", f"{thing[0].upper()}{thing[1:]} is {COLORS[thing]}."


def _opposite(rng):
    word = rng.choice(sorted(OPPOSITES))
    return f"What is the opposite of {word}?", f"The opposite of {word} is {OPPOSITES[word]}."


def _capital(rng):
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."


def _bigger(rng):
    a, b = rng.sample(range(100), 2)
    return f"Which number is bigger, {a} or {b}?", f"{max(a, b)} is bigger than {min(a, b)}."


def _next_number(rng):
    n = rng.randint(0, 98)
    return f"What number comes after {n}?", f"The number after {n} is {n + 1}."


def _even(rng):
    n = rng.randint(0, 99)
    return f"Is {n} an even number?", f"{'Yes' if n % 2 == 0 else 'No'}, {n} is {'even' if n % 2 == 0 else 'odd'}."


def _alphabet(rng):
    a, b = rng.sample(WORDS, 2)
    return (f"Which word comes first in the alphabet, {a} or {b}?",
            f"{min(a, b).capitalize()} comes before {max(a, b)}.")


# (question maker, sampling weight): the weight is the number of distinct questions, capped, so small
# families are not drawn over and over once exhausted while large ones do not crowd them out.
QUESTIONS: tuple[tuple[Callable[[random.Random], tuple[str, str]], int], ...] = (
    (_legs, len(ANIMALS)), (_sound, len(ANIMALS)), (_color, len(COLORS)), (_opposite, len(OPPOSITES)),
    (_capital, len(CAPITALS)), (_bigger, 300), (_next_number, 99), (_even, 100), (_alphabet, 300))


def _question(rng: random.Random) -> tuple[str, str]:
    make = rng.choices([q for q, _ in QUESTIONS], weights=[w for _, w in QUESTIONS])[0]
    return make(rng)
REJECTED_KINDS = ("off_topic", "rude", "repetitive", "too_long")


def _rejected(kind: str, question: str, answer: str, rng: random.Random) -> str:
    if kind == "off_topic":
        while True:
            other_question, other = _question(rng)
            if other_question != question:
                return other
    if kind == "rude":
        return rng.choice(RUDE)
    if kind == "repetitive":
        return " ".join([answer] * 3)
    return " ".join(rng.sample(FILLER, 3) + [answer] + rng.sample(FILLER, 2))


def draw(rng: random.Random) -> ToyTask:
    question, answer = _question(rng)
    kind = rng.choice(REJECTED_KINDS)
    rejected = _rejected(kind, question, answer, rng)
    return ToyTask(prompt=question, fields={"chosen": answer, "rejected": rejected, "rejected_kind": kind},
                   reference=reference_message(answer, "Answer briefly and politely."))
