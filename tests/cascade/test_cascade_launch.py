"""End to end: the main job (``experiments/mopd.py``) through ``python -m nemocascade.launch``, shortened.

SFT -> IF-RL -> math RL -> MOPD with a few steps each, a 1-layer model, on a 2-device data-parallel CPU mesh:
every stage trains from its predecessor, the ledger records each stage's held-out scores, MOPD's teachers are
the best earlier stage per domain, and a second launch on the finished workdir skips every stage.
"""
import json
import os
import subprocess
import sys

import pytest

from nemocascade.cascade.ledger import Ledger
from cpu_env import cpu_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ORDER = ("sft", "if_rl", "math_rl", "mopd")
SFT_STEPS, RL_STEPS = 6, 2


def _overrides():
    flags = ["--config.model.num_layers=1", f"--config.stages.sft.train.steps={SFT_STEPS}",
             "--config.stages.sft.optimizer.warmup_steps=2", "--config.stages.sft.train.log_every=3",
             f"--config.stages.sft.train.checkpoint_every={SFT_STEPS}", "--config.stages.sft.data.batch_size=4",
             "--config.stages.sft.data.toy_mix=math=40,if=40,code=40", "--config.eval.num_examples=4",
             "--config.eval.max_new_tokens=8"]
    for stage in ORDER[1:]:
        flags += [f"--config.stages.{stage}.train.steps={RL_STEPS}", f"--config.stages.{stage}.train.log_every=1",
                  f"--config.stages.{stage}.train.checkpoint_every={RL_STEPS}",
                  f"--config.stages.{stage}.rl.prompts_per_step=2", f"--config.stages.{stage}.rl.max_new_tokens=16"]
    return flags


def _launch(workdir):
    proc = subprocess.run([sys.executable, "-m", "nemocascade.launch", "--config=experiments/mopd.py",
                           f"--workdir={workdir}", *_overrides()], cwd=REPO, env=cpu_env(2), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc.stdout


def _metric_steps(path):
    with open(path) as f:
        return [json.loads(line)["step"] for line in f]


@pytest.mark.slow
def test_tiny_cascade_runs_end_to_end_and_skips_finished_stages(tmp_path):
    workdir = str(tmp_path / "cascade")
    out = _launch(workdir)
    ledger = Ledger(os.path.join(workdir, "ledger.json"))
    entries = [ledger.entry(name) for name in ORDER]
    assert [e["stage"] for e in entries] == list(ORDER)
    assert [e["step"] for e in entries] == [SFT_STEPS, RL_STEPS, RL_STEPS, RL_STEPS]
    for entry in entries:
        assert set(entry["scores"]) == {"math", "if"}
        for score in entry["scores"].values():
            assert score["num_examples"] == 4 and 0.0 <= score["pass_at_1"] <= score["mean_reward"] + 1e-9
        assert f"[{entry['stage']}] eval math: pass@1" in out
    assert _metric_steps(os.path.join(workdir, "sft", "metrics.jsonl")) == [3, 6]
    for stage in ORDER[1:]:
        assert _metric_steps(os.path.join(workdir, stage, "metrics.jsonl")) == [1, 2]
        with open(os.path.join(workdir, stage, "metrics.jsonl")) as f:
            assert all(0.0 <= json.loads(line)["reward"] <= 1.0 for line in f)
    teachers = entries[-1]["teachers"]
    assert set(teachers) == {"math", "if"}
    for domain, teacher in teachers.items():
        best = ledger.best_for(domain, among=list(ORDER[:3]))
        assert teacher == {"stage": best["stage"], "checkpoint_dir": best["checkpoint_dir"]}

    before = open(os.path.join(workdir, "ledger.json")).read()
    again = _launch(workdir)
    assert "eval math" not in again
    assert open(os.path.join(workdir, "ledger.json")).read() == before
