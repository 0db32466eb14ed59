"""The device mesh and how params and batches are laid out on it.

Mesh axes: ``data`` (pure data parallel), ``fsdp`` (data parallel with parameters sharded along their
``embed`` dimension), ``expert`` (experts split across devices; the batch is split over it too) and
``tensor`` (heads / hidden widths / vocabulary split). Parameters carry logical axis names (see
``model/``); ``LOGICAL_AXIS_RULES`` maps them onto mesh axes. A dimension that a mesh axis does not
divide evenly is replicated rather than sharded unevenly.
"""
from __future__ import annotations

import math
from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nemocascade import model as model_lib

MESH_AXES = ("data", "fsdp", "expert", "tensor")
BATCH_AXES = ("data", "fsdp", "expert")
LOGICAL_AXIS_RULES: dict[str, str | None] = {
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "expert_mlp": "tensor",
    "expert": "expert",
    "norm": None,
}


def resolve_axis_sizes(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fills one ``-1`` axis with the remaining devices; checks that the product is the device count."""
    unknown = sorted(set(axes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh has unknown axis name(s) {unknown}; valid axes: {MESH_AXES}")
    sizes = {name: int(axes.get(name, 1)) for name in MESH_AXES}
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"only one mesh axis may be -1, got {free}")
    if any(size < 1 for name, size in sizes.items() if name not in free):
        raise ValueError(f"mesh axis sizes must be >= 1 (or one -1), got {sizes}")
    fixed = math.prod(size for name, size in sizes.items() if name not in free)
    if free:
        if num_devices % fixed:
            raise ValueError(f"mesh axes {sizes} cannot fill {num_devices} devices: the fixed axes' product "
                             f"{fixed} does not divide it")
        sizes[free[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(f"mesh axes {sizes} have product {math.prod(sizes.values())} but there are "
                         f"{num_devices} devices")
    return sizes


def make_mesh(axes: Mapping[str, int], devices=None) -> Mesh:
    """A mesh over ``devices`` (default: all) with Auto axis types, axes in ``MESH_AXES`` order."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_axis_sizes(axes, len(devices))
    shape = tuple(sizes[name] for name in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def _spec_for(shape, logical: PartitionSpec, mesh: Mesh) -> PartitionSpec:
    used: set[str] = set()
    out = []
    for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
        axis = LOGICAL_AXIS_RULES.get(name) if name is not None else None
        if axis is None or axis in used or mesh.shape[axis] == 1 or dim % mesh.shape[axis]:
            out.append(None)
        else:
            out.append(axis)
            used.add(axis)
    return PartitionSpec(*out)


def param_partition_specs(mesh: Mesh, cfg: model_lib.ModelConfig):
    """Params-shaped pytree of ``PartitionSpec`` for ``cfg`` on ``mesh``."""
    shapes = jax.eval_shape(lambda r: model_lib.init_params(cfg, r), jax.random.PRNGKey(0))
    logical = model_lib.logical_axes(cfg)
    return jax.tree.map(lambda s, l: _spec_for(s.shape, l, mesh), shapes, logical,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def param_shardings(mesh: Mesh, cfg: model_lib.ModelConfig):
    """Params-shaped pytree of ``NamedSharding``."""
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), param_partition_specs(mesh, cfg),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def init_params_sharded(cfg: model_lib.ModelConfig, rng: jax.Array, mesh: Mesh):
    """Params born sharded: one jit whose outputs are placed by ``param_shardings``."""
    return jax.jit(lambda r: model_lib.init_params(cfg, r), out_shardings=param_shardings(mesh, cfg))(rng)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    return tuple(a for a in BATCH_AXES if mesh.shape[a] > 1)


def batch_shards(mesh: Mesh) -> int:
    """How many ways the leading (batch) dimension is split."""
    return int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading dimension split over the batch axes, everything else replicated (any rank >= 1)."""
    axes = batch_axes(mesh)
    return NamedSharding(mesh, PartitionSpec(axes if axes else None))
