"""Multi-host exact resume: a GRPO stage on 2 processes x 4 devices, SIGKILLed after a checkpoint and
relaunched, ends like the same run left alone.

``tests/launch/rl_stages_config.py:grpo`` (KL to a frozen reference on, so the resumed run must also rebuild
the reference policy) runs 6 steps with a checkpoint every 2: once straight through, once killed as soon as
its first checkpoint is finished and then launched again on the same workdir. Every process restores its
shards of the state and its data-iterator position; the relaunch logs only the steps after the checkpoint.
The resumed run's ``metrics.jsonl`` (written by process 0) and evaluation are identical to the straight run's
and its final params equal bit for bit (both runs are 2 x 4, so the cross-process reductions are the same).
"""
import json

import numpy as np

import multiprocess_testing as mp

CONFIG = "tests/launch/rl_stages_config.py:grpo"
STEPS = 6
OVERRIDES = {"train.steps": str(STEPS), "train.checkpoint_every": "2", "rl.kl_coef": "0.1"}


def test_grpo_killed_on_two_processes_resumes_exactly(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    workdir = {root: root / "rl_stages_config-grpo" / "0" for root in (straight, killed)}
    cache = tmp_path / "jax_cache"
    mp.finish(mp.start(CONFIG, straight, 2, cache, OVERRIDES), "the straight 2-process run")

    log = tmp_path / "killed.log"
    interrupted_at = mp.kill_at_first_checkpoint(mp.start(CONFIG, killed, 2, cache, OVERRIDES, log_path=log),
                                                 workdir[killed] / "checkpoints", log)
    assert 0 < interrupted_at < STEPS
    out = mp.finish(mp.start(CONFIG, killed, 2, cache, OVERRIDES), "the resumed 2-process run")

    assert any(line.startswith("[p0] [grpo] resuming from the checkpoint of step " f"{interrupted_at} ")
               for line in out), "\n".join(out[-40:])
    resumed_steps = [int(line.split()[3].split("/")[0]) for line in mp.progress_lines(out, "[p0] ", "grpo")]
    assert resumed_steps == list(range(interrupted_at + 1, STEPS + 1))
    texts = [(workdir[root] / "metrics.jsonl").read_text() for root in (straight, killed)]
    assert texts[0] == texts[1]
    assert len(texts[0].splitlines()) == STEPS and any(row["kl"] > 0 for row in map(json.loads, texts[0].splitlines()))
    assert json.loads((workdir[straight] / "eval.json").read_text()) == json.loads(
        (workdir[killed] / "eval.json").read_text())
    params = [mp.final_params(workdir[root] / "checkpoints") for root in (straight, killed)]
    assert params[0].keys() == params[1].keys()
    for key in params[0]:
        np.testing.assert_array_equal(params[1][key], params[0][key], err_msg=key)
