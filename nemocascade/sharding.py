"""The device mesh and how params and batches are laid out on it.

Mesh axes: ``data`` (pure data parallel), ``fsdp`` (data parallel with parameters sharded along their
``embed`` dimension), ``expert`` (experts split across devices; the batch is split over it too),
``sequence`` (sequence parallelism: the model splits each row's tokens over it in training and scoring, see
``model/``; parameters are split over it like over ``fsdp``, so its devices share the weights' memory) and
``tensor`` (heads / hidden widths / vocabulary split). Parameters carry logical axis names (see ``model/``);
``LOGICAL_AXIS_RULES`` maps them onto mesh axes (one, or several that split the dimension together). A
dimension that the axes' product does not divide evenly is replicated rather than sharded unevenly.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nemocascade import model as model_lib
from nemocascade.model.layers import ACTIVATION_RULES, mesh_axes

MESH_AXES = ("data", "fsdp", "expert", "sequence", "tensor")
BATCH_AXES = ACTIVATION_RULES["batch"]   # the model constrains its activations' batch dim the same way
LOGICAL_AXIS_RULES: dict[str, str | tuple[str, ...] | None] = {
    "vocab": "tensor",
    "embed": ("fsdp", "sequence"),
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "expert_mlp": "tensor",
    "expert": "expert",
    "norm": None,
    "ssm_heads": "tensor",       # Mamba-2 heads (projections, per-head scalars, gated norm, out projection)
    "ssm_groups": None,
    "ssm_state": None,
    "ssm_channels": None,        # the depthwise conv's concatenated x/B/C channels
    "conv_kernel": None,
}


def _axes_dict(axes: Any) -> dict[str, Any]:
    """A mapping (dict, ``ml_collections.ConfigDict``) or a tuple of sizes in ``MESH_AXES`` order."""
    if isinstance(axes, (tuple, list)):
        if len(axes) != len(MESH_AXES):
            raise ValueError(f"mesh axis sizes as a sequence need {len(MESH_AXES)} entries {MESH_AXES}, got {axes}")
        return dict(zip(MESH_AXES, axes))
    if hasattr(axes, "to_dict"):
        axes = axes.to_dict()
    if not isinstance(axes, Mapping):
        raise TypeError(f"mesh axes must be a mapping of {MESH_AXES} to sizes or a tuple of {len(MESH_AXES)} sizes, "
                        f"got {type(axes).__name__}")
    return dict(axes)


def resolve_axis_sizes(axes: Any, num_devices: int) -> dict[str, int]:
    """Fills one ``-1`` axis with the remaining devices; checks that the product is the device count.

    ``axes``: see ``make_mesh``. Missing axes have size 1.
    """
    axes = _axes_dict(axes)
    unknown = sorted(set(axes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh has unknown axis name(s) {unknown}; valid axes: {MESH_AXES}")
    bad = {name: size for name, size in axes.items()
           if not isinstance(size, numbers.Integral) or isinstance(size, bool)}
    if bad:
        raise TypeError(f"mesh axis sizes must be ints, got {bad}")
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


def make_mesh(axes: Any, devices=None) -> Mesh:
    """A mesh over ``devices`` (default: all) with Auto axis types, axes in ``MESH_AXES`` order.

    ``axes``: ``{"data": 2, "fsdp": -1, ...}`` (a dict or ``ml_collections.ConfigDict``; missing axes are 1,
    one axis may be -1 = the remaining devices) or a tuple ``(data, fsdp, expert, sequence, tensor)``. The sizes'
    product must equal the number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_axis_sizes(axes, len(devices))
    shape = tuple(sizes[name] for name in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def _spec_for(shape, logical: PartitionSpec, mesh: Mesh) -> PartitionSpec:
    used: set[str] = set()
    out = []
    for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
        rule = LOGICAL_AXIS_RULES.get(name) if name is not None else None
        rule = () if rule is None else (rule,) if isinstance(rule, str) else rule
        axes = tuple(a for a in rule if a not in used and mesh.shape[a] > 1)
        if not axes or dim % math.prod(mesh.shape[a] for a in axes):
            out.append(None)
        else:
            out.append(axes[0] if len(axes) == 1 else axes)
            used.update(axes)
    return PartitionSpec(*out)


def param_partition_specs(mesh: Mesh, cfg: model_lib.ModelConfig):
    """Params-shaped pytree of ``PartitionSpec`` for ``cfg`` on ``mesh``."""
    shapes, logical = model_lib.abstract_params(cfg)
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


def sampler_rows_sharding(mesh: Mesh, num_rows: int) -> NamedSharding:
    """The sampler's ``num_rows`` rows (its tokens and cache; leading dimension): split over the batch axes and
    ``sequence`` where that divides them, else over the batch axes alone where they do, else replicated, as the
    model's calls with a cache split them (``model.layers.row_axis``)."""
    with jax.set_mesh(mesh):
        axes = mesh_axes("rows", num_rows)
    return NamedSharding(mesh, PartitionSpec(axes or None))


def to_host(tree):
    """Device arrays (a pytree; numpy leaves pass through) -> numpy, whole on every process. Arrays spread over
    several processes (multi-host: the mesh's batch axes span hosts) are gathered (``process_allgather``), so
    every process returns the same complete values (e.g. every host scores the same rollout rows)."""
    if all(getattr(leaf, "is_fully_addressable", True) for leaf in jax.tree.leaves(tree)):
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)
