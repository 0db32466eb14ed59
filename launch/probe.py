"""A tiny entry point that checks a multi-host set-up without training: ``--entry=launch.probe``.

It takes the same flags as ``nemocascade.launch`` (``--config`` with overrides, ``--workdir`` and the
distributed flags), starts ``jax.distributed`` the same way, then checks a cross-process collective:
every device contributes its global id to one ``jnp.sum`` over a mesh of all global devices, and the
process ids are gathered with ``multihost_utils.process_allgather``. Each process writes
``<workdir>/probe/process_<i>.json`` and prints one ``probe:`` line.
"""
from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags

from nemocascade import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (loaded, not run).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where probe/process_<i>.json goes.")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = distributed.define_flags()


def probe() -> dict:
    """Device counts and the result of a collective over all global devices."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel

    mesh = jax.make_mesh((jax.device_count(),), ("devices",))
    sharding = NamedSharding(mesh, PartitionSpec("devices"))
    local_ids = np.array([d.id for d in mesh.local_devices], dtype=np.float32)
    ids = jax.make_array_from_process_local_data(sharding, local_ids, (jax.device_count(),))
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(ids)
    processes = multihost_utils.process_allgather(np.array([jax.process_index()], dtype=np.int32))
    return dict(process_index=jax.process_index(), process_count=jax.process_count(),
                local_devices=jax.local_device_count(), global_devices=jax.device_count(),
                platform=jax.devices()[0].platform,
                sum_of_device_ids=float(total), expected_sum=float(sum(d.id for d in jax.devices())),
                gathered_process_ids=[int(p) for p in np.asarray(processes).ravel()])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    _DISTRIBUTED.maybe_initialize()
    result = dict(probe(), config_name=_CONFIG.value.get("name"))
    out_dir = os.path.join(os.path.abspath(_WORKDIR.value), "probe")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"process_{result['process_index']}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(f"probe: {json.dumps(result, sort_keys=True)}", flush=True)


if __name__ == "__main__":
    app.run(main)
