"""What one optimizer step of a stage processes, read from an experiment config.

A single-stage config (``kind`` sft / grpo / mopd / rlhf / reward_model) holds its own ``data`` / ``rl`` /
``train`` / ``optimizer``; a cascade (``kind = "cascade"``) holds them per stage in ``stages.<name>`` and
shares ``model`` and ``mesh``.
"""
from __future__ import annotations

import dataclasses
import math

import ml_collections

from nemocascade.rewards.pairwise_judge import comparison_pairs
from nemocascade.rewards.registry import JUDGED_DOMAINS

RL_KINDS = ("grpo", "mopd", "rlhf")
KINDS = ("sft", "reward_model") + RL_KINDS
ANSWER_JUDGE_TEMPLATE_TOKENS = 256  # an allowance for the answer judge's template and the reference answer
JUDGE_TEMPLATE_TOKENS = 32   # an allowance for the judge prompt's ChatML headers around the prompt and the answers


@dataclasses.dataclass(frozen=True)
class Rollout:
    """The sampling phase of an RL step: ``rows`` sequences of ``prompt_len + new_tokens`` KV slots. Multi-turn
    episodes (``turns`` > 1) keep that cache through the episode and feed each observation into it in calls of
    ``rollout.multi_turn.FEED_CHUNK`` tokens."""

    rows: int
    prompt_len: int
    new_tokens: int
    turns: int = 1


@dataclasses.dataclass(frozen=True)
class Workload:
    """One optimizer step of a stage.

    Attributes:
      stage: the stage's name.
      kind: one of ``KINDS``.
      rows: sequences per step (SFT packed rows; 2 x pairs for the reward model; prompts x samples for RL).
      seq_len: tokens per sequence.
      grad_accum_steps: micro-batches the rows are split into.
      optimizer: ``optimizer.name`` (``adamw`` keeps 2 moments, ``sgd`` none).
      freeze_router: router weights get no optimizer state.
      lm_head_loss: the loss reads the LM head's logits (False for the reward model's scalar head).
      rollout: the sampling phase of RL stages, else None.
      resident_models: other models' params kept on device for the step (MOPD: one per distinct teacher,
        the number of domains when the ledger has not named them yet; RLHF: the reward model or the pairwise
        judge; a stage with a judged domain: its answer judge; judges are sized as the policy).
      judge: one sampler call of the judge, ``rl.judge.batch_size`` rows (the judge pads its last call) of
        ``prompt_len + rl.judge.max_new_tokens``. RLHF with a pairwise judge (``rl.judge.checkpoint`` or
        ``rl.judge.stage``): the prompt budget, two whole responses and ``JUDGE_TEMPLATE_TOKENS``; a stage with a
        judged domain (``rewards.JUDGED_DOMAINS``): the prompt budget (the whole question), one whole response and
        ``ANSWER_JUDGE_TEMPLATE_TOKENS``. Else None.
      judge_calls: the judge's sampler calls per step (its comparisons, or its answers (twice with
        ``check_twice_swap``: the worst case), / ``rl.judge.batch_size``, rounded up).
    """

    stage: str
    kind: str
    rows: int
    seq_len: int
    grad_accum_steps: int
    optimizer: str
    freeze_router: bool
    lm_head_loss: bool
    rollout: Rollout | None
    resident_models: int
    judge: Rollout | None = None
    judge_calls: int = 0

    @property
    def tokens(self) -> int:
        return self.rows * self.seq_len


def stage_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The stages a config trains: a cascade's ``order``, else the config's own ``name``."""
    if config.kind == "cascade":
        return tuple(config.order)
    return (config.get("name", config.kind),)


def workload(config: ml_collections.ConfigDict, stage: str | None = None) -> Workload:
    """The ``Workload`` of ``stage`` (a cascade needs one of ``stage_names``; a single stage ignores None)."""
    names = stage_names(config)
    if config.kind == "cascade":
        if stage not in names:
            raise ValueError(f"--stage={stage!r} is not a stage of this cascade; its stages: {list(names)}")
        own = config.stages[stage]
    else:
        if stage is not None and stage not in names:
            raise ValueError(f"--stage={stage!r} given for a single-stage config named {names[0]!r}")
        stage, own = names[0], config
    kind = own.kind
    if kind not in KINDS:
        raise ValueError(f"stage {stage!r} has kind {kind!r}; the planner knows {KINDS}")
    rollout, resident, judge, judge_calls = None, 0, None, 0
    if kind in RL_KINDS:
        rl = own.rl
        rows = rl.prompts_per_step * rl.num_samples
        seq_len = rl.max_prompt_tokens + rl.max_new_tokens
        rollout = Rollout(rows=rows, prompt_len=rl.max_prompt_tokens, new_tokens=rl.max_new_tokens,
                          turns=rl.max_turns)
        if kind == "mopd":
            named = set(dict(rl.teachers).values())
            resident = len(named) if named else len(rl.domains)
        elif kind != "rlhf" and set(rl.domains) & set(JUDGED_DOMAINS):
            resident = 1
            _check_judge_batch(stage, rl)
            judge_calls = math.ceil(rows / rl.judge.batch_size) * (2 if rl.judge.check_twice_swap else 1)
            judge = Rollout(rows=rl.judge.batch_size, new_tokens=rl.judge.max_new_tokens,
                            prompt_len=rl.max_prompt_tokens + rl.max_new_tokens + ANSWER_JUDGE_TEMPLATE_TOKENS)
        elif kind == "rlhf":
            resident = 1
            if rl.judge.checkpoint or rl.judge.stage:
                _check_judge_batch(stage, rl)
                per_prompt = comparison_pairs(rl.num_samples, rl.judge.strategy, swap_positions=rl.judge.swap_positions)
                judge_calls = math.ceil(rl.prompts_per_step * len(per_prompt) / rl.judge.batch_size)
                judge = Rollout(rows=rl.judge.batch_size, new_tokens=rl.judge.max_new_tokens,
                                prompt_len=rl.max_prompt_tokens + 2 * rl.max_new_tokens + JUDGE_TEMPLATE_TOKENS)
    elif kind == "reward_model":
        rows, seq_len = 2 * own.data.batch_size, own.data.seq_len
    else:
        rows, seq_len = own.data.batch_size, own.data.seq_len
    return Workload(stage=stage, kind=kind, rows=rows, seq_len=seq_len,
                    grad_accum_steps=own.train.grad_accum_steps, optimizer=own.optimizer.name,
                    freeze_router=own.train.freeze_router, lm_head_loss=kind != "reward_model",
                    rollout=rollout, resident_models=resident, judge=judge, judge_calls=judge_calls)


def _check_judge_batch(stage: str, rl) -> None:
    if rl.judge.batch_size < 1:
        raise ValueError(f"stage {stage!r}: rl.judge.batch_size={rl.judge.batch_size}; expected >= 1")
