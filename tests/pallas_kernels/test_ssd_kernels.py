"""The chunked SSD scan (pallas_kernels.ssd): XLA path and both Pallas kernels (in the interpreters)
against the sequential recurrence; dispatch, input checks, lowering for the real platforms. The
`gpu_kernel` cases run the compiled GPU kernel with NEMOCASCADE_KERNEL_TESTS=gpu (kernel_impl.py).

Errors are ||got - want|| / ||want|| over y and over the final state; float32 must be within 1e-5
(measured ~1e-7). Shapes are tiny (the interpreters cost ~ms per grid step); they still cover chunk
sizes that divide T, do not divide it (padded last chunk) and exceed it, resets inside chunks and on
chunk boundaries, 1-token segments, padding (dt = 0), an initial state, and G < H.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_impl import GPU_KERNEL_IMPL, gpu_kernel
from kernel_lowering import lower_text
from nemocascade.model.ssd import ssd_chunked
from pallas_kernels.ssd import ops, reference

TOL = 1e-5


def numpy_recurrence(x, dt, a, b, c, starts, h0):
    """float64 numpy, all rows and heads at once, token by token."""
    per_group = x.shape[2] // b.shape[2]
    bh, ch = np.repeat(b, per_group, axis=2), np.repeat(c, per_group, axis=2)
    state, y = np.array(h0, np.float64), np.zeros(x.shape)
    for i in range(x.shape[1]):
        state = np.where(starts[:, i, None, None, None], 0.0, state)
        state = (np.exp(dt[:, i] * a)[..., None, None] * state
                 + np.einsum("bhp,bhn->bhpn", dt[:, i, :, None] * x[:, i], bh[:, i]))
        y[:, i] = np.einsum("bhpn,bhn->bhp", state, ch[:, i])
    return y, state


def make_inputs(seed=0, bsz=2, t=13, h=4, p=8, g=2, n=16):
    """float64 numpy inputs with resets (row 0 at 5; row 1 at 3, 4 and after padding at 11)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(bsz, t, h, p))
    dt = rng.uniform(0.01, 0.8, size=(bsz, t, h))
    starts = np.zeros((bsz, t), bool)
    starts[0, min(5, t - 1)] = True
    if bsz > 1:
        dt[1, 9:11] = 0.0
        starts[1, [3, 4, 11]] = True
    a = -rng.uniform(0.3, 2.0, size=h)
    b, c = rng.normal(size=(bsz, t, g, n)), rng.normal(size=(bsz, t, g, n))
    h0 = rng.normal(size=(bsz, h, p, n))
    return x, dt, a, b, c, starts, h0


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def scan_errors(impl, inputs, chunk, *, dtype=jnp.float32, with_state=True):
    """Errors of ops.ssd_scan(impl) vs the float32 sequential reference on the same (rounded) inputs."""
    x, dt, a, b, c, starts, h0 = inputs
    x, b, c = (jnp.asarray(v, dtype) for v in (x, b, c))
    dt, a = jnp.asarray(dt, jnp.float32), jnp.asarray(a, jnp.float32)
    h0 = jnp.asarray(h0, jnp.float32) if with_state else None
    y, state = ops.ssd_scan(x, dt, a, b, c, jnp.asarray(starts), chunk_size=chunk, initial_state=h0,
                            impl=impl)
    assert y.dtype == dtype and y.shape == x.shape and state.dtype == jnp.float32
    want_y, want_state = reference.ssd_sequential(x, dt, a, b, c, jnp.asarray(starts), h0)
    return rel_err(y, want_y), rel_err(state, want_state)


def test_reference_is_the_float64_recurrence():
    inputs = make_inputs()
    want_y, want_state = numpy_recurrence(*inputs)
    with jax.enable_x64(True):
        y, state = reference.ssd_sequential(*map(jnp.asarray, inputs))
        assert y.dtype == jnp.float64
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(state, want_state, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 4, 5, 13, 32], ids=lambda c: f"chunk{c}")
def test_xla_path_matches_reference(chunk):
    """T = 13: chunks of 1 and 13 divide it, 4 and 5 do not, 32 exceeds it."""
    assert max(scan_errors("xla", make_inputs(), chunk)) < TOL


def test_xla_path_matches_the_model_ssd_chunked():
    x, dt, a, b, c, starts, h0 = map(lambda v: jnp.asarray(v, jnp.float32), make_inputs(seed=3))
    starts = starts.astype(bool)
    want = ssd_chunked(x, dt, a, b, c, starts, chunk_size=4, initial_state=h0)
    got = ops.ssd_scan(x, dt, a, b, c, starts, chunk_size=4, initial_state=h0, impl="xla")
    assert rel_err(got[0], want[0]) < TOL and rel_err(got[1], want[1]) < TOL


