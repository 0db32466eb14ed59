"""The zigzag layout of sequence-parallel calls: which chunks each device holds, and the permutations in and out."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from nemocascade import model as m
from nemocascade import sharding
from nemocascade.model import sequence_layout
from pallas_kernels.attention import block_math

TINY = m.presets.tiny()
HYBRID = m.presets.tiny_hybrid()   # Mamba-2 conv window K = 4: zigzag chunks need >= 3 tokens


def _row(num_tokens):
    return jnp.tile(jnp.arange(num_tokens, dtype=jnp.int32), (2, 1)) + jnp.asarray([[0], [1000]], jnp.int32)


@pytest.mark.parametrize("cfg, num_tokens, sequence, want_chunks", [
    (TINY, 32, 4, [0, 7, 1, 6, 2, 5, 3, 4]),
    (TINY, 24, 2, [0, 3, 1, 2]),
    (TINY, 24, 8, list(range(8))),       # 16 does not divide 24: consecutive chunks
    (HYBRID, 16, 4, list(range(4))),     # zigzag chunks of 2 < K - 1 = 3 tokens: consecutive
    (HYBRID, 24, 4, [0, 7, 1, 6, 2, 5, 3, 4]),
])
def test_layout_puts_each_devices_chunks_together_and_back(cfg, num_tokens, sequence, want_chunks):
    """to_layout of the rows' slot numbers lists the chunks device by device (device i: chunks i and 2S-1-i when
    zigzag), local_chunks names the same chunks on each device, and from_layout restores the rows."""
    row = _row(num_tokens)
    mesh = sharding.make_mesh(dict(data=min(2, 8 // sequence), sequence=sequence, tensor=max(1, 4 // sequence)))
    chunk = num_tokens // len(want_chunks)
    with jax.set_mesh(mesh):
        laid = jax.jit(lambda x: sequence_layout.to_layout(x, cfg))(jax.device_put(row, sharding.batch_sharding(mesh)))
        back = jax.jit(lambda x: sequence_layout.from_layout(x, cfg))(laid)
        axes, per_device = sequence_layout.sequence_split(cfg, num_tokens)
        named = jax.shard_map(lambda: sequence_layout.local_chunks(axes, per_device), mesh=mesh, in_specs=(),
                              out_specs=P(axes))()
    want = np.concatenate([np.arange(c * chunk, (c + 1) * chunk) for c in want_chunks])
    np.testing.assert_array_equal(laid, np.asarray(row)[:, want])
    np.testing.assert_array_equal(back, row)
    assert axes == ("sequence",) and per_device == (2 if len(want_chunks) == 2 * sequence else 1)
    np.testing.assert_array_equal(named, want_chunks)


def _flash_tiles(chunks, chunk: int, visible: list[int], block: int) -> int:
    """(query block, key block) tiles the flash kernel computes for one device: its chunks' queries at
    ``q_offset = chunk index * chunk`` over the first ``visible`` keys of the row, counted with the kernels' own
    causal block bound."""
    tiles = 0
    for index, keys in zip(chunks, visible):
        for q_block in range(chunk // block):
            tiles += int(block_math.causal_kv_block_count(q_block, block, block, keys // block, index * chunk))
    return tiles


@pytest.mark.parametrize("num_shards", [4, 16])
def test_zigzag_chunks_give_every_device_the_same_flash_attention_work(num_shards):
    """Rows of 8192 tokens, 128-token blocks: with zigzag chunks every device's flash calls (as
    ``attention._sequence_shard_attention`` makes them) compute the same number of tiles, half the rows'
    causal tiles over S each; with consecutive chunks the last device computes (2S - 1) / S times the average
    (1.74 at S=4, 1.94 at S=16)."""
    num_tokens, block = 8192, 128
    order = sequence_layout.chunk_order(num_shards, 2).reshape(num_shards, 2)
    chunk = num_tokens // (2 * num_shards)
    zigzag = [_flash_tiles(chunks, chunk, [num_tokens // 2, num_tokens], block) for chunks in order]
    consecutive = [_flash_tiles([i], num_tokens // num_shards, [num_tokens], block) for i in range(num_shards)]
    blocks = num_tokens // block
    assert zigzag == [blocks * (blocks + 1) // 2 // num_shards] * num_shards, zigzag
    assert sum(consecutive) == sum(zigzag) and max(consecutive) / max(zigzag) > (2 * num_shards - 1) / num_shards - 0.02


def test_in_row_order_inverts_the_gathered_chunk_order():
    gathered = jnp.asarray(np.arange(2 * 16).reshape(2, 16))   # S=4, m=2, chunks of 2 tokens
    ordered = sequence_layout.in_row_order(gathered, 4, 2)
    places = sequence_layout.chunk_order(4, 2)
    for place, chunk in enumerate(places):
        np.testing.assert_array_equal(ordered[:, 2 * chunk:2 * chunk + 2], gathered[:, 2 * place:2 * place + 2])
