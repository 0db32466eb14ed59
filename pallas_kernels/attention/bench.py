"""Attention benchmarks: our kernels vs jax's bundled Pallas kernels vs XLA (rows for pallas_kernels.bench).

`run` times causal flash attention (forward, and forward+backward) and `run_decode` decode
attention (one query token per row against a KV cache with per-row lengths). Rows:
{op, size, impl, time_ms, tflops, peak_frac, rel_err_vs_xla, note}, decode rows add gbps (cache bytes
read per second). peak_frac is of the dense bf16 peak for attention and of the HBM bandwidth for
decode (memory-bound). rel_err_vs_xla: ||out - want|| / ||want|| against our XLA path ("pallas-xla";
the gradients for forward+backward rows). A peer that cannot run here gives time_ms None and a note.

impl: "pallas" (ours, the running backend's kernel), "pallas-xla" (ours, impl="xla"), "jax-pallas"
(jax.experimental.pallas.ops: gpu.attention.mha / tpu.flash_attention / gpu.decode_attention.gqa),
"xla" and "cudnn" (jax.nn.dot_product_attention with that implementation).

FLOPs (useful work; causal halves it): forward 4*B*H*T*S*D, forward+backward 3.5x that (2 matmuls
forward, 5 backward); decode 4*B*H*L*D with L the mean attended length.

    python -m pallas_kernels.attention.bench [--sizes=nano30b_4k,...] [--decode_sizes=...] [--dtype=bfloat16]
"""
import argparse
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.attention import ops
from pallas_kernels import device_peaks, timing


@dataclasses.dataclass(frozen=True)
class AttentionSize:
    """One flash-attention problem: [batch, seq, heads, head_dim] queries, kv_heads KV heads."""

    batch: int
    seq: int
    heads: int = 32
    kv_heads: int = 2
    head_dim: int = 128

    def __str__(self):
        return f"B={self.batch} T={self.seq} H={self.heads}/{self.kv_heads} D={self.head_dim}"


@dataclasses.dataclass(frozen=True)
class DecodeSize:
    """One decode step: batch rows with one query token each, against cache_len cache slots."""

    batch: int
    cache_len: int
    heads: int = 32
    kv_heads: int = 2
    head_dim: int = 128

    def __str__(self):
        return f"B={self.batch} S={self.cache_len} H={self.heads}/{self.kv_heads} D={self.head_dim}"


# The Nemotron-3-Nano attention shape (32 query heads, 2 KV heads, head dim 128) at 4K-32K tokens.
SIZES = {
    "nano30b_4k": AttentionSize(1, 4096),
    "nano30b_8k": AttentionSize(1, 8192),
    "nano30b_16k": AttentionSize(1, 16384),
    "nano30b_32k": AttentionSize(1, 32768),
    "small": AttentionSize(1, 256, 4, 2, 128),
}
DECODE_SIZES = {
    "nano30b_b64_s8k": DecodeSize(64, 8192),
    "nano30b_b256_s8k": DecodeSize(256, 8192),
    "nano30b_b32_s32k": DecodeSize(32, 32768),
    "small": DecodeSize(2, 256, 4, 2, 128),
}
ACCELERATOR_SIZES = ("nano30b_4k", "nano30b_8k", "nano30b_16k", "nano30b_32k")
ACCELERATOR_DECODE_SIZES = ("nano30b_b64_s8k", "nano30b_b256_s8k", "nano30b_b32_s32k")
CPU_SIZES = ("small",)
_FWD_BWD_FACTOR = 3.5


def _resolve_sizes(sizes, table: dict, accelerator_default: tuple) -> list[tuple[str, object]]:
    if sizes is None:
        sizes = accelerator_default if jax.default_backend() in ("gpu", "tpu") else CPU_SIZES
    return [(s, table[s]) if isinstance(s, str) else (str(s), s) for s in sizes]


def _repeat_kv(x, group: int):
    """[B, S, KVH, D] -> [B, S, KVH * group, D], for peers without GQA support."""
    return jnp.repeat(x, group, axis=2)