# (impl, chunk, make_inputs kwargs): the kernels' backward is the XLA path's VJP (custom_vjp)
GRAD_CASES = [
    ("xla", 4, {}),
    ("interpret_tpu", 4, {}),
    pytest.param(GPU_KERNEL_IMPL, 16, dict(t=24, p=16), marks=gpu_kernel),
]


@pytest.mark.parametrize("impl,chunk,kwargs", GRAD_CASES)
def test_gradients_match_reference(impl, chunk, kwargs):
    x, dt, a, b, c, starts, h0 = (jnp.asarray(v, jnp.float32) for v in make_inputs(seed=7, **kwargs))
    starts = starts.astype(bool)

    def loss(scan):
        def value(*diff):
            y, state = scan(*diff)
            return jnp.sum(y * jnp.cos(y)) + jnp.sum(state ** 2)
        return jax.grad(value, argnums=tuple(range(6)))(x, dt, a, b, c, h0)

    got = loss(lambda x, dt, a, b, c, h0: ops.ssd_scan(x, dt, a, b, c, starts, chunk_size=chunk,
                                                      initial_state=h0, impl=impl))
    want = loss(lambda x, dt, a, b, c, h0: reference.ssd_sequential(x, dt, a, b, c, starts, h0))
    errors = {name: rel_err(g, w) for name, g, w in zip(["x", "dt", "a", "b", "c", "h0"], got, want)}
    assert max(errors.values()) < TOL, errors


# (name, impl, chunk, with_state, kwargs of make_inputs)
KERNEL_CASES = [
    ("gpu_chunk4_pad_resets", "interpret", 4, True, {}),
    ("gpu_chunk13_one_chunk_no_state", "interpret", 13, False, {}),
    ("gpu_chunk8_divides_g1", "interpret", 8, True, dict(t=16, g=1, seed=1)),
    # shapes the compiled GPU kernel takes too (L, P, N powers of two >= 16): run compiled on a GPU host
    pytest.param("gpu_compilable_chunk16_resets", GPU_KERNEL_IMPL, 16, True, dict(t=40, h=2, p=16, g=1),
                 marks=gpu_kernel),
    ("tpu_chunk5_pad_resets", "interpret_tpu", 5, True, {}),
    ("tpu_chunk8_divides_mha", "interpret_tpu", 8, True, dict(bsz=1, t=16, h=2, g=2, seed=2)),
]


@pytest.mark.parametrize("name,impl,chunk,with_state,kwargs", KERNEL_CASES,
                         ids=[getattr(c, "values", c)[0] for c in KERNEL_CASES])
def test_kernel_matches_reference(name, impl, chunk, with_state, kwargs):
    errors = scan_errors(impl, make_inputs(**kwargs), chunk, with_state=with_state)
    assert max(errors) < TOL, (name, errors)


@pytest.mark.parametrize("impl", ["interpret", "interpret_tpu"])
def test_kernel_matches_float64_numpy_recurrence(impl):
    inputs = make_inputs(seed=4, bsz=1, t=12, h=2, g=1)
    want_y, want_state = numpy_recurrence(*inputs)
    x, dt, a, b, c, starts, h0 = (jnp.asarray(v, jnp.float32) for v in inputs)
    y, state = ops.ssd_scan(x, dt, a, b, c, starts.astype(bool), chunk_size=4, initial_state=h0, impl=impl)
    assert rel_err(y, want_y) < TOL and rel_err(state, want_state) < TOL


@gpu_kernel
def test_kernel_bfloat16_inputs():
    """bf16 x/b/c are upcast in the kernel; only y's rounding to bf16 remains (~4e-3)."""
    y_err, state_err = scan_errors(GPU_KERNEL_IMPL, make_inputs(seed=5, t=24, p=16), 16, dtype=jnp.bfloat16)
    assert y_err < 1e-2 and state_err < TOL


def test_auto_dispatches_to_xla_on_cpu(monkeypatch):
    assert jax.default_backend() == "cpu"
    assert ops._make_config("auto", 128, 64, 128).impl == "xla"
    calls, real = [], ops.xla.ssd_xla

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(ops.xla, "ssd_xla", spy)
    x, dt, a, b, c, _, _ = (jnp.asarray(v, jnp.float32) for v in make_inputs(seed=6, t=14))  # a fresh trace
    ops.ssd_scan(x, dt, a, b, c, chunk_size=3)
    assert calls == [1]


