"""Toy ``if`` domain: "write about a topic" prompts with 1-2 verifiable IFEval-style constraints.

The reference writer picks sentences from a small per-topic bank and transforms them so that every
constraint holds (case, required / forbidden words, word and sentence counts, commas, an end phrase,
quotation marks, a title, bullets, a postscript). Example fields: ``instruction_id_list`` and ``kwargs``
(one dict per instruction, IFEval's argument names). Bank sentences are plain: one final period, no
apostrophes or abbreviations, so word and sentence counts are unambiguous.
"""
from __future__ import annotations

import dataclasses
import random
import re

from nemocascade.data.toy.common import ToyTask, reference_message

TOPICS = {
    "cats": ("Cats like to sleep in warm places.", "A cat can jump very high.",
             "On cold days, cats curl up in a ball.", "Many cats enjoy playing with string.",
             "Cats clean their fur every day."),
    "dogs": ("Dogs are loyal and friendly.", "A dog likes to run in the park.",
             "After a walk, dogs drink a lot of water.", "Many dogs love to chase a ball.",
             "Dogs can learn simple tricks."),
    "the sea": ("The sea is deep and wide.", "Waves roll onto the sand all day.",
                "At night, the sea looks dark and calm.", "Many fish live in the sea.",
                "The sea smells of salt."),
    "rain": ("Rain helps plants grow.", "The sound of rain is calm and soft.",
             "After the rain, the air smells fresh.", "Children like to jump in rain puddles.",
             "Rain falls from grey clouds."),
    "trees": ("Trees give us shade in summer.", "A tall tree can live for many years.",
              "In autumn, the leaves turn red and gold.", "Birds build nests in trees.",
              "Trees make the air clean."),
    "music": ("Music can make people happy.", "A song can bring back old memories.",
              "When music plays, people often dance.", "Many people learn to play the piano.",
              "Music sounds great in a big hall."),
    "bread": ("Fresh bread smells wonderful.", "Bread is made from flour and water.",
              "In the morning, warm bread is a treat.", "Many people eat bread every day.",
              "A baker starts work very early."),
    "the moon": ("The moon shines at night.", "The moon goes around the earth.",
                 "On some nights, the moon looks full and round.", "People have walked on the moon.",
                 "The moon pulls on the sea."),
    "bikes": ("Riding a bike is good exercise.", "A bike has two wheels.",
              "On sunny days, many people ride bikes to work.", "Kids often learn to ride a bike early.",
              "Bikes do not need any fuel."),
    "winter": ("Winter is the coldest season.", "Snow covers the ground in winter.",
               "In winter, people wear warm coats.", "Many lakes freeze in winter.",
               "Winter nights are long and dark."),
    "gardens": ("A garden is full of life.", "Flowers bloom in the garden in spring.",
                "With some care, a garden can grow food.", "Bees visit the flowers in a garden.",
                "Gardens need water and sun."),
    "books": ("Books can take you to new places.", "Reading a book is relaxing.",
              "In a library, there are thousands of books.", "Many people read before bed.",
              "A good book is hard to put down."),
    "trains": ("Trains carry people between cities.", "A train runs on long steel rails.",
               "At the station, people wait for the train.", "Some trains are very fast.",
               "Trains can also carry heavy goods."),
    "birds": ("Birds sing in the early morning.", "Most birds can fly.",
              "In spring, birds build small nests.", "Some birds travel far in winter.",
              "Birds have light bones and feathers."),
    "mountains": ("Mountains are tall and rocky.", "Snow stays on high mountains all year.",
                  "From the top, the view is amazing.", "Many people like to hike in the mountains.",
                  "The air is thin on a high mountain."),
    "coffee": ("Coffee is a popular morning drink.", "Coffee is made from roasted beans.",
               "For many people, coffee helps them wake up.", "Some people drink coffee with milk.",
               "Coffee smells strong and rich."),
}
KEYWORDS = ("blue", "friend", "morning", "light", "river", "smile", "song", "home", "gold", "dream")
END_PHRASES = ("That is all.", "Thank you for reading.", "I hope you liked it.")
KEYWORD_SENTENCE = "It makes me think of {}."
MIN_WORDS_RANGE = (12, 20)
MAX_WORDS_RANGE = (10, 16)
MAX_CONSTRAINTS = 2


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


