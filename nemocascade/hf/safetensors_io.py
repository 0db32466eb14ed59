"""A small reader/writer of the safetensors format, tensor by tensor (numpy; BF16/FP8 dtypes from jax's ml_dtypes).

File layout: 8 bytes (little-endian uint64) = ``N``, the length of a UTF-8 JSON header; the header maps each
tensor name to ``{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}`` (byte offsets into the data
section that follows the header, row-major, little-endian) plus an optional ``"__metadata__"`` of
str -> str. A checkpoint is one ``model.safetensors`` or several shards listed by
``model.safetensors.index.json`` (``{"metadata": {...}, "weight_map": {name: shard file}}``).

Reading maps the file (``np.memmap``): a tensor is paged in only when it is used, so a checkpoint larger
than host RAM streams. Writing computes every offset from the declared shapes first, then writes each
tensor as its producer returns it, so only one tensor is in host RAM at a time.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from typing import Callable, Iterable, Mapping

import jax.numpy as jnp
import numpy as np

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# safetensors dtype code <-> numpy dtype (little-endian).
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(jnp.bfloat16), "F8_E4M3": np.dtype(jnp.float8_e4m3fn),
    "F8_E5M2": np.dtype(jnp.float8_e5m2),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_MAX_HEADER_BYTES = 100 * 2 ** 20


def dtype_code(dtype) -> str:
    """The safetensors code of a numpy dtype (``float32`` -> ``"F32"``)."""
    dtype = np.dtype(dtype)
    if dtype not in _CODES:
        raise ValueError(f"dtype {dtype} has no safetensors code; supported: {sorted(_CODES.values())}")
    return _CODES[dtype]


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies: ``file``, numpy ``dtype``, ``shape`` and absolute byte range [start, end)."""

    name: str
    file: str
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parses one safetensors file's header: ({name: TensorInfo}, metadata). Checks every offset."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than the 8-byte header length)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path}: header length {header_len} does not fit the file of {size} bytes")
        try:
            header = json.loads(f.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: the safetensors header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + header_len
    infos = {}
    for name, entry in header.items():
        try:
            code, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name!r} needs dtype, shape and data_offsets [begin, end], "
                             f"got {entry!r}") from None
        if code not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {code!r}; supported: {sorted(_DTYPES)}")
        expected = math.prod(shape) * _DTYPES[code].itemsize
        if not 0 <= begin <= end <= size - base or end - begin != expected:
            raise ValueError(f"{path}: tensor {name!r} ({code}{list(shape)}) has data_offsets [{begin}, {end}]; "
                             f"expected {expected} bytes inside the {size - base}-byte data section")
        infos[name] = TensorInfo(name, path, _DTYPES[code], shape, base + begin, base + end)
    return infos, metadata


class CheckpointReader:
    """The tensors of a Hugging Face checkpoint directory (one file, or shards with an index).

    ``names()``, ``info(name)`` come from the headers alone; ``read(name)`` returns a read-only numpy view
    of the mapped file (nothing is read from disk until the data is used).
    """

    def __init__(self, directory: str):
        self.directory = directory
        index_path = os.path.join(directory, INDEX_FILE)
        if os.path.exists(index_path):
            with open(index_path) as f:
                weight_map = json.load(f).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index_path}: needs a non-empty 'weight_map' of tensor name -> shard file")
            files = sorted(set(weight_map.values()))
        elif os.path.exists(os.path.join(directory, SINGLE_FILE)):
            weight_map, files = None, [SINGLE_FILE]
        else:
            raise FileNotFoundError(f"{directory}: neither {SINGLE_FILE} nor {INDEX_FILE} is there")
        self._infos: dict[str, TensorInfo] = {}
        for file in files:
            infos, _ = read_header(os.path.join(directory, file))
            for name, info in infos.items():
                if name in self._infos:
                    raise ValueError(f"{directory}: tensor {name!r} is in both {self._infos[name].file} and {file}")
                if weight_map is not None and weight_map.get(name) != file:
                    raise ValueError(f"{index_path}: tensor {name!r} lies in {file}, but the index says "
                                     f"{weight_map.get(name)!r}")
                self._infos[name] = info
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self._infos))
            if missing:
                raise ValueError(f"{index_path}: tensors listed but absent from their shards: {missing[:5]}")
        self._maps: dict[str, np.memmap] = {}

    def names(self) -> list[str]:
        return sorted(self._infos)

    def info(self, name: str) -> TensorInfo:
        if name not in self._infos:
            raise KeyError(f"{self.directory}: no tensor {name!r}")
        return self._infos[name]

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only array backed by the mapped file (shape and dtype as on disk)."""
        info = self.info(name)
        if info.file not in self._maps:
            self._maps[info.file] = np.memmap(info.file, dtype=np.uint8, mode="r")
        raw = self._maps[info.file][info.start:info.end]
        return raw.view(info.dtype).reshape(info.shape)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A tensor to write: its ``name``, numpy ``dtype``, ``shape`` and ``produce() -> np.ndarray``."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    produce: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def write_file(path: str, specs: Iterable[TensorSpec], metadata: Mapping[str, str] | None = None) -> None:
    """Writes one safetensors file, producing (and dropping) one tensor at a time, in ``specs`` order.

    The header is padded with spaces to a multiple of 8 bytes (as the reference implementation does), so
    every tensor's data starts 8-byte aligned relative to the data section when sizes allow.
    """
    specs = list(specs)
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for spec in specs:
        header[spec.name] = {"dtype": dtype_code(spec.dtype), "shape": list(spec.shape),
                             "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for spec in specs:
            array = np.asarray(spec.produce())
            if array.shape != tuple(spec.shape) or array.dtype != np.dtype(spec.dtype):
                raise ValueError(f"tensor {spec.name!r}: produced {array.dtype}{list(array.shape)}, declared "
                                 f"{np.dtype(spec.dtype)}{list(spec.shape)}")
            f.write(np.ascontiguousarray(array).tobytes())


def write_checkpoint(directory: str, specs: Iterable[TensorSpec], *, max_shard_bytes: int | None = None,
                     metadata: Mapping[str, str] | None = None) -> list[str]:
    """Writes ``model.safetensors``, or shards ``model-0000i-of-0000n.safetensors`` plus the index when the
    tensors exceed ``max_shard_bytes`` (tensors fill shards in order; one larger tensor gets a shard alone).

    Returns the file names written (relative to ``directory``).
    """
    specs = list(specs)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate tensor names: {sorted({n for n in names if names.count(n) > 1})}")
    shards: list[list[TensorSpec]] = [[]]
    for spec in specs:
        if max_shard_bytes and shards[-1] and sum(s.nbytes for s in shards[-1]) + spec.nbytes > max_shard_bytes:
            shards.append([])
        shards[-1].append(spec)
    os.makedirs(directory, exist_ok=True)
    if len(shards) == 1:
        write_file(os.path.join(directory, SINGLE_FILE), specs, metadata)
        return [SINGLE_FILE]
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for file, shard in zip(files, shards):
        write_file(os.path.join(directory, file), shard, metadata)
        weight_map.update({s.name: file for s in shard})
    index = {"metadata": {"total_size": sum(s.nbytes for s in specs)}, "weight_map": weight_map}
    with open(os.path.join(directory, INDEX_FILE), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    return files + [INDEX_FILE]
