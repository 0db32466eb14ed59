"""grain pipelines: packed SFT batches (segments, targets, loss masks), sharding, epochs, checkpointing, errors."""
import collections
import json
import logging

import numpy as np
import pytest

from nemocascade.data import make_prompt_dataset, make_sft_dataset, read_jsonl
from nemocascade.data.chat_template import render_tokens
from nemocascade.data.tokenizer import load_tokenizer
from nemocascade.data.toy import toy_examples, toy_sft_examples

SEQ_LEN = 192


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("")


@pytest.fixture(scope="module")
def examples():
    return [e for d in ("math", "if", "code", "chat") for e in toy_sft_examples(d, "train", 12, seed=2)]


def _sft(examples, tok, **kw):
    args = dict(seq_len=SEQ_LEN, batch_size=2, seed=0, shard_index=0, shard_count=1, thinking=False)
    args.update(kw)
    return make_sft_dataset(examples, tok, **args)


def _segments(batch):
    """(row, index array) of every packed segment, checking the row layout on the way."""
    for row in range(batch["tokens"].shape[0]):
        seg = batch["segment_ids"][row]
        used = int(np.count_nonzero(seg))
        assert (seg[:used] > 0).all() and (seg[used:] == 0).all(), "padding only at the end of a row"
        assert (np.diff(seg[:used]) >= 0).all() and (np.diff(seg[:used]) <= 1).all() and seg[0] == 1
        for k in range(1, int(seg.max()) + 1):
            yield row, np.flatnonzero(seg == k)


def _encoded(examples, tok, thinking):
    return {tuple(ids): (ex, written) for ex in examples
            for ids, written in [render_tokens(ex["messages"], tok, thinking=thinking)]}


@pytest.mark.parametrize("thinking", [False, True])
def test_rows_hold_whole_conversations_with_in_segment_targets(examples, tok, thinking):
    expected = _encoded(examples, tok, thinking)
    iterator = iter(_sft(examples, tok, thinking=thinking))
    for _ in range(3):
        batch = next(iterator)
        assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
            "tokens": (np.int32, (2, SEQ_LEN)), "targets": (np.int32, (2, SEQ_LEN)),
            "loss_mask": (np.float32, (2, SEQ_LEN)), "segment_ids": (np.int32, (2, SEQ_LEN)),
            "positions": (np.int32, (2, SEQ_LEN))}
        pad = batch["segment_ids"] == 0
        for key in ("tokens", "targets", "loss_mask", "positions"):
            assert not batch[key][pad].any()
        for row, idx in _segments(batch):
            tokens = batch["tokens"][row, idx]
            example, written = expected[tuple(tokens)]  # exactly one whole conversation
            np.testing.assert_array_equal(batch["positions"][row, idx], np.arange(len(idx)))
            np.testing.assert_array_equal(batch["targets"][row, idx[:-1]], tokens[1:])
            np.testing.assert_array_equal(batch["loss_mask"][row, idx[:-1]], written[1:])
            assert batch["targets"][row, idx[-1]] == 0 and batch["loss_mask"][row, idx[-1]] == 0
            reply = example["messages"][-1]
            trained = tok.decode(batch["targets"][row, idx][batch["loss_mask"][row, idx] == 1])
            completion = (f"{reply['reasoning']}\n</think>\n" if thinking else "") + reply["content"]
            assert trained == completion + "<|im_end|>"


def test_one_epoch_yields_every_conversation_exactly_once(examples, tok):
    seen = collections.Counter()
    for batch in _sft(examples, tok, batch_size=1, num_epochs=1):
        for row, idx in _segments(batch):
            seen[tuple(batch["tokens"][row, idx])] += 1
    assert seen == collections.Counter(_encoded(examples, tok, False).keys())


def test_packing_fills_rows(examples, tok):
    batches = [b for _, b in zip(range(4), _sft(examples, tok, batch_size=4))]
    fill = np.mean([np.mean(b["segment_ids"] > 0) for b in batches])
    assert fill > 0.7, fill


def test_restored_iterator_reproduces_the_next_batches(examples, tok):
    dataset = _sft(examples, tok, packing_bins=8)   # state saved in the middle of a packed group
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = [next(iterator) for _ in range(4)]
    restored = iter(dataset)
    restored.set_state(state)
    for want, got in zip(expected, [next(restored) for _ in range(4)]):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])


def test_sft_shards_are_disjoint_and_cover_everything(examples, tok):
    shards = []
    for index in range(2):
        tokens = set()
        for batch in _sft(examples, tok, batch_size=1, num_epochs=1, shard_index=index, shard_count=2):
            tokens |= {tuple(batch["tokens"][row, idx]) for row, idx in _segments(batch)}
        shards.append(tokens)
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(_encoded(examples, tok, False))


