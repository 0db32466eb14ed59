"""Multi-host SFT: 2 local processes x 4 CPU devices train exactly like 1 process x 8 devices.

``launch.local`` runs ``python -m nemocascade.launch --config=experiments/sft.py`` (shortened: 4 steps of
8 packed rows x 128 tokens, a 1-layer dense variant of the tiny model, a log line every 2 steps and a
checkpoint every 2) on a mesh with ``fsdp`` over all 8 devices, so every parameter is split across both
processes and every train step gathers and reduces across them (gloo over TCP). Three runs:

* A: 1 process x 8 devices;  B: 2 processes x 4 devices (``jax.distributed`` on localhost), run at once;
* B resumed: B's last checkpoint is deleted and B is started again; it restores step 2 (state and each
  process's data-iterator position) and redoes steps 3-4.

Checks: A and B log the same metrics (``metrics.jsonl``, written once, by process 0; to rtol 2e-6) and end
with the same params, not bit for bit: gloo's cross-process reductions add in another order than the
in-process ones, so gradients differ at float32 rounding (~1e-7 relative); Adam divides by sqrt(v), which
blows that up for entries whose gradient is itself ~0 (embedding rows of rare tokens), so the check is: no
entry off by more than 1e-5 and at most 0.1% of entries by more than 2e-7 (measured: max 1.7e-6, 0.0012% of
entries above 2e-7; both runs are themselves deterministic). The post-stage evaluation (greedy rollouts split
over both processes, then gathered) runs and scores the same (the untrained model scores 0 either way, so this
checks the path); the resumed B ends bit-identical to the uninterrupted B with the same ``metrics.jsonl``;
progress lines come from process 0 only; each process saved its own data-iterator state, all at the position
of the 1-process run. A persistent compilation cache (in the test's tmp dir) spares the resumed run's
compiles.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import portpicker
import pytest

from nemocascade import checkpoint as checkpoint_lib
from nemocascade import model as model_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 420  # per launcher run; a run takes ~20 s on 2 idle cores, several times that on a busy machine
OVERRIDES = {
    "train.steps": "4", "train.checkpoint_every": "2", "train.log_every": "2", "train.keep_checkpoints": "3",
    # Pinned (not the tuned SFT defaults): the params' run-to-run gap scales with the update size.
    "optimizer.schedule": "constant", "optimizer.learning_rate": "1e-3", "optimizer.warmup_steps": "0",
    "data.batch_size": "8", "data.seq_len": "128", "data.toy_mix": "math=32,if=16,code=16",
    "model.num_layers": "1", "model.block_pattern": "('attention+mlp',)",  # dense: compiles in ~2/3 of the MoE's time
    "mesh.data": "1", "mesh.fsdp": "-1",
    "eval.num_examples": "8", "eval.max_new_tokens": "8",  # 8 rows: the rollouts are split over both processes
}


def _start(root, processes: int, cache_dir) -> subprocess.Popen:
    """``launch.local`` for the shortened SFT config in its own session (so a timeout can kill every process)."""
    args = [sys.executable, "-m", "launch.local", "--config=experiments/sft.py", f"--root_workdir={root}",
            f"--processes={processes}", f"--cpu_devices={8 // processes}", "--platform=cpu",
            f"--port={portpicker.pick_unused_port()}", *(f"--override={k}={v}" for k, v in OVERRIDES.items())]
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, what: str) -> list[str]:
    """Waits for a launcher started by ``_start``; fails with its output's tail; returns its output lines."""
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill(proc)
        out, _ = proc.communicate()
        pytest.fail(f"{what} did not finish within {TIMEOUT_S} s; output tail:\n{out[-6000:]}")
    if proc.returncode:
        pytest.fail(f"{what} exited with status {proc.returncode}; output tail:\n{out[-6000:]}")
    return out.splitlines()


