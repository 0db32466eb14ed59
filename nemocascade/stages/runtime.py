"""What every stage needs before its first step: model config, mesh, optimizer, state, checkpoints, metrics.

A stage module (``sft``, ``grpo``, ``mopd``, ...) only adds its batch maker and its loss; everything
here is shared, so all stages train through the same ``make_train_step`` and the same loop.

Multi-process (one process per host, ``nemocascade/distributed.py``): every process runs this same code
on the same global mesh. Checkpoints are saved and restored by all processes together (orbax), metrics
are written by process 0 only, and batches go onto the mesh through :func:`put_global_batch`.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from nemocascade import hardware
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.checkpoint import Checkpointer
from nemocascade.metrics import MetricsWriter
from nemocascade.train import (abstract_train_state, create_train_state, make_optimizer, make_schedule,
                               make_train_step, train_state_from_params)
from nemocascade.train.loop import check_cadence, run_steps


@dataclasses.dataclass
class StageContext:
    """The pieces of a stage that do not depend on its kind."""

    name: str
    config: ml_collections.ConfigDict
    workdir: str
    model_cfg: model_lib.ModelConfig
    mesh: jax.sharding.Mesh
    param_shardings: Any
    optimizer: Any
    checkpointer: Checkpointer
    evaluation: dict | None = None  # the stage's own evaluation (set after training), kept in the ledger

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.workdir, "checkpoints")

    def init_params_fn(self, rng):
        return model_lib.init_params(self.model_cfg, rng)


def model_config_from(config: ml_collections.ConfigDict) -> model_lib.ModelConfig:
    return model_lib.ModelConfig.from_dict(config.model.to_dict())


def optimizer_settings(config: ml_collections.ConfigDict) -> dict:
    """``config.optimizer`` as a dict, with ``total_steps <= 0`` meaning the stage's ``train.steps``."""
    settings = config.optimizer.to_dict()
    if settings.get("total_steps", 0) <= 0:
        settings["total_steps"] = config.train.steps
    return settings


def build_context(config: ml_collections.ConfigDict, workdir: str) -> StageContext:
    """Validates the loop cadence, builds mesh/optimizer/checkpointer for ``workdir``."""
    check_cadence(num_steps=config.train.steps, log_every=config.train.log_every,
                  checkpoint_every=config.train.checkpoint_every)
    model_cfg = model_config_from(config)
    mesh = sharding_lib.make_mesh(config.mesh.to_dict())
    param_shardings = sharding_lib.param_shardings(mesh, model_cfg)
    shapes = jax.eval_shape(lambda r: model_lib.init_params(model_cfg, r), jax.random.PRNGKey(0))
    trainable = model_lib.trainable_mask(shapes, model_cfg, freeze_router=config.train.freeze_router)
    optimizer = make_optimizer(optimizer_settings(config), trainable_mask=trainable)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep_checkpoints,
                                save_every=config.train.checkpoint_every)
    return StageContext(name=config.name, config=config, workdir=workdir, model_cfg=model_cfg, mesh=mesh,
                        param_shardings=param_shardings, optimizer=optimizer, checkpointer=checkpointer)


def check_sequence_split(mesh: jax.sharding.Mesh, row_width: int, field: str) -> None:
    """A ValueError unless the mesh's ``sequence`` axis divides the training rows' width ``row_width`` (config
    ``field``): sequence parallelism splits every row's tokens over it, and a width it does not divide would leave
    the rows whole on every ``sequence`` device, each computing the same thing."""
    ways = mesh.shape.get("sequence", 1)
    if row_width % ways:
        raise ValueError(f"{field} = {row_width} is not a multiple of mesh.sequence = {ways}: sequence "
                         f"parallelism splits every training row's tokens {ways} ways")


def batch_ways(mesh: jax.sharding.Mesh) -> int:
    """How many ways the mesh's batch axes (``sharding.batch_axes``) split a batch's rows."""
    return math.prod(mesh.shape[axis] for axis in sharding_lib.batch_axes(mesh))


def check_batch_split(mesh: jax.sharding.Mesh, num_rows: int, field: str) -> None:
    """A ValueError unless the mesh's batch axes (``sharding.batch_axes``) divide a global batch of ``num_rows``
    rows (config ``field``): every device holds an equal share of the rows."""
    ways = batch_ways(mesh)
    if num_rows % ways:
        raise ValueError(f"{field} = {num_rows} rows is not a multiple of the {ways} devices of the mesh's batch "
                         f"axes {sharding_lib.batch_axes(mesh)}")


