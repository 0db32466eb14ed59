"""The sentencepiece tokenizer wrapper and its declared special tokens.

The chat template's markers are *declared* pieces of the sentencepiece model (trained as
``user_defined_symbols``), so each always encodes to exactly one id, wherever it appears in a text.
A model lacking any of them is rejected with a message saying which, rather than guessed around.

The built-in toy model (``assets/toy_spm.model``, rebuilt by ``python -m nemocascade.data.build_tokenizer``)
also declares ``"\\n"`` as a symbol so that newlines never merge with neighbouring text; a real model
need not.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
TOOLS_OPEN = "<tools>"
TOOLS_CLOSE = "</tools>"
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"

SPECIAL_TOKENS = (IM_START, IM_END, THINK_OPEN, THINK_CLOSE, TOOLS_OPEN, TOOLS_CLOSE, TOOL_CALL_OPEN,
                  TOOL_CALL_CLOSE, TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE)
PAD_PIECE = "<pad>"
DEFAULT_MODEL_PATH = os.path.join(os.path.dirname(__file__), "assets", "toy_spm.model")


class Tokenizer:
    """Text <-> int ids with a sentencepiece model that declares ``SPECIAL_TOKENS`` and a pad piece.

    Attributes:
      vocab_size: number of ids (valid ids are ``0 .. vocab_size - 1``).
      pad_id: id of the padding piece (never produced by ``encode``).
      eos_id: id of ``<|im_end|>``, the stop token of assistant turns.
      special_ids: ``{special token: id}`` for every entry of ``SPECIAL_TOKENS``.
    """

    def __init__(self, processor: spm.SentencePieceProcessor, *, name: str = "<in-memory model>"):
        self._sp = processor
        self.name = name
        self.vocab_size = int(processor.get_piece_size())
        self.pad_id = int(processor.pad_id())
        if self.pad_id < 0:
            raise ValueError(f"tokenizer {name}: the model declares no pad piece (train it with pad_id >= 0)")
        self.special_ids = {token: self._single_id(token) for token in SPECIAL_TOKENS}
        self.eos_id = self.special_ids[IM_END]

    def _single_id(self, token: str) -> int:
        piece_id = int(self._sp.piece_to_id(token))
        if piece_id == self._sp.unk_id() or self._sp.encode(token) != [piece_id]:
            raise ValueError(f"tokenizer {self.name}: special token {token!r} is not declared as a single "
                             f"piece; train the model with user_defined_symbols={list(SPECIAL_TOKENS)}")
        return piece_id

    @classmethod
    def from_proto(cls, model_proto: bytes, *, name: str = "<in-memory model>") -> "Tokenizer":
        """A tokenizer from serialized sentencepiece model bytes."""
        try:
            processor = spm.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, OSError) as e:
            raise ValueError(f"tokenizer {name}: not a valid sentencepiece model ({e})") from e
        return cls(processor, name=name)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` (no BOS/EOS added; special tokens in the text become their single ids)."""
        if not isinstance(text, str):
            raise TypeError(f"Tokenizer.encode expects a str, got {type(text).__name__}")
        return self._sp.encode(text)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of ``ids`` (the pad id decodes to nothing)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"Tokenizer.decode: ids {bad[:5]} are outside [0, {self.vocab_size})")
        return self._sp.decode(ids)

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def pieces(self, text: str) -> Sequence[str]:
        """The sentencepiece pieces of ``text`` (for inspection)."""
        return self._sp.encode(text, out_type=str)


def load_tokenizer(path: str = "") -> Tokenizer:
    """Loads a sentencepiece ``.model`` file; ``""`` means the committed toy model.

    Raises FileNotFoundError (missing file) or ValueError (not a sentencepiece model, or one without the
    declared special tokens / pad piece), each naming the path.
    """
    if not isinstance(path, str):
        raise TypeError(f"tokenizer path must be a str, got {type(path).__name__}")
    path = path or DEFAULT_MODEL_PATH
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer model not found: {path!r} (data.tokenizer must name a sentencepiece "
                                f".model file, or be '' for the built-in toy tokenizer)")
    with open(path, "rb") as f:
        return Tokenizer.from_proto(f.read(), name=path)
