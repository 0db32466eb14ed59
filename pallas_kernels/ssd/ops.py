"""Public chunked SSD (Mamba-2) scan: `ssd_scan`, with backend dispatch, differentiable for every impl.

impl:
  "auto"          the Pallas kernel of the running backend (GPU: Triton, TPU: Mosaic) when
                  `kernel_supports` its shapes, else XLA; XLA on CPU.
  "xla"           plain jnp (xla.py): the same chunk math, batched over chunks. Differentiable.
  "gpu" / "tpu"   the Pallas kernel, compiled for that backend (must be the running one; shapes
                  it does not support raise ValueError).
  "interpret"     the GPU (Triton) kernel in the Pallas interpreter (runs anywhere; for tests).
  "interpret_tpu" the TPU kernel in the TPU interpreter (pltpu.InterpretParams(); for tests).

Gradients: impl="xla" is differentiated by JAX. The kernels run the forward pass only; their
custom_vjp backward is the VJP of the XLA path, recomputed from the saved inputs (no backward kernel
yet), so a kernel's gradients are the XLA path's. The Mamba mixer calls this with
ModelConfig.kernel_impl != "xla".

Chunks: L = min(chunk_size, T) tokens; T is zero-padded up to a multiple of L here (padding has
dt = 0 and starts nothing, so it leaves y and the state unchanged) and the pad is cut off again.
Segment resets (starts) and an initial state are supported by every impl. Inputs may be float32 or
bfloat16 (x, b, c; dt and a any float); everything computes in float32; y comes back in x's dtype
and the final state in float32.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.backend import IMPLS, Impl, resolve_impl  # noqa: F401 (re-exported)
from pallas_kernels.ssd import chunk_math, gpu, tpu, xla

_FLOAT_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
TPU_CHUNK_MULTIPLE = 128  # rows [1, L] of the coefficients fill whole lane vectors
GPU_MIN_DIM = 16          # Triton's smallest matmul dimension


@dataclasses.dataclass(frozen=True)
class _Config:
    """Static (hashable) settings of one scan."""

    impl: str  # resolved: "xla", "gpu", "tpu", "interpret", "interpret_tpu"
    chunk: int  # L, tokens per chunk


def kernel_supports(kernel: str, chunk: int, head_dim: int, state_size: int) -> bool:
    """Whether the compiled `kernel` ("gpu" or "tpu") takes chunks of `chunk` tokens and [P, N] states.

    gpu: L, P and N powers of two >= 16 (Triton tensor and matmul sizes). tpu: L % 128 == 0 (a
    conservative rule: untested on hardware). The interpreters take any shape.
    """
    if kernel == "gpu":
        return all(d >= GPU_MIN_DIM and d & (d - 1) == 0 for d in (chunk, head_dim, state_size))
    return chunk % TPU_CHUNK_MULTIPLE == 0


def _make_config(impl: str, chunk: int, head_dim: int, state_size: int) -> _Config:
    resolved = resolve_impl(impl)
    if resolved in ("gpu", "tpu") and not kernel_supports(resolved, chunk, head_dim, state_size):
        if impl != "auto":
            raise ValueError(f"impl={impl!r} does not support chunk={chunk}, head dim P={head_dim}, "
                             f"state size N={state_size}; see kernel_supports, or use impl='xla'")
        resolved = "xla"
    return _Config(resolved, chunk)


# ----------------------------------------------------------------------------- validation


def _check(name: str, arr, shape_doc: str, ndim: int, floats=_FLOAT_DTYPES) -> None:
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        raise TypeError(f"{name} must be an array of shape {shape_doc}, got {type(arr).__name__}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(arr.shape)}")
    if floats is not None and jnp.dtype(arr.dtype) not in floats:
        raise TypeError(f"{name} must be float32 or bfloat16, got {arr.dtype}")


def _check_inputs(x, dt, a, b, c, starts, initial_state, chunk_size) -> None:
    _check("x", x, "[B, T, H, P]", 4)
    bsz, t, h, p = x.shape
    any_float = None  # dt and a: any float dtype
    _check("dt", dt, "[B, T, H]", 3, any_float)
    _check("a", a, "[H]", 1, any_float)
    _check("b", b, "[B, T, G, N]", 4)
    _check("c", c, "[B, T, G, N]", 4)
    if dt.shape != (bsz, t, h):
        raise ValueError(f"dt must have shape [B, T, H] = {(bsz, t, h)} (from x), got {tuple(dt.shape)}")
    if a.shape != (h,):
        raise ValueError(f"a must have shape [H] = {(h,)} (from x), got {tuple(a.shape)}")
    if b.shape[:2] != (bsz, t) or b.shape[2] == 0 or h % b.shape[2]:
        raise ValueError(f"b must have shape [B={bsz}, T={t}, G, N] with G dividing H={h}, "
                         f"got {tuple(b.shape)}")
    if c.shape != b.shape:
        raise ValueError(f"c must have the shape of b {tuple(b.shape)}, got {tuple(c.shape)}")
    if starts is not None:
        _check("starts", starts, "[B, T]", 2, floats=None)
        if starts.shape != (bsz, t):
            raise ValueError(f"starts must have shape [B, T] = {(bsz, t)}, got {tuple(starts.shape)}")
    if initial_state is not None:
        _check("initial_state", initial_state, "[B, H, P, N]", 4, any_float)
        want = (bsz, h, p, b.shape[3])
        if initial_state.shape != want:
            raise ValueError(f"initial_state must have shape [B, H, P, N] = {want}, "
                             f"got {tuple(initial_state.shape)}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


# ----------------------------------------------------------------------------- layout


def _to_chunks(arr, chunk: int):
    """[B, T, heads, ...] -> [B, heads, K, L, ...] ([B, T] -> [B, K, L]), zero-padded in time."""
    bsz, t = arr.shape[:2]
    arr = jnp.pad(arr, [(0, 0), (0, -t % chunk)] + [(0, 0)] * (arr.ndim - 2))
    arr = arr.reshape(bsz, -1, chunk, *arr.shape[2:])
    return arr if arr.ndim == 3 else jnp.moveaxis(arr, 3, 1)


def _from_chunks(y, t: int):
    """[B, H, K, L, P] -> [B, T, H, P]."""
    bsz, h, k, size, p = y.shape
    return jnp.moveaxis(y, 1, 3).reshape(bsz, k * size, h, p)[:, :t]


def _chunked_scan(x, dt, a, b, c, starts, initial_state, cfg: _Config):
    """Pads and chunks the inputs, runs cfg.impl's scan, unchunks y."""
    t = x.shape[1]
    vec = chunk_math.chunk_vectors(_to_chunks(dt.astype(jnp.float32), cfg.chunk), a,
                                   _to_chunks(starts, cfg.chunk))
    args = (_to_chunks(x, cfg.chunk), _to_chunks(b, cfg.chunk), _to_chunks(c, cfg.chunk), vec,
            initial_state.astype(jnp.float32))
    if cfg.impl == "xla":
        y, final = xla.ssd_xla(*args)
    elif cfg.impl in ("gpu", "interpret"):
        y, final = gpu.ssd_gpu(*args, interpret=cfg.impl == "interpret")
    else:
        interpret = pltpu.InterpretParams() if cfg.impl == "interpret_tpu" else False
        y, final = tpu.ssd_tpu(*args, interpret=interpret)
    return _from_chunks(y, t).astype(x.dtype), final


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _kernel_scan(x, dt, a, b, c, starts, initial_state, cfg: _Config):
    """_chunked_scan through a Pallas kernel, with the XLA path's VJP as its backward."""
    return _chunked_scan(x, dt, a, b, c, starts, initial_state, cfg)


