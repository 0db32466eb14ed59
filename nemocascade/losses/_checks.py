"""Eager argument checks shared by the loss functions.

Every check runs on static information only (shapes, dtypes, Python hyper-parameters), so it works the
same on concrete arrays, on tracers inside ``jax.jit``/``jax.vmap``/``jax.grad`` and on sharded arrays,
and a bad call fails with a ``ValueError``/``TypeError`` naming the argument before anything is traced
into XLA.
"""
from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def as_array(name: str, value: Any) -> jax.Array:
    """``value`` as a jax array (no copy for jax arrays or tracers); TypeError if it is not array-like."""
    if isinstance(value, jax.Array):
        return value
    try:
        return jnp.asarray(value)
    except TypeError as err:
        raise TypeError(f"{name}: expected an array, got {type(value).__name__}") from err


def floating(name: str, value: Any) -> jax.Array:
    """``value`` as an array with a floating dtype (bf16/f16/f32/f64); TypeError otherwise."""
    array = as_array(name, value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {array.dtype}")
    return array


def integer(name: str, value: Any) -> jax.Array:
    """``value`` as an array with an integer dtype; TypeError otherwise."""
    array = as_array(name, value)
    if not jnp.issubdtype(array.dtype, jnp.integer):
        raise TypeError(f"{name}: expected an integer array, got dtype {array.dtype}")
    return array


def mask_array(name: str, value: Any) -> jax.Array:
    """A token mask: bool, integer or floating dtype (1 = the token counts, 0 = it does not)."""
    array = as_array(name, value)
    if not (array.dtype == jnp.bool_ or jnp.issubdtype(array.dtype, jnp.number)):
        raise TypeError(f"{name}: expected a bool or numeric mask, got dtype {array.dtype}")
    return array


def ndim(name: str, array: jax.Array, expected: int, layout: str) -> None:
    """ValueError unless ``array.ndim == expected``; ``layout`` (e.g. "[B, T]") is quoted in the message."""
    if array.ndim != expected:
        raise ValueError(f"{name}: expected a {expected}-D array {layout}, got shape {tuple(array.shape)}")


def same_shape(reference_name: str, reference: jax.Array, **others: jax.Array | None) -> None:
    """ValueError unless every non-None array in ``others`` has ``reference``'s shape."""
    for name, array in others.items():
        if array is not None and array.shape != reference.shape:
            raise ValueError(f"{name}: expected shape {tuple(reference.shape)} (the shape of {reference_name}), "
                             f"got {tuple(array.shape)}")


def concrete_float(value: Any) -> float | None:
    """``float(value)`` for a Python/numpy number or a concrete 0-d array; None when it is traced."""
    if isinstance(value, (numbers.Real, np.number)):
        return float(value)
    if isinstance(value, jax.core.Tracer):
        return None
    array = np.asarray(value)
    return float(array) if array.ndim == 0 else None


def hyper_parameter(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                    strict_minimum: bool = False) -> None:
    """Range-check a scalar hyper-parameter when it is concrete (traced values are not checked)."""
    if isinstance(value, bool) or not (isinstance(value, (numbers.Real, np.number, jax.Array))):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    if isinstance(value, jax.Array) and value.ndim != 0:
        raise ValueError(f"{name}: expected a scalar, got shape {tuple(value.shape)}")
    number = concrete_float(value)
    if number is None:
        return
    if np.isnan(number):
        raise ValueError(f"{name}: expected a number, got NaN")
    if minimum is not None and (number <= minimum if strict_minimum else number < minimum):
        relation = ">" if strict_minimum else ">="
        raise ValueError(f"{name}: expected a value {relation} {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name}: expected a value <= {maximum}, got {number}")


def positive_int(name: str, value: Any) -> int:
    """``value`` as a Python int >= 1; TypeError/ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name}: expected a positive Python int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def compute_dtype(*arrays: jax.Array) -> jnp.dtype:
    """The dtype losses are computed in: the inputs' common float type, at least float32."""
    return jnp.result_type(jnp.float32, *(array.dtype for array in arrays))
