"""Public grouped matmuls: `gmm` (differentiable) and `tgmm`, with backend dispatch.

impl:
  "auto"          the Pallas kernel of the running backend (GPU: Triton, TPU: Mosaic), XLA on CPU.
  "xla"           jax.lax.ragged_dot_general.
  "gpu" / "tpu"   the Pallas kernel, compiled for that backend (must be the running one).
  "interpret"     the GPU (Triton) kernel in the Pallas interpreter (runs anywhere; for tests).
  "interpret_tpu" the TPU kernel in the TPU interpreter (pltpu.InterpretParams(); for tests).

Conventions: rows of `lhs` are sorted by group; group g owns the next group_sizes[g] rows;
sum(group_sizes) <= M and rows past it are owned by no group (their outputs and gradients are 0).
Inputs may be bf16 or f32 (mixed inputs are promoted); products accumulate in f32.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.backend import IMPLS, Impl, resolve_impl  # noqa: F401 (re-exported)
from pallas_kernels.gmm import gpu, tiling as tiling_lib, tpu, xla

_FLOAT_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


@dataclasses.dataclass(frozen=True)
class _Config:
    """Static (hashable) settings of one grouped-matmul call."""

    impl: str  # resolved: "xla", "gpu", "tpu", "interpret", "interpret_tpu"
    tiling: tiling_lib.Tiling | None  # (tm, tk, tn); None for xla
    out_dtype: jnp.dtype


def _kernel_of(impl: str) -> str | None:
    return {"gpu": "gpu", "interpret": "gpu", "tpu": "tpu", "interpret_tpu": "tpu"}.get(impl)


def _make_config(impl: str, tiling, m: int, k: int, n: int, out_dtype) -> _Config:
    resolved = resolve_impl(impl)
    kernel = _kernel_of(resolved)
    if kernel is None:
        chosen = None
    elif tiling is None:
        chosen = tiling_lib.default_tiling(kernel, m, k, n)
    else:
        chosen = tiling_lib.validate_tiling(kernel, tiling, m, k, n)
    return _Config(resolved, chosen, jnp.dtype(out_dtype))


def _check_array(name: str, x, ndim: int, shape_doc: str) -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array of shape {shape_doc}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {x.shape}")
    if jnp.dtype(x.dtype) not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or bfloat16, got {x.dtype}")


def _check_group_sizes(group_sizes, num_groups: int | None) -> None:
    if not hasattr(group_sizes, "shape") or group_sizes.ndim != 1:
        raise ValueError(f"group_sizes must be a 1-D int32 array [E], got "
                         f"{getattr(group_sizes, 'shape', type(group_sizes).__name__)}")
    if jnp.dtype(group_sizes.dtype) != jnp.int32:
        raise TypeError(f"group_sizes must be int32, got {group_sizes.dtype}")
    if group_sizes.shape[0] == 0:
        raise ValueError("group_sizes must have at least one group")
    if num_groups is not None and group_sizes.shape[0] != num_groups:
        raise ValueError(f"group_sizes has {group_sizes.shape[0]} groups but rhs has {num_groups}")


def _gmm_forward(lhs, rhs, group_sizes, transpose_rhs: bool, cfg: _Config):
    """Dispatch of the forward product; inputs already in one compute dtype."""
    m, k = lhs.shape
    n = rhs.shape[1] if transpose_rhs else rhs.shape[2]
    if 0 in (m, k, n):
        return jnp.zeros((m, n), cfg.out_dtype)
    args = dict(transpose_rhs=transpose_rhs, out_dtype=cfg.out_dtype)
    if cfg.impl == "xla":
        return xla.gmm_xla(lhs, rhs, group_sizes, **args)
    if cfg.impl in ("gpu", "interpret"):
        return gpu.gmm_gpu(lhs, rhs, group_sizes, tiling=cfg.tiling,
                           interpret=cfg.impl == "interpret", **args)
    interpret = pltpu.InterpretParams() if cfg.impl == "interpret_tpu" else False
    return tpu.gmm_tpu(lhs, rhs, group_sizes, tiling=cfg.tiling, interpret=interpret, **args)


def _tgmm_forward(lhs, rhs, group_sizes, cfg: _Config):
    """Dispatch of the per-group lhs^T @ rhs; inputs already in one compute dtype."""
    (m, k), n = lhs.shape, rhs.shape[1]
    if 0 in (m, k, n):
        return jnp.zeros((group_sizes.shape[0], k, n), cfg.out_dtype)
    if cfg.impl == "xla":
        return xla.tgmm_xla(lhs, rhs, group_sizes, out_dtype=cfg.out_dtype)
    if cfg.impl in ("gpu", "interpret"):
        return gpu.tgmm_gpu(lhs, rhs, group_sizes, tiling=cfg.tiling, out_dtype=cfg.out_dtype,
                            interpret=cfg.impl == "interpret")
    interpret = pltpu.InterpretParams() if cfg.impl == "interpret_tpu" else False
    return tpu.tgmm_tpu(lhs, rhs, group_sizes, tiling=cfg.tiling, out_dtype=cfg.out_dtype,
                        interpret=interpret)


def _with_dtype(cfg: _Config, out_dtype, *, swap_tk_tn: bool) -> _Config:
    """cfg for a backward product: another output dtype, tk/tn swapped when K and N trade roles."""
    tiling = cfg.tiling
    if swap_tk_tn and tiling is not None:
        tiling = (tiling[0], tiling[2], tiling[1])
    return _Config(cfg.impl, tiling, jnp.dtype(out_dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _gmm(lhs, rhs, group_sizes, transpose_rhs: bool, cfg: _Config):
    compute = jnp.promote_types(lhs.dtype, rhs.dtype)
    return _gmm_forward(lhs.astype(compute), rhs.astype(compute), group_sizes, transpose_rhs, cfg)


def _gmm_fwd(lhs, rhs, group_sizes, transpose_rhs, cfg):
    return _gmm(lhs, rhs, group_sizes, transpose_rhs, cfg), (lhs, rhs, group_sizes)


def _gmm_bwd(transpose_rhs, cfg, residuals, d_out):
    lhs, rhs, group_sizes = residuals
    compute = jnp.promote_types(lhs.dtype, rhs.dtype)
    lhs_c, rhs_c, d_out_c = lhs.astype(compute), rhs.astype(compute), d_out.astype(compute)
    # d_lhs[r] = d_out[r] @ W_g^T, W_g the [K,N] weight of row r's group: contracts over N.
    d_lhs = _gmm_forward(d_out_c, rhs_c, group_sizes, not transpose_rhs,
                         _with_dtype(cfg, lhs.dtype, swap_tk_tn=True))
    # d_W_g = lhs_g^T @ d_out_g; with rhs[g] = W_g^T ([N,K]) it is d_out_g^T @ lhs_g instead.
    rhs_cfg = _with_dtype(cfg, rhs.dtype, swap_tk_tn=transpose_rhs)
    if transpose_rhs:
        d_rhs = _tgmm_forward(d_out_c, lhs_c, group_sizes, rhs_cfg)
    else:
        d_rhs = _tgmm_forward(lhs_c, d_out_c, group_sizes, rhs_cfg)
    return d_lhs, d_rhs, None


_gmm.defvjp(_gmm_fwd, _gmm_bwd)
_gmm_jit = jax.jit(_gmm, static_argnums=(3, 4))


@functools.partial(jax.jit, static_argnums=(3,))
def _tgmm_jit(lhs, rhs, group_sizes, cfg: _Config):
    compute = jnp.promote_types(lhs.dtype, rhs.dtype)
    return _tgmm_forward(lhs.astype(compute), rhs.astype(compute), group_sizes, cfg)


def gmm(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *, transpose_rhs: bool = False,
        impl: Impl = "auto", tiling: tiling_lib.Tiling | None = None,
        out_dtype=None) -> jax.Array:
    """Grouped matmul: out[r] = lhs[r] @ rhs[g] for the rows r of group g. Differentiable.

    Args:
      lhs: [M, K] float, rows sorted by group.
      rhs: [E, K, N] float ([E, N, K] when transpose_rhs).
      group_sizes: [E] int32, rows per group, sum <= M; not differentiable.
      transpose_rhs: use rhs[g]^T as the group's [K, N] weight.
      impl: see the module docstring.
      tiling: (tm, tk, tn) for the Pallas kernels (None: the backend default).
      out_dtype: output dtype (default: the promoted input dtype).
    Returns:
      [M, N] out_dtype; rows past sum(group_sizes) are 0. Gradients: d_lhs (lhs dtype) and d_rhs
      (rhs dtype) via the same impl (d_rhs by tgmm).
    """
    _check_array("lhs", lhs, 2, "[M, K]")
    _check_array("rhs", rhs, 3, "[E, N, K]" if transpose_rhs else "[E, K, N]")
    _check_group_sizes(group_sizes, rhs.shape[0])
    m, k = lhs.shape
    rhs_k, n = (rhs.shape[2], rhs.shape[1]) if transpose_rhs else (rhs.shape[1], rhs.shape[2])
    if rhs_k != k:
        raise ValueError(f"lhs is [M={m}, K={k}] but rhs {rhs.shape} has K={rhs_k} "
                         f"(transpose_rhs={transpose_rhs})")
    out_dtype = jnp.promote_types(lhs.dtype, rhs.dtype) if out_dtype is None else out_dtype
    cfg = _make_config(impl, tiling, m, k, n, out_dtype)
    return _gmm_jit(lhs, rhs, group_sizes, bool(transpose_rhs), cfg)


def tgmm(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *, impl: Impl = "auto",
         tiling: tiling_lib.Tiling | None = None, out_dtype=None) -> jax.Array:
    """Transposed grouped matmul (the weight gradient of gmm): out[g] = lhs_g^T @ rhs_g.

    Args:
      lhs: [M, K] float and rhs: [M, N] float, rows sorted by group.
      group_sizes: [E] int32, rows per group, sum <= M.
      impl, tiling: as for gmm (tiling = (tm, tk, tn), tm the row step of the reduction).
      out_dtype: output dtype (default: the promoted input dtype).
    Returns:
      [E, K, N] out_dtype; zeros for empty groups. Not differentiable.
    """
    _check_array("lhs", lhs, 2, "[M, K]")
    _check_array("rhs", rhs, 2, "[M, N]")
    _check_group_sizes(group_sizes, None)
    (m, k), (rhs_m, n) = lhs.shape, rhs.shape
    if rhs_m != m:
        raise ValueError(f"lhs is [M={m}, K] but rhs is [M={rhs_m}, N]: the row counts differ")
    out_dtype = jnp.promote_types(lhs.dtype, rhs.dtype) if out_dtype is None else out_dtype
    cfg = _make_config(impl, tiling, m, k, n, out_dtype)
    return _tgmm_jit(lhs, rhs, group_sizes, cfg)
