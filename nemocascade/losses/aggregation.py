"""Masked reductions of per-token losses to a scalar.

Masking convention (shared by every loss in this package): ``mask[B, T]`` is 1 on tokens that count
(response tokens) and 0 elsewhere (prompt, padding). Values under ``mask == 0`` never reach the result or
its gradient, even when they are inf/NaN. Non-binary mask values act as token weights (a "count" is then
the sum of weights). Empty rows, or an empty batch, give finite results: a zero count is divided as 1.

Aggregations of ``per_token[B, T]`` (``m = mask``, ``n_b = sum_t m[b, t]``):

- ``"token_mean"`` (DAPO): ``sum_{b,t} m l / sum_{b,t} m`` -- every token weighs the same, so a long
  response weighs more than a short one.
- ``"seq_mean_token_mean"`` (original GRPO; the MOPD paper's Eq. 4): mean over the non-empty sequences of
  ``sum_t m l / n_b`` -- every response weighs the same whatever its length. Rows with ``n_b == 0`` are
  left out of the mean, so adding fully-masked rows changes nothing.
- ``"seq_mean_token_sum_norm"`` (Dr. GRPO): ``sum_{b,t} m l / (B * T)`` with ``T`` the padded length --
  a constant normaliser, so no length bias.

Packed rows: with ``segment_ids[B, T]`` (int, the packing convention: ``1, 2, ...`` per sequence of a row,
``0`` = padding) a "sequence" of ``seq_mean_token_mean`` is a run of equal ids in a row (the ids' values do not
matter, only where they change) rather than a row, so a row that holds several responses weighs each of them
as one sequence, and the loss of a packed batch equals that of the same responses one per row. ``token_mean``
does not depend on the layout, and ``seq_mean_token_sum_norm`` keeps its ``B * T`` normaliser of the rows it
is given (which packing changes: compare it only between batches of one layout).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _checks

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def check_aggregation(aggregation: str) -> str:
    """``aggregation`` if it is one of ``AGGREGATIONS``; ValueError naming the choices otherwise."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation: expected one of {AGGREGATIONS}, got {aggregation!r}")
    return aggregation


def zero_outside_mask(values: jax.Array, mask: jax.Array) -> jax.Array:
    """``values`` where ``mask != 0``, else exactly 0 (also when ``values`` is inf/NaN there).

    Applying it to an input before any arithmetic keeps non-finite padding out of gradients too.
    ``mask`` must broadcast against ``values``.
    """
    return jnp.where(mask != 0, values, jnp.zeros((), values.dtype))


def _safe_divide(numerator: jax.Array, count: jax.Array) -> jax.Array:
    """``numerator / count`` with a zero count treated as 1 (so an empty mask gives 0, not NaN)."""
    return numerator / jnp.where(count > 0, count, jnp.ones((), count.dtype))


def _weighted(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(``values * mask`` with masked-out entries exactly 0, ``mask`` as ``values.dtype``)."""
    weights = mask.astype(values.dtype)
    return zero_outside_mask(values, mask) * weights, weights


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Scalar ``sum(mask * values) / sum(mask)`` over all entries (any equal shapes); 0 for an empty mask."""
    values = _checks.floating("values", values)
    mask = _checks.mask_array("mask", mask)
    _checks.same_shape("values", values, mask=mask)
    weighted, weights = _weighted(values, mask)
    return _safe_divide(jnp.sum(weighted), jnp.sum(weights))


def _sequence_sums(weighted: jax.Array, weights: jax.Array,
                   segment_ids: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Per-sequence ``(sum of weighted losses, sum of weights)``: ``[B]`` per row, or with ``segment_ids``
    ``[B * T]``, one slot per run of equal ids in a row (slot ``b * T + k`` = the ``k``-th run of row ``b``)."""
    if segment_ids is None:
        return jnp.sum(weighted, axis=1), jnp.sum(weights, axis=1)
    batch, length = weighted.shape
    starts = jnp.concatenate([jnp.ones((batch, min(length, 1)), bool), segment_ids[:, 1:] != segment_ids[:, :-1]],
                             axis=1)
    runs = jnp.cumsum(starts.astype(jnp.int32), axis=1) - 1
    slots = (jnp.arange(batch, dtype=jnp.int32)[:, None] * length + runs).reshape(-1)
    return (jax.ops.segment_sum(weighted.reshape(-1), slots, num_segments=batch * length),
            jax.ops.segment_sum(weights.reshape(-1), slots, num_segments=batch * length))


def check_segment_ids(segment_ids, mask: jax.Array) -> jax.Array | None:
    """``segment_ids`` as an integer array of ``mask``'s shape (None stays None); TypeError / ValueError
    otherwise."""
    if segment_ids is None:
        return None
    segment_ids = _checks.integer("segment_ids", segment_ids)
    _checks.same_shape("mask", mask, segment_ids=segment_ids)
    return segment_ids


def aggregate(per_token: jax.Array, mask: jax.Array, aggregation: str = "token_mean",
              segment_ids: jax.Array | None = None) -> jax.Array:
    """Reduce ``per_token[B, T]`` (float) under ``mask[B, T]`` to a scalar; see the module docstring.

    ``segment_ids``: optional int ``[B, T]`` of packed rows (``seq_mean_token_mean`` then averages over each
    run of equal ids); None = one sequence per row.
    """
    per_token = _checks.floating("per_token", per_token)
    mask = _checks.mask_array("mask", mask)
    _checks.ndim("per_token", per_token, 2, "[B, T]")
    _checks.same_shape("per_token", per_token, mask=mask)
    check_aggregation(aggregation)
    segment_ids = check_segment_ids(segment_ids, mask)
    weighted, weights = _weighted(per_token, mask)
    if aggregation == "token_mean":
        return _safe_divide(jnp.sum(weighted), jnp.sum(weights))
    if aggregation == "seq_mean_token_mean":
        sums, counts = _sequence_sums(weighted, weights, segment_ids)
        per_sequence = _safe_divide(sums, counts)
        non_empty = jnp.sum((counts > 0).astype(per_token.dtype))
        return _safe_divide(jnp.sum(per_sequence), non_empty)
    batch, length = per_token.shape
    return jnp.sum(weighted) / max(batch * length, 1)
