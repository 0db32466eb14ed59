"""Routing benchmark: our jnp ops (gather backward passes) vs plain autodiff (scatter backward).

Every op here is memory-bound, so rows report GB/s (the bytes each op must at least read and write)
and the fraction of the device's peak HBM bandwidth; a fraction near the copy baseline means a
custom kernel has nothing left to gain.

    python -m pallas_kernels.routing.bench [--sizes nano30b]
"""
import argparse

import jax
import jax.numpy as jnp

from pallas_kernels import device_peaks, timing
from pallas_kernels.routing import ops

# name -> (T tokens, D hidden, E experts, k).
SIZES = {
    "nano30b": (4096, 2688, 128, 6),
    "cpu_small": (512, 256, 16, 6),
}


def _plain_permute(x, expert_ids):
    """The autodiff peer: sort + plain gather, whose derived backward is a scatter-add."""
    sort_idx = jnp.argsort(expert_ids.reshape(-1), stable=True)
    return x[sort_idx // expert_ids.shape[1]]


def _plain_unpermute(y_sorted, sort_idx, weights):
    tokens, k = weights.shape
    inverse = jnp.argsort(sort_idx)
    per_copy = y_sorted[inverse].reshape(tokens, k, -1).astype(jnp.float32)
    return jnp.einsum("tkd,tk->td", per_copy, weights).astype(y_sorted.dtype)


def _cases(t: int, d: int, e: int, k: int, dtype):
    """(op, impl, fn, args, bytes) for every benchmarked call."""
    keys = jax.random.split(jax.random.key(0), 4)
    logits = jax.random.normal(keys[0], (t, e), jnp.float32)
    bias = jax.random.normal(keys[1], (e,), jnp.float32) * 0.1
    x = jax.random.normal(keys[2], (t, d), jnp.float32).astype(dtype)
    weights, ids, _ = ops.router_topk(logits, k, score="sigmoid", bias=bias)
    x_sorted, _, sort_idx = ops.permute(x, ids, e)
    item = jnp.dtype(dtype).itemsize
    tokens_bytes, copies_bytes = t * d * item, t * k * d * item

    def fwd_bwd(fn, num_diff):
        """jit of (*args, cotangent) -> grads of the first num_diff args (a random cotangent,
        so XLA cannot fold the backward pass away)."""
        def call(*args):
            *inputs, cotangent = args
            diff, rest = inputs[:num_diff], inputs[num_diff:]
            _, vjp = jax.vjp(lambda *d: fn(*d, *rest), *diff)
            return vjp(cotangent)
        return jax.jit(call)

    ct_weights = jax.random.normal(keys[3], (t, k), jnp.float32)
    ct_sorted = jax.random.normal(keys[3], (t * k, d), jnp.float32).astype(dtype)
    ct_tokens = jax.random.normal(keys[3], (t, d), jnp.float32).astype(dtype)
    router_fwd = jax.jit(lambda lg, b: ops.router_topk(lg, k, score="sigmoid", bias=b))
    router_bwd = fwd_bwd(lambda lg, b: ops.router_topk(lg, k, score="sigmoid", bias=b)[0], 1)
    permute_ours = jax.jit(lambda v, i: ops.permute(v, i, e)[0])
    permute_bwd_ours = fwd_bwd(lambda v, i: ops.permute(v, i, e)[0], 1)
    permute_bwd_plain = fwd_bwd(_plain_permute, 1)
    combine_ours = jax.jit(ops.unpermute)
    combine_plain = jax.jit(_plain_unpermute)
    combine_bwd_ours = fwd_bwd(lambda y, w, s: ops.unpermute(y, s, w), 2)
    combine_bwd_plain = fwd_bwd(lambda y, w, s: _plain_unpermute(y, s, w), 2)
    copy = jax.jit(lambda v: v * 2)
    return [
        ("copy (bandwidth baseline)", "xla", copy, (x_sorted,), 2 * copies_bytes),
        ("router_topk fwd", "ours (jnp)", router_fwd, (logits, bias), 2 * t * e * 4),
        ("router_topk fwd+bwd", "ours (jnp)", router_bwd, (logits, bias, ct_weights),
         4 * t * e * 4),
        ("permute fwd (sort+gather)", "ours (jnp)", permute_ours, (x, ids),
         tokens_bytes + copies_bytes),
        ("permute fwd+bwd", "ours (gather bwd)", permute_bwd_ours, (x, ids, ct_sorted),
         2 * (tokens_bytes + copies_bytes)),
        ("permute fwd+bwd", "plain autodiff (scatter bwd)", permute_bwd_plain,
         (x, ids, ct_sorted), 2 * (tokens_bytes + copies_bytes)),
        ("unpermute fwd", "ours (jnp)", combine_ours, (x_sorted, sort_idx, weights),
         tokens_bytes + copies_bytes),
        ("unpermute fwd", "plain jnp", combine_plain, (x_sorted, sort_idx, weights),
         tokens_bytes + copies_bytes),
        ("unpermute fwd+bwd", "ours (gather bwd)", combine_bwd_ours,
         (x_sorted, weights, sort_idx, ct_tokens), 2 * (tokens_bytes + copies_bytes)),
        ("unpermute fwd+bwd", "plain autodiff (scatter bwd)", combine_bwd_plain,
         (x_sorted, weights, sort_idx, ct_tokens), 2 * (tokens_bytes + copies_bytes)),
    ]


def run(sizes=None, dtype: str = "bfloat16") -> list[dict]:
    """Benchmark rows: op, size, impl, time_ms, gbps, peak_frac (of HBM bandwidth), note.

    Args:
      sizes: names from SIZES or (T, D, E, k) tuples; default nano30b on an accelerator,
        cpu_small on CPU.
      dtype: token dtype name.
    """
    backend = jax.default_backend()
    if sizes is None:
        sizes = ("nano30b",) if backend in ("gpu", "tpu") else ("cpu_small",)
    peak = device_peaks.peak_gbps()
    rows = []
    for size in sizes:
        name, (t, d, e, k) = (size, SIZES[size]) if isinstance(size, str) else (str(size), size)
        for op, impl, fn, args, num_bytes in _cases(t, d, e, k, jnp.dtype(dtype)):
            row = dict(op=op, size=f"{name} T={t} D={d} E={e} k={k}", impl=impl, time_ms=None,
                       gbps=None, peak_frac=None, note="")
            rows.append(timing.measure(row, fn, args, num_bytes=num_bytes, peak=peak,
                                       calls_per_sample=10))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--sizes", default=None, help="comma-separated names from SIZES")
    args = parser.parse_args()
    sizes = None if args.sizes is None else args.sizes.split(",")
    print(timing.format_rows(run(sizes, args.dtype)))


if __name__ == "__main__":
    main()
