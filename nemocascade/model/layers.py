"""Small layers: RMSNorm, rotary position embedding, dense MLP, activations, and sharding hints.

Parameters are declared with logical axis names (``nn.with_logical_partitioning``); ``sharding.py``
maps them to mesh axes. Shapes: ``B`` batch, ``T`` tokens, ``D`` d_model, ``F`` hidden width.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from nemocascade.model.config import ModelConfig

# Logical activation axes -> mesh axes (kept here so the model needs nothing from sharding.py). "length" (a row's
# tokens) is split over "sequence" in calls without a cache (training, scoring), never in the sampler's: the rows
# of those calls ("rows", see ``row_axis``) are split over the "sequence" devices too.
ACTIVATION_RULES = {"batch": ("data", "fsdp", "expert"), "rows": ("data", "fsdp", "expert", "sequence"),
                    "length": ("sequence",), "heads": ("tensor",)}


def row_axis(split_length: bool) -> str:
    """The logical axis of a call's rows: "batch" when its tokens may be split over ``sequence`` (a call without
    a cache), else "rows" (the sampler's calls, whose whole rows are split over ``sequence`` as well)."""
    return "batch" if split_length else "rows"


def dtype_of(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}[name]


def mesh_axes(name: str | None, dim: int) -> tuple[str, ...]:
    """The active mesh's axes (``jax.set_mesh``) that the logical activation axis ``name`` maps to, for a
    dimension of size ``dim``: those of size > 1, or () when there is no mesh or they do not divide ``dim``
    (which is then left replicated; "rows" then falls back to "batch")."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or name is None:
        return ()
    axes = tuple(a for a in ACTIVATION_RULES.get(name, ()) if a in mesh.shape and mesh.shape[a] > 1)
    size = 1
    for a in axes:
        size *= mesh.shape[a]
    if dim % size == 0:
        return axes
    return mesh_axes("batch", dim) if name == "rows" else ()


def constrain(x: jax.Array, *logical: str | None) -> jax.Array:
    """``with_sharding_constraint`` by logical axes when a mesh is active (``jax.set_mesh``)."""
    if jax.sharding.get_abstract_mesh().empty:
        return x
    spec = [mesh_axes(name, dim) or None for name, dim in zip(logical, x.shape)]
    return jax.lax.with_sharding_constraint(x, PartitionSpec(*spec))


def at_least_f32(x: jax.Array) -> jax.Array:
    """x in float32, or float64 when it already is (float64 runs are for gradient checks)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def param(module: nn.Module, name: str, shape, axes, init, cfg: ModelConfig, *, at_least_float32: bool = False):
    """A parameter in ``cfg.param_dtype`` (or float32 if that is narrower and ``at_least_float32``),
    annotated with logical axis names ``axes`` (one per dimension, None = replicated)."""
    dtype = dtype_of(cfg.param_dtype)
    if at_least_float32:
        dtype = jnp.promote_types(dtype, jnp.float32)
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * scale, computed in float32; ``scale`` starts at 1."""

    cfg: ModelConfig
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x):
        scale = param(self, "scale", (x.shape[-1],), (self.axis_name,), nn.initializers.ones, self.cfg)
        x32 = at_least_f32(x)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
        return (y * scale.astype(y.dtype)).astype(x.dtype)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding (half-split layout). x: [B, T, H, Dh]; positions: int32[B, T]."""
    half = x.shape[-1] // 2
    ftype = jnp.promote_types(x.dtype, jnp.float32)
    freq = theta ** (-jnp.arange(half, dtype=ftype) * 2.0 / x.shape[-1])
    angles = positions[..., None].astype(ftype) * freq                # [B, T, half]
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    x1, x2 = at_least_f32(x[..., :half]), at_least_f32(x[..., half:])
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def activate(kind: str, gate: jax.Array | None, up: jax.Array) -> jax.Array:
    """SwiGLU: silu(gate) * up; squared ReLU (non-gated): relu(up)^2."""
    if kind == "swiglu":
        return jax.nn.silu(gate) * up
    return jnp.square(jax.nn.relu(up))


class MLP(nn.Module):
    """Dense feed-forward: [.., D] -> [.., D] with hidden width ``hidden``."""

    cfg: ModelConfig
    hidden: int
    activation: str

    @nn.compact
    def __call__(self, x):
        cfg, d = self.cfg, x.shape[-1]
        init = nn.initializers.normal(stddev=d ** -0.5)
        dtype = dtype_of(cfg.dtype)
        up = x @ param(self, "w_up", (d, self.hidden), ("embed", "mlp"), init, cfg).astype(dtype)
        gate = None
        if self.activation == "swiglu":
            gate = x @ param(self, "w_gate", (d, self.hidden), ("embed", "mlp"), init, cfg).astype(dtype)
        down_init = nn.initializers.normal(stddev=self.hidden ** -0.5)
        w_down = param(self, "w_down", (self.hidden, d), ("mlp", "embed"), down_init, cfg).astype(dtype)
        return activate(self.activation, gate, up) @ w_down
