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
    """Reward-fn samples ``{"response", "finished", "rollout_group", **example}`` for each rollout row (stop token
    dropped); ``rollout_group`` is the index of the row's example (rows of one prompt share it)."""
    samples = []
    for row, ids in enumerate(rollouts.responses()):
        if rollouts.finished[row] and ids and ids[-1] == tokenizer.eos_id:
            ids = ids[:-1]
        example = examples[row // num_samples]
        samples.append({**example, "response": tokenizer.decode(ids), "finished": bool(rollouts.finished[row]),
                        "rollout_group": row // num_samples})
    return samples


def as_float_array(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)
