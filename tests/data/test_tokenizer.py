"""The committed toy sentencepiece model and the Tokenizer wrapper."""
import io
import os

import pytest
import sentencepiece as spm

from nemocascade.data import build_tokenizer
from nemocascade.data.tokenizer import DEFAULT_MODEL_PATH, SPECIAL_TOKENS, Tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("")


def test_committed_model_is_small_and_fits_the_tiny_model(tok):
    assert os.path.getsize(DEFAULT_MODEL_PATH) < 100_000
    assert tok.vocab_size == build_tokenizer.VOCAB_SIZE == 1024
    assert tok.pad_id == 0
    assert tok.id_to_piece(tok.eos_id) == "<|im_end|>"


def test_committed_model_is_rebuilt_bit_for_bit():
    with open(DEFAULT_MODEL_PATH, "rb") as f:
        committed = f.read()
    assert build_tokenizer.train_model(build_tokenizer.corpus()) == committed


@pytest.mark.parametrize("token", SPECIAL_TOKENS)
def test_special_tokens_are_single_ids_anywhere(tok, token):
    token_id = tok.special_ids[token]
    assert tok.encode(token) == [token_id]
    ids = tok.encode(f"abc{token}def 12")
    assert ids.count(token_id) == 1
    assert tok.decode(ids) == f"abc{token}def 12"
    assert len(set(tok.special_ids.values())) == len(SPECIAL_TOKENS)


@pytest.mark.parametrize("text", [
    "Hello world.",
    "  leading and trailing spaces  ",
    "def f(x):\n    return x + 1\n\n\tindented with a tab",
    "Unicode: café, naïve, 日本語, emoji 🙂, math ∑",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n</think>\nYo<|im_end|>\n",
    "",
])
def test_round_trip_is_exact(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_digits_are_split(tok):
    pieces = [p for p in tok.pieces("x = 12345 + 907") if p.strip("▁")]
    digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
    assert digit_pieces == ["1", "2", "3", "4", "5", "9", "0", "7"]


def test_newline_never_merges(tok):
    assert "\n" in tok.pieces("a\nb")
    assert all(p == "\n" or "\n" not in p for p in tok.pieces("x\n\n  y\nz"))


def test_encode_never_produces_pad(tok):
    assert tok.pad_id not in tok.encode("<pad> padding <pad>")
    assert tok.decode([tok.pad_id] + tok.encode("hi") + [tok.pad_id]) == "hi"


def test_bad_ids_and_inputs(tok):
    with pytest.raises(ValueError, match=r"outside \[0, 1024\)"):
        tok.decode([5, 1024])
    with pytest.raises(TypeError, match="expects a str"):
        tok.encode(["not", "text"])


def test_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / "nope.model")
    with pytest.raises(FileNotFoundError, match="tokenizer model not found: .*nope.model"):
        load_tokenizer(path)


def test_invalid_file_names_the_path(tmp_path):
    path = tmp_path / "garbage.model"
    path.write_bytes(b"this is not a sentencepiece model")
    with pytest.raises(ValueError, match="garbage.model: not a valid sentencepiece model"):
        load_tokenizer(str(path))


def _train_plain(**extra) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["hello world", "a small corpus of text"] * 50),
                                   model_writer=model, vocab_size=40, model_type="bpe", minloglevel=2,
                                   hard_vocab_limit=False, **extra)
    return model.getvalue()


def test_model_without_declared_special_tokens_is_rejected():
    with pytest.raises(ValueError, match=r"special token '<\|im_start\|>' is not declared"):
        Tokenizer.from_proto(_train_plain(pad_id=3), name="plain.model")


def test_model_without_pad_is_rejected():
    with pytest.raises(ValueError, match="declares no pad piece"):
        Tokenizer.from_proto(_train_plain(user_defined_symbols=list(SPECIAL_TOKENS)), name="nopad.model")
