"""Helpers of the end-to-end launch tests: ``python -m nemocascade.launch`` in a subprocess, killed and resumed.

Every launch runs on a 2-device data-parallel CPU mesh in its own session (process group), and :func:`reaped`
SIGKILLs whatever group of its launches is still alive when it exits, also when a test fails midway.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from nemocascade import model as model_lib
from nemocascade.checkpoint import restore_params
from nemocascade.configs import model_config
from cpu_env import cpu_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Launch:
    """One ``nemocascade.launch`` subprocess; stdout and stderr go to ``log_path`` (a file: a pipe that nobody
    reads while the test polls could fill up and stall the run)."""

    def __init__(self, config: str, workdir: str, overrides, *, log_path: str):
        self.log_path = log_path
        cmd = [sys.executable, "-m", "nemocascade.launch", f"--config={config}", f"--workdir={workdir}", *overrides]
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=cpu_env(2))

    def output(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILLs the launch's whole process group (no-op once it is gone) and reaps the launch."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def finish(self, timeout: float = 600) -> str:
        """Waits for a successful exit; returns the output."""
        self.proc.wait(timeout=timeout)
        assert self.proc.returncode == 0, self.output()[-6000:]
        return self.output()


@contextlib.contextmanager
def reaped():
    """Yields ``start(config, workdir, overrides, log_path=...) -> Launch``; on exit every launch started through
    it that still runs is SIGKILLed with its process group. (Launches share the test run's persistent XLA
    compilation cache through the environment: see ``tests/conftest.py``.)"""
    launches: list[Launch] = []

    def start(*args, **kwargs) -> Launch:
        launches.append(Launch(*args, **kwargs))
        return launches[-1]

    try:
        yield start
    finally:
        for launch in launches:
            launch.kill()


def finished_steps(checkpoint_dir: str) -> list[int]:
    """Steps with a finished checkpoint in ``checkpoint_dir``: orbax writes ``<step>.orbax-checkpoint-tmp`` and
    renames it to ``<step>`` once complete. A listing, cheap enough to poll at a high rate."""
    if not os.path.isdir(checkpoint_dir):
        return []
    return sorted(int(name) for name in os.listdir(checkpoint_dir) if name.isdigit())


def kill_after_first_checkpoint(launch: Launch, checkpoint_dir: str, *, timeout: float = 600) -> None:
    """Polls ``checkpoint_dir`` until it holds a finished checkpoint, then SIGKILLs the launch (which must still
    be running then: the assertion says so with its output)."""
    deadline = time.time() + timeout
    while time.time() < deadline and launch.alive() and not finished_steps(checkpoint_dir):
        time.sleep(0.01)
    assert launch.alive(), "the run ended before it could be killed:\n" + launch.output()[-6000:]
    assert finished_steps(checkpoint_dir), f"no checkpoint in {checkpoint_dir} after {timeout} s"
    launch.kill()


def final_params(checkpoint_dir: str, step: int, *, preset: str = "tiny", **model_overrides):
    """The params of the checkpoint of ``step`` (a ``preset`` model with ``model_overrides``) on one device."""
    settings = model_config(preset).to_dict()
    settings.update(model_overrides)
    cfg = model_lib.ModelConfig.from_dict(settings)
    shapes = jax.eval_shape(lambda r: model_lib.init_params(cfg, r), jax.random.PRNGKey(0))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
    return restore_params(checkpoint_dir, abstract, step=step)


def assert_same_params(a, b) -> None:
    """Bit-exact equality of two params trees, leaf by leaf (the failing leaf's path in the message)."""
    for path, x in jax.tree_util.tree_leaves_with_path(a):
        y = b
        for key in path:
            y = y[key.key]
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
