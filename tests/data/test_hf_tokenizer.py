"""A Hugging Face ``tokenizer.json`` as the tokenizer (the form Nemotron-3-Nano ships its vocabulary in).

A small byte-level BPE is trained here with the ``tokenizers`` package (the chat markers as added tokens), saved
as a tokenizer.json, and read through ``load_tokenizer``: ids equal the library's own, every special token is one
id, decoding round-trips exactly, and the SFT pipeline packs conversations with it.
"""
import json

import numpy as np
import pytest
import tokenizers  # the [hf] extra (also in [test])

from nemocascade.data import make_sft_dataset
from nemocascade.data.tokenizer import IM_END, SPECIAL_TOKENS, load_tokenizer

CORPUS = ["The quick brown fox jumps over the lazy dog.", "def f(x):\n    return x + 1\n",
          "Unicode: café, naïve, 日本語, emoji 🙂", "What is 12 + 30? The answer is 42."] * 20


def _train(directory, *, specials=("<unk>", "<pad>") + SPECIAL_TOKENS, config=None) -> str:
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=400, special_tokens=list(specials), show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    directory.mkdir(exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    if config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return str(directory / "tokenizer.json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = _train(tmp_path_factory.mktemp("hf"))
    return path, tokenizers.Tokenizer.from_file(path)


@pytest.mark.parametrize("text", [
    "Hello world.", "  leading and trailing spaces  ", "def f(x):\n    return x + 1\n\n\tindented",
    "Unicode: café, naïve, 日本語, emoji 🙂, math ∑",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n</think>\nYo<|im_end|>\n", ""])
def test_ids_are_the_librarys_and_decoding_round_trips(trained, text):
    path, library = trained
    tok = load_tokenizer(path)
    assert tok.encode(text) == library.encode(text, add_special_tokens=False).ids
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_are_single_ids_and_pad_is_declared(trained, tmp_path):
    path, library = trained
    tok = load_tokenizer(path)
    assert tok.vocab_size == library.get_vocab_size(with_added_tokens=True)
    for token in SPECIAL_TOKENS:
        assert tok.encode(f"x{token}y").count(tok.special_ids[token]) == 1
    assert tok.eos_id == library.token_to_id(IM_END) and tok.pad_id == library.token_to_id("<pad>")
    assert tok.decode([tok.pad_id] + tok.encode("hi") + [tok.pad_id]) == "hi"
    # A model directory works too, and tokenizer_config.json's pad_token wins over the default "<pad>".
    configured = load_tokenizer(str(_train(tmp_path / "configured", config={"pad_token": {"content": "<unk>"}})))
    assert configured.pad_id == library.token_to_id("<unk>")
    assert load_tokenizer(str(tmp_path / "configured")).pad_id == configured.pad_id


def test_the_sft_pipeline_packs_conversations_with_it(trained):
    path, _ = trained
    tok = load_tokenizer(path)
    examples = [{"id": f"ex{i}", "domain": "math", "messages": [{"role": "user", "content": "What is 12 + 30?"},
                                                {"role": "assistant", "content": "The answer is 42."}]}
                for i in range(3)]
    batch = next(iter(make_sft_dataset(examples, tok, seq_len=128, batch_size=1, seed=0, thinking=False)))
    row = batch["tokens"][0][batch["segment_ids"][0] == 1]
    text = tok.decode(row)
    assert text.startswith("<|im_start|>user\nWhat is 12 + 30?<|im_end|>") and "The answer is 42." in text
    assert np.all(batch["tokens"] < tok.vocab_size)


def test_bad_tokenizer_json_is_refused_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"special token '<think>' is not declared"):
        load_tokenizer(_train(tmp_path / "nothink", specials=("<unk>", "<pad>", "<|im_start|>", "<|im_end|>")))
    broken = tmp_path / "broken" / "tokenizer.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken/tokenizer.json: not a valid tokenizer.json"):
        load_tokenizer(str(broken))
    with pytest.raises(FileNotFoundError, match="tokenizer model not found: .*empty/tokenizer.model"):
        (tmp_path / "empty").mkdir()
        load_tokenizer(str(tmp_path / "empty"))
