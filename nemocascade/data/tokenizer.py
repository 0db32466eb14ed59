"""The tokenizer wrapper and its declared special tokens: a sentencepiece model, or a Hugging Face ``tokenizer.json``.

The chat template's markers are *declared* tokens of the vocabulary (sentencepiece ``user_defined_symbols``, a
tokenizer.json's added tokens), so each always encodes to exactly one id, wherever it appears in a text.
A tokenizer lacking any of them is rejected with a message saying which, rather than guessed around.

The built-in toy model (``assets/toy_spm.model``, rebuilt by ``python -m nemocascade.data.build_tokenizer``)
also declares ``"\\n"`` as a symbol so that newlines never merge with neighbouring text; a real model
need not. A ``tokenizer.json`` (e.g. Nemotron-3-Nano's, which ships no sentencepiece model) is read with the
``tokenizers`` package (``pip install 'nemocascade[hf]'``).
"""
from __future__ import annotations

import json
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
    """Text <-> int ids with a vocabulary that declares ``SPECIAL_TOKENS`` and a pad token.

    The vocabulary is a backend (:class:`_SentencePiece`, :class:`_HuggingFace`) with ``vocab_size``,
    ``pad_id`` (or None), ``encode``, ``decode``, ``token_to_id`` (None when absent), ``id_to_token`` and
    ``tokens``.

    Attributes:
      vocab_size: number of ids (valid ids are ``0 .. vocab_size - 1``).
      pad_id: id of the padding token (dropped by ``decode``).
      eos_id: id of ``<|im_end|>``, the stop token of assistant turns.
      special_ids: ``{special token: id}`` for every entry of ``SPECIAL_TOKENS``.
    """

    def __init__(self, backend, *, name: str = "<in-memory model>"):
        if isinstance(backend, spm.SentencePieceProcessor):
            backend = _SentencePiece(backend)
        self._vocab = backend
        self.name = name
        self.vocab_size = int(backend.vocab_size)
        if backend.pad_id is None:
            raise ValueError(f"tokenizer {name}: the model declares no pad piece (train it with pad_id >= 0)")
        self.pad_id = int(backend.pad_id)
        self.special_ids = {token: self._single_id(token) for token in SPECIAL_TOKENS}
        self.eos_id = self.special_ids[IM_END]

    def _single_id(self, token: str) -> int:
        token_id = self._vocab.token_to_id(token)
        if token_id is None or self._vocab.encode(token) != [token_id]:
            raise ValueError(f"tokenizer {self.name}: special token {token!r} is not declared as a single "
                             f"piece; train the model with user_defined_symbols={list(SPECIAL_TOKENS)}")
        return int(token_id)

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
        return list(self._vocab.encode(text))

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of ``ids`` (the pad id decodes to nothing)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"Tokenizer.decode: ids {bad[:5]} are outside [0, {self.vocab_size})")
        return self._vocab.decode([i for i in ids if i != self.pad_id])

    def id_to_piece(self, token_id: int) -> str:
        return self._vocab.id_to_token(int(token_id))

    def pieces(self, text: str) -> Sequence[str]:
        """The vocabulary's pieces of ``text`` (for inspection)."""
        return self._vocab.tokens(text)


class _SentencePiece:
    """A sentencepiece processor as a :class:`Tokenizer` backend."""

    def __init__(self, processor: spm.SentencePieceProcessor):
        self._sp = processor
        self.vocab_size = processor.get_piece_size()
        self.pad_id = processor.pad_id() if processor.pad_id() >= 0 else None

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def token_to_id(self, token: str) -> int | None:
        piece_id = self._sp.piece_to_id(token)
        return None if piece_id == self._sp.unk_id() else piece_id

    def id_to_token(self, token_id: int) -> str:
        return self._sp.id_to_piece(token_id)

    def tokens(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)


# Pad candidates of a tokenizer.json whose tokenizer_config.json names no pad token, in order: ids that
# byte-level encoding never produces from text without them.
_HF_PAD_CANDIDATES = ("<pad>", "<unk>")


class _HuggingFace:
    """A Hugging Face ``tokenizers.Tokenizer`` (a tokenizer.json) as a :class:`Tokenizer` backend: no special
    tokens added around a text, added tokens in a text kept as their single ids. The pad token is the
    ``pad_token`` of a ``tokenizer_config.json`` beside the file, else the first of ``_HF_PAD_CANDIDATES`` in the
    vocabulary."""

    def __init__(self, tokenizer, pad_token: str | None):
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        names = (pad_token,) if pad_token else _HF_PAD_CANDIDATES
        found = [tokenizer.token_to_id(name) for name in names if tokenizer.token_to_id(name) is not None]
        self.pad_id = found[0] if found else None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        return self._tok.id_to_token(token_id)

    def tokens(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens


def _load_hf(path: str) -> Tokenizer:
    """A tokenizer.json (and the ``pad_token`` of a tokenizer_config.json beside it)."""
    try:
        import tokenizers  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ImportError(f"tokenizer {path!r} is a Hugging Face tokenizer.json; reading it needs the `tokenizers` "
                          f"package: pip install 'nemocascade[hf]'") from err
    try:
        tokenizer = tokenizers.Tokenizer.from_file(path)
    except Exception as err:  # the Rust library's parse errors
        raise ValueError(f"tokenizer {path}: not a valid tokenizer.json ({err})") from err
    pad_token = None
    config_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            pad = json.load(f).get("pad_token")
        pad_token = pad.get("content") if isinstance(pad, dict) else pad
    return Tokenizer(_HuggingFace(tokenizer, pad_token), name=path)


def load_tokenizer(path: str = "") -> Tokenizer:
    """Loads a sentencepiece ``.model`` file or a Hugging Face ``tokenizer.json`` (or a model directory holding
    ``tokenizer.model`` or ``tokenizer.json``); ``""`` means the committed toy model.

    Raises FileNotFoundError (missing file) or ValueError (not a tokenizer, or one without the declared special
    tokens / pad token), each naming the path.
    """
    if not isinstance(path, str):
        raise TypeError(f"tokenizer path must be a str, got {type(path).__name__}")
    path = path or DEFAULT_MODEL_PATH
    if os.path.isdir(path):
        inside = [os.path.join(path, name) for name in ("tokenizer.model", "tokenizer.json")]
        path = next((p for p in inside if os.path.isfile(p)), inside[0])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer model not found: {path!r} (data.tokenizer must name a sentencepiece "
                                f".model file, a Hugging Face tokenizer.json or a directory holding one, or be '' "
                                f"for the built-in toy tokenizer)")
    if path.endswith(".json"):
        return _load_hf(path)
    with open(path, "rb") as f:
        return Tokenizer.from_proto(f.read(), name=path)