@dataclasses.dataclass
class Plan:
    """What the writer has to produce; constraint choosers fill it in."""
    topic: str
    sentences: list[str]
    num_sentences: int = 2
    min_words: int | None = None
    max_words_exclusive: int | None = None
    keyword: str | None = None
    forbidden: str | None = None
    case: str | None = None            # "lower" | "upper"
    no_comma: bool = False
    end_phrase: str | None = None
    quoted: bool = False
    title: bool = False
    bullets: int | None = None
    postscript: bool = False


def _write(plan: Plan) -> str:
    """The reference response for ``plan``."""
    pool = [s for s in plan.sentences if not (plan.forbidden and plan.forbidden in _words(s.lower()))]
    count = plan.bullets or plan.num_sentences
    if plan.keyword:
        pool.insert(min(1, count - 1), KEYWORD_SENTENCE.format(plan.keyword))
    chosen = pool[:count]
    while plan.min_words is not None and len(_words(" ".join(chosen))) < plan.min_words:
        if len(chosen) == len(pool):
            raise RuntimeError(f"topic {plan.topic!r} has too few words for {plan.min_words}")
        chosen = pool[:len(chosen) + 1]
    if plan.no_comma:
        chosen = [s.replace(",", "") for s in chosen]
    text = "\n".join(f"* {s}" for s in chosen) if plan.bullets else " ".join(chosen)
    if plan.end_phrase:
        text = f"{text} {plan.end_phrase}"
    if plan.title:
        text = f"<<{plan.topic.title()}>>\n{text}"
    if plan.postscript:
        text = f"{text}\n\nP.S. I like {plan.topic}."
    if plan.quoted:
        text = f'"{text}"'
    if plan.case == "lower":
        text = text.lower()
    elif plan.case == "upper":
        text = text.upper()
    return text


@dataclasses.dataclass(frozen=True)
class Constraint:
    """``apply(plan, rng) -> (instruction text, kwargs, reasoning note)``; ``excludes``: constraint names it
    cannot be combined with."""
    name: str
    instruction_id: str
    excludes: tuple[str, ...] = ()

    def apply(self, plan: Plan, rng: random.Random) -> tuple[str, dict, str]:
        return _APPLY[self.name](plan, rng)


def _lowercase(plan, rng):
    plan.case = "lower"
    return "Use only lowercase letters.", {}, "all lowercase"


def _uppercase(plan, rng):
    plan.case = "upper"
    return "Use only capital letters.", {}, "all capitals"


def _keyword(plan, rng):
    plan.keyword = rng.choice(KEYWORDS)
    return f"Include the word {plan.keyword}.", {"keywords": [plan.keyword]}, f"use {plan.keyword}"


def forbidden_candidates(topic: str) -> list[str]:
    """Words of ``topic``'s bank that occur in exactly one of its sentences (so forbidding one removes one
    sentence), excluding the topic's own words and the keyword sentence's words."""
    counts: dict[str, int] = {}
    for sentence in TOPICS[topic]:
        for word in set(_words(sentence.lower())):
            counts[word] = counts.get(word, 0) + 1
    excluded = set(_words(topic)) | set(KEYWORDS) | set(_words(KEYWORD_SENTENCE.lower()))
    return sorted(w for w, c in counts.items() if c == 1 and len(w) > 3 and w not in excluded)


def _forbidden(plan, rng):
    candidates = forbidden_candidates(plan.topic)
    plan.forbidden = rng.choice(candidates)
    return (f"Do not use the word {plan.forbidden}.", {"forbidden_words": [plan.forbidden]},
            f"avoid {plan.forbidden}")


def _min_words(plan, rng):
    plan.min_words = rng.randint(*MIN_WORDS_RANGE)
    return (f"Use at least {plan.min_words} words.", {"num_words": plan.min_words, "relation": "at least"},
            f"{plan.min_words} words or more")


def _max_words(plan, rng):
    plan.max_words_exclusive = rng.randint(*MAX_WORDS_RANGE)
    plan.num_sentences = 1
    return (f"Use fewer than {plan.max_words_exclusive} words.",
            {"num_words": plan.max_words_exclusive, "relation": "less than"},
            f"under {plan.max_words_exclusive} words")


