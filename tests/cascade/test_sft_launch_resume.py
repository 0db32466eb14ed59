"""End to end through ``python -m nemocascade.launch``: a SIGKILLed SFT run resumes bit-exactly.

Two workdirs run the same short ``experiments/sft.py`` config (a 1-layer model) on a 2-device data-parallel CPU
mesh: one straight through, one killed with SIGKILL as soon as its first checkpoint exists, then restarted. Final
params, ``metrics.jsonl`` and ``eval.json`` must be identical. The launches share a persistent compilation cache
(the relaunches load the first launch's executables).
"""
import json
import os

import pytest

from launch_testing import assert_same_params, final_params, kill_after_first_checkpoint, reaped

from nemocascade.checkpoint import Checkpointer

STEPS = 24
OVERRIDES = ("--config.model.num_layers=1", f"--config.train.steps={STEPS}",
             "--config.optimizer.warmup_steps=4", "--config.train.log_every=4",
             "--config.train.checkpoint_every=8", "--config.data.batch_size=8",
             "--config.data.toy_mix=math=100,if=100,code=100", "--config.eval.num_examples=8",
             "--config.eval.max_new_tokens=8")


def _read(path):
    with open(path) as f:
        return f.read()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bit_exact(tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    ckpt_dir = os.path.join(killed, "checkpoints")
    with reaped() as start:
        start("experiments/sft.py", straight, OVERRIDES, log_path=str(tmp_path / "straight.log")).finish()
        kill_after_first_checkpoint(start("experiments/sft.py", killed, OVERRIDES,
                                          log_path=str(tmp_path / "killed.log")), ckpt_dir)
        interrupted_at = Checkpointer(ckpt_dir, async_save=False).latest_step()
        assert interrupted_at is not None and interrupted_at < STEPS, interrupted_at
        assert not os.path.exists(os.path.join(killed, "eval.json"))
        resumed_out = start("experiments/sft.py", killed, OVERRIDES, log_path=str(tmp_path / "resumed.log")).finish()
    assert "resuming from the checkpoint of step" in resumed_out, resumed_out[-4000:]

    assert _read(os.path.join(killed, "metrics.jsonl")) == _read(os.path.join(straight, "metrics.jsonl"))
    lines = [json.loads(line) for line in _read(os.path.join(straight, "metrics.jsonl")).splitlines()]
    assert [line["step"] for line in lines] == list(range(4, STEPS + 1, 4))
    assert lines[-1]["ce_loss"] < lines[0]["ce_loss"]
    assert json.loads(_read(os.path.join(killed, "eval.json"))) == json.loads(
        _read(os.path.join(straight, "eval.json")))
    assert_same_params(final_params(os.path.join(straight, "checkpoints"), STEPS, num_layers=1),
                       final_params(ckpt_dir, STEPS, num_layers=1))
