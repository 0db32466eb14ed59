"""Backend dispatch shared by every kernel family: which implementation a call runs.

Impls: "auto" (the Pallas kernel of the default backend, else XLA), "xla", "gpu", "tpu",
"interpret" (the GPU kernel in Pallas interpret mode), "interpret_tpu" (the TPU kernel with
``pltpu.InterpretParams()``).
"""
from typing import Literal, get_args

import jax
import jax.numpy as jnp

Impl = Literal["auto", "xla", "gpu", "tpu", "interpret", "interpret_tpu"]
IMPLS = get_args(Impl)


def resolve_impl(impl: str) -> str:
    """Maps impl to one of "xla", "gpu", "tpu", "interpret", "interpret_tpu"; checks the backend."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    backend = jax.default_backend()
    if impl == "auto":
        return backend if backend in ("gpu", "tpu") else "xla"
    if impl in ("gpu", "tpu") and backend != impl:
        raise ValueError(f"impl={impl!r} needs a {impl} backend, but the default backend is "
                         f"{backend!r}; use impl='xla', 'interpret' or 'interpret_tpu'")
    return impl


def dot_precision(*operands) -> jax.lax.Precision | None:
    """The precision of an in-kernel dot of ``operands``: HIGHEST when one is float32, else None (native MMA).

    Pallas' Triton lowering runs a float32 dot at DEFAULT precision as TF32 (~1e-3 relative error); HIGHEST
    makes it IEEE float32 there (and full float32 passes on TPU). bfloat16 operands keep the bf16 MMA.
    """
    return jax.lax.Precision.HIGHEST if any(x.dtype == jnp.float32 for x in operands) else None
