"""Which tokens of a row each device holds under sequence parallelism: the zigzag layout.

A call without a cache whose rows' T tokens are split over the ``sequence`` mesh axes (S devices) cuts each row
into chunks of ``c`` consecutive tokens, ``m`` per device (:func:`chunks_per_device`):
  - zigzag, ``m = 2``: 2S chunks; device ``i`` holds chunks ``i`` and ``2S-1-i``, in that order. Causal
    attention then costs every device the same: its queries see ``(i + 1/2) + (2S - i - 1/2) = 2S`` chunks of
    keys (with consecutive chunks, device ``S-1`` would see ``S - 1/2`` chunks of ``T/S`` tokens, twice the
    average, and every step waits for it);
  - consecutive, ``m = 1``: S chunks, device ``i`` holding chunk ``i``, where 2S does not divide T or the zigzag
    chunks would be shorter than a Mamba-2 conv window (whose inputs must lie in the chunk before).
``Decoder`` permutes the tokens, positions and segment ids into this order at the start of a call
(:func:`to_layout`) and the final hidden states back (:func:`from_layout`); in between every layer works on its
device's chunks, and attention and Mamba-2 place them in the row with :func:`local_chunks`.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from nemocascade.model.config import ModelConfig
from nemocascade.model.kernels import on_shards
from nemocascade.model.layers import mesh_axes


def chunks_per_device(cfg: ModelConfig, num_tokens: int, num_shards: int) -> int:
    """``m``: 2 (zigzag) when ``2 * num_shards`` divides ``num_tokens`` in chunks no shorter than a Mamba-2 conv
    window's ``K - 1`` inputs (for a model with Mamba-2 layers), else 1 (consecutive)."""
    min_chunk = cfg.mamba_conv_kernel - 1 if "mamba" in cfg.layer_kinds else 1
    if num_shards > 1 and num_tokens % (2 * num_shards) == 0 and num_tokens // (2 * num_shards) >= min_chunk:
        return 2
    return 1


def sequence_split(cfg: ModelConfig, num_tokens: int) -> tuple[tuple[str, ...], int]:
    """(the ``sequence`` mesh axes that split a call's ``num_tokens`` tokens per row, () when none do; ``m``)."""
    sequence = mesh_axes("length", num_tokens)
    if not sequence:
        return (), 1
    mesh = jax.sharding.get_abstract_mesh()
    return sequence, chunks_per_device(cfg, num_tokens, math.prod(mesh.shape[a] for a in sequence))


def chunk_order(num_shards: int, per_device: int) -> np.ndarray:
    """int [S * m]: the row's chunk held at each place of an array all-gathered over ``sequence`` (device
    ``i``'s ``m`` chunks at places ``i*m .. i*m + m - 1``). ``np.argsort`` of it restores the row's order."""
    if per_device == 1:
        return np.arange(num_shards)
    return np.stack([np.arange(num_shards), 2 * num_shards - 1 - np.arange(num_shards)], axis=1).reshape(-1)


def in_row_order(x: jax.Array, num_shards: int, per_device: int) -> jax.Array:
    """[b, S*m*c, ...] all-gathered over ``sequence`` (tiled, axis 1) -> the row's order."""
    if per_device == 1:
        return x
    chunks = x.reshape(x.shape[0], num_shards * per_device, -1, *x.shape[2:])
    ordered = jnp.take(chunks, np.argsort(chunk_order(num_shards, per_device)), axis=1)
    return ordered.reshape(x.shape)


def local_chunks(sequence, per_device: int) -> jax.Array:
    """int32 [m]: the row's chunks this device holds (inside ``shard_map`` over the ``sequence`` axes)."""
    index = jax.lax.axis_index(sequence)
    if per_device == 1:
        return index[None]
    return jnp.stack([index, 2 * math.prod(jax.lax.axis_size(a) for a in sequence) - 1 - index])


def _zigzag(x, *, sequence, inverse: bool):
    """One device's [b, 2c, ...]: its consecutive chunks ``2i, 2i+1`` -> its zigzag chunks ``i, 2S-1-i``
    (``inverse``: back). Every device holds one even and one odd chunk in either order, so each of the two
    moves is a permutation of the devices (one ``ppermute`` each)."""
    num_shards = math.prod(jax.lax.axis_size(a) for a in sequence)
    owner = lambda chunk: chunk if chunk < num_shards else 2 * num_shards - 1 - chunk  # noqa: E731
    even_chunk = lambda device: device if device % 2 == 0 else 2 * num_shards - 1 - device  # noqa: E731
    first, second = jnp.split(x, 2, axis=1)
    odd_device = jax.lax.axis_index(sequence) % 2 == 1
    if inverse:   # zigzag -> consecutive: a chunk g goes to device g // 2
        even, odd = jnp.where(odd_device, second, first), jnp.where(odd_device, first, second)
        moves = [[(d, even_chunk(d) // 2) for d in range(num_shards)],
                 [(d, (2 * num_shards - 1 - even_chunk(d)) // 2) for d in range(num_shards)]]
        return jnp.concatenate([jax.lax.ppermute(v, sequence, perm) for v, perm in zip((even, odd), moves)], axis=1)
    # consecutive -> zigzag: device d's chunks 2d and 2d+1 go to their zigzag owners
    even, odd = (jax.lax.ppermute(v, sequence, [(d, owner(2 * d + parity)) for d in range(num_shards)])
                 for parity, v in enumerate((first, second)))
    return jnp.concatenate([jnp.where(odd_device, odd, even), jnp.where(odd_device, even, odd)], axis=1)


def _permute(x, cfg: ModelConfig, inverse: bool):
    sequence, per_device = sequence_split(cfg, x.shape[1])
    if per_device == 1:
        return x
    spec = P(mesh_axes("batch", x.shape[0]) or None, sequence, *([None] * (x.ndim - 2)))
    return on_shards(lambda v: _zigzag(v, sequence=sequence, inverse=inverse), (spec,), spec, x)


def to_layout(x: jax.Array, cfg: ModelConfig) -> jax.Array:
    """[B, T, ...] in the row's order -> the same array in the layout's order (the identity without sequence
    parallelism or with ``m = 1``); split over the batch axes and ``sequence`` on the active mesh."""
    return _permute(x, cfg, inverse=False)


def from_layout(x: jax.Array, cfg: ModelConfig) -> jax.Array:
    """The inverse of :func:`to_layout`."""
    return _permute(x, cfg, inverse=True)
