"""``make_train_step``: the one jitted, state-donating step every stage trains through.

A stage differs only in its loss function and the batch it feeds (see DESIGN.md). The loss function has
the signature ``loss_fn(params, batch, rng) -> (loss: f32[], metrics: dict[str, f32[]])``; everything
else (gradients, accumulation over micro-batches, clipping, the optimizer, post-update hooks such as the
aux-loss-free router-bias nudge) is the same for SFT, GRPO, MOPD and RLHF.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from nemocascade.train.state import TrainState

LossFn = Callable[[Any, Mapping[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
PostUpdateFn = Callable[[Any, dict[str, jax.Array]], Any]


def _split_micro_batches(batch: Mapping[str, jax.Array], num_micro: int):
    """[B, ...] leaves -> [num_micro, B // num_micro, ...]; B must divide evenly."""
    def split(x):
        if x.shape[0] % num_micro:
            raise ValueError(
                f"batch dimension {x.shape[0]} is not divisible by grad_accum_steps={num_micro}")
        return x.reshape(num_micro, x.shape[0] // num_micro, *x.shape[1:])
    return jax.tree.map(split, dict(batch))


def _loss_and_grads(loss_fn: LossFn, params, batch, rng, num_micro: int):
    """Mean loss, mean metrics and mean gradient over ``num_micro`` micro-batches (lax.scan)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_micro == 1:
        (loss, metrics), grads = grad_fn(params, batch, rng)
        return loss, metrics, grads

    micro = _split_micro_batches(batch, num_micro)
    rngs = jax.random.split(rng, num_micro)

    def body(acc, xs):
        micro_batch, micro_rng = xs
        (loss, metrics), grads = grad_fn(params, micro_batch, micro_rng)
        return jax.tree.map(jnp.add, acc, (loss, metrics, grads)), None

    first_batch = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(grad_fn, params, first_batch, rngs[0])
    (loss_shape, metrics_shape), grads_shape = shapes
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss_shape, metrics_shape, grads_shape))
    total, _ = jax.lax.scan(body, zeros, (micro, rngs))
    return jax.tree.map(lambda t: t / num_micro, total)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    state_shardings=None,
    batch_shardings=None,
    grad_accum_steps: int = 1,
    micro_batch_rows: int | None = None,
    learning_rate_fn: optax.Schedule | None = None,
    post_update_fn: PostUpdateFn | None = None,
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns ``step(state, batch) -> (state, metrics)``, jitted, donating ``state``.

    Args:
      loss_fn: ``(params, batch, rng) -> (loss, metrics)``; metrics are f32 scalars (or arrays) averaged
        over micro-batches.
      optimizer: the optax transformation (frozen leaves already masked, see ``make_optimizer``).
      state_shardings: a ``TrainState`` of shardings (in and out), or None to let jit infer.
      batch_shardings: shardings for the batch pytree (or one sharding for all leaves), or None.
      grad_accum_steps: micro-batches per step; the batch's leading dim must divide by it. Gradients
        are the mean over micro-batches (each micro-batch's loss already normalised by the loss fn).
      micro_batch_rows: instead of ``grad_accum_steps``, a batch of ``R`` rows runs the fewest equal
        micro-batches of at most this many rows, ``n = ceil(R / micro_batch_rows)`` (``n`` must divide ``R``):
        for batches whose row count varies (packed RL rollouts), each row count compiling once.
      learning_rate_fn: if given, ``metrics["learning_rate"]`` reports the rate used at this step.
      post_update_fn: ``(new_params, metrics) -> params`` applied after the optimizer, inside the jit
        (e.g. the aux-loss-free router-bias update from ``metrics["expert_load"]``).
    """
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
    if micro_batch_rows is not None and micro_batch_rows < 1:
        raise ValueError(f"micro_batch_rows must be None or >= 1, got {micro_batch_rows}")

    def micro_batches(batch) -> int:
        if micro_batch_rows is None:
            return grad_accum_steps
        rows = jax.tree.leaves(batch)[0].shape[0]
        count = -(-rows // micro_batch_rows)
        if rows % count:
            raise ValueError(f"a batch of {rows} rows does not split into {count} equal micro-batches of at most "
                             f"micro_batch_rows={micro_batch_rows}")
        return count

    def step(state: TrainState, batch):
        rng, step_rng = jax.random.split(state.rng)
        loss, metrics, grads = _loss_and_grads(loss_fn, state.params, batch, step_rng, micro_batches(batch))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics)
        if post_update_fn is not None:
            params = post_update_fn(params, metrics)
        metrics["loss"] = loss
        metrics["grad_norm"] = optax.tree.norm(grads)
        if learning_rate_fn is not None:
            metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
        return new_state, metrics

    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )
