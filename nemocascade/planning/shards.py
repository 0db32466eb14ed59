"""Per-device parameter bytes on a hypothetical mesh, computed from PartitionSpecs without any device.

The layout is the one ``sharding.param_partition_specs`` gives a real mesh (it only reads the axis
sizes, so a ``jax.sharding.AbstractMesh`` of the target topology stands in for the devices); the shard
size of each leaf is then plain arithmetic on its shape (``shard_shape``).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping

import jax
import numpy as np
from jax.sharding import AbstractMesh, PartitionSpec

from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib


def shard_shape(shape: tuple[int, ...], spec: PartitionSpec, axis_sizes: Mapping[str, int]) -> tuple[int, ...]:
    """The block one device holds of an array of ``shape`` laid out by ``spec`` on a mesh of ``axis_sizes``.

    Each dimension is divided by the product of the mesh axes ``spec`` names for it (a name, a tuple of
    names, or None = replicated), rounded up as XLA pads an uneven last shard; dimensions past the spec's
    length are replicated.
    """
    entries = tuple(spec) + (None,) * (len(shape) - len(spec))
    if len(entries) > len(shape):
        raise ValueError(f"PartitionSpec {spec} has more entries than the shape {shape} has dimensions")
    out = []
    for dim, entry in zip(shape, entries):
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        unknown = [n for n in names if n not in axis_sizes]
        if unknown:
            raise ValueError(f"PartitionSpec {spec} names mesh axes {unknown} absent from {dict(axis_sizes)}")
        ways = math.prod(axis_sizes[n] for n in names)
        out.append(-(-dim // ways))
    return tuple(out)


def abstract_mesh(axis_sizes: Mapping[str, int]) -> AbstractMesh:
    """A device-less mesh with ``sharding.MESH_AXES`` (missing axes = 1)."""
    return AbstractMesh(tuple(int(axis_sizes.get(a, 1)) for a in sharding_lib.MESH_AXES), sharding_lib.MESH_AXES)


@dataclasses.dataclass(frozen=True)
class ParamLayout:
    """Parameter sizes of one model on one mesh.

    Attributes:
      total_bytes: all parameters, unsharded, in ``param_dtype`` (router biases included: they are state).
      device_bytes: bytes one device holds (the largest shard: devices differ only by padding).
      trainable_device_bytes: bytes one device holds of the leaves the optimizer updates (the size of
        one optimizer moment: optax keeps AdamW's moments in the params' dtype).
      gathered_layer_elements: elements one device holds of the largest layer once its ``fsdp`` and ``sequence``
        shards are all-gathered for the matmuls (other axes stay split), the transient FSDP working set.
    """

    total_bytes: int
    device_bytes: int
    trainable_device_bytes: int
    gathered_layer_elements: int


def abstract_params(cfg: model_lib.ModelConfig):
    """``cfg``'s params as a pytree of ``jax.ShapeDtypeStruct`` (``model.abstract_params``: one trace per config)."""
    return model_lib.abstract_params(cfg)[0]


@functools.lru_cache(maxsize=8)
def _partition_specs(cfg: model_lib.ModelConfig, sizes: tuple[tuple[str, int], ...]):
    return sharding_lib.param_partition_specs(abstract_mesh(dict(sizes)), cfg)


def without_axes(spec: PartitionSpec, axes: tuple[str, ...]) -> PartitionSpec:
    """``spec`` with the mesh ``axes`` dropped (their shards gathered)."""
    def drop(entry):
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        kept = tuple(n for n in names if n not in axes)
        return None if not kept else kept[0] if len(kept) == 1 else kept
    return PartitionSpec(*(drop(e) for e in spec))


def _leaf_name(path) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def param_layout(cfg: model_lib.ModelConfig, axis_sizes: Mapping[str, int], trainable=None) -> ParamLayout:
    """Sizes of ``cfg``'s params on a mesh of ``axis_sizes`` (see ``ParamLayout``); nothing is allocated.

    ``trainable``: a params-shaped pytree of bools (None: every leaf is trained).
    """
    shapes = abstract_params(cfg)
    specs = _partition_specs(cfg, tuple(sorted(axis_sizes.items())))
    if trainable is None:
        trainable = jax.tree.map(lambda _: True, shapes)
    is_spec = lambda x: isinstance(x, PartitionSpec)  # noqa: E731
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    flat_specs = jax.tree.leaves(specs, is_leaf=is_spec)
    flat_trainable = jax.tree.leaves(trainable)
    total = device = trainable_bytes = 0
    per_layer: dict[str, int] = {}
    for (path, leaf), spec, train in zip(leaves, flat_specs, flat_trainable, strict=True):
        itemsize = np.dtype(leaf.dtype).itemsize
        local = math.prod(shard_shape(leaf.shape, spec, axis_sizes))
        total += math.prod(leaf.shape) * itemsize
        device += local * itemsize
        trainable_bytes += local * itemsize if train else 0
        top = _leaf_name(path).split("/")[0]
        gathered = shard_shape(leaf.shape, without_axes(spec, ("fsdp", "sequence")), axis_sizes)
        per_layer[top] = per_layer.get(top, 0) + math.prod(gathered)
    layers = [v for k, v in per_layer.items() if k.startswith("layer_")]
    return ParamLayout(total_bytes=total, device_bytes=device, trainable_device_bytes=trainable_bytes,
                       gathered_layer_elements=max(layers, default=0))
