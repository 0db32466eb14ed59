"""The safetensors reader/writer against the `safetensors` package (an independent implementation)."""
import json
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest

from nemocascade.hf.safetensors_io import (INDEX_FILE, SINGLE_FILE, CheckpointReader, TensorSpec, read_header,
                                           write_checkpoint)

st_numpy = pytest.importorskip("safetensors.numpy", reason="the safetensors package (installed with the `test` "
                               "extra's transformers) is the independent reference for the file format")


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "a.f32": rng.normal(size=(3, 5)).astype(np.float32),
        "b.bf16": rng.normal(size=(4, 2)).astype(jnp.bfloat16),
        "c.f16": rng.normal(size=(7,)).astype(np.float16),
        "d.i64": rng.integers(-9, 9, size=(2, 2)).astype(np.int64),
        "e.bool": np.array([True, False, True]),
        "f.scalar": np.array(1.5, np.float32),
        "g.empty": np.zeros((0, 4), np.float32),
    }


def _specs(tensors):
    return [TensorSpec(name, t.dtype, t.shape, lambda t=t: t) for name, t in tensors.items()]


def test_reads_what_safetensors_writes(tmp_path):
    tensors = _tensors()
    st_numpy.save_file(tensors, str(tmp_path / SINGLE_FILE), metadata={"format": "pt"})
    reader = CheckpointReader(str(tmp_path))
    assert reader.names() == sorted(tensors)
    for name, want in tensors.items():
        got = reader.read(name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), name
    assert read_header(str(tmp_path / SINGLE_FILE))[1] == {"format": "pt"}


def test_safetensors_reads_what_we_write(tmp_path):
    tensors = _tensors()
    assert write_checkpoint(str(tmp_path), _specs(tensors), metadata={"format": "pt"}) == [SINGLE_FILE]
    loaded = st_numpy.load_file(str(tmp_path / SINGLE_FILE))
    assert sorted(loaded) == sorted(tensors)
    for name, want in tensors.items():
        assert loaded[name].dtype == want.dtype and loaded[name].tobytes() == want.tobytes(), name


def test_sharded_checkpoint_with_index(tmp_path):
    tensors = _tensors()
    files = write_checkpoint(str(tmp_path), _specs(tensors), max_shard_bytes=64)
    assert files[-1] == INDEX_FILE and len(files) > 3
    with open(tmp_path / INDEX_FILE) as f:
        index = json.load(f)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    for name, want in tensors.items():       # each shard is a valid safetensors file holding its tensors
        shard = st_numpy.load_file(str(tmp_path / index["weight_map"][name]))
        assert shard[name].tobytes() == want.tobytes(), name
    reader = CheckpointReader(str(tmp_path))
    for name, want in tensors.items():
        assert reader.read(name).tobytes() == want.tobytes(), name


def test_producer_must_match_declaration(tmp_path):
    spec = TensorSpec("w", np.float32, (2, 3), lambda: np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"tensor 'w': produced float32\[3, 2\], declared float32\[2, 3\]"):
        write_checkpoint(str(tmp_path), [spec])


def test_corrupt_files_are_named(tmp_path):
    path = tmp_path / SINGLE_FILE
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    with pytest.raises(ValueError, match=r"tensor 'w' \(F32\[4\]\) has data_offsets \[0, 12\]; expected 16 bytes"):
        CheckpointReader(str(tmp_path))
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match="header length 1000 does not fit"):
        read_header(str(path))
    header = json.dumps({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(ValueError, match="tensor 'w' has dtype 'C64'"):
        read_header(str(path))
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor"):
        CheckpointReader(str(tmp_path))
