"""gmm / tgmm against float64 numpy: forward and gradients, every impl that runs on CPU.

impl="interpret" runs the GPU (Triton) kernel and impl="interpret_tpu" the TPU (Mosaic) kernel in
the Pallas interpreters (with NEMOCASCADE_KERNEL_TESTS=gpu on a GPU host the GPU cases run the compiled
kernel: kernel_impl.py); shapes and tiles are chosen so that rows, K and N all end in partial tiles.
Error metric: ||out - ref|| / ||ref|| against float64 numpy on the same (dtype-rounded) inputs.
"""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from kernel_impl import GPU_KERNEL_IMPL, impl_params
from pallas_kernels.gmm import gmm, reference, resolve_impl, tgmm

# impl -> (K, N, tiling): the TPU kernel needs 128-multiple tiles, the GPU kernel powers of two.
IMPL_SHAPES = {
    "xla": (40, 24, None),
    GPU_KERNEL_IMPL: (40, 24, (16, 16, 16)),  # "interpret" unless NEMOCASCADE_KERNEL_TESTS=gpu
    "interpret_tpu": (200, 136, (16, 128, 128)),
}
M = 40
GROUPS = {
    "uneven_with_tail": [1, 0, 22, 9],     # one-token group, empty group, 8 rows owned by no group
    "empty_ends": [0, 40, 0],              # one group owning everything, empty first/last groups
    "all_empty": [0, 0, 0],
}
TOL = {jnp.float32: 1e-5, jnp.bfloat16: 1e-2}


def _random_groups(seed: int, num_groups: int = 4) -> list[int]:
    """Random sizes summing to <= M with one group forced empty."""
    rng = np.random.default_rng(seed)
    sizes = rng.multinomial(M - rng.integers(0, 8), np.ones(num_groups) / num_groups)
    sizes[rng.integers(num_groups)] = 0
    return sizes.tolist()


def _weights_np(rhs, transpose_rhs):
    return np.swapaxes(rhs, 1, 2) if transpose_rhs else rhs


def _gmm_np(lhs, rhs, sizes, transpose_rhs=False):
    w = _weights_np(rhs, transpose_rhs)
    out = np.zeros((lhs.shape[0], w.shape[2]))
    start = 0
    for g, size in enumerate(sizes):
        out[start:start + size] = lhs[start:start + size] @ w[g]
        start += size
    return out


def _tgmm_np(lhs, rhs, sizes):
    out = np.zeros((len(sizes), lhs.shape[1], rhs.shape[1]))
    start = 0
    for g, size in enumerate(sizes):
        out[g] = lhs[start:start + size].T @ rhs[start:start + size]
        start += size
    return out


def _rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.linalg.norm(want)
    return np.linalg.norm(got - want) / (scale if scale > 0 else 1.0)


def _inputs(seed, k, n, num_groups, dtype, transpose_rhs=False):
    keys = jax.random.split(jax.random.key(seed), 3)
    lhs = jax.random.normal(keys[0], (M, k), jnp.float32).astype(dtype)
    rhs_shape = (num_groups, n, k) if transpose_rhs else (num_groups, k, n)
    rhs = (jax.random.normal(keys[1], rhs_shape, jnp.float32) / np.sqrt(k)).astype(dtype)
    cot = jax.random.normal(keys[2], (M, n), jnp.float32).astype(dtype)
    return lhs, rhs, cot


def _f64(x):
    return np.asarray(x.astype(jnp.float32), np.float64)


