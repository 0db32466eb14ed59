"""Public attention ops: `flash_attention` (differentiable) and `decode_attention` (forward only).

impl:
  "auto"          the Pallas kernel of the running backend (GPU: Triton, TPU: Mosaic), XLA on CPU.
  "xla"           plain jnp (xla.py): masked softmax with float32 statistics, GQA by reshape.
  "gpu" / "tpu"   the Pallas kernel, compiled for that backend (must be the running one).
  "interpret"     the GPU (Triton) kernel in the Pallas interpreter (runs anywhere; for tests).
  "interpret_tpu" the TPU kernel in the TPU interpreter (pltpu.InterpretParams(); for tests).

Shapes: q [B, T, H, D], k/v [B, S, KVH, D] with H % KVH == 0; query head h reads KV head
h // (H // KVH). q, k and v share one float dtype (float32, bfloat16 or float16); softmax statistics
are float32. Lengths that are not multiples of the kernel blocks are padded here and the tail is
masked (segment id 0), so any T and S work.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.backend import IMPLS, Impl, resolve_impl  # noqa: F401 (re-exported)
from pallas_kernels.attention import gpu, tpu, xla

_FLOAT_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
# Decode on GPU: aim for about this many programs (2 waves on an H100's 132 SMs) via cache splits.
_GPU_DECODE_PROGRAMS = 264


def _kernel_family(impl: str) -> str:
    """'gpu' or 'tpu': whose kernel a resolved non-XLA impl runs."""
    return "gpu" if impl in ("gpu", "interpret") else "tpu"


def _interpret_arg(impl: str):
    """The pallas_call `interpret` argument of a resolved kernel impl."""
    if impl == "interpret":
        return True
    if impl == "interpret_tpu":
        return pltpu.InterpretParams()
    return False


# ----------------------------------------------------------------------------- validation


def _check_float_array(name: str, x, shape_doc: str) -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array of shape {shape_doc}, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(x.shape)}")
    if jnp.dtype(x.dtype) not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, bfloat16 or float16, got {x.dtype}")


def _check_qkv(q, k, v, k_name: str, v_name: str) -> None:
    """q [B, T, H, D], k/v [B, S, KVH, D], one dtype, H % KVH == 0."""
    _check_float_array("q", q, "[B, T, H, D]")
    _check_float_array(k_name, k, "[B, S, KVH, D]")
    _check_float_array(v_name, v, "[B, S, KVH, D]")
    if k.shape != v.shape:
        raise ValueError(f"{k_name} and {v_name} must have the same shape, got {k.shape} and {v.shape}")
    if k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3]:
        raise ValueError(f"q {q.shape} and {k_name} {k.shape} must share B (dim 0) and D (dim 3)")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"q's heads H={q.shape[2]} must be a multiple of {k_name}'s KV heads "
                         f"KVH={k.shape[2]}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, {k_name} and {v_name} must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if 0 in q.shape or 0 in k.shape:
        raise ValueError(f"q {q.shape} and {k_name} {k.shape} must have no zero-sized dimension")


def _check_int_array(name: str, x, shape: tuple, shape_doc: str) -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an int32 array of shape {shape_doc}, got {type(x).__name__}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape_doc} = {shape}, got {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer (int32) array, got {x.dtype}")


def _check_q_offset(q_offset) -> None:
    """None, a Python int in int32 range or an integer scalar array (traced ones too)."""
    if q_offset is None:
        return
    if isinstance(q_offset, bool) or not (isinstance(q_offset, int) or hasattr(q_offset, "dtype")):
        raise TypeError(f"q_offset must be None, an int or an int32 scalar array, got {type(q_offset).__name__}")
    if isinstance(q_offset, int):
        if not -2 ** 31 <= q_offset < 2 ** 31:
            raise ValueError(f"q_offset must fit in int32, got {q_offset}")
        return
    if tuple(q_offset.shape) != ():
        raise ValueError(f"q_offset must be a scalar, got shape {tuple(q_offset.shape)}")
    if not jnp.issubdtype(q_offset.dtype, jnp.integer):
        raise TypeError(f"q_offset must be an integer (int32) scalar, got {q_offset.dtype}")


def _resolve_scale(sm_scale, head_dim: int) -> float:
    if sm_scale is None:
        return head_dim ** -0.5
    if isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)):
        raise TypeError(f"sm_scale must be a Python float or None, got {type(sm_scale).__name__}")
    return float(sm_scale)


def _check_block(name: str, block, family: str) -> None:
    """A user block size: a power of two >= 16 (GPU) or a multiple of 128 (TPU)."""
    if block is None:
        return
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
        raise ValueError(f"{name} must be a positive int or None, got {block!r}")
    if family == "gpu" and (block < gpu.MIN_BLOCK or block & (block - 1)):
        raise ValueError(f"{name} must be a power of two >= {gpu.MIN_BLOCK} for the GPU kernel, got {block}")
    if family == "tpu" and block % tpu.BLOCK_MULTIPLE:
        raise ValueError(f"{name} must be a multiple of {tpu.BLOCK_MULTIPLE} for the TPU kernel, got {block}")


def _check_head_dim(head_dim: int, family: str) -> None:
    if family == "gpu" and (head_dim < gpu.MIN_BLOCK or head_dim & (head_dim - 1)):
        raise ValueError(f"the GPU attention kernels need a power-of-two head dim >= {gpu.MIN_BLOCK}, "
                         f"got D={head_dim}; use impl='xla'")
    if family == "tpu" and head_dim % tpu.BLOCK_MULTIPLE:
        raise ValueError(f"the TPU attention kernels need head dim D % {tpu.BLOCK_MULTIPLE} == 0, "
                         f"got D={head_dim}; use impl='xla'")


# ----------------------------------------------------------------------------- block sizes


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _fit_block(block: int, length: int, family: str) -> int:
    """Shrinks a block to the (padded) length when the sequence is shorter than one block."""
    if family == "gpu":
        return min(block, max(gpu.MIN_BLOCK, _next_power_of_two(length)))
    return min(block, _round_up(length, tpu.BLOCK_MULTIPLE))


def _dividing_block(length: int, preferred: int, smallest: int, family: str) -> int:
    """The largest legal block <= preferred that divides length (no padding), else preferred fitted."""
    block = preferred
    while block >= smallest:
        if length % block == 0:
            return block
        block = block // 2 if family == "gpu" else block - tpu.BLOCK_MULTIPLE
    return _fit_block(preferred, length, family)


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, max(1, min(n, cap)) + 1) if n % d == 0)


# ----------------------------------------------------------------------------- flash attention


@dataclasses.dataclass(frozen=True)
class _FlashConfig:
    """Static settings of one kernel flash-attention call."""

    impl: str  # resolved kernel impl: "gpu", "tpu", "interpret", "interpret_tpu"
    causal: bool
    sm_scale: float
    block_q: int
    block_k: int


def _flash_kernel_forward(q, k, v, q_seg, kv_seg, q_offset, cfg: _FlashConfig):
    module = gpu if _kernel_family(cfg.impl) == "gpu" else tpu
    return module.flash_forward(q, k, v, q_seg, kv_seg, q_offset, causal=cfg.causal, sm_scale=cfg.sm_scale,
                                block_q=cfg.block_q, block_k=cfg.block_k,
                                interpret=_interpret_arg(cfg.impl))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _flash_kernel(q, k, v, q_seg, kv_seg, q_offset, cfg: _FlashConfig):
    """(out [B, T, H, D], lse f32 [B, H, T]; +inf for rows with no visible key), differentiable in both.

    q_offset: int32 [1], query i sits at key index i + q_offset[0] (an integer input: no gradient).
    """
    return _flash_kernel_forward(q, k, v, q_seg, kv_seg, q_offset, cfg)


def _flash_kernel_fwd(q, k, v, q_seg, kv_seg, q_offset, cfg):
    out, lse = _flash_kernel_forward(q, k, v, q_seg, kv_seg, q_offset, cfg)
    return (out, lse), (q, k, v, q_seg, kv_seg, q_offset, out, lse)


def _flash_kernel_bwd(cfg, residuals, cotangents):
    """dlse_i / ds_ij = p_ij, so an lse cotangent g enters as ds_ij = p_ij (dp_ij - delta_i + g_i): the kernels'
    delta lowered by g."""
    q, k, v, q_seg, kv_seg, q_offset, out, lse = residuals
    d_out, d_lse = cotangents
    d_out = d_out.astype(q.dtype)
    delta = jnp.einsum("bthd,bthd->bht", out.astype(jnp.float32), d_out.astype(jnp.float32)) - d_lse
    module = gpu if _kernel_family(cfg.impl) == "gpu" else tpu
    dq, dk, dv = module.flash_backward(q, k, v, q_seg, kv_seg, q_offset, d_out, lse, delta,
                                       causal=cfg.causal, sm_scale=cfg.sm_scale, block_q=cfg.block_q,
                                       block_k=cfg.block_k, interpret=_interpret_arg(cfg.impl))
    return dq, dk, dv, None, None, None


_flash_kernel.defvjp(_flash_kernel_fwd, _flash_kernel_bwd)


def _segments(segment_ids, kv_segment_ids, b: int, t: int, s: int):
    """(q_seg [B, T], kv_seg [B, S]) int32: the given ids (the query ids for the keys too when only they are
    given), or all ones."""
    q_seg = jnp.ones((b, t), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    if kv_segment_ids is not None:
        return q_seg, kv_segment_ids.astype(jnp.int32)
    return q_seg, (jnp.ones((b, s), jnp.int32) if segment_ids is None else q_seg)


def _pad_axis1(x, length: int):
    """Zero-pads axis 1 of x up to length."""
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, length - x.shape[1])
    return jnp.pad(x, pad)


@functools.partial(jax.jit, static_argnums=(6,))
def _flash_kernel_call(q, k, v, segment_ids, kv_segment_ids, q_offset, cfg: _FlashConfig):
    """Pads T and S to the blocks (segment id 0: the padded queries and keys see and are seen by nothing, so
    the padding changes no visible pair whatever q_offset is) and runs the kernels."""
    (b, t, _, _), s = q.shape, k.shape[1]
    q_seg, kv_seg = _segments(segment_ids, kv_segment_ids, b, t, s)
    t_pad, s_pad = _round_up(t, cfg.block_q), _round_up(s, cfg.block_k)
    out, lse = _flash_kernel(_pad_axis1(q, t_pad), _pad_axis1(k, s_pad), _pad_axis1(v, s_pad),
                             _pad_axis1(q_seg, t_pad), _pad_axis1(kv_seg, s_pad),
                             jnp.asarray(q_offset, jnp.int32).reshape(1), cfg)
    lse = lse[:, :, :t]
    return out[:, :t], jnp.where(jnp.isposinf(lse), -jnp.inf, lse)


@functools.partial(jax.jit, static_argnames=("causal", "sm_scale"))
def _flash_xla_call(q, k, v, segment_ids, kv_segment_ids, q_offset, *, causal: bool, sm_scale: float):
    (b, t, _, _), s = q.shape, k.shape[1]
    q_seg, kv_seg = _segments(segment_ids, kv_segment_ids, b, t, s)
    return xla.flash_attention_xla(q, k, v, q_seg, kv_seg, causal=causal, sm_scale=sm_scale, return_lse=True,
                                   q_offset=jnp.asarray(q_offset, jnp.int32))


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, segment_ids: jax.Array | None = None,
                    kv_segment_ids: jax.Array | None = None, causal: bool = True, sm_scale: float | None = None,
                    impl: Impl = "auto", block_q: int | None = None, block_k: int | None = None,
                    return_lse: bool = False, q_offset: int | jax.Array | None = None):
    """Multi-head attention with grouped KV heads, causal masking and packed segments.

    Args:
      q: [B, T, H, D] queries. k, v: [B, S, KVH, D], same dtype as q, H % KVH == 0.
      segment_ids: optional int32 [B, T]; 0 marks padding. Used for queries and keys alike (needs S == T)
        unless ``kv_segment_ids`` gives the keys' own. Query i attends key j iff (not causal or
        j <= i + q_offset) and seg[i] == kv_seg[j] != 0.
      kv_segment_ids: optional int32 [B, S], the keys' segment ids (any S; default: ``segment_ids``).
      causal: mask keys after the query (by index: query i sits at key index i + q_offset).
      sm_scale: logit scale (default 1 / sqrt(D)).
      impl: see the module docstring.
      block_q, block_k: kernel tiles (None: the backend default; shrunk for short sequences).
        GPU: powers of two >= 16; TPU: multiples of 128. Ignored by "xla".
      return_lse: also return each query row's log-sum-exp of its visible scaled logits, float32 [B, H, T]
        (-inf for a row with no visible key), differentiable too: what merges attention over split key sets.
      q_offset: the key index of query 0, an int32 scalar: a Python int or a jax integer scalar, which may be
        traced (e.g. ``lax.axis_index(axis) * T`` under shard_map: queries [off, off + T) of a sequence shard
        against keys [0, S)); it is never static, so a new value does not recompile. None means 0. With
        causal, query i attends keys j <= i + q_offset (any T and S) and the kernels skip the key blocks past
        each query block's diagonal, forward and backward (GPU: not looped over; TPU: neither computed nor
        fetched); queries at negative key indices see no key. Without causal it has no effect. Not
        differentiated (an integer).
    Returns:
      [B, T, H, D] in q's dtype (and the lse). Queries with no visible key (padding) give 0 and get zero
      gradients. Differentiable in q, k, v (custom_vjp with Pallas backward kernels; autodiff for "xla").
    """
    _check_qkv(q, k, v, "k", "v")
    b, t, _, d = q.shape
    s = k.shape[1]
    if segment_ids is not None:
        _check_int_array("segment_ids", segment_ids, (b, t), "[B, T]")
        if s != t and kv_segment_ids is None:
            raise ValueError(f"segment_ids alone needs self-attention (S == T), got T={t} and S={s}; pass "
                             f"kv_segment_ids for the keys")
    if kv_segment_ids is not None:
        _check_int_array("kv_segment_ids", kv_segment_ids, (b, s), "[B, S]")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    _check_q_offset(q_offset)
    q_offset = 0 if q_offset is None else q_offset
    sm_scale = _resolve_scale(sm_scale, d)
    resolved = resolve_impl(impl)
    if resolved == "xla":
        out, lse = _flash_xla_call(q, k, v, segment_ids, kv_segment_ids, q_offset, causal=causal,
                                   sm_scale=sm_scale)
    else:
        family = _kernel_family(resolved)
        _check_block("block_q", block_q, family)
        _check_block("block_k", block_k, family)
        _check_head_dim(d, family)
        default_q, default_k = gpu.DEFAULT_BLOCKS if family == "gpu" else tpu.DEFAULT_BLOCKS
        cfg = _FlashConfig(resolved, causal, sm_scale,
                           _fit_block(block_q or default_q, t, family),
                           _fit_block(block_k or default_k, s, family))
        out, lse = _flash_kernel_call(q, k, v, segment_ids, kv_segment_ids, q_offset, cfg)
    return (out, lse) if return_lse else out


# ----------------------------------------------------------------------------- decode attention


@dataclasses.dataclass(frozen=True)
class _DecodeConfig:
    """Static settings of one kernel decode-attention call."""

    impl: str
    sm_scale: float
    block_k: int
    num_splits: int  # GPU only (1 on TPU)
    rows: int        # query rows per KV head after padding (G * Tq rounded up)


def _group_queries(q, num_kv_heads: int, rows: int):
    """q [B, Tq, H, D] -> [B, KVH, rows, D]: row t * G + g holds query t of head kv * G + g."""
    b, tq, h, d = q.shape
    g = h // num_kv_heads
    grouped = q.reshape(b, tq, num_kv_heads, g, d).transpose(0, 2, 1, 3, 4).reshape(b, num_kv_heads, tq * g, d)
    return jnp.pad(grouped, ((0, 0), (0, 0), (0, rows - tq * g), (0, 0)))


def _ungroup_queries(rows_out, tq: int, h: int):
    """Inverse of `_group_queries`: [B, KVH, rows, D] -> [B, Tq, H, D]."""
    b, kvh, _, d = rows_out.shape
    g = h // kvh
    return rows_out[:, :, :tq * g].reshape(b, kvh, tq, g, d).transpose(0, 2, 1, 3, 4).reshape(b, tq, h, d)


def _row_positions(lengths, tq: int, group: int, rows: int):
    """int32 [B, rows]: cache slot of each grouped query row (lengths - Tq + t), -1 for padding rows."""
    r = jnp.arange(rows, dtype=jnp.int32)
    slot = lengths[:, None].astype(jnp.int32) - tq + r[None, :] // group
    return jnp.where(r[None, :] < tq * group, slot, -1)


@functools.partial(jax.jit, static_argnums=(4,))
def _decode_kernel_call(q, k_cache, v_cache, lengths, cfg: _DecodeConfig):
    b, tq, h, _ = q.shape
    s, kvh = k_cache.shape[1], k_cache.shape[2]
    lengths = lengths.astype(jnp.int32)
    q_rows = _group_queries(q, kvh, cfg.rows)
    q_pos = _row_positions(lengths, tq, h // kvh, cfg.rows)
    s_pad = _round_up(s, cfg.block_k * cfg.num_splits)
    k_pad, v_pad = _pad_axis1(k_cache, s_pad), _pad_axis1(v_cache, s_pad)
    interpret = _interpret_arg(cfg.impl)
    if _kernel_family(cfg.impl) == "gpu":
        out = gpu.decode_forward(q_rows, q_pos, k_pad, v_pad, sm_scale=cfg.sm_scale, block_k=cfg.block_k,
                                 num_splits=cfg.num_splits, kv_len=s, interpret=interpret)
    else:
        out = tpu.decode_forward(q_rows, q_pos, k_pad, v_pad, lengths, sm_scale=cfg.sm_scale,
                                 block_k=cfg.block_k, kv_len=s, interpret=interpret)
    return _ungroup_queries(out, tq, h)


def _decode_config(impl: str, sm_scale: float, b: int, tq: int, h: int, s: int, kvh: int,
                   block_k: int | None, num_splits: int | None) -> _DecodeConfig:
    family = _kernel_family(impl)
    if family == "gpu":
        block = block_k or _dividing_block(s, gpu.DEFAULT_DECODE_BLOCK_K, gpu.MIN_BLOCK, "gpu")
        num_blocks = -(-s // block)
        splits = num_splits or _largest_divisor_at_most(num_blocks, -(-_GPU_DECODE_PROGRAMS // (b * kvh)))
        rows = max(gpu.MIN_BLOCK, _next_power_of_two(tq * h // kvh))
        return _DecodeConfig(impl, sm_scale, block, splits, rows)
    if num_splits not in (None, 1):
        raise ValueError(f"num_splits is a GPU decode option; the TPU kernel needs None or 1, got {num_splits}")
    block = block_k or _dividing_block(s, tpu.DEFAULT_DECODE_BLOCK_K, tpu.BLOCK_MULTIPLE, "tpu")
    return _DecodeConfig(impl, sm_scale, block, 1, _round_up(tq * h // kvh, tpu.ROW_MULTIPLE))


def decode_attention(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, lengths: jax.Array, *,
                     sm_scale: float | None = None, impl: Impl = "auto", block_k: int | None = None,
                     num_splits: int | None = None) -> jax.Array:
    """Attention of a few new query tokens per row against a KV cache (forward only).

    Args:
      q: [B, Tq, H, D]; query t of row b sits at cache slot lengths[b] - Tq + t.
      k_cache, v_cache: [B, S, KVH, D], same dtype as q, H % KVH == 0.
      lengths: int32 [B]; query t of row b attends slots j <= lengths[b] - Tq + t (and j < S), so
        with Tq == 1 it attends slots < lengths[b]. A query with no such slot gives 0.
      sm_scale: logit scale (default 1 / sqrt(D)).
      impl: see the module docstring.
      block_k: cache tile (None: the largest default-sized legal tile dividing S, so the cache is
        not copied; GPU: a power of two >= 16, TPU: a multiple of 128). Ignored by "xla".
      num_splits: GPU only: programs splitting each row's cache (None: enough for ~2 waves).
    Returns:
      [B, Tq, H, D] in q's dtype.
    """
    _check_qkv(q, k_cache, v_cache, "k_cache", "v_cache")
    b, tq, h, d = q.shape
    s, kvh = k_cache.shape[1], k_cache.shape[2]
    _check_int_array("lengths", lengths, (b,), "[B]")
    sm_scale = _resolve_scale(sm_scale, d)
    resolved = resolve_impl(impl)
    if resolved == "xla":
        return _decode_xla_call(q, k_cache, v_cache, lengths, sm_scale=sm_scale)
    family = _kernel_family(resolved)
    _check_block("block_k", block_k, family)
    _check_head_dim(d, family)
    if num_splits is not None and (isinstance(num_splits, bool) or not isinstance(num_splits, int)
                                   or num_splits <= 0):
        raise ValueError(f"num_splits must be a positive int or None, got {num_splits!r}")
    cfg = _decode_config(resolved, sm_scale, b, tq, h, s, kvh, block_k, num_splits)
    return _decode_kernel_call(q, k_cache, v_cache, lengths, cfg)


@functools.partial(jax.jit, static_argnames=("sm_scale",))
def _decode_xla_call(q, k_cache, v_cache, lengths, *, sm_scale: float):
    return xla.decode_attention_xla(q, k_cache, v_cache, lengths.astype(jnp.int32), sm_scale=sm_scale)
