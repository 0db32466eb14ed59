"""The policy's token log-probs on a rollout batch: one forward, the sampler's temperature.

``token_logprobs`` is traced inside a loss; ``frozen_logprobs`` scores a batch with params that are not
trained (MOPD teachers, the KL reference policy of GRPO / RLHF) as its own jitted call.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nemocascade import losses
from nemocascade import model as model_lib


def token_logprobs(params, cfg: model_lib.ModelConfig, batch, *, temperature: float):
    """f32[N, L] log-prob of ``batch["targets"]`` under softmax(logits / temperature), plus the model aux.

    ``temperature`` must equal the sampler's (0 = greedy sampling, scored at temperature 1), so that a
    fresh rollout's ratio to the sampler is exactly 1 (see ``nemocascade.rollout.sampling``).
    """
    logits, aux = model_lib.forward(params, cfg, batch["tokens"], positions=batch["positions"],
                                    segment_ids=batch["segment_ids"])
    scale = temperature if temperature > 0 else 1.0
    return losses.token_logprobs(logits.astype(jnp.float32) / scale, batch["targets"]), aux


@functools.partial(jax.jit, static_argnames=("cfg", "temperature"))
def frozen_logprobs(params, batch, *, cfg: model_lib.ModelConfig, temperature: float) -> jax.Array:
    """f32[N, L] ``token_logprobs`` of ``batch`` (host or device arrays) under frozen ``params`` (no aux)."""
    return token_logprobs(params, cfg, batch, temperature=temperature)[0]


def moe_metrics(aux) -> dict[str, jax.Array]:
    return {"moe_aux_loss": aux["moe_aux_loss"], "router_z_loss": aux["router_z_loss"],
            "expert_load": aux["expert_load"]}
