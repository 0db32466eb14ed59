"""From task examples to prompt token ids and from sampled ids back to scored samples."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from nemocascade import data as data_lib
from nemocascade.rollout import Rollouts


def encode_prompts(examples: Sequence[dict], tokenizer, *, thinking: bool) -> list[list[int]]:
    """Renders each example's prompt conversation (with its ``tools``, if any, listed in the system turn;
    ending in the assistant header) and tokenizes it."""
    return [tokenizer.encode(data_lib.render_prompt(ex["messages"], tools=ex.get("tools"), thinking=thinking))
            for ex in examples]


def decode_samples(rollouts: Rollouts, examples: Sequence[dict], tokenizer, *, num_samples: int) -> list[dict]:
    """Reward-fn samples ``{"response", "finished", "rollout_group", "turns", **example}`` for each rollout row (stop
    token dropped); ``rollout_group`` is the index of the row's example (rows of one prompt share it). For a
    multi-turn episode ``response`` is its final turn (after the environment's last message: the answer the
    domain's reward fn scores) and ``turns`` the number of assistant turns (1 for a single-turn row)."""
    samples = []
    for row, ids in enumerate(rollouts.responses()):
        start = int(rollouts.prompt_lengths[row])
        observed = rollouts.observed[row, start:start + len(ids)]
        last_observed = observed.nonzero()[0]
        final_turn = ids[int(last_observed[-1]) + 1:] if last_observed.size else ids
        if rollouts.finished[row] and final_turn and final_turn[-1] == tokenizer.eos_id:
            final_turn = final_turn[:-1]
        turns = 1 + int(((observed[1:] & ~observed[:-1]).sum() + observed[:1].sum()))
        example = examples[row // num_samples]
        samples.append({**example, "response": tokenizer.decode(final_turn), "finished": bool(rollouts.finished[row]),
                        "rollout_group": row // num_samples, "turns": turns})
    return samples


def as_float_array(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)
