"""End to end through ``python -m nemocascade.launch``: a SIGKILLed SFT run resumes bit-exactly.

Two workdirs run the same short ``experiments/sft.py`` config on a 2-device data-parallel CPU mesh: one
straight through, one killed with SIGKILL as soon as its first checkpoint exists, then restarted. Final params, ``metrics.jsonl`` and
``eval.json`` must be identical.
"""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from nemocascade import model as model_lib
from nemocascade.checkpoint import Checkpointer, restore_params
from nemocascade.configs import model_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 24
OVERRIDES = (f"--config.train.steps={STEPS}",
             "--config.optimizer.warmup_steps=4", "--config.train.log_every=4",
             "--config.train.checkpoint_every=8", "--config.data.batch_size=8",
             "--config.data.toy_mix=math=100,if=100,code=100", "--config.eval.num_examples=8",
             "--config.eval.max_new_tokens=8")


def _launch(workdir):
    cmd = [sys.executable, "-m", "nemocascade.launch", "--config=experiments/sft.py", f"--workdir={workdir}",
           *OVERRIDES]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu",
                                 "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})


def _finish(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def _final_params(workdir):
    cfg = model_lib.ModelConfig.from_dict(model_config("tiny").to_dict())
    shapes = jax.eval_shape(lambda r: model_lib.init_params(cfg, r), jax.random.PRNGKey(0))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
    return restore_params(os.path.join(workdir, "checkpoints"), abstract, step=STEPS)


def _read(path):
    with open(path) as f:
        return f.read()


def test_sigkill_mid_run_then_resume_is_bit_exact(tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    _finish(_launch(straight))

    proc = _launch(killed)
    ckpt_dir = os.path.join(killed, "checkpoints")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(ckpt_dir) and Checkpointer(ckpt_dir, async_save=False).latest_step() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.communicate()[0][-4000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    interrupted_at = Checkpointer(ckpt_dir, async_save=False).latest_step()
    assert interrupted_at is not None and interrupted_at < STEPS, interrupted_at
    assert not os.path.exists(os.path.join(killed, "eval.json"))

    resumed_out = _finish(_launch(killed))
    assert "resuming from the checkpoint of step" in resumed_out, resumed_out[-4000:]

    assert _read(os.path.join(killed, "metrics.jsonl")) == _read(os.path.join(straight, "metrics.jsonl"))
    lines = [json.loads(line) for line in _read(os.path.join(straight, "metrics.jsonl")).splitlines()]
    assert [line["step"] for line in lines] == list(range(4, STEPS + 1, 4))
    assert lines[-1]["ce_loss"] < lines[0]["ce_loss"]
    assert json.loads(_read(os.path.join(killed, "eval.json"))) == json.loads(
        _read(os.path.join(straight, "eval.json")))
    a, b = _final_params(straight), _final_params(killed)
    for path, x in jax.tree_util.tree_leaves_with_path(a):
        y = b
        for key in path:
            y = y[key.key]
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
