"""The compiled (non-interpret) kernels lower for their real platforms, checked on a CPU host.

Lowering runs the Pallas Triton / Mosaic lowering rules (e.g. Triton's power-of-two block sizes,
supported primitives, TPU block-shape rules), so CI catches kernels that would not build on a GPU
or TPU. It does not compile to machine code: that still needs the hardware.
"""
import pytest
import jax
import jax.numpy as jnp

from pallas_kernels.gmm import ops, tiling
from kernel_lowering import lower_text

PLATFORM = {"gpu": "cuda", "tpu": "tpu"}


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("kernel", ["gpu", "tpu"])
@pytest.mark.parametrize("transpose_rhs", [False, True])
def test_gmm_forward_and_backward_lower_for_the_real_platform(kernel, transpose_rhs, dtype):
    m, k, n, e = 1000, 200, 136, 8  # no dimension a multiple of any tile
    lhs = jax.ShapeDtypeStruct((m, k), dtype)
    rhs = jax.ShapeDtypeStruct((e, n, k) if transpose_rhs else (e, k, n), dtype)
    group_sizes = jax.ShapeDtypeStruct((e,), jnp.int32)
    cotangent = jax.ShapeDtypeStruct((m, n), dtype)
    cfg = ops._Config(kernel, tiling.default_tiling(kernel, m, k, n), jnp.dtype(dtype))

    def forward_and_grads(a, b, g, ct):
        out, vjp = jax.vjp(lambda a_, b_: ops._gmm(a_, b_, g, transpose_rhs, cfg), a, b)
        return out, vjp(ct)

    text = lower_text(forward_and_grads, lhs, rhs, group_sizes, cotangent, platform=PLATFORM[kernel])
    # Three kernel launches: forward gmm, d_lhs gmm, d_rhs tgmm.
    name = "__gpu$xla.gpu.triton" if kernel == "gpu" else "tpu_custom_call"
    assert text.count(name) == 3, text.count(name)
