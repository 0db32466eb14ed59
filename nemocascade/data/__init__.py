"""Data: tokenizer, ChatML chat template, JSONL sources, toy domains, grain pipelines with packing.

Typical use::

    tokenizer = load_tokenizer("")                      # the committed toy sentencepiece model
    examples = toy_sft_examples("math", "train", 1000, seed=0)
    batches = iter(make_sft_dataset(examples, tokenizer, seq_len=256, batch_size=8, seed=0))
    prompts = iter(make_prompt_dataset(toy_examples("math", "train", 1000), batch_size=8, seed=0))
"""
from nemocascade.data.chat_template import (parse_assistant, render, render_observation, render_prompt, render_tokens,
                                           render_tools)
from nemocascade.data.packing import TRAIN_BATCH_KEYS
from nemocascade.data.pipeline import make_prompt_dataset, make_sft_dataset
from nemocascade.data.sources import BadRow, JsonlError, JsonlExamples, read_jsonl
from nemocascade.data.tokenizer import SPECIAL_TOKENS, Tokenizer, load_tokenizer
from nemocascade.data.toy import DOMAINS as TOY_DOMAINS
from nemocascade.data.toy import toy_examples, toy_sft_examples

__all__ = [
    "BadRow", "JsonlError", "JsonlExamples", "SPECIAL_TOKENS", "TOY_DOMAINS", "TRAIN_BATCH_KEYS", "Tokenizer",
    "load_tokenizer", "make_prompt_dataset", "make_sft_dataset", "parse_assistant", "read_jsonl", "render",
    "render_observation", "render_prompt", "render_tokens", "render_tools", "toy_examples", "toy_sft_examples",
]
