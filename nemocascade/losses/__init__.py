"""Post-training losses as pure functions on arrays: SFT, GRPO, MOPD, Bradley-Terry and DPO.

This package imports only ``jax`` and ``numpy`` (nothing else from nemocascade, no flax), so it can be
copied into or imported from any JAX project. Every function takes arrays and returns arrays, checks its
arguments eagerly (a clear ``ValueError``/``TypeError`` naming the argument, raised at trace time), and
works under ``jax.jit``, ``jax.vmap`` (over extra leading axes), ``jax.grad`` and with sharded inputs.

Shapes: ``B`` sequences, ``T`` tokens, ``V`` vocabulary. ``mask[B, T]`` is 1 on the tokens that count
(response tokens) and 0 elsewhere; masked-out positions of every input are ignored, even if inf/NaN, and
empty rows or an empty batch give finite values. Per-token losses are reduced by ``aggregation``:
``"token_mean"`` (DAPO), ``"seq_mean_token_mean"`` (GRPO; MOPD's Eq. 4) or ``"seq_mean_token_sum_norm"``
(Dr. GRPO); see ``nemocascade.losses.aggregation`` (``grpo_loss`` / ``mopd_loss`` take ``segment_ids`` for rows
packed with several responses, which the per-response mean then tells apart). ``head_logprobs_and_logsumexp``
computes the token log-probs from hidden states and the LM head chunk by chunk, never holding the ``[B, T, V]``
logits. Losses are computed in float32 (bf16 inputs are upcast) and return ``(scalar_loss, aux_dict_of_scalars)``.

Example: GRPO and MOPD in a plain JAX training loop (a toy "policy" that is one logit table per
position; nothing here is specific to nemocascade)::

    import jax
    import jax.numpy as jnp
    from nemocascade.losses import group_advantages, grpo_loss, mopd_loss, token_logprobs

    V, T, G = 8, 6, 16                                 # vocabulary, response length, samples per prompt
    mask = jnp.ones((G, T))                            # every sampled token is a response token

    def logits_of(params):                             # [G, T, V]: G samples of one "prompt"
        return jnp.broadcast_to(params["w"], (G, T, V))

    @jax.jit
    def grpo_step(params, key, lr=1.0):
        logits = logits_of(params)
        tokens = jax.random.categorical(key, logits)   # [G, T] rollouts
        sampler_lp = token_logprobs(logits, tokens)    # what the sampler saw: a constant below
        rewards = jnp.mean(tokens == 3, axis=1)        # reward: how often token 3 was produced
        advantages = group_advantages(rewards, group_size=G)

        def loss_fn(p):
            lp = token_logprobs(logits_of(p), tokens)
            return grpo_loss(lp, sampler_lp, advantages, mask, aggregation="token_mean")

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return jax.tree.map(lambda w, g: w - lr * g, params, grads), aux

    teacher = {"w": 3.0 * jax.random.normal(jax.random.key(1), (T, V))}

    @jax.jit
    def mopd_step(student, key, lr=1.0):
        tokens = jax.random.categorical(key, logits_of(student))
        rollout_lp = token_logprobs(logits_of(student), tokens)
        teacher_lp = token_logprobs(logits_of(teacher), tokens)

        def loss_fn(p):
            lp = token_logprobs(logits_of(p), tokens)
            return mopd_loss(lp, rollout_lp, teacher_lp, mask, aggregation="seq_mean_token_mean")

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(student)
        return jax.tree.map(lambda w, g: w - lr * g, student, grads), aux

    policy = student = {"w": jnp.zeros((T, V))}
    key = jax.random.key(0)
    for step in range(30):
        key, grpo_key, mopd_key = jax.random.split(key, 3)
        policy, grpo_aux = grpo_step(policy, grpo_key)     # token 3 becomes more likely
        student, mopd_aux = mopd_step(student, mopd_key)   # -advantage_mean (reverse KL) shrinks
    print(grpo_aux["clip_fraction"], mopd_aux["advantage_mean"])
"""
from .aggregation import AGGREGATIONS, aggregate, masked_mean, zero_outside_mask
from .grpo import group_advantages, grpo_loss
from .lm_head import head_logprobs_and_logsumexp
from .logprobs import token_logprobs, token_logprobs_and_logsumexp
from .mopd import mopd_advantages, mopd_loss
from .preference import bradley_terry_loss, dpo_loss
from .sft import sft_loss, sft_loss_from_logprobs

__all__ = [
    "AGGREGATIONS",
    "aggregate",
    "bradley_terry_loss",
    "dpo_loss",
    "group_advantages",
    "grpo_loss",
    "head_logprobs_and_logsumexp",
    "masked_mean",
    "mopd_advantages",
    "mopd_loss",
    "sft_loss",
    "sft_loss_from_logprobs",
    "token_logprobs",
    "token_logprobs_and_logsumexp",
    "zero_outside_mask",
]