def _kill(proc: subprocess.Popen) -> None:
    """Kills a launcher started by ``_start`` and every process it started, if still running."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _workdir(root):
    return root / "sft" / "0"


def _metrics(root) -> list[dict]:
    return [json.loads(line) for line in (_workdir(root) / "metrics.jsonl").read_text().splitlines()]


def _final_params(root) -> dict[str, np.ndarray]:
    """The params of the run's last checkpoint as host arrays, keyed by path, read in this (1-process) test."""
    directory = _workdir(root) / "checkpoints"
    saved = checkpoint_lib.Checkpointer(str(directory), async_save=False)
    config = saved.restore_config()
    saved.close()
    cfg = model_lib.ModelConfig.from_dict(config["model"])
    shapes = jax.eval_shape(lambda r: model_lib.init_params(cfg, r), jax.random.PRNGKey(0))
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=one_device), shapes)
    params = checkpoint_lib.restore_params(str(directory), abstract)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def _progress_lines(lines, prefix):
    """The printed progress lines (``sft step N/4 | loss ...``) of the process whose lines start with ``prefix``."""
    return [line for line in lines if line.startswith(f"{prefix}sft step ")]


def test_two_processes_train_like_one_and_resume_exactly(tmp_path):
    cache = tmp_path / "jax_cache"
    one, two = tmp_path / "one", tmp_path / "two"
    start = time.perf_counter()
    single, multi = _start(one, 1, cache), _start(two, 2, cache)
    try:
        single_out = _finish(single, "the 1-process x 8-device run")
        multi_out = _finish(multi, "the 2-process x 4-device run")
    finally:  # one failed: do not leave the other running
        _kill(single)
        _kill(multi)
    first_s = time.perf_counter() - start

    # Same metrics, written once (process 0): two log lines, at steps 2 and 4.
    metrics_one, metrics_two = _metrics(one), _metrics(two)
    assert [m["step"] for m in metrics_one] == [m["step"] for m in metrics_two] == [2, 4]
    for row_one, row_two in zip(metrics_one, metrics_two):
        assert row_one.keys() == row_two.keys()
        for key in row_one:
            np.testing.assert_allclose(row_two[key], row_one[key], rtol=2e-6, atol=1e-7, err_msg=key)
    assert metrics_two[1]["loss"] < metrics_two[0]["loss"]  # it trains
    # Same final params (both read back through restore_params onto one device of this process).
    params_one, params_two = _final_params(one), _final_params(two)
    assert params_one.keys() == params_two.keys()
    diffs = np.concatenate([np.abs(params_one[k] - params_two[k]).ravel() for k in params_one])
    worst, loose = float(diffs.max()), float(np.mean(diffs > 2e-7))
    assert worst <= 1e-5 and loose <= 1e-3, f"params differ by up to {worst}; {loose:.2%} by more than 2e-7"
    # The evaluation after the stage (greedy rollouts gathered from both processes) scores the same.
    evals = [json.loads((_workdir(root) / "eval.json").read_text()) for root in (one, two)]
    assert evals[0] == evals[1] and evals[1]["math"]["num_examples"] == 8
    # Progress lines from process 0 only; one data-iterator file per process, at the same position.
    assert len(_progress_lines(multi_out, "[p0] ")) == 2 and not _progress_lines(multi_out, "[p1] ")
    assert len(_progress_lines(single_out, "")) == 2
    data_dir = _workdir(two) / "checkpoints" / "4" / "data"
    positions = [json.loads((data_dir / f"process_{i}-of-2.json").read_text()) for i in range(2)]
    assert positions[0] == positions[1]
    single_data = _workdir(one) / "checkpoints" / "4" / "data" / "process_0-of-1.json"
    assert json.loads(single_data.read_text()) == positions[0]

    # Resume: without the step-4 checkpoint the 2-process run restarts from step 2 and ends where it ended.
    metrics_text = (_workdir(two) / "metrics.jsonl").read_text()
    shutil.rmtree(_workdir(two) / "checkpoints" / "4")
    resumed_out = _finish(_start(two, 2, cache), "the resumed 2-process run")
    assert any(line.startswith("[p0] [sft] resuming from the checkpoint of step 2") for line in resumed_out)
    assert not any(line.startswith("[p1] [sft] resuming") for line in resumed_out)
    assert (_workdir(two) / "metrics.jsonl").read_text() == metrics_text
    params_resumed = _final_params(two)
    for key, value in params_two.items():
        np.testing.assert_array_equal(params_resumed[key], value, err_msg=key)
    print(f"A vs B: max |param diff| {worst:.3g}, {loose:.4%} > 2e-7; A+B {first_s:.1f} s, "
          f"resume {time.perf_counter() - start - first_s:.1f} s")
