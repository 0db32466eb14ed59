"""The policy's token log-probs on a batch: one forward, the sampler's temperature (1 for SFT).

``token_logprobs`` is traced inside a loss; ``frozen_logprobs`` scores a batch with params that are not
trained (MOPD teachers, the KL reference policy of GRPO / RLHF) as its own jitted call.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nemocascade import losses
from nemocascade import model as model_lib


def target_logprobs_and_logsumexp(params, cfg: model_lib.ModelConfig, batch, *, temperature: float = 1.0):
    """``(lp, lse, aux)``: f32[N, L] log-prob of ``batch["targets"]`` under softmax(logits / temperature), the
    log-partitions, and the model aux.

    With ``cfg.logits_chunk_size > 0`` the LM head runs chunk by chunk on the hidden states
    (``losses.head_logprobs_and_logsumexp``: no f32 [N, L, V] logits, in the forward or the backward);
    otherwise from ``forward``'s logits. The two agree to float32 rounding, in a bf16 compute dtype too:
    the chunked head keeps f32 logits, and under jit XLA turns ``forward``'s bf16 head matmul and its f32
    upcast into one f32-output dot (measured on CPU: 5e-7 apart).
    """
    inputs = dict(positions=batch["positions"], segment_ids=batch["segment_ids"])
    if cfg.logits_chunk_size:
        hidden, aux = model_lib.hidden_states(params, cfg, batch["tokens"], **inputs)
        head = model_lib.lm_head(params, cfg)
        lp, lse = losses.head_logprobs_and_logsumexp(hidden.astype(head.dtype), head, batch["targets"],
                                                     chunk_size=cfg.logits_chunk_size, temperature=temperature)
        return lp, lse, aux
    logits, aux = model_lib.forward(params, cfg, batch["tokens"], **inputs)
    lp, lse = losses.token_logprobs_and_logsumexp(logits.astype(jnp.float32) / temperature, batch["targets"])
    return lp, lse, aux


def token_logprobs(params, cfg: model_lib.ModelConfig, batch, *, temperature: float):
    """f32[N, L] log-prob of ``batch["targets"]`` under softmax(logits / temperature), plus the model aux.

    ``temperature`` must equal the sampler's (0 = greedy sampling, scored at temperature 1), so that a
    fresh rollout's ratio to the sampler is exactly 1 (see ``nemocascade.rollout.sampling``).
    """
    scale = temperature if temperature > 0 else 1.0
    lp, _, aux = target_logprobs_and_logsumexp(params, cfg, batch, temperature=scale)
    return lp, aux


@functools.partial(jax.jit, static_argnames=("cfg", "temperature"))
def frozen_logprobs(params, batch, *, cfg: model_lib.ModelConfig, temperature: float) -> jax.Array:
    """f32[N, L] ``token_logprobs`` of ``batch`` (host or device arrays) under frozen ``params`` (no aux)."""
    return token_logprobs(params, cfg, batch, temperature=temperature)[0]


def moe_metrics(aux) -> dict[str, jax.Array]:
    return {"moe_aux_loss": aux["moe_aux_loss"], "router_z_loss": aux["router_z_loss"],
            "expert_load": aux["expert_load"]}
