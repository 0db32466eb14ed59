"""Checkpoints with orbax: train state + data-iterator state + config, keep-N / keep-best, any mesh.

Layout: ``<directory>/<step>/{state,data,config}``. ``state`` is the ``TrainState`` pytree (params,
optimizer state, step, rng), ``data`` the grain iterator's position (one JSON file per process), and
``config`` the run's config as JSON (read back by ``restore_config`` for teacher loading and audits).
Saves are asynchronous where orbax allows; a run killed mid-save leaves only a temporary directory
that orbax ignores on the next start, so the last *finished* checkpoint is what resumes.

Multi-process (one process per host): every process calls ``save``/``restore`` with the same step, on a
``directory`` that all of them see (a shared filesystem or bucket); orbax writes each array shard once,
from the process that holds it, and syncs the processes before a checkpoint counts as finished. Each
process saves its own data-iterator position (``data/process_<i>-of-<n>.json``), so a run resumes with
the process count it was saved with.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib


class Checkpointer:
    """A thin policy layer over ``ocp.CheckpointManager``.

    Args:
      directory: where step directories live (created if missing).
      max_to_keep: newest checkpoints kept (None keeps all). With ``best_metric`` set, the best ones are
        kept instead, ranked by that metric.
      save_every: saves happen at steps that are multiples of this (``force=True`` overrides).
      best_metric: name of a metric passed to ``save(metrics=...)`` to rank checkpoints by.
      best_mode: ``"max"`` or ``"min"`` for ``best_metric``.
      async_save: overlap writing with training.
    """

    def __init__(self, directory: str, *, max_to_keep: int | None = 3, save_every: int = 1,
                 best_metric: str | None = None, best_mode: str = "max", async_save: bool = True):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        self.directory = epath.Path(directory)
        self.save_every = save_every
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            best_fn=(lambda m: float(m[best_metric])) if best_metric else None,
            best_mode=best_mode,
            keep_checkpoints_without_metrics=False if best_metric else True,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
                "config": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state, *, data_iterator=None, config: Mapping[str, Any] | None = None,
             metrics: Mapping[str, float] | None = None, force: bool = False) -> bool:
        """Saves at multiples of ``save_every`` (or when ``force``); returns whether a save was started.

        The cadence is decided here, not by orbax, whose default policy also saves the first step it sees:
        an off-cadence checkpoint would resume mid logging interval and break metric-exact resume.
        """
        if not force and step % self.save_every:
            return False
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if config is not None:
            items["config"] = ocp.args.JsonSave(_jsonable(config))
        return self._manager.save(int(step), args=ocp.args.Composite(**items),
                                  metrics=dict(metrics) if metrics else None, force=True)

    def restore(self, abstract_state, *, step: int | None = None, data_iterator=None):
        """Restores the state into the shardings of ``abstract_state`` (ShapeDtypeStructs with shardings).

        ``data_iterator`` (if given) is moved to the saved position in place. Returns the state.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no finished checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            self._check_data_state(step)
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def _check_data_state(self, step: int) -> None:
        """Raises a FileNotFoundError naming the saved process layout if this process has no iterator state."""
        index, count = jax.process_index(), jax.process_count()
        data_dir = self.directory / str(step) / "data"
        if not (data_dir / f"process_{index}-of-{count}.json").exists():
            saved = sorted(path.name for path in data_dir.glob("process_*.json")) if data_dir.exists() else []
            raise FileNotFoundError(
                f"checkpoint {data_dir.parent} has no data-iterator state for process {index} of {count} "
                f"(it holds {saved or 'none'}): resume with the number of processes that saved it")

    def restore_config(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no finished checkpoint in {self.directory}")
        restored = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return restored["config"]

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _jsonable(config: Mapping[str, Any]) -> dict:
    """ConfigDict / dataclass-ish mapping -> plain JSON types (tuples become lists)."""
    to_dict = getattr(config, "to_dict", None)
    plain = to_dict() if callable(to_dict) else dict(config)
    return json.loads(json.dumps(plain, default=str))


def restore_params(directory: str, abstract_params, *, step: int | None = None):
    """Loads only the params of a saved ``TrainState`` (e.g. a MOPD teacher), placed per ``abstract_params``.

    Reads the state item partially, so optimizer moments are never brought into memory. Params whose saved
    shapes differ from ``abstract_params`` (or that the checkpoint lacks) are a ValueError naming them, raised
    before anything is read.
    """
    checkpointer = Checkpointer(directory, async_save=False)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no finished checkpoint in {directory}")
        path = epath.Path(directory) / str(step) / "state"
        _check_saved_shapes(path, abstract_params, f"{directory} (step {step})")
        restored = ocp.PyTreeCheckpointer().restore(
            path, args=ocp.args.PyTreeRestore(
                item={"params": abstract_params},
                restore_args={"params": jax.tree.map(
                    lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding, global_shape=s.shape,
                                                   dtype=s.dtype), abstract_params)},
                partial_restore=True))
        return restored["params"]
    finally:
        checkpointer.close()


def restore_policy_params(directory: str, cfg, mesh=None, *, step: int | None = None):
    """The params of a policy-shaped checkpoint (``model.abstract_params(cfg)``) in ``directory`` (its latest
    step by default), placed by ``sharding.param_shardings`` on ``mesh`` (None: on the first device)."""
    shapes, _ = model_lib.abstract_params(cfg)
    if mesh is None:
        shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), shapes)
    else:
        shardings = sharding_lib.param_shardings(mesh, cfg)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    return restore_params(directory, abstract, step=step)


def _check_saved_shapes(path, abstract_params, where: str) -> None:
    """ValueError naming the params of ``abstract_params`` that the saved state at ``path`` lacks or holds with
    another shape (from the checkpoint's metadata: no array is read)."""
    saved = ocp.PyTreeCheckpointer().metadata(path).item_metadata.tree.get("params", {})
    stored = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(saved)}
    problems = []
    for key, want in jax.tree_util.tree_leaves_with_path(abstract_params):
        name = jax.tree_util.keystr(key)
        if name not in stored:
            problems.append(f"{name} is missing")
        elif stored[name] != tuple(want.shape):
            problems.append(f"{name} is stored as {stored[name]}, expected {tuple(want.shape)}")
    if problems:
        raise ValueError(f"checkpoint {where} does not hold these params: {'; '.join(problems[:3])}"
                         + (f"; and {len(problems) - 3} more" if len(problems) > 3 else ""))
