"""Every dot inside our Pallas kernels asks for IEEE float32 products when an operand is float32.

Pallas' Triton lowering turns a float32 dot at DEFAULT precision into TF32 (~1e-3 relative error, far above
the kernels' 1e-5 contract), which the interpreter (what CI runs) never shows. So this walks the jaxprs of
the GPU and TPU kernels (gmm / tgmm forward and gradients, flash attention forward and backward, decode
attention, the SSD scan) and checks each dot_general inside a pallas_call: precision HIGHEST for float32
operands, the default (native bf16 MMA) for bfloat16 ones.
"""
import jax
import jax.numpy as jnp
import pytest

from jaxpr_testing import all_eqns
from pallas_kernels.attention import ops as attention
from pallas_kernels.gmm import ops as gmm
from pallas_kernels.ssd import ops as ssd

HIGHEST = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)


def _gmm_grads(dtype, impl):
    lhs, rhs = jnp.ones((40, 32), dtype), jnp.ones((3, 32, 16), dtype)
    sizes = jnp.array([10, 0, 30], jnp.int32)
    tiling = (16, 16, 16) if impl == "interpret" else (16, 128, 128)
    return jax.grad(lambda a, b: jnp.sum(gmm.gmm(a, b, sizes, impl=impl, tiling=tiling).astype(jnp.float32)),
                    argnums=(0, 1)), (lhs, rhs)


def _flash_grads(dtype, impl):
    head_dim, block = (32, 16) if impl == "interpret" else (128, 128)
    q, kv = jnp.ones((1, 40, 4, head_dim), dtype), jnp.ones((1, 40, 2, head_dim), dtype)

    def loss(q, k, v):
        out = attention.flash_attention(q, k, v, impl=impl, block_q=block, block_k=block)
        return jnp.sum(out.astype(jnp.float32))
    return jax.grad(loss, argnums=(0, 1, 2)), (q, kv, kv)


def _decode(dtype, impl):
    head_dim = 32 if impl == "interpret" else 128
    q, kv = jnp.ones((2, 1, 4, head_dim), dtype), jnp.ones((2, 48, 2, head_dim), dtype)
    return (lambda q, k, v: attention.decode_attention(q, k, v, jnp.array([48, 5], jnp.int32), impl=impl),
            (q, kv, kv))


def _ssd(dtype, impl):
    x, dt, b = jnp.ones((1, 32, 2, 16), dtype), jnp.ones((1, 32, 2)), jnp.ones((1, 32, 1, 16), dtype)
    return (lambda x, b, c: ssd.ssd_scan(x, dt, -jnp.ones(2), b, c, chunk_size=16, impl=impl), (x, b, b))


CASES = {"gmm": _gmm_grads, "flash_attention": _flash_grads, "decode_attention": _decode, "ssd": _ssd}


@pytest.mark.parametrize("impl", ["interpret", "interpret_tpu"], ids=["gpu_kernels", "tpu_kernels"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("op", list(CASES))
def test_kernel_dots_are_ieee_float32_for_float32_operands(op, dtype, impl):
    fn, args = CASES[op](dtype, impl)
    kernels = [eqn for eqn in all_eqns(jax.make_jaxpr(fn)(*args)) if eqn.primitive.name == "pallas_call"]
    dots = [eqn for kernel in kernels for eqn in all_eqns(kernel.params["jaxpr"])
            if eqn.primitive.name == "dot_general"]
    assert kernels and dots, f"{op}: no pallas_call with a dot traced"
    for eqn in dots:
        operand_dtypes = {var.aval.dtype for var in eqn.invars}
        if jnp.dtype(jnp.float32) in operand_dtypes:
            assert eqn.params["precision"] == HIGHEST, (op, operand_dtypes, eqn.params["precision"])
        else:
            assert eqn.params["precision"] is None, (op, operand_dtypes, eqn.params["precision"])
