"""Turning rollouts into a fixed-shape training batch (shared by GRPO, MOPD and RLHF).

Row layout follows ``Rollouts``: prompt, response, padding. A forward pass over ``tokens`` predicts
token ``t + 1`` at position ``t``, so every per-token array here is shifted by one against ``tokens``:
``targets[:, t] = tokens[:, t + 1]``, ``rollout_logprobs[:, t]`` is the sampler's log-prob of that target
and ``mask[:, t]`` is 1 where that target is a sampled response token. Rows are padded to ``width``
tokens so the jitted step compiles once per stage.
"""
from __future__ import annotations

import numpy as np

from nemocascade.rollout import Rollouts


def rollout_batch(rollouts: Rollouts, *, width: int) -> dict[str, np.ndarray]:
    """Builds ``{tokens, targets, segment_ids, positions, mask, rollout_logprobs}`` (numpy, [N, width]).

    Args:
      rollouts: the sampled rows (their length must not exceed ``width``).
      width: fixed row length in tokens.
    """
    n, length = rollouts.tokens.shape
    if length > width:
        raise ValueError(f"rollout rows have {length} tokens but the training width is {width}; raise "
                         f"rollout.max_prompt_tokens or lower rollout.max_new_tokens")
    tokens = np.zeros((n, width), np.int32)
    tokens[:, :length] = rollouts.tokens
    segment_ids = np.zeros((n, width), np.int32)
    segment_ids[:, :length] = rollouts.segment_ids()
    response_mask = np.zeros((n, width), np.float32)
    response_mask[:, :length] = rollouts.response_mask()
    logprobs = np.zeros((n, width), np.float32)
    logprobs[:, :length] = rollouts.logprobs

    targets = np.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    mask = np.zeros_like(response_mask)
    mask[:, :-1] = response_mask[:, 1:]
    rollout_logprobs = np.zeros_like(logprobs)
    rollout_logprobs[:, :-1] = logprobs[:, 1:]
    positions = np.broadcast_to(np.arange(width, dtype=np.int32), (n, width)).copy()
    return {"tokens": tokens, "targets": targets, "segment_ids": segment_ids, "positions": positions,
            "mask": mask, "rollout_logprobs": rollout_logprobs}
