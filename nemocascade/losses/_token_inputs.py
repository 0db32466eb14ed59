"""Checking and masking of the per-token ``[B, T]`` inputs that the policy-gradient losses share."""
from __future__ import annotations

import jax

from . import _checks
from .aggregation import zero_outside_mask


def token_inputs(mask: jax.Array, **arrays: jax.Array | None) -> tuple[jax.Array, dict[str, jax.Array | None]]:
    """Validate ``mask[B, T]`` and the float ``arrays`` (each ``[B, T]`` or None), zero them outside the mask.

    Returns ``(mask, masked)``: ``masked[name]`` is ``arrays[name]`` cast to the common compute dtype
    (>= float32) and exactly 0 where ``mask == 0``, so padding values (even inf/NaN) cannot reach a loss
    value or a gradient. None entries stay None.
    """
    mask = _checks.mask_array("mask", mask)
    _checks.ndim("mask", mask, 2, "[B, T]")
    checked = {name: None if array is None else _checks.floating(name, array) for name, array in arrays.items()}
    _checks.same_shape("mask", mask, **checked)
    present = [array for array in checked.values() if array is not None]
    dtype = _checks.compute_dtype(*present)
    masked = {name: None if array is None else zero_outside_mask(array.astype(dtype), mask)
              for name, array in checked.items()}
    return mask, masked
