"""The chunked SSD scan in plain jnp (the "xla" impl): the kernels' chunk math, batched by vmap.

Where the kernels walk the chunks of a head one after the other, carrying the state, XLA gets the
matmul-heavy parts of all chunks at once: the intra-chunk outputs and the chunk states (vmapped
`chunk_math` over [B, H, K]), then a lax.scan over K that only scales and adds [B, H, P, N] states,
then every chunk's share of its incoming state. Differentiable (plain jnp). b and c are repeated
to the H heads and the [L, L] scores are made per head, not per group (nemocascade.model.ssd shares
them across a group's heads); the two agree to float32 rounding (tested).
"""
import jax
import jax.numpy as jnp

from pallas_kernels.ssd import chunk_math


def _over_chunks(fn):
    """fn on one chunk of one head -> fn over leading [B, H, K] axes."""
    return jax.vmap(jax.vmap(jax.vmap(fn)))


def ssd_xla(x, b, c, vec: chunk_math.ChunkVectors, initial_state):
    """x [B, H, K, L, P], b/c [B, G, K, L, N], vec (leading [B, H, K]), initial_state f32 [B, H, P, N]
    -> (y float32 [B, H, K, L, P], final state float32 [B, H, P, N])."""
    per_group = x.shape[1] // b.shape[1]
    b, c = jnp.repeat(b, per_group, axis=1), jnp.repeat(c, per_group, axis=1)
    intra = _over_chunks(chunk_math.intra_chunk)(x, b, c, vec)
    added = _over_chunks(chunk_math.state_added)(x, b, vec)  # [B, H, K, P, N]

    def step(state, inputs):
        carry, new = inputs
        return carry * state + new, state

    final, incoming = jax.lax.scan(step, initial_state,
                                   (jnp.moveaxis(vec.carry, 2, 0), jnp.moveaxis(added, 2, 0)))
    incoming = jnp.moveaxis(incoming, 0, 2)  # [B, H, K, P, N]: the state entering each chunk
    return intra + _over_chunks(chunk_math.from_state)(c, incoming, vec), final
