"""The training loop shared by every stage: step, log, checkpoint, resume.

A stage hands in its jitted step (from ``make_train_step``) and a ``next_batch(state)`` callable: SFT
reads the next packed batch; RL stages sample rollouts with ``state.params`` (the policy is never
copied) and score them. Everything else (progress, metrics files, checkpoint cadence, exact resume) is
here once.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from nemocascade.checkpoint import Checkpointer
from nemocascade.metrics import MetricsWriter
from nemocascade.train.state import TrainState

NextBatchFn = Callable[[TrainState], tuple[Mapping[str, Any], Mapping[str, float]]]


def check_cadence(*, num_steps: int, log_every: int, checkpoint_every: int) -> None:
    """Resume is exact only if checkpoints fall on log boundaries (averages cover whole intervals)."""
    if num_steps < 1 or log_every < 1 or checkpoint_every < 1:
        raise ValueError(f"train.steps, train.log_every and train.checkpoint_every must be >= 1, got "
                         f"{num_steps}, {log_every}, {checkpoint_every}")
    if checkpoint_every % log_every:
        raise ValueError(f"train.checkpoint_every ({checkpoint_every}) must be a multiple of train.log_every "
                         f"({log_every}) so that a resumed run writes the same metrics")


def run_steps(*, state: TrainState, step_fn, next_batch: NextBatchFn, num_steps: int,
              checkpointer: Checkpointer, writer: MetricsWriter, log_every: int, config: Mapping[str, Any],
              data_iterator=None) -> TrainState:
    """Runs ``state.step .. num_steps``; saves per the checkpointer's cadence and always at the end.

    ``next_batch(state) -> (batch, host_metrics)``: ``host_metrics`` are scalars computed outside the
    jitted step (e.g. mean reward of the rollouts) and are logged alongside the step's own metrics.
    """
    start = int(state.step)
    writer.truncate_after(start)
    for step in range(start, num_steps):
        batch, host_metrics = next_batch(state)
        state, metrics = step_fn(state, batch)
        writer.update({**metrics, **host_metrics})
        done = step + 1
        if done % log_every == 0 or done == num_steps:
            writer.write(done)
        checkpointer.save(done, state, data_iterator=data_iterator, config=config, force=done == num_steps)
    checkpointer.wait()
    return state