def init_or_restore_state(ctx: StageContext, *, initial_params=None, data_iterator=None):
    """The stage's state: restored from its last checkpoint if one exists (exact resume), else fresh.

    Args:
      initial_params: params to start from (e.g. the previous stage's); None = random init from the seed.
      data_iterator: a grain iterator moved to its saved position on restore.
    Returns:
      (state, state_shardings).
    """
    latest = ctx.checkpointer.latest_step()
    if latest is not None:
        if jax.process_index() == 0:
            print(f"[{ctx.name}] resuming from the checkpoint of step {latest} in {ctx.checkpoint_dir}",
                  flush=True)
        abstract = abstract_train_state(ctx.init_params_fn, ctx.optimizer, param_shardings=ctx.param_shardings)
        state = ctx.checkpointer.restore(abstract, data_iterator=data_iterator)
        return state, jax.tree.map(lambda a: a.sharding, abstract)
    rng = jax.random.PRNGKey(ctx.config.seed)
    if initial_params is not None:
        return train_state_from_params(initial_params, ctx.optimizer, rng)
    return create_train_state(ctx.init_params_fn, ctx.optimizer, rng, param_shardings=ctx.param_shardings)


def put_global_batch(batch: Mapping[str, Any], sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
    """Host arrays of the whole global batch -> global ``jax.Array``s laid out by ``sharding``.

    Every process passes the same global batch (same shapes, same values): each one runs the same
    deterministic input pipeline (same examples, seed and position) and transfers only the rows its
    own devices hold (``jax.make_array_from_process_local_data`` with ``global_shape`` = the local
    shape slices the local data by each addressable device's index). Why the whole batch everywhere
    rather than a disjoint shard of examples per process: packing turns a stream of conversations into
    rows, so per-process streams would pack into different rows and the global batch (hence the loss
    and the update) would depend on the process count; with one stream, 1 process x 8 devices and 2
    processes x 4 devices train on identical batches, and any mesh (whichever axes split the batch, in
    whatever device order) gets the right rows. The price is that each host tokenizes and packs the
    whole global batch, which is small next to a train step. Single-process this equals ``device_put``.

    Args:
      batch: name -> array-like (e.g. ``int32[B, L]``); every array's leading dim is the global batch.
      sharding: where each array goes (e.g. ``sharding.batch_sharding(mesh)``).
    Returns:
      name -> ``jax.Array`` of the same shape and dtype, sharded by ``sharding``.
    """
    arrays = {name: np.asarray(value) for name, value in batch.items()}
    return {name: jax.make_array_from_process_local_data(sharding, value, value.shape)
            for name, value in arrays.items()}


def build_step(ctx: StageContext, loss_fn, state_shardings, batch_shardings=None, *,
               micro_batch_rows: int | None = None):
    """The one jitted train step for this stage, with the aux-loss-free router-bias nudge when enabled.
    ``micro_batch_rows``: micro-batches of that many rows instead of ``train.grad_accum_steps`` of them."""
    cfg = ctx.model_cfg
    post_update = None
    if cfg.router_score == "sigmoid" and cfg.router_bias_update_rate > 0:
        def post_update(params, metrics):
            return model_lib.update_router_bias(params, metrics["expert_load"], cfg.router_bias_update_rate)
    return make_train_step(loss_fn, ctx.optimizer, state_shardings=state_shardings,
                           batch_shardings=batch_shardings, grad_accum_steps=ctx.config.train.grad_accum_steps,
                           micro_batch_rows=micro_batch_rows,
                           learning_rate_fn=make_schedule(optimizer_settings(ctx.config)),
                           post_update_fn=post_update)


def build_writer(ctx: StageContext, *, tokens_per_step: float | None = None) -> MetricsWriter:
    """Metrics for this stage; MFU uses ``flops_per_token`` at the packed row length when one is known."""
    flops = None
    seq_len = ctx.config.get("data", {}).get("seq_len")
    if tokens_per_step and seq_len:
        flops = tokens_per_step * model_lib.flops_per_token(ctx.model_cfg, seq_len)
    return MetricsWriter(ctx.workdir, total_steps=ctx.config.train.steps, tokens_per_step=tokens_per_step,
                         flops_per_step=flops, peak_flops=hardware.mesh_peak_flops(ctx.mesh), name=ctx.name)


def train_and_close(ctx: StageContext, *, state, step_fn, next_batch, data_iterator=None,
                    tokens_per_step: float | None = None):
    """Runs the stage's remaining steps (``run_steps`` under the mesh, metrics via ``build_writer``), then
    closes the writer and the checkpointer (waiting for the last save). Returns the final state."""
    writer = build_writer(ctx, tokens_per_step=tokens_per_step)
    with jax.set_mesh(ctx.mesh):
        state = run_steps(state=state, step_fn=step_fn, next_batch=next_batch, num_steps=ctx.config.train.steps,
                          checkpointer=ctx.checkpointer, writer=writer, log_every=ctx.config.train.log_every,
                          config=ctx.config, data_iterator=data_iterator)
    writer.close()
    ctx.checkpointer.close()
    return state