def _loss_grad(attend):
    """attend(q, k, v) -> jitted grads of sum(attend) w.r.t. q, k, v (one forward+backward pass)."""
    return jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v).astype(jnp.float32)),
                            argnums=(0, 1, 2)))


def _flash_candidates(backend: str, sm_scale: float, group: int) -> list[tuple[str, object, str]]:
    """(impl, attend(q, k, v) on [B, T, H, D] / [B, S, KVH, D] or None, note)."""
    ours = functools.partial(ops.flash_attention, causal=True, sm_scale=sm_scale)
    dpa = functools.partial(jax.nn.dot_product_attention, is_causal=True, scale=sm_scale)
    on_accelerator = backend in ("gpu", "tpu")
    bundled, bundled_note = None, f"n/a on {backend}"
    if backend == "gpu":
        from jax.experimental.pallas.ops.gpu import attention as gpu_attention

        def bundled(q, k, v):
            return gpu_attention.mha(q, _repeat_kv(k, group), _repeat_kv(v, group), None,
                                     sm_scale=sm_scale, causal=True)
        bundled_note = "kv heads repeated (no GQA)"
    elif backend == "tpu":
        from jax.experimental.pallas.ops.tpu import flash_attention as tpu_attention

        def bundled(q, k, v):
            bhtd = lambda x: jnp.swapaxes(x, 1, 2)
            return bhtd(tpu_attention.flash_attention(bhtd(q), bhtd(_repeat_kv(k, group)),
                                                      bhtd(_repeat_kv(v, group)), causal=True,
                                                      sm_scale=sm_scale))
        bundled_note = "kv heads repeated (no GQA); layout transposes timed"
    return [
        ("pallas", functools.partial(ours, impl="auto") if on_accelerator else None,
         "" if on_accelerator else f"n/a on {backend}"),
        ("jax-pallas", bundled, bundled_note),
        ("xla", functools.partial(dpa, implementation="xla"), ""),
        ("cudnn", functools.partial(dpa, implementation="cudnn") if backend == "gpu" else None,
         "" if backend == "gpu" else "n/a: gpu only"),
        ("pallas-xla", functools.partial(ours, impl="xla"), "the rel_err reference"),
    ]