def _kernel_scan_fwd(x, dt, a, b, c, starts, initial_state, cfg):
    return _chunked_scan(x, dt, a, b, c, starts, initial_state, cfg), (x, dt, a, b, c, starts, initial_state)


def _kernel_scan_bwd(cfg, saved, cotangents):
    x, dt, a, b, c, starts, initial_state = saved
    xla_cfg = dataclasses.replace(cfg, impl="xla")
    _, vjp = jax.vjp(lambda x, dt, a, b, c, h0: _chunked_scan(x, dt, a, b, c, starts, h0, xla_cfg),
                     x, dt, a, b, c, initial_state)
    dx, ddt, da, db, dc, dh0 = vjp(cotangents)
    return dx, ddt, da, db, dc, None, dh0


_kernel_scan.defvjp(_kernel_scan_fwd, _kernel_scan_bwd)


@functools.partial(jax.jit, static_argnums=(7,))
def _ssd_jit(x, dt, a, b, c, starts, initial_state, cfg: _Config):
    scan = _chunked_scan if cfg.impl == "xla" else _kernel_scan
    return scan(x, dt, a, b, c, starts, initial_state, cfg)


def ssd_scan(x: jax.Array, dt: jax.Array, a: jax.Array, b: jax.Array, c: jax.Array,
             starts: jax.Array | None = None, *, chunk_size: int = 128,
             initial_state: jax.Array | None = None, impl: Impl = "auto"):
    """The Mamba-2 selective-state-space recurrence over all tokens, chunk by chunk.

    h_t = exp(dt_t a) h_{t-1} + dt_t x_t b_t^T (h_{t-1} = 0 where starts[t]), y_t = h_t c_t; the same
    contract as nemocascade.model.ssd.ssd_chunked.

    Args:
      x: [B, T, H, P] float32/bfloat16.  dt: [B, T, H] step sizes (>= 0; 0 = padding).
      a: [H] decay rates (< 0).  b, c: [B, T, G, N], G dividing H (head h reads group h // (H // G)).
      starts: bool [B, T] state resets before a token (None: no resets).
      chunk_size: tokens per chunk (min(chunk_size, T) is used; T need not be a multiple).
      initial_state: [B, H, P, N] state before token 0 (None: zeros).
      impl: see the module docstring.
    Returns:
      (y [B, T, H, P] in x's dtype, final state [B, H, P, N] float32).
    """
    _check_inputs(x, dt, a, b, c, starts, initial_state, chunk_size)
    bsz, t, h, p = x.shape
    n = b.shape[3]
    cfg = _make_config(impl, max(1, min(chunk_size, t)), p, n)
    if starts is None:
        starts = jnp.zeros((bsz, t), bool)
    if initial_state is None:
        initial_state = jnp.zeros((bsz, h, p, n), jnp.float32)
    return _ssd_jit(x, dt, a, b, c, starts, initial_state, cfg)
