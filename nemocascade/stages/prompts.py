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
    """Reward-fn samples ``{"response", "finished", "rollout_group", "turns", "assistant_turns", **example}`` for
    each rollout row (stop tokens dropped); ``rollout_group`` is the index of the row's example (rows of one prompt
    share it). For a multi-turn episode ``assistant_turns`` holds the text of each assistant turn (the runs of
    sampled tokens between the environment's messages), ``response`` is the final one (the answer the domain's
    reward fn scores) and ``turns`` their number (1 for a single-turn row)."""
    samples = []
    for row, ids in enumerate(rollouts.responses()):
        start = int(rollouts.prompt_lengths[row])
        observed = rollouts.observed[row, start:start + len(ids)]
        turn_ids = _sampled_runs(ids, observed)
        if rollouts.finished[row] and turn_ids[-1] and turn_ids[-1][-1] == tokenizer.eos_id:
            turn_ids[-1] = turn_ids[-1][:-1]
        texts = [tokenizer.decode(t[:-1] if t and t[-1] == tokenizer.eos_id else t) for t in turn_ids[:-1]]
        texts.append(tokenizer.decode(turn_ids[-1]))
        example = examples[row // num_samples]
        samples.append({**example, "response": texts[-1], "finished": bool(rollouts.finished[row]),
                        "rollout_group": row // num_samples, "turns": len(texts), "assistant_turns": texts})
    return samples


def _sampled_runs(ids: list[int], observed: np.ndarray) -> list[list[int]]:
    """``ids`` split into its runs of unobserved (sampled) tokens, in order (one empty run for no ids)."""
    sampled = np.concatenate([[0], ~np.asarray(observed, bool), [0]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(sampled))
    return [list(ids[start:end]) for start, end in zip(edges[::2], edges[1::2])] or [[]]


def as_float_array(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)
