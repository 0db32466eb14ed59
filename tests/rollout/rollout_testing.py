"""Shared by the rollout tests: the log-probs of sampled rows recomputed by one full forward."""
import jax
import jax.numpy as jnp
import numpy as np

from nemocascade import model as m

_forward = jax.jit(m.forward, static_argnums=(1,))


def full_forward_logprobs(params, cfg, rollouts, temperature, packed):
    """Log-probs of every response token from ONE full forward (rows one per sequence, or packed)."""
    seqs = [rollouts.tokens[i, :p + r] for i, (p, r) in
            enumerate(zip(rollouts.prompt_lengths, rollouts.response_lengths))]
    if packed:
        tokens = np.concatenate(seqs)[None]
        seg = np.concatenate([np.full(len(s), i + 1) for i, s in enumerate(seqs)])[None]
        logits, _ = _forward(params, cfg, jnp.asarray(tokens, jnp.int32), segment_ids=jnp.asarray(seg, jnp.int32))
        offsets = np.cumsum([0] + [len(s) for s in seqs])
        per_seq = [np.asarray(logits[0, offsets[i]:offsets[i + 1]]) for i in range(len(seqs))]
    else:
        width = max(len(s) for s in seqs)
        tokens = np.zeros((len(seqs), width), np.int32)
        seg = np.zeros_like(tokens)
        for i, s in enumerate(seqs):
            tokens[i, :len(s)], seg[i, :len(s)] = s, 1
        logits, _ = _forward(params, cfg, jnp.asarray(tokens), segment_ids=jnp.asarray(seg))
        per_seq = [np.asarray(logits[i, :len(s)]) for i, s in enumerate(seqs)]
    out = []
    for i, s in enumerate(seqs):
        p = rollouts.prompt_lengths[i]
        lp = jax.nn.log_softmax(per_seq[i][p - 1:len(s) - 1] / temperature, axis=-1)
        out.append(np.take_along_axis(np.asarray(lp), s[p:, None], axis=-1)[:, 0])
    return out