def test_compiled_kernels_only_take_supported_shapes(monkeypatch):
    """auto falls back to XLA on shapes the compiled kernel does not take; naming the kernel raises."""
    assert ops.kernel_supports("gpu", 64, 64, 128) and ops.kernel_supports("tpu", 256, 64, 128)
    assert not ops.kernel_supports("gpu", 64, 48, 128)   # P not a power of two
    assert not ops.kernel_supports("gpu", 8, 64, 128)    # chunk below 16
    assert not ops.kernel_supports("tpu", 64, 64, 128)   # chunk not a multiple of 128
    for kernel in ("gpu", "tpu"):
        monkeypatch.setattr(ops, "resolve_impl", lambda requested, kernel=kernel: kernel)
        assert ops._make_config("auto", 128, 64, 128).impl == kernel
        assert ops._make_config("auto", 13, 8, 16).impl == "xla"
        with pytest.raises(ValueError, match=f"impl='{kernel}' does not support chunk=13"):
            ops._make_config(kernel, 13, 8, 16)


def _shapes(bsz=1, t=6, h=4, p=8, g=2, n=16):
    return dict(x=jnp.zeros((bsz, t, h, p)), dt=jnp.zeros((bsz, t, h)), a=jnp.zeros((h,)),
                b=jnp.zeros((bsz, t, g, n)), c=jnp.zeros((bsz, t, g, n)))


@pytest.mark.parametrize("name,bad,match", [
    ("x", jnp.zeros((1, 6, 32)), r"x must have shape \[B, T, H, P\]"),
    ("dt", jnp.zeros((1, 6, 3)), r"dt must have shape \[B, T, H\]"),
    ("a", jnp.zeros((4, 1)), r"a must have shape \[H\]"),
    ("b", jnp.zeros((1, 6, 3, 16)), r"b must have shape .* G dividing H=4"),
    ("c", jnp.zeros((1, 6, 2, 8)), r"c must have the shape of b"),
    ("starts", jnp.zeros((1, 5), bool), r"starts must have shape \[B, T\]"),
    ("initial_state", jnp.zeros((1, 4, 8, 8)), r"initial_state must have shape \[B, H, P, N\]"),
    ("chunk_size", 0, r"chunk_size must be a positive int"),
])
def test_bad_inputs_raise_naming_the_argument(name, bad, match):
    args = _shapes()
    kwargs = {}
    if name in args:
        args[name] = bad
    else:
        kwargs[name] = bad
    with pytest.raises(ValueError, match=match):
        ops.ssd_scan(**args, **kwargs, impl="xla")


def test_bad_impl_and_dtype():
    with pytest.raises(ValueError, match="impl must be one of"):
        ops.ssd_scan(**_shapes(), impl="cuda")
    with pytest.raises(TypeError, match="x must be float32 or bfloat16"):
        ops.ssd_scan(**{**_shapes(), "x": jnp.zeros((1, 6, 4, 8), jnp.int32)})


@pytest.mark.parametrize("kernel,platform,call", [("gpu", "cuda", "__gpu$xla.gpu.triton"),
                                                  ("tpu", "tpu", "tpu_custom_call")])
def test_compiled_kernel_lowers_for_the_real_platform(kernel, platform, call):
    """The real (not interpreted) kernel passes the Triton / Mosaic lowering (not the compile)."""
    s = jax.ShapeDtypeStruct
    t, chunk = 300, 128  # 3 chunks, the last padded
    args = (s((1, t, 4, 64), jnp.bfloat16), s((1, t, 4), jnp.float32), s((4,), jnp.float32),
            s((1, t, 2, 128), jnp.bfloat16), s((1, t, 2, 128), jnp.bfloat16), s((1, t), bool),
            s((1, 4, 64, 128), jnp.float32))
    cfg = ops._Config(kernel, chunk)
    text = lower_text(lambda *v: ops._ssd_jit(*v, cfg), *args, platform=platform)
    assert text.count(call) == 1


def test_bench_runs_on_cpu():
    from pallas_kernels.ssd import bench

    rows = bench.run(sizes=("cpu_tiny",), dtype="float32")
    by_impl = {row["impl"]: row for row in rows}
    assert by_impl["pallas"]["time_ms"] is None and "n/a on cpu" in by_impl["pallas"]["note"]
    assert by_impl["pallas-xla"]["time_ms"] > 0 and by_impl["pallas-xla"]["rel_err_vs_ref"] < TOL
