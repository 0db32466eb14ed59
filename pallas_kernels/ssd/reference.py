"""The SSD recurrence token by token (a lax.scan over time): the oracle of the kernels' tests.

Independent of the chunked algorithm (no chunks, no decay matrices): it is the definition,

    h_t = exp(dt_t * a) * h_{t-1} + dt_t * x_t b_t^T   (h_{t-1} = 0 where starts[t]),   y_t = h_t c_t,

per batch row and head, head h reading group h // (H // G) of b and c. Computes in the promoted
dtype of the inputs and float32 (float64 inputs under jax_enable_x64 stay float64).
"""
import jax
import jax.numpy as jnp


def ssd_sequential(x, dt, a, b, c, starts=None, initial_state=None):
    """x [B, T, H, P], dt [B, T, H], a [H], b/c [B, T, G, N], starts bool [B, T] or None,
    initial_state [B, H, P, N] or None -> (y [B, T, H, P], final state [B, H, P, N]), both in the
    compute dtype."""
    bsz, t, h, p = x.shape
    g, n = b.shape[2:]
    dtype = jnp.result_type(x, dt, a, b, c, jnp.float32)
    per_group = h // g
    b_heads = jnp.repeat(b.astype(dtype), per_group, axis=2)  # [B, T, H, N]
    c_heads = jnp.repeat(c.astype(dtype), per_group, axis=2)
    if starts is None:
        starts = jnp.zeros((bsz, t), bool)
    state = (jnp.zeros((bsz, h, p, n), dtype) if initial_state is None
             else initial_state.astype(dtype))

    def token(state, inputs):
        x_t, dt_t, b_t, c_t, start_t = inputs
        state = jnp.where(start_t[:, None, None, None], 0.0, state)
        decay = jnp.exp(dt_t * a.astype(dtype))[..., None, None]
        state = decay * state + (dt_t[..., None] * x_t)[..., None] * b_t[:, :, None, :]
        return state, jnp.einsum("bhpn,bhn->bhp", state, c_t, precision=jax.lax.Precision.HIGHEST)

    time_major = [jnp.moveaxis(v, 1, 0) for v in (x.astype(dtype), dt.astype(dtype), b_heads, c_heads,
                                                   starts.astype(bool))]
    final, y = jax.lax.scan(token, state, time_major)
    return jnp.moveaxis(y, 0, 1), final
