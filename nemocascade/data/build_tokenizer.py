"""Rebuilds the committed toy tokenizer ``assets/toy_spm.model`` from the built-in corpus, deterministically.

    python -m nemocascade.data.build_tokenizer [--output PATH]

The corpus is the toy domains' SFT conversations (the four of ``CORPUS_DOMAINS``: the committed model predates the
``judge`` domain, whose text is theirs) (train split, fixed seed) rendered in both thinking and
non-thinking mode, their preference texts, and a few tool-calling conversations, so every template marker
and the toy vocabulary are covered. Training is BPE, single-threaded, on a fixed sentence order, with
``split_digits`` (numbers are read digit by digit), byte fallback (any text round-trips), the template's
special tokens and ``"\\n"`` declared as user-defined symbols, pad = id 0, and no normalisation or dummy
prefix (``decode(encode(text)) == text``).
"""
from __future__ import annotations

import argparse
import io
import os
from typing import Iterator, Sequence

import sentencepiece as spm

from nemocascade.data import toy
from nemocascade.data.chat_template import render
from nemocascade.data.tokenizer import DEFAULT_MODEL_PATH, PAD_PIECE, SPECIAL_TOKENS

VOCAB_SIZE = 1024
EXAMPLES_PER_DOMAIN = 600
CORPUS_SEED = 1234
CORPUS_DOMAINS = ("chat", "code", "if", "math")
NEWLINE = "\n"

TOOLS = [
    {"name": "get_weather", "description": "Get the current weather in a city.",
     "parameters": {"properties": {"city": {"type": "string", "description": "The city name."},
                                   "unit": {"type": "string", "description": "celsius or fahrenheit"}},
                    "required": ["city"]}},
    {"name": "calculator", "description": "Evaluate an arithmetic expression.",
     "parameters": {"properties": {"expression": {"type": "string"}}, "required": ["expression"]}},
]
TOOL_CONVERSATIONS = [
    [{"role": "user", "content": "What is the weather in Paris?"},
     {"role": "assistant", "reasoning": "I should call the weather tool.", "content": "",
      "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]},
     {"role": "tool", "content": '{"temperature": 18, "sky": "cloudy"}'},
     {"role": "assistant", "content": "It is 18 degrees and cloudy in Paris."}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is 12 * 7?"},
     {"role": "assistant", "content": "Let me compute that.",
      "tool_calls": [{"name": "calculator", "arguments": {"expression": "12 * 7"}}]},
     {"role": "tool", "content": "84"},
     {"role": "assistant", "content": "12 * 7 = 84."}],
]


def corpus() -> Iterator[str]:
    """The training sentences (each a whole rendered conversation or text), in a fixed order."""
    for domain in CORPUS_DOMAINS:
        for example in toy.toy_sft_examples(domain, "train", EXAMPLES_PER_DOMAIN, seed=CORPUS_SEED):
            for thinking in (True, False):
                yield render(example["messages"], thinking=thinking)
            for key in ("chosen", "rejected"):
                if key in example:
                    yield example[key]
    for messages in TOOL_CONVERSATIONS:
        for thinking in (True, False):
            yield render(messages, tools=TOOLS, thinking=thinking)


def train_model(sentences: Iterator[str], *, vocab_size: int = VOCAB_SIZE) -> bytes:
    """Serialized sentencepiece model trained on ``sentences`` (deterministic for a fixed input)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences, model_writer=model, vocab_size=vocab_size, model_type="bpe",
        user_defined_symbols=list(SPECIAL_TOKENS) + [NEWLINE], split_digits=True, byte_fallback=True,
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, character_coverage=1.0, num_threads=1, pad_id=0, pad_piece=PAD_PIECE,
        unk_id=1, bos_id=-1, eos_id=-1, max_sentence_length=1 << 16, input_sentence_size=0,
        shuffle_input_sentence=False, minloglevel=2)
    return model.getvalue()


def build(output: str = DEFAULT_MODEL_PATH) -> str:
    """Trains on ``corpus()`` and writes the model to ``output``; returns the path."""
    model = train_model(corpus())
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "wb") as f:
        f.write(model)
    return output


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=DEFAULT_MODEL_PATH, help="where to write the .model file")
    path = build(parser.parse_args(argv).output)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