def test_prompt_batches_shards_epochs_and_state():
    prompts = toy_examples("math", "train", 10, seed=0)
    ids = [e["id"] for e in prompts]
    parts = [[e["id"] for batch in make_prompt_dataset(prompts, batch_size=1, seed=0, num_epochs=1, shard_index=i,
                                                          shard_count=2) for e in batch] for i in range(2)]
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == sorted(ids)

    dataset = make_prompt_dataset(prompts, batch_size=10, seed=4, shard_index=0, shard_count=1)
    iterator = iter(dataset)
    epoch1, epoch2 = [[e["id"] for e in next(iterator)] for _ in range(2)]
    assert sorted(epoch1) == sorted(epoch2) == sorted(ids) and epoch1 != epoch2 and epoch1 != ids
    again = iter(make_prompt_dataset(prompts, batch_size=10, seed=4, shard_index=0, shard_count=1))
    assert [e["id"] for e in next(again)] == epoch1

    iterator = iter(make_prompt_dataset(prompts, batch_size=3, seed=1, shard_index=0, shard_count=1))
    next(iterator)
    state = iterator.get_state()
    expected = [[e["id"] for e in next(iterator)] for _ in range(5)]
    restored = iter(make_prompt_dataset(prompts, batch_size=3, seed=1, shard_index=0, shard_count=1))
    restored.set_state(state)
    assert [[e["id"] for e in next(restored)] for _ in range(5)] == expected
    batch = next(restored)
    assert len(batch) == 3 and all(isinstance(e, dict) and e["messages"][-1]["role"] == "user" for e in batch)


def _jsonl_with_long_row(tmp_path):
    short = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    long = {"messages": [{"role": "user", "content": "Tell a story."},
                         {"role": "assistant", "content": "once upon a time " * 40}]}
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [short, long, short]) + "\n")
    return str(path), read_jsonl(str(path))


def test_too_long_raise_names_file_and_line(tmp_path, tok):
    path, rows = _jsonl_with_long_row(tmp_path)
    with pytest.raises(ValueError, match=rf"{path}:2: the conversation is \d+ tokens, longer than seq_len=64"):
        for _ in _sft(rows, tok, seq_len=64, batch_size=1, num_epochs=1):
            pass


def test_too_long_skip_logs_and_truncate_keeps_the_prefix(tmp_path, tok, caplog):
    path, rows = _jsonl_with_long_row(tmp_path)
    with caplog.at_level(logging.WARNING):
        kept = list(_sft(rows, tok, seq_len=64, batch_size=1, num_epochs=1, shuffle=False, too_long="skip"))
    assert f"{path}:2: skipping a" in caplog.text
    assert sum(int(b["segment_ids"].max()) for b in kept) == 2

    full_ids, _ = render_tokens(rows[1]["messages"], tok, thinking=False)
    truncated = [b for b in _sft(rows, tok, seq_len=64, batch_size=1, num_epochs=1, shuffle=False,
                                 too_long="truncate") if (b["segment_ids"] == 1).all()]
    assert len(truncated) == 1
    np.testing.assert_array_equal(truncated[0]["tokens"][0], full_ids[:64])


def test_example_tools_are_rendered(tok):
    tool = {"name": "lookup", "description": "Look a word up.", "parameters": {"properties": {"word": {}}}}
    example = {"domain": "general", "id": "t", "tools": [tool],
               "messages": [{"role": "user", "content": "Define cat."},
                            {"role": "assistant", "content": "", "tool_calls": [{"name": "lookup",
                                                                                 "arguments": {"word": "cat"}}]}]}
    batch = next(iter(_sft([example], tok, seq_len=256, batch_size=1)))
    text = tok.decode(batch["tokens"][0][batch["segment_ids"][0] == 1])
    assert "<tools>\n<function>\n<name>lookup</name>" in text and "<function=lookup>" in text


@pytest.mark.parametrize("kwargs,match", [
    (dict(too_long="drop"), "too_long must be one of"),
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(seq_len=1), "seq_len must be an int >= 2"),
    (dict(shard_index=2, shard_count=2), r"shard_index must be an int in \[0, shard_count=2\)"),
    (dict(num_epochs=0), "num_epochs must be a positive int"),
])
def test_bad_sft_arguments(examples, tok, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _sft(examples, tok, **kwargs)


def test_bad_examples_are_named(tok):
    prompt_only = toy_examples("math", "train", 2, seed=0)
    with pytest.raises(ValueError, match=rf"example '{prompt_only[0]['id']}': the conversation has no assistant"):
        _sft(prompt_only, tok)
    with_reply = toy_sft_examples("math", "train", 2, seed=0)
    with pytest.raises(ValueError, match=r"messages\[1\] is an assistant turn"):
        make_prompt_dataset(with_reply, batch_size=1, seed=0, shard_index=0, shard_count=1)
    with pytest.raises(ValueError, match="shard 1 of 4 is empty"):
        make_prompt_dataset(prompt_only[:1], batch_size=1, seed=0, shard_index=1, shard_count=4)