def _sentences(plan, rng):
    plan.num_sentences = rng.randint(1, 3)
    noun = "sentence" if plan.num_sentences == 1 else "sentences"
    return (f"Write exactly {plan.num_sentences} {noun}.",
            {"num_sentences": plan.num_sentences, "relation": "exactly"}, f"{plan.num_sentences} {noun}")


def _no_comma(plan, rng):
    plan.no_comma = True
    return "Do not use any commas.", {}, "no commas"


def _end_phrase(plan, rng):
    plan.end_phrase = rng.choice(END_PHRASES)
    return (f"End your response with the phrase: {plan.end_phrase}", {"end_phrase": plan.end_phrase},
            f"end with {plan.end_phrase}")


def _quotation(plan, rng):
    plan.quoted = True
    return "Wrap your whole response in double quotes.", {}, "wrap in quotes"


def _title(plan, rng):
    plan.title = True
    return "Add a title in double angular brackets, such as <<title>>.", {}, "add a title"


def _bullets(plan, rng):
    plan.bullets = rng.randint(2, 4)
    return (f"Answer with exactly {plan.bullets} bullet points that start with * .",
            {"num_bullets": plan.bullets}, f"{plan.bullets} bullets")


def _postscript(plan, rng):
    plan.postscript = True
    return "At the end, add a postscript starting with P.S.", {"postscript_marker": "P.S."}, "add a P.S."


_APPLY = {"lower": _lowercase, "upper": _uppercase, "keyword": _keyword, "forbidden": _forbidden,
          "min_words": _min_words, "max_words": _max_words, "sentences": _sentences, "no_comma": _no_comma,
          "end": _end_phrase, "quote": _quotation, "title": _title, "bullets": _bullets, "ps": _postscript}
_COUNTS = ("min_words", "max_words", "sentences", "bullets")
CONSTRAINTS = (
    Constraint("lower", "change_case:english_lowercase", ("upper",)),
    Constraint("upper", "change_case:english_capital", ("lower",)),
    Constraint("keyword", "keywords:existence", ("max_words",)),
    Constraint("forbidden", "keywords:forbidden_words"),
    Constraint("min_words", "length_constraints:number_words", _COUNTS + ("end", "ps")),
    Constraint("max_words", "length_constraints:number_words", _COUNTS + ("end", "ps", "keyword", "title")),
    Constraint("sentences", "length_constraints:number_sentences", _COUNTS + ("end", "ps", "title")),
    Constraint("no_comma", "punctuation:no_comma"),
    Constraint("end", "startend:end_checker", ("min_words", "max_words", "sentences", "quote", "ps")),
    Constraint("quote", "startend:quotation", ("end", "title", "bullets", "ps")),
    Constraint("title", "detectable_format:title", ("quote", "max_words", "sentences")),
    Constraint("bullets", "detectable_format:number_bullet_lists", _COUNTS + ("quote", "ps")),
    Constraint("ps", "detectable_content:postscript", ("min_words", "max_words", "sentences", "end", "quote",
                                                        "bullets")),
)


def draw(rng: random.Random) -> ToyTask:
    topic = rng.choice(sorted(TOPICS))
    plan = Plan(topic=topic, sentences=rng.sample(TOPICS[topic], len(TOPICS[topic])))
    first = rng.choice(CONSTRAINTS)
    chosen = [first]
    if rng.randint(1, MAX_CONSTRAINTS) == 2:
        compatible = [c for c in CONSTRAINTS if c.name != first.name and c.name not in first.excludes
                      and first.name not in c.excludes]
        chosen.append(rng.choice(compatible))
    instructions, kwargs, notes = [], [], []
    for constraint in chosen:
        text, args, note = constraint.apply(plan, rng)
        instructions.append(text)
        kwargs.append(args)
        notes.append(note)
    prompt = " ".join([f"Write about {topic}."] + instructions)
    return ToyTask(prompt=prompt,
                   fields={"instruction_id_list": [c.instruction_id for c in chosen], "kwargs": kwargs},
                   reference=reference_message(_write(plan), "Rules: " + "; ".join(notes) + "."))
