"""End to end through ``python -m nemocascade.launch``: a cascade SIGKILLed during MOPD resumes where it stopped.

``experiments/mopd.py`` cut to SFT -> math RL -> MOPD, a few steps each, a 1-layer model, runs twice: straight
through into ``straight/``, and into ``killed/`` with a SIGKILL as soon as MOPD has its first finished
checkpoint, then launched again on ``killed/``. The relaunch must skip SFT and math RL (their files untouched,
their ledger entries unchanged, no training or evaluation of them), resume MOPD from its checkpoint (it logs
only the steps after it) and end with the same ledger (paths relative to the workdir), the same MOPD metrics
and the same final MOPD params as the straight run. The launches share a persistent XLA compilation cache
(the straight run fills it), so the killed run and the relaunch do not compile again.
"""
import json
import os
import re

import pytest

from launch_testing import assert_same_params, final_params, finished_steps, kill_after_first_checkpoint, reaped

from nemocascade.cascade.ledger import Ledger
from nemocascade.checkpoint import Checkpointer

FINISHED = ("sft", "math_rl")
MOPD_STEPS = 10
CONFIG = "experiments/mopd.py"


def _overrides():
    sft, math_rl, mopd = (f"--config.stages.{name}" for name in ("sft", "math_rl", "mopd"))
    flags = ["--config.order=('sft','math_rl','mopd')", "--config.model.num_layers=1",
             "--config.eval.num_examples=2", "--config.eval.max_new_tokens=4",
             f"{sft}.train.steps=2", f"{sft}.optimizer.warmup_steps=1", f"{sft}.train.log_every=1",
             f"{sft}.train.checkpoint_every=2", f"{sft}.data.batch_size=2", f"{sft}.data.toy_mix=math=8,if=8,code=8",
             f"{math_rl}.train.steps=1", f"{math_rl}.train.checkpoint_every=1",
             f"{mopd}.train.steps={MOPD_STEPS}", f"{mopd}.train.checkpoint_every=2"]
    for stage in (math_rl, mopd):
        flags += [f"{stage}.train.log_every=1", f"{stage}.rl.prompts_per_step=2", f"{stage}.rl.num_samples=2",
                  f"{stage}.rl.max_new_tokens=8", f"{stage}.rl.prompts_per_domain=8"]
    return flags


def _read(path):
    with open(path) as f:
        return f.read()


def _normalised_ledger(workdir):
    """The ledger's JSON with ``workdir`` (inside checkpoint paths) replaced by ``<workdir>``."""
    return json.loads(_read(os.path.join(workdir, "ledger.json")).replace(workdir, "<workdir>"))


def _file_stamps(directory):
    """Relative path -> (size, mtime in ns) of every file below ``directory``."""
    stamps = {}
    for root, _, files in os.walk(directory):
        for name in files:
            stat = os.stat(os.path.join(root, name))
            stamps[os.path.relpath(os.path.join(root, name), directory)] = (stat.st_size, stat.st_mtime_ns)
    return stamps


@pytest.mark.slow
def test_cascade_killed_during_mopd_resumes_to_the_same_ledger(tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    mopd_ckpts = os.path.join(killed, "mopd", "checkpoints")
    with reaped() as start:
        start(CONFIG, straight, _overrides(), log_path=str(tmp_path / "straight.log")).finish()

        kill_after_first_checkpoint(start(CONFIG, killed, _overrides(), log_path=str(tmp_path / "killed.log")),
                                    mopd_ckpts)
        interrupted_at = Checkpointer(mopd_ckpts, async_save=False).latest_step()
        assert interrupted_at is not None and 0 < interrupted_at < MOPD_STEPS, finished_steps(mopd_ckpts)
        before = Ledger(os.path.join(killed, "ledger.json")).entries
        assert [e["stage"] for e in before] == list(FINISHED)
        stamps = {stage: _file_stamps(os.path.join(killed, stage)) for stage in FINISHED}

        out = start(CONFIG, killed, _overrides(), log_path=str(tmp_path / "resumed.log")).finish()

    # Finished stages were neither trained, evaluated nor written again.
    for stage in FINISHED:
        assert f"{stage} step " not in out and f"[{stage}] eval" not in out and f"[{stage}] resuming" not in out
        assert _file_stamps(os.path.join(killed, stage)) == stamps[stage], stage
    after = Ledger(os.path.join(killed, "ledger.json")).entries
    assert after[:len(FINISHED)] == before
    # MOPD went on from its checkpoint: only the later steps were run (log_every=1: one line a step).
    assert f"[mopd] resuming from the checkpoint of step {interrupted_at} in {mopd_ckpts}" in out
    assert [int(s) for s in re.findall(rf"^mopd step (\d+)/{MOPD_STEPS}", out, re.M)] == list(
        range(interrupted_at + 1, MOPD_STEPS + 1))

    ledger = _normalised_ledger(killed)
    assert [e["stage"] for e in ledger["entries"]] == [*FINISHED, "mopd"]
    assert ledger["entries"][-1]["step"] == MOPD_STEPS
    assert set(ledger["entries"][-1]["teachers"]) == {"math", "if"}
    assert ledger == _normalised_ledger(straight)
    assert _read(os.path.join(killed, "mopd", "metrics.jsonl")) == _read(os.path.join(straight, "mopd",
                                                                                      "metrics.jsonl"))
    a, b = (final_params(os.path.join(w, "mopd", "checkpoints"), MOPD_STEPS, num_layers=1) for w in (straight, killed))
    assert_same_params(a, b)
