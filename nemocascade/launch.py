"""Entry point: ``python -m nemocascade.launch --config=experiments/X.py[:preset] --workdir=DIR``.

``--config.a.b=value`` overrides any field (unknown fields are rejected by ml_collections). The config's
``kind`` picks the job: a single stage (``sft``, ``grpo``, ...) or a whole ``cascade``.

Multi-host: ``--coordinator_address/--num_processes/--process_id/--distributed`` (or the
``NEMOCASCADE_*`` environment, or a Cloud TPU VM) start ``jax.distributed`` first; see
``nemocascade/distributed.py`` and the launchers in ``launch/``.
"""
from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from nemocascade import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path.py[:preset]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and reports.")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = distributed.define_flags()


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    _DISTRIBUTED.maybe_initialize()  # before any JAX computation; INFO logs from process 0 only
    config = _CONFIG.value
    workdir = os.path.abspath(_WORKDIR.value)
    os.makedirs(workdir, exist_ok=True)
    logging.info("config:\n%s", config)
    # Imported here so that `--help` stays fast and flags parse before jax initialises backends.
    from nemocascade import cascade  # pylint: disable=import-outside-toplevel
    cascade.run(config, workdir)


if __name__ == "__main__":
    app.run(main)
