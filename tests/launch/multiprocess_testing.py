"""Shared machinery of the multi-process launch tests (``test_multiprocess_{sft,rl,cascade}.py``).

A run is ``launch.local`` for one config on 8 CPU devices in all: 1 process x 8 devices, or 2 processes x 4
devices that start ``jax.distributed`` on localhost (gloo over TCP). The helpers start runs in their own
session (so a timeout can kill every process), read what a run left in its workdir (``metrics.jsonl``, the
final checkpoint's params) and compare two runs.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Mapping, Sequence

import jax
import numpy as np
import portpicker
import pytest

from nemocascade import checkpoint as checkpoint_lib
from nemocascade import model as model_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 420  # per launcher run; a run takes ~20-30 s on 2 idle cores, several times that on a busy machine
DEVICES = 8


def start(config: str, root, processes: int, overrides: Mapping[str, str], *, log_path=None,
          launcher_args: Sequence[str] = ()) -> subprocess.Popen:
    """``launch.local --config=<config>`` with ``overrides`` under ``root`` on ``processes`` x (8 / processes) CPU
    devices, in its own session (with the test run's persistent compilation cache: ``tests/conftest.py``; the
    1 x 8 and 2 x 4 runs compile different programs, a relaunch loads its own). Its output goes to a pipe
    (read by :func:`finish`), or to the file ``log_path`` for a run that a test polls and kills (a pipe nobody
    reads meanwhile could fill up and stall it). ``launcher_args``: more ``launch.local`` flags (e.g. ``--entry``)."""
    args = [sys.executable, "-m", "launch.local", f"--config={config}", f"--root_workdir={root}",
            f"--processes={processes}", f"--cpu_devices={DEVICES // processes}", "--platform=cpu",
            f"--port={portpicker.pick_unused_port()}", *(f"--override={k}={v}" for k, v in overrides.items()),
            *launcher_args]
    if log_path is None:
        return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    with open(log_path, "w") as log:
        return subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


def finish(proc: subprocess.Popen, what: str) -> list[str]:
    """Waits for a launcher started by :func:`start`; fails with its output's tail; returns its output lines."""
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill(proc)
        out, _ = proc.communicate()
        pytest.fail(f"{what} did not finish within {TIMEOUT_S} s; output tail:\n{out[-6000:]}")
    if proc.returncode:
        pytest.fail(f"{what} exited with status {proc.returncode}; output tail:\n{out[-6000:]}")
    return out.splitlines()


def kill(proc: subprocess.Popen) -> None:
    """Kills a launcher started by :func:`start` and every process it started, if still running."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def kill_at_first_checkpoint(proc: subprocess.Popen, checkpoint_dir, log_path) -> int:
    """Polls ``checkpoint_dir`` until orbax has finished a checkpoint (it renames ``<step>.orbax-checkpoint-tmp``
    to ``<step>`` when done), SIGKILLs the run started by :func:`start` (which must still be running: the
    assertion shows its log) and returns the latest finished step."""
    deadline, steps = time.time() + TIMEOUT_S, []
    while time.time() < deadline and proc.poll() is None and not steps:
        time.sleep(0.01)
        if os.path.isdir(checkpoint_dir):
            steps = sorted(int(name) for name in os.listdir(checkpoint_dir) if name.isdigit())
    alive = proc.poll() is None
    kill(proc)
    with open(log_path) as log:
        assert alive and steps, f"no checkpoint to kill the run at in {TIMEOUT_S} s; log tail:\n{log.read()[-6000:]}"
    return max(int(name) for name in os.listdir(checkpoint_dir) if name.isdigit())


def run_one_and_two(config: str, one, two, overrides: Mapping[str, str],
                    launcher_args: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Runs ``config`` as 1 process x 8 devices under ``one`` and 2 processes x 4 devices under ``two``, both at
    once; returns their output lines (if one fails, the other is killed)."""
    with contextlib.ExitStack() as stack:
        single = start(config, one, 1, overrides, launcher_args=launcher_args)
        stack.callback(kill, single)
        multi = start(config, two, 2, overrides, launcher_args=launcher_args)
        stack.callback(kill, multi)
        return (finish(single, f"{config}: the 1-process x 8-device run"),
                finish(multi, f"{config}: the 2-process x 4-device run"))


def metrics(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(rows_one: list[dict], rows_two: list[dict], *, rtol: float, atol: float) -> None:
    """Both runs logged the same steps with the same keys, every value equal to ``rtol`` / ``atol``."""
    assert [m["step"] for m in rows_one] == [m["step"] for m in rows_two]
    for row_one, row_two in zip(rows_one, rows_two):
        assert row_one.keys() == row_two.keys()
        for key in row_one:
            np.testing.assert_allclose(row_two[key], row_one[key], rtol=rtol, atol=atol,
                                       err_msg=f"step {row_one['step']}: {key}")


def final_params(checkpoint_dir, init_params: Callable = model_lib.init_params) -> dict[str, np.ndarray]:
    """The params of a run's last checkpoint as host arrays keyed by path, read in this (1-process) test onto
    one device; ``init_params(cfg, rng)`` gives their structure (a reward model's: ``init_reward_params``)."""
    saved = checkpoint_lib.Checkpointer(str(checkpoint_dir), async_save=False)
    config = saved.restore_config()
    saved.close()
    cfg = model_lib.ModelConfig.from_dict(config["model"])
    shapes = jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=one_device), shapes)
    params = checkpoint_lib.restore_params(str(checkpoint_dir), abstract)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def param_gap(params_one: dict, params_two: dict, *, loose: float = 2e-7) -> tuple[float, float]:
    """(largest |difference| over all entries, fraction of entries that differ by more than ``loose``)."""
    assert params_one.keys() == params_two.keys()
    diffs = np.concatenate([np.abs(params_one[k] - params_two[k]).ravel() for k in params_one])
    return float(diffs.max()), float(np.mean(diffs > loose))


def progress_lines(lines, prefix: str, stage: str) -> list[str]:
    """The printed progress lines (``<stage> step N/M | loss ...``) of the process whose lines start with
    ``prefix`` (``"[p0] "``; ``""`` for a 1-process run)."""
    return [line for line in lines if line.startswith(f"{prefix}{stage} step ")]


def data_positions(checkpoint_dir, step: int, processes: int) -> list[dict]:
    """The data-iterator state each process saved with checkpoint ``step`` (one file per process)."""
    data_dir = checkpoint_dir / str(step) / "data"
    return [json.loads((data_dir / f"process_{i}-of-{processes}.json").read_text()) for i in range(processes)]
