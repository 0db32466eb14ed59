"""The flags every launcher shares: the experiment (config, overrides, sweep), extra env, ``--dry_run``.

``--config=experiments/sft.py:tiny --override=train.steps=50 --sweep=optimizer.learning_rate=1e-3,3e-3``
describes two work units, each run as ``python -m <entry> --config=experiments/sft.py:tiny
--workdir=<root_workdir>/<name>/<i> --config.train.steps=50 --config.optimizer.learning_rate=<v>``.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from absl import app, flags

from launch.experiment import DEFAULT_ENTRY, Experiment, parse_overrides, parse_sweep
from launch.runner import CommandError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ROOT_WORKDIR = "/tmp/nemocascade_runs"

CONFIG = flags.DEFINE_string("config", None, "Experiment config: experiments/X.py[:preset], relative to the "
                             "repository root.")
NAME = flags.DEFINE_string("name", None, "Experiment name (default: the config's stem[-preset]).")
ROOT_WORKDIR = flags.DEFINE_string("root_workdir", DEFAULT_ROOT_WORKDIR,
                                   "Work unit i writes to <root_workdir>/<name>/<i>.")
OVERRIDE = flags.DEFINE_multi_string("override", [], "field=value, repeatable: --config.field=value for every "
                                     "work unit.")
SWEEP = flags.DEFINE_multi_string("sweep", [], "field=v1,v2,..., repeatable: one work unit per combination "
                                  "(cartesian product, in order).")
ENTRY = flags.DEFINE_string("entry", DEFAULT_ENTRY, "Python module every process runs (python -m ENTRY); "
                            "launch.probe checks the multi-host set-up without training.")
ENV = flags.DEFINE_multi_string("env", [], "KEY=VALUE, repeatable: added to every process's environment.")
DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the exact commands and environment, run nothing.")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def experiment(root_workdir: str | None = None) -> Experiment:
    """The :class:`Experiment` the flags describe (``root_workdir`` replaces ``--root_workdir``)."""
    if not CONFIG.value:
        raise ValueError("--config=experiments/X.py[:preset] is required")
    return Experiment(config=CONFIG.value, root_workdir=root_workdir or ROOT_WORKDIR.value, name=NAME.value,
                      overrides=parse_overrides(OVERRIDE.value), sweep=parse_sweep(SWEEP.value),
                      entry=ENTRY.value)


def extra_env() -> dict[str, str]:
    """``--env`` as a dict (later repeats of a key win)."""
    env = {}
    for item in ENV.value:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.fullmatch(key):
            raise ValueError(f"--env {item!r} must be KEY=VALUE with KEY a valid variable name")
        env[key] = value
    return env


def run_launcher(main: Callable[[list[str]], None]) -> None:
    """``app.run(main)``; bad settings and failed commands end with a one-line message and exit status 1."""
    def checked_main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
        try:
            main(argv)
        except (ValueError, FileNotFoundError, CommandError) as error:
            spec = getattr(sys.modules["__main__"], "__spec__", None)
            sys.exit(f"{spec.name if spec else os.path.basename(sys.argv[0])}: {error}")
    app.run(checked_main)