def _check_gmm_and_grads(impl, sizes, dtype, transpose_rhs=False, seed=0):
    k, n, tiling = IMPL_SHAPES[impl]
    lhs, rhs, cot = _inputs(seed, k, n, len(sizes), dtype, transpose_rhs)
    group_sizes = jnp.array(sizes, jnp.int32)

    def f(a, b):
        return gmm(a, b, group_sizes, transpose_rhs=transpose_rhs, impl=impl, tiling=tiling)

    out, vjp = jax.vjp(f, lhs, rhs)
    d_lhs, d_rhs = vjp(cot)
    assert out.dtype == dtype and d_lhs.dtype == dtype and d_rhs.dtype == dtype
    lhs64, rhs64, cot64 = _f64(lhs), _f64(rhs), _f64(cot)
    want_out = _gmm_np(lhs64, rhs64, sizes, transpose_rhs)
    want_d_lhs = _gmm_np(cot64, np.swapaxes(rhs64, 1, 2), sizes, transpose_rhs)
    want_d_w = _tgmm_np(lhs64, cot64, sizes)
    want_d_rhs = np.swapaxes(want_d_w, 1, 2) if transpose_rhs else want_d_w
    tol = TOL[dtype]
    assert _rel_err(out, want_out) < tol
    assert _rel_err(d_lhs, want_d_lhs) < tol
    assert _rel_err(d_rhs, want_d_rhs) < tol
    # Rows owned by no group: exactly zero output and zero gradient.
    total = sum(sizes)
    assert not np.any(np.asarray(out[total:], np.float32))
    assert not np.any(np.asarray(d_lhs[total:], np.float32))


@pytest.mark.parametrize("impl", impl_params(IMPL_SHAPES))
@pytest.mark.parametrize("groups", list(GROUPS))
def test_gmm_forward_and_grads_f32(impl, groups):
    _check_gmm_and_grads(impl, GROUPS[groups], jnp.float32)


@pytest.mark.parametrize("impl", impl_params(IMPL_SHAPES))
@pytest.mark.parametrize("seed", [1, 2])
def test_gmm_random_groups_transposed_rhs(impl, seed):
    _check_gmm_and_grads(impl, _random_groups(seed), jnp.float32, transpose_rhs=True, seed=seed)


@pytest.mark.parametrize("impl", impl_params(IMPL_SHAPES))
def test_gmm_bf16_inputs_f32_accumulation(impl):
    _check_gmm_and_grads(impl, _random_groups(3), jnp.bfloat16, seed=3)


@pytest.mark.parametrize("impl", impl_params(IMPL_SHAPES))
def test_tgmm_matches_numpy(impl):
    k, n, tiling = IMPL_SHAPES[impl]
    sizes = GROUPS["uneven_with_tail"]
    lhs, _, rhs = _inputs(4, k, n, len(sizes), jnp.float32)
    got = tgmm(lhs, rhs, jnp.array(sizes, jnp.int32), impl=impl, tiling=tiling)
    assert got.shape == (len(sizes), k, n)
    assert _rel_err(got, _tgmm_np(_f64(lhs), _f64(rhs), sizes)) < 1e-5
    assert not np.any(np.asarray(got[1]))  # the empty group


def test_reference_oracle_matches_numpy():
    sizes = _random_groups(5)
    lhs, rhs, cot = _inputs(5, 24, 20, len(sizes), jnp.float32)
    group_sizes = jnp.array(sizes, jnp.int32)
    out = reference.gmm_reference(lhs, rhs, group_sizes)
    assert _rel_err(out, _gmm_np(_f64(lhs), _f64(rhs), sizes)) < 1e-6
    rhs_t = jnp.swapaxes(rhs, 1, 2)
    assert _rel_err(reference.gmm_reference(lhs, rhs_t, group_sizes, transpose_rhs=True),
                    _gmm_np(_f64(lhs), _f64(rhs), sizes)) < 1e-6
    assert _rel_err(reference.tgmm_reference(lhs, cot, group_sizes),
                    _tgmm_np(_f64(lhs), _f64(cot), sizes)) < 1e-6