def run(sizes=None, dtype: str = "bfloat16") -> list[dict]:
    """Causal flash attention rows (forward and forward+backward) for each size and implementation.

    sizes: names from SIZES or AttentionSize values; default: the nano30b shapes on an accelerator,
    "small" on CPU.
    """
    backend = jax.default_backend()
    peak = device_peaks.peak_tflops(dtype)
    rows = []
    for name, size in _resolve_sizes(sizes, SIZES, ACCELERATOR_SIZES):
        keys = jax.random.split(jax.random.key(0), 3)
        q = jax.random.normal(keys[0], (size.batch, size.seq, size.heads, size.head_dim), jnp.float32)
        k = jax.random.normal(keys[1], (size.batch, size.seq, size.kv_heads, size.head_dim), jnp.float32)
        v = jax.random.normal(keys[2], k.shape, jnp.float32)
        args = tuple(x.astype(dtype) for x in (q, k, v))
        fwd_flops = 0.5 * 4 * size.batch * size.heads * size.seq * size.seq * size.head_dim
        candidates = _flash_candidates(backend, size.head_dim ** -0.5, size.heads // size.kv_heads)
        reference = candidates[-1][1]
        passes = (("fwd", jax.jit, fwd_flops), ("fwd+bwd", _loss_grad, _FWD_BWD_FACTOR * fwd_flops))
        for pass_name, make_fn, flops in passes:
            want = make_fn(reference)(*args)
            for impl, attend, note in candidates:
                row = dict(op=f"attention {pass_name}", size=f"{name} {size}", impl=impl, time_ms=None,
                           tflops=None, peak_frac=None, rel_err_vs_xla=None, note=note)
                rows.append(row if attend is None else
                            timing.measure(row, make_fn(attend), args, want=want, flops=flops, peak=peak))
    return rows


def _decode_candidates(backend: str, sm_scale: float) -> list[tuple[str, object, str]]:
    """(impl, attend(q [B, 1, H, D], k, v, lengths) or None, note)."""
    ours = functools.partial(ops.decode_attention, sm_scale=sm_scale)
    on_accelerator = backend in ("gpu", "tpu")

    def dpa(implementation):
        def attend(q, k, v, lengths):
            return jax.nn.dot_product_attention(q, k, v, scale=sm_scale, key_value_seq_lengths=lengths,
                                                implementation=implementation)
        return attend

    bundled, bundled_note = None, f"n/a on {backend}"
    if backend == "gpu":
        from jax.experimental.pallas.ops.gpu import decode_attention as gpu_decode

        def bundled(q, k, v, lengths):
            return gpu_decode.gqa(q[:, 0], k, v, kv_seq_len=lengths, sm_scale=sm_scale)[:, None]
        bundled_note = ""
    elif backend == "tpu":
        bundled_note = "n/a: jax bundles only paged-cache decode kernels for tpu"
    return [
        ("pallas", functools.partial(ours, impl="auto") if on_accelerator else None,
         "" if on_accelerator else f"n/a on {backend}"),
        ("jax-pallas", bundled, bundled_note),
        ("xla", dpa("xla"), ""),
        ("cudnn", dpa("cudnn") if backend == "gpu" else None, "" if backend == "gpu" else "n/a: gpu only"),
        ("pallas-xla", functools.partial(ours, impl="xla"), "the rel_err reference"),
    ]


def run_decode(sizes=None, dtype: str = "bfloat16") -> list[dict]:
    """Decode attention rows (Tq = 1, lengths uniform in [S/2, S]) for each size and implementation.

    sizes: names from DECODE_SIZES or DecodeSize values; default: the nano30b shapes on an
    accelerator, "small" on CPU.
    """
    backend = jax.default_backend()
    peak = device_peaks.peak_gbps()
    rows = []
    for name, size in _resolve_sizes(sizes, DECODE_SIZES, ACCELERATOR_DECODE_SIZES):
        keys = jax.random.split(jax.random.key(0), 4)
        q = jax.random.normal(keys[0], (size.batch, 1, size.heads, size.head_dim), jnp.float32)
        k = jax.random.normal(keys[1], (size.batch, size.cache_len, size.kv_heads, size.head_dim),
                              jnp.float32)
        v = jax.random.normal(keys[2], k.shape, jnp.float32)
        lengths = jax.random.randint(keys[3], (size.batch,), size.cache_len // 2, size.cache_len + 1)
        args = (*(x.astype(dtype) for x in (q, k, v)), lengths)
        mean_len = float(np.mean(np.asarray(lengths)))
        flops = 4 * size.batch * size.heads * mean_len * size.head_dim
        cache_bytes = 2 * size.batch * mean_len * size.kv_heads * size.head_dim * jnp.dtype(dtype).itemsize
        candidates = _decode_candidates(backend, size.head_dim ** -0.5)
        want = jax.jit(candidates[-1][1])(*args)
        for impl, attend, note in candidates:
            row = dict(op="decode", size=f"{name} {size}", impl=impl, time_ms=None, tflops=None,
                       gbps=None, peak_frac=None, rel_err_vs_xla=None, note=note)
            rows.append(row if attend is None else
                        timing.measure(row, jax.jit(attend), args, want=want, flops=flops,
                                       num_bytes=cache_bytes, peak=peak))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--sizes", default=None, help="comma-separated names from SIZES")
    parser.add_argument("--decode_sizes", default=None, help="comma-separated names from DECODE_SIZES")
    args = parser.parse_args()
    split = lambda names: None if names is None else names.split(",")
    print(timing.format_rows(run(split(args.sizes), args.dtype) +
                             run_decode(split(args.decode_sizes), args.dtype)))


if __name__ == "__main__":
    main()
