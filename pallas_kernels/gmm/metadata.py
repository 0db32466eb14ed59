"""Group bookkeeping shared by the grouped-matmul kernels (plain jnp, runs outside the kernels).

Rows of `lhs` are sorted by group: group `g` owns rows `[starts[g], ends[g])`. Group ends are clipped
to the number of rows `m`, so a `group_sizes` that sums past `m` can never make a kernel touch memory
outside the array. All index arrays are int32.
"""
from typing import NamedTuple

import jax.numpy as jnp


def group_bounds(group_sizes: jnp.ndarray, m: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Row ranges of the groups.

    Args:
      group_sizes: [E] int32, rows per group (non-negative).
      m: number of rows of the grouped operand.
    Returns:
      (starts, ends): [E] int32 each; group g owns rows starts[g] <= r < ends[g], ends clipped to m.
    """
    ends = jnp.minimum(jnp.cumsum(group_sizes, dtype=jnp.int32), m)
    starts = jnp.concatenate([jnp.zeros((1,), jnp.int32), ends[:-1]])
    return starts, ends


def tile_group_range(group_sizes: jnp.ndarray, m: int, tm: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """For each row tile, the first and last group that owns a row of it.

    Args:
      group_sizes: [E] int32.
      m: number of rows; tm: rows per tile.
    Returns:
      (first, last): [cdiv(m, tm)] int32. Tile i holds rows of groups first[i]..last[i] (inclusive);
      first[i] > last[i] when no group owns any row of the tile (rows past sum(group_sizes)).
      first and last are non-empty groups; groups strictly between them may be empty.
    """
    _, ends = group_bounds(group_sizes, m)
    tile_first_row = jnp.arange(0, m, tm, dtype=jnp.int32)
    tile_last_row = jnp.minimum(tile_first_row + tm, m) - 1
    first = jnp.searchsorted(ends, tile_first_row, side="right").astype(jnp.int32)
    # The last owned row of the tile: rows past the end of the last group belong to no group.
    last_owned_row = jnp.minimum(tile_last_row, ends[-1] - 1)
    last = jnp.searchsorted(ends, last_owned_row, side="right").astype(jnp.int32)
    return first, last


class WorkList(NamedTuple):
    """A sequence of (group, row tile) work items, ordered by group, then by tile.

    Tile ids never decrease along the list, so an output tile shared by two groups is visited by
    consecutive items (what a TPU pipeline needs to keep the tile resident between the visits).

    Attributes:
      starts, ends: [G] int32 row range of each group (G = E, or E + 1 with the tail group).
      group_ids: [max_items] int32 group of each item (entries past num_items are padding).
      tile_ids: [max_items] int32 row tile of each item, within [0, cdiv(m, tm)).
      num_items: () int32 number of real items.
    """

    starts: jnp.ndarray
    ends: jnp.ndarray
    group_ids: jnp.ndarray
    tile_ids: jnp.ndarray
    num_items: jnp.ndarray


def work_list(group_sizes: jnp.ndarray, m: int, tm: int, *, visit_empty: bool,
              cover_tail: bool) -> WorkList:
    """Enumerates the (group, row tile) pairs a grouped kernel must visit.

    Args:
      group_sizes: [E] int32.
      m: number of rows; tm: rows per tile.
      visit_empty: give every empty group one item (tgmm must write zeros for it).
      cover_tail: append a pseudo-group E owning rows [sum(group_sizes), m) so that those rows are
        visited too (gmm must write zeros there).
    Returns:
      WorkList with max_items = cdiv(m, tm) + G - 1, a static bound on the number of items.
    """
    num_tiles = -(-m // tm)
    starts, ends = group_bounds(group_sizes, m)
    if cover_tail:
        starts = jnp.concatenate([starts, ends[-1:]])
        ends = jnp.concatenate([ends, jnp.full((1,), m, jnp.int32)])
    sizes = ends - starts
    first_tile = jnp.minimum(starts // tm, num_tiles - 1)
    last_tile = (ends - 1) // tm
    items_per_group = jnp.where(sizes > 0, last_tile - first_tile + 1, 1 if visit_empty else 0)
    items_end = jnp.cumsum(items_per_group, dtype=jnp.int32)
    items_start = items_end - items_per_group
    max_items = num_tiles + starts.shape[0] - 1
    item = jnp.arange(max_items, dtype=jnp.int32)
    group_ids = jnp.searchsorted(items_end, item, side="right").astype(jnp.int32)
    group_ids = jnp.minimum(group_ids, starts.shape[0] - 1)
    tile_ids = first_tile[group_ids] + item - items_start[group_ids]
    tile_ids = jnp.clip(tile_ids, 0, num_tiles - 1)
    return WorkList(starts, ends, group_ids, tile_ids, items_end[-1])
