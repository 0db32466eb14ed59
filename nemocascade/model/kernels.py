"""Where the model's hot ops leave XLA for the Pallas kernels in ``pallas_kernels`` (``cfg.kernel_impl``).

``kernel_impl="xla"`` (the default) never touches ``pallas_kernels``. Any other value names the
kernel backend (``auto``/``tpu``/``gpu``/``interpret``) and the op is looked up here, at trace time, so a
missing kernel package is a clear error before anything is compiled.

A Pallas call is opaque to XLA's partitioner, which would all-gather its operands and run the whole batch on
every device; on a mesh (``jax.set_mesh``) :func:`on_shards` runs it under ``jax.shard_map`` on each device's
rows (and heads, over ``tensor``) instead.
"""
from __future__ import annotations

import importlib
from typing import Callable

import jax
from jax.sharding import PartitionSpec


def pallas_op(module: str, name: str, impl: str) -> Callable:
    """``pallas_kernels.<module>.<name>``, or a ValueError saying that ``kernel_impl=impl`` needs it."""
    try:
        return getattr(importlib.import_module(f"pallas_kernels.{module}"), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"ModelConfig.kernel_impl={impl!r} needs pallas_kernels.{module}.{name}, which is not "
                         f"available ({err}); use kernel_impl='xla'") from err


def on_shards(fn: Callable, in_specs: tuple, out_specs, *args):
    """``fn(*args)`` per device under ``jax.shard_map`` on the active mesh with these ``PartitionSpec``s (None:
    an argument that is None), or ``fn(*args)`` itself when there is no mesh or no spec splits anything."""
    mesh = jax.sharding.get_abstract_mesh()
    specs = [s for s in jax.tree.leaves((in_specs, out_specs), is_leaf=lambda x: isinstance(x, PartitionSpec))]
    if mesh.empty or not any(any(part is not None for part in spec) for spec in specs):
        return fn(*args)
    # check_vma=False: a pallas_call cannot declare how its outputs vary over the mesh axes.
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)(*args)
