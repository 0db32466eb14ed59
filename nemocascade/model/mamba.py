"""The Mamba-2 mixer of Nemotron-H: gated SSM with a depthwise causal conv and a grouped gated RMSNorm.

For x [B, T, D] (``H`` heads of width ``P``, ``G`` groups, state ``N``, conv width ``K``):

    z = x W_z, u = x W_x  [B, T, H, P];  b = x W_b, c = x W_c  [B, T, G, N];  dt_raw = x W_dt  [B, T, H]
    (u, b, c) = silu(causal depthwise conv_K(concat(u, b, c)) + conv bias)
    dt = softplus(dt_raw + dt_bias),  a = -exp(A_log)                                   (per head)
    y = SSM(u, dt, a, b, c) + D * u                                                     (``ssd.py``)
    out = (grouped_rms_norm(y * silu(z)) * norm_scale) W_out                            (G norm groups)

(the Mamba-2 paper's block and the published Nemotron-H mixer: in_proj split into [z, x, B, C, dt], conv
with bias over x/B/C, gated RMSNorm with the gate applied before normalising, no projection biases;
Nemotron-H's default time-step limit (0, inf) is no clamp). The projections are kept as separate params
per role so that heads can be sharded; their sizes add up to the published in_proj.

Packing: neither the conv window nor the state crosses a segment boundary, and padding (segment 0) gets
``dt = 0`` so it feeds nothing. With a cache (``{"conv": [B, K-1, C], "ssm": [B, H, P, N]}``, C = H*P + 2*G*N)
the call continues each row's sequence: its valid tokens must be a prefix of the row (right padding), a
single-token call runs the O(1) recurrence step, a longer one the chunked scan from the cached state.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from nemocascade.model import sequence_layout
from nemocascade.model.config import ModelConfig
from nemocascade.model.kernels import on_shards, pallas_op
from nemocascade.model.layers import at_least_f32, constrain, dtype_of, mesh_axes, param, row_axis
from nemocascade.model.ssd import segment_starts, ssd_chunked, ssd_step


def conv_channels(cfg: ModelConfig) -> int:
    """Channels of the depthwise conv: the SSM input (H*P) and the B and C projections (G*N each)."""
    return cfg.mamba_num_heads * cfg.mamba_head_dim + 2 * cfg.mamba_n_groups * cfg.mamba_state_size


def causal_conv(u, segment_ids, weight, bias, history, history_segment=None):
    """Depthwise causal conv inside segments.

    Args:
      u: [B, T, C].  segment_ids: int32[B, T].  weight: [K, C] (tap ``K-1`` is the current token).
      bias: [C].  history: [B, K-1, C] the inputs before token 0 (zeros for a fresh sequence).
      history_segment: int32[B, K-1] the history's segment ids, or None: -1, which every token sees (a cache's
        history continues the row's sequence).
    Returns:
      (out [B, T, C] = bias + sum_i weight[i] * input[t - (K-1) + i], counting only inputs of t's own
      segment or of segment -1; extended inputs [B, K-1+T, C] = concat(history, u)).
    """
    k, t = weight.shape[0], u.shape[1]
    extended = jnp.concatenate([history.astype(u.dtype), u], axis=1)
    if history_segment is None:
        history_segment = jnp.full((segment_ids.shape[0], k - 1), -1, segment_ids.dtype)
    source_segment = jnp.concatenate([history_segment, segment_ids], axis=1)
    out = jnp.broadcast_to(bias.astype(u.dtype), u.shape)
    for i in range(k):
        seen = source_segment[:, i:i + t]
        keep = (seen == segment_ids) | (seen == -1)
        out = out + jnp.where(keep[..., None], extended[:, i:i + t] * weight[i].astype(u.dtype), 0)
    return out, extended


def ssm_scan(x, dt, a, b, c, starts, *, chunk_size: int, initial_state, impl: str, rows: str = "batch"):
    """The chunked SSD scan over [B, T] (shapes as ``ssd.ssd_chunked``) -> (y, final state).

    ``impl="xla"``: ``ssd.ssd_chunked`` (plain jnp); otherwise ``pallas_kernels.ssd.ssd_scan`` with that impl
    (under ``"auto"`` it falls back to its XLA path for shapes its kernel does not take), per device on its rows
    (those of the logical axis ``rows``, ``layers.row_axis``) and heads on a mesh (``kernels.on_shards``).
    """
    scan = _ssd_scan(impl)
    if impl == "xla":
        return scan(x, dt, a, b, c, starts, chunk_size=chunk_size, initial_state=initial_state)
    rows = mesh_axes(rows, x.shape[0]) or None
    heads = mesh_axes("heads", b.shape[2]) or None  # split heads only with their groups (G | H)
    per_token = P(rows, None, heads, None)
    state = None if initial_state is None else P(rows, heads, None, None)
    return on_shards(lambda x, dt, a, b, c, starts, init: scan(x, dt, a, b, c, starts, chunk_size=chunk_size,
                                                               initial_state=init),
                     (per_token, P(rows, None, heads), P(heads), per_token, per_token, P(rows), state),
                     (per_token, P(rows, heads, None, None)), x, dt, a, b, c, starts, initial_state)


def _conv_activations(u, segment_ids, conv_weight, conv_bias, history, history_segment=None, *, sizes):
    """silu(causal conv) of the x/B/C channels u [B, T, C] -> ((xs [B, T, H, P], b, c [B, T, G, N]), the conv's
    extended inputs [B, K-1+T, C]); ``sizes = (H, P, G, N)`` of these channels (C = H*P + 2*G*N);
    ``history``/``history_segment`` as in :func:`causal_conv`."""
    bsz, t = u.shape[:2]
    h, p, g, n = sizes
    out, extended = causal_conv(u, segment_ids, conv_weight, conv_bias, history, history_segment)
    out = jax.nn.silu(out)
    xs = out[..., :h * p].reshape(bsz, t, h, p)
    b = out[..., h * p:h * p + g * n].reshape(bsz, t, g, n)
    c = out[..., h * p + g * n:].reshape(bsz, t, g, n)
    return (xs, b, c), extended


def sequence_parallel_ssm(ux, ub, uc, segment_ids, dt, a, conv_weight, conv_bias, *, cfg: ModelConfig, split):
    """Conv and SSD scan of a call without a cache whose T tokens are split over the ``sequence`` mesh axes, in
    the chunks of ``sequence_layout.py`` (``split``: its ``sequence_split``; rows over the batch axes; heads, and
    groups, over ``tensor`` where :func:`_tensor_split` allows) -> (xs, y [B, T, H, P]).

    Each device runs its chunks as separate rows: each takes the last K-1 conv inputs (and their segment ids) of
    the chunk before it in the row (all-gathered; the first chunk gets zeros), runs the scan
    (``cfg.kernel_impl``'s) from a zero state, and then adds the state that enters it: the recurrence is linear, so
    chunk ``j`` maps an entering state ``h`` to ``carry_j * h + final_j`` (``carry_j = exp(sum dt a)`` over the
    chunk, 0 after a segment start in it), and the entering states follow from the all-gathered
    ``(carry, final)`` of the chunks before it. Inputs: the pre-conv channels ux [B, T, H, P], ub, uc
    [B, T, G, N]; segment_ids int32[B, T]; dt f32[B, T, H]; a f32[H]; conv_weight [K, C] and conv_bias [C] over
    the concatenated x/B/C channels (C = H*P + 2*G*N).
    """
    sequence, per_device = split
    mesh = jax.sharding.get_abstract_mesh()
    num_shards = math.prod(mesh.shape[axis] for axis in sequence)
    num_chunks = num_shards * per_device
    k = conv_weight.shape[0]
    if ux.shape[1] // num_chunks < k - 1:
        raise ValueError(f"sequence parallelism over {num_shards} shards leaves {ux.shape[1] // num_chunks} tokens "
                         f"per shard, fewer than the conv window's K-1 = {k - 1}")
    rows = mesh_axes("batch", ux.shape[0]) or None
    heads, groups = _tensor_split(ux.shape[2], ub.shape[2])
    # The x projection is computed split over its heads even when the shards take them whole: its outputs are
    # all-gathered then, not its weights (which would repeat its FLOPs on every ``tensor`` device).
    ux = constrain(ux, "batch", "length", "heads", None)
    tokens = P(rows, sequence)
    per_head, per_group = P(rows, sequence, heads, None), P(rows, sequence, groups, None)
    x_width, group_width = ux.shape[2] * ux.shape[3], ub.shape[2] * ub.shape[3]
    weight_parts, bias_parts = (jnp.split(w, [x_width, x_width + group_width], axis=-1)
                                for w in (conv_weight, conv_bias))
    conv_params = [w.reshape(w.shape[:-1] + u.shape[2:]) for w, u in zip(weight_parts + bias_parts, (ux, ub, uc) * 2)]
    conv_specs = (P(None, heads, None),) + (P(None, groups, None),) * 2 + (P(heads, None),) + (P(groups, None),) * 2
    heads_per_group = ux.shape[2] // ub.shape[2]

    def as_chunk_rows(x):  # [b, m*c, ...] -> [b*m, c, ...]: each of the device's chunks a row of its own
        return x.reshape(x.shape[0] * per_device, x.shape[1] // per_device, *x.shape[2:])

    def all_chunks(x):
        """Per chunk row [b*m, ...] -> all the rows' chunks [b, S*m, ...] in the row's order (all-gathered)."""
        gathered = jax.lax.all_gather(x.reshape(-1, per_device, *x.shape[1:]), sequence, axis=1, tiled=True)
        return sequence_layout.in_row_order(gathered, num_shards, per_device)

    def own_chunks(x):
        """[b, S*m, ...] in the row's order -> this device's chunk rows [b*m, ...]."""
        mine = jnp.take(x, sequence_layout.local_chunks(sequence, per_device), axis=1)
        return mine.reshape(-1, *mine.shape[2:])

    def chunk_before(x):
        """Per chunk row [b*m, ...] -> the same of the chunk before each in the row (zeros for chunk 0)."""
        ordered = all_chunks(x)
        return own_chunks(jnp.concatenate([jnp.zeros_like(ordered[:, :1]), ordered[:, :-1]], axis=1))

    def shard(ux, ub, uc, segment_ids, dt, a, *conv_params):
        if heads is not None and groups is None:  # this device's heads lie in one group: take its B/C channels
            group = jax.lax.axis_index(heads) * ux.shape[2] // heads_per_group
            ub, uc, *conv_params = [v if i in (2, 5) else jax.lax.dynamic_slice_in_dim(v, group, 1, v.ndim - 2)
                                    for i, v in enumerate((ub, uc, *conv_params))]
        bsz, t = ux.shape[:2]
        sizes = ux.shape[2:] + ub.shape[2:]
        u = as_chunk_rows(jnp.concatenate([v.reshape(bsz, t, -1) for v in (ux, ub, uc)], axis=-1))
        segment_ids, dt = as_chunk_rows(segment_ids), as_chunk_rows(dt)
        weight = jnp.concatenate([w.reshape(k, -1) for w in conv_params[:3]], axis=-1)
        bias = jnp.concatenate([w.reshape(-1) for w in conv_params[3:]], axis=-1)
        history, history_segment = chunk_before(u[:, -(k - 1):]), chunk_before(segment_ids[:, -(k - 1):])
        (xs, b, c), _ = _conv_activations(u, segment_ids, weight, bias, history, history_segment, sizes=sizes)
        starts = segment_starts(jnp.concatenate([history_segment[:, -1:], segment_ids], axis=1))[:, 1:]
        y, final = _ssd_scan(cfg.kernel_impl)(xs, dt, a, b, c, starts, chunk_size=cfg.mamba_chunk_size,
                                              initial_state=None)
        log_decay = jnp.cumsum(dt * a, axis=1)                                     # [b*m, c, H]
        before_reset = jnp.cumsum(starts, axis=1) == 0                             # [b*m, c]
        carry = jnp.exp(log_decay[:, -1]) * before_reset[:, -1:]                   # [b*m, H]
        finals, carries = all_chunks(final), all_chunks(carry)
        entering, state = [], jnp.zeros_like(finals[:, 0])
        for i in range(num_chunks):
            entering.append(state)
            state = carries[:, i, :, None, None] * state + finals[:, i]
        state = own_chunks(jnp.stack(entering, axis=1))                           # [b*m, H, P, N]
        c_heads = jnp.repeat(at_least_f32(c), xs.shape[2] // c.shape[2], axis=2)  # [b*m, c, H, N]
        scale = jnp.exp(log_decay) * before_reset[..., None]
        y = at_least_f32(y) + jnp.einsum("bthn,bhpn->bthp", c_heads, state) * scale[..., None]
        return tuple(v.reshape(bsz, t, *v.shape[2:]) for v in (xs, y.astype(xs.dtype)))

    return on_shards(shard, (per_head, per_group, per_group, tokens, P(rows, sequence, heads), P(heads))
                     + conv_specs, (per_head,) * 2, ux, ub, uc, segment_ids, dt, a, *conv_params)


def _tensor_split(num_heads: int, num_groups: int):
    """The mesh axes (those of ``tensor``) that split a sequence-parallel call's H Mamba heads and its G groups:
    both when they divide G; the heads alone when each device's heads then lie in one group (each device takes
    every group's B/C channels and keeps its own); else neither (None)."""
    axes = mesh_axes("heads", num_heads)
    if not axes:
        return None, None
    mesh = jax.sharding.get_abstract_mesh()
    local_heads = num_heads // math.prod(mesh.shape[axis] for axis in axes)
    if num_groups % (num_heads // local_heads) == 0:
        return axes, axes
    return (axes, None) if (num_heads // num_groups) % local_heads == 0 else (None, None)


def _ssd_scan(impl: str):
    """The chunked SSD scan ``(x, dt, a, b, c, starts, *, chunk_size, initial_state) -> (y, final state)`` of
    ``impl``: ``ssd.ssd_chunked`` for "xla", else ``pallas_kernels.ssd.ssd_scan`` with that impl."""
    if impl == "xla":
        return ssd_chunked
    return functools.partial(pallas_op("ssd.ops", "ssd_scan", impl), impl=impl)


def gated_rms_norm(y, z, scale, groups: int, eps: float):
    """rms_norm(y * silu(z)) over ``groups`` equal groups of the H*P features, times ``scale``.

    y, z: [B, T, H, P]; scale: [H, P]. Computed in float32 (float64), returned in y's dtype.
    """
    bsz, t, h, p = y.shape
    gated = at_least_f32(y) * jax.nn.silu(at_least_f32(z))
    grouped = gated.reshape(bsz, t, groups, h * p // groups)
    normed = grouped * jax.lax.rsqrt(jnp.mean(grouped * grouped, axis=-1, keepdims=True) + eps)
    return (normed.reshape(bsz, t, h, p) * scale.astype(normed.dtype)).astype(y.dtype)


def _uniform(low: float, high: float):
    def init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, low, high)
    return init


def _a_log_init(key, shape, dtype):
    """log of A ~ U[1, 16] (Mamba-2's default A range)."""
    return jnp.log(jax.random.uniform(key, shape, dtype, 1.0, 16.0))


def _dt_bias_init(key, shape, dtype):
    """Inverse softplus of dt ~ log-uniform in [1e-3, 1e-1] (floored at 1e-4), Mamba-2's default."""
    dt = jnp.exp(jax.random.uniform(key, shape, dtype, math.log(1e-3), math.log(1e-1)))
    dt = jnp.maximum(dt, 1e-4)
    return dt + jnp.log(-jnp.expm1(-dt))


class Mamba2(nn.Module):
    """x [B, T, D] -> ([B, T, D], new layer cache or None). See the module docstring."""

    cfg: ModelConfig
    split_length: bool = False  # no cache: the tokens may be split over ``sequence`` (sequence_parallel_ssm)

    @nn.compact
    def __call__(self, x, segment_ids, layer_cache=None):
        cfg = self.cfg
        d = x.shape[-1]
        h, p, g, n, k = (cfg.mamba_num_heads, cfg.mamba_head_dim, cfg.mamba_n_groups, cfg.mamba_state_size,
                         cfg.mamba_conv_kernel)
        bsz, t = x.shape[:2]
        dtype = dtype_of(cfg.dtype)
        init = nn.initializers.normal(stddev=d ** -0.5)
        w_z = param(self, "w_z", (d, h, p), ("embed", "ssm_heads", "head_dim"), init, cfg).astype(dtype)
        w_x = param(self, "w_x", (d, h, p), ("embed", "ssm_heads", "head_dim"), init, cfg).astype(dtype)
        w_b = param(self, "w_b", (d, g, n), ("embed", "ssm_groups", "ssm_state"), init, cfg).astype(dtype)
        w_c = param(self, "w_c", (d, g, n), ("embed", "ssm_groups", "ssm_state"), init, cfg).astype(dtype)
        w_dt = param(self, "w_dt", (d, h), ("embed", "ssm_heads"), init, cfg).astype(dtype)
        channels = conv_channels(cfg)
        conv_init = _uniform(-k ** -0.5, k ** -0.5)          # PyTorch's default for a depthwise conv
        conv_weight = param(self, "conv_weight", (k, channels), ("conv_kernel", "ssm_channels"), conv_init, cfg)
        conv_bias = param(self, "conv_bias", (channels,), ("ssm_channels",), conv_init, cfg)
        dt_bias = param(self, "dt_bias", (h,), ("ssm_heads",), _dt_bias_init, cfg, at_least_float32=True)
        a_log = param(self, "A_log", (h,), ("ssm_heads",), _a_log_init, cfg, at_least_float32=True)
        d_skip = param(self, "D", (h,), ("ssm_heads",), nn.initializers.ones, cfg, at_least_float32=True)
        norm_scale = param(self, "norm_scale", (h, p), ("ssm_heads", "head_dim"), nn.initializers.ones, cfg)
        w_out = param(self, "w_out", (h, p, d), ("ssm_heads", "head_dim", "embed"),
                      nn.initializers.normal(stddev=(h * p) ** -0.5), cfg).astype(dtype)

        z = jnp.einsum("btd,dhp->bthp", x, w_z)
        ux = jnp.einsum("btd,dhp->bthp", x, w_x)
        ub, uc = (jnp.einsum("btd,dgn->btgn", x, w) for w in (w_b, w_c))
        valid = segment_ids > 0
        dt = jax.nn.softplus(at_least_f32(jnp.einsum("btd,dh->bth", x, w_dt)) + at_least_f32(dt_bias))
        dt = jnp.where(valid[..., None], dt, 0.0)
        a = -jnp.exp(a_log)
        split = sequence_layout.sequence_split(cfg, t) if self.split_length and layer_cache is None else ((), 1)

        if split[0]:
            xs, y = sequence_parallel_ssm(ux, ub, uc, segment_ids, dt, a, conv_weight, conv_bias, cfg=cfg,
                                          split=split)
        else:
            u = jnp.concatenate([v.reshape(bsz, t, -1) for v in (ux, ub, uc)], axis=-1)
            history = jnp.zeros((bsz, k - 1, channels), dtype) if layer_cache is None else layer_cache["conv"]
            (xs, b, c), extended = _conv_activations(u, segment_ids, conv_weight, conv_bias, history,
                                                     sizes=(h, p, g, n))
            if layer_cache is not None and t == 1:
                y, state = ssd_step(layer_cache["ssm"], xs[:, 0], dt[:, 0], a, b[:, 0], c[:, 0])
                y = y[:, None]
            else:
                initial = None if layer_cache is None else layer_cache["ssm"]
                y, state = ssm_scan(xs, dt, a, b, c, segment_starts(segment_ids), chunk_size=cfg.mamba_chunk_size,
                                    initial_state=initial, impl=cfg.kernel_impl, rows=row_axis(self.split_length))
        y = y + (d_skip[:, None] * at_least_f32(xs)).astype(y.dtype)
        y = gated_rms_norm(y, z, norm_scale, g, cfg.rms_norm_eps)
        out = jnp.einsum("bthp,hpd->btd", y, w_out)
        if layer_cache is None:
            return out, None
        # The conv history after the row's last valid token: extended inputs [v, v + K - 1).
        num_valid = jnp.sum(valid, axis=1)
        rows = num_valid[:, None] + jnp.arange(k - 1)[None, :]
        conv = jnp.take_along_axis(extended, rows[..., None], axis=1).astype(layer_cache["conv"].dtype)
        return out, {"conv": conv, "ssm": state.astype(layer_cache["ssm"].dtype)}


def init_layer_cache(cfg: ModelConfig, batch_size: int, dtype) -> dict:
    """An empty Mamba-2 layer cache: conv history [B, K-1, C] in ``dtype``, SSM state [B, H, P, N] in
    float32 (float64 for a float64 ``dtype``)."""
    state_dtype = jnp.promote_types(dtype, jnp.float32)
    return {"conv": jnp.zeros((batch_size, cfg.mamba_conv_kernel - 1, conv_channels(cfg)), dtype),
            "ssm": jnp.zeros((batch_size, cfg.mamba_num_heads, cfg.mamba_head_dim, cfg.mamba_state_size),
                             state_dtype)}