def test_default_tiling_and_mixed_dtypes_in_interpreters():
    sizes = [3, 0, 5]
    lhs = jax.random.normal(jax.random.key(6), (8, 16), jnp.float32)
    rhs = jax.random.normal(jax.random.key(7), (3, 16, 16), jnp.float32).astype(jnp.bfloat16)
    want = _gmm_np(_f64(lhs), _f64(rhs), sizes)
    for impl in ("interpret", "interpret_tpu"):
        out = gmm(lhs, rhs, jnp.array(sizes, jnp.int32), impl=impl)
        assert out.dtype == jnp.float32  # promoted
        assert _rel_err(out, want) < 1e-5
        narrow = gmm(lhs, rhs, jnp.array(sizes, jnp.int32), impl=impl, out_dtype=jnp.bfloat16)
        assert narrow.dtype == jnp.bfloat16 and _rel_err(narrow, want) < 1e-2


def test_zero_size_dimensions_give_zeros():
    out = gmm(jnp.zeros((0, 4)), jnp.zeros((2, 4, 3)), jnp.zeros((2,), jnp.int32), impl="interpret")
    assert out.shape == (0, 3)
    w = tgmm(jnp.ones((5, 0)), jnp.ones((5, 3)), jnp.array([2, 3], jnp.int32), impl="interpret")
    assert w.shape == (2, 0, 3)


def test_auto_is_xla_on_cpu_and_backend_kernels_refuse_cpu():
    assert resolve_impl("auto") == "xla"
    args = (jnp.ones((4, 8)), jnp.ones((2, 8, 8)), jnp.array([2, 2], jnp.int32))
    for impl in ("gpu", "tpu"):
        with pytest.raises(ValueError, match="impl="):
            gmm(*args, impl=impl)


@pytest.mark.parametrize("kwargs,args,error,match", [
    ({}, (jnp.ones((4, 8, 1)), jnp.ones((2, 8, 8)), jnp.array([2, 2], jnp.int32)),
     ValueError, "lhs must have shape"),
    ({}, (jnp.ones((4, 8)), jnp.ones((2, 7, 8)), jnp.array([2, 2], jnp.int32)),
     ValueError, "K=7"),
    ({}, (jnp.ones((4, 8)), jnp.ones((2, 8, 8)), np.array([2, 2], np.int64)),
     TypeError, "group_sizes must be int32"),
    ({}, (jnp.ones((4, 8)), jnp.ones((3, 8, 8)), jnp.array([2, 2], jnp.int32)),
     ValueError, "2 groups but rhs has 3"),
    ({}, (jnp.ones((4, 8), jnp.int32), jnp.ones((2, 8, 8)), jnp.array([2, 2], jnp.int32)),
     TypeError, "lhs must be float32 or bfloat16"),
    ({"impl": "cuda"}, (jnp.ones((4, 8)), jnp.ones((2, 8, 8)), jnp.array([2, 2], jnp.int32)),
     ValueError, "impl must be one of"),
    ({"impl": "interpret", "tiling": (16, 24, 16)},
     (jnp.ones((4, 8)), jnp.ones((2, 8, 8)), jnp.array([2, 2], jnp.int32)),
     ValueError, "tk=24 must be a power of two"),
    ({"impl": "interpret_tpu", "tiling": (8, 64, 8)},
     (jnp.ones((4, 256)), jnp.ones((2, 256, 8)), jnp.array([2, 2], jnp.int32)),
     ValueError, "tk=64 must be a multiple of 128"),
    ({"impl": "interpret", "tiling": (16, 16)},
     (jnp.ones((4, 8)), jnp.ones((2, 8, 8)), jnp.array([2, 2], jnp.int32)),
     TypeError, "tiling must be a tuple of three ints"),
])
def test_bad_inputs_raise_clear_errors(kwargs, args, error, match):
    with pytest.raises(error, match=match):
        gmm(*args, **kwargs)


def test_tgmm_row_mismatch_raises():
    with pytest.raises(ValueError, match="row counts differ"):
        tgmm(jnp.ones((4, 8)), jnp.ones((5, 8)), jnp.array([2, 2], jnp.int32))
