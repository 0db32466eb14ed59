"""Group bookkeeping of the grouped-matmul kernels, checked against brute-force enumeration."""
import numpy as np
import pytest
import jax.numpy as jnp

from pallas_kernels.gmm import metadata

SIZES = [
    ([5, 0, 11, 1, 3], 24, 4),   # empty + one-row groups, boundaries inside tiles, tail rows
    ([0, 0, 8, 0, 8], 16, 8),    # empty groups before, between and after tile-aligned groups
    ([0, 0, 0], 12, 8),          # nothing routed; partial last tile
    ([3, 4], 30, 16),            # M not a multiple of tm, long tail
    ([6, 10], 16, 16),           # exact fill, several groups in one tile
]


def _owner(sizes, m):
    """owner[r] = group of row r, or -1."""
    owner = np.full(m, -1)
    ends = np.cumsum(sizes)
    for g, (s, e) in enumerate(zip(ends - np.array(sizes), ends)):
        owner[s:e] = g
    return owner


@pytest.mark.parametrize("sizes,m,tm", SIZES)
def test_tile_group_range_matches_row_owners(sizes, m, tm):
    first, last = metadata.tile_group_range(jnp.array(sizes, jnp.int32), m, tm)
    owner = _owner(sizes, m)
    for i in range(-(-m // tm)):
        owned = owner[i * tm:(i + 1) * tm]
        owned = owned[owned >= 0]
        if owned.size:
            assert (int(first[i]), int(last[i])) == (owned.min(), owned.max())
        else:
            assert int(first[i]) > int(last[i])


@pytest.mark.parametrize("visit_empty,cover_tail", [(False, True), (True, False)])
@pytest.mark.parametrize("sizes,m,tm", SIZES)
def test_work_list_visits_each_group_tile_once_in_order(sizes, m, tm, visit_empty, cover_tail):
    work = metadata.work_list(jnp.array(sizes, jnp.int32), m, tm, visit_empty=visit_empty,
                              cover_tail=cover_tail)
    groups = sizes + ([m - sum(sizes)] if cover_tail else [])
    owner = _owner(groups, m)
    expected = []
    for g, size in enumerate(groups):
        tiles = sorted({r // tm for r in np.flatnonzero(owner == g)})
        if size == 0 and visit_empty:
            tiles = [min(sum(groups[:g]) // tm, -(-m // tm) - 1)]
        expected += [(g, t) for t in tiles]
    n = int(work.num_items)
    got = list(zip(np.asarray(work.group_ids[:n]).tolist(), np.asarray(work.tile_ids[:n]).tolist()))
    assert got == expected
    assert n <= work.group_ids.shape[0]
    assert np.all(np.diff(np.asarray(work.tile_ids[:n])) >= 0)
