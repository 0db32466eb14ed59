"""Lowering the compiled (not interpreted) kernels for a real platform from a CPU host.

`lower_text` runs the Pallas Triton ("cuda") or Mosaic ("tpu") lowering rules, so unsupported
operations or illegal block shapes fail without the hardware; compiling the result still needs it.
Since jax 0.11 the Triton lowering reads the target GPU from the abstract mesh's device when no GPU
is attached, so "cuda" lowers for an H100 (the GPU the benchmarks target).
"""
import contextlib

import jax

_LOWERING_GPU = jax.sharding.AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132,
                                            platform="gpu")


def _target(platform: str):
    """A context naming the abstract GPU to lower for on a host without one (no-op otherwise)."""
    if platform != "cuda" or any(d.platform == "gpu" for d in jax.devices()):
        return contextlib.nullcontext()
    return jax.sharding.use_abstract_mesh(
        jax.sharding.AbstractMesh((), (), abstract_device=_LOWERING_GPU))


def lower_text(fn, *args, platform: str) -> str:
    """StableHLO text of `jax.jit(fn)` traced on `args` (arrays or ShapeDtypeStructs) for `platform`."""
    with _target(platform):
        return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()
