"""Multi-host reward-model, GRPO and RLHF stages: 2 processes x 4 CPU devices train like 1 x 8, resume exactly.

``launch.local`` runs ``tests/launch/rl_stages_config.py:<kind>`` (a 1-layer dense tiny model, 3 steps, a log
line and a checkpoint every step, ``fsdp`` over all 8 devices so every parameter is split across both processes)
twice at once: A = 1 process x 8 devices, B = 2 processes x 4 devices (``jax.distributed`` on localhost, gloo).

* ``reward_model``: every process reads the same pair stream and puts its devices' rows of each global batch on
  the mesh (``runtime.put_global_batch``); the held-out pairwise evaluation gathers the scores to every process.
* ``grpo`` with ``rl.kl_coef > 0``: every process draws the same prompts, the sampler's rows (split over both
  processes) are gathered to every process, which scores them on the host; the KL reference log-probs are
  gathered the same way; then the one jitted step on the global batch.
* ``rlhf`` (KL 0.03) with A's reward model: the reward model scores the rollouts on the mesh, gathered; the
  rollouts are packed (``rl.pack_rollouts``) into fewer rows, the same on every process.
* exact resume: GRPO again as 2 x 4, SIGKILLed as soon as its first checkpoint is finished and launched again
  on its workdir; every process restores its shards and its data-iterator position, the relaunch logs only
  the later steps and ends with B's ``metrics.jsonl`` and ``eval.json`` and B's params bit for bit.

Checks per stage: A and B log the same metrics (``metrics.jsonl``, written by process 0 only; rtol 1e-5, atol
1e-6 for values that are float noise around 0, e.g. a mean advantage of ~1e-8), the same evaluation
(``eval.json``, written by process 0 only) and end with the same params (no entry off by more than 1e-5; gloo
reduces across processes in another order than the in-process reductions, hence not bit for bit); progress
lines come from process 0 only; every process saved its data-iterator state with each checkpoint (orbax, all
processes), at the position of the 1-process run. The stages really train: the reward model's loss goes down,
GRPO has a step with non-zero rewards and gradient and a non-zero KL, RLHF non-zero gradients and KL. MOPD runs
the same RL driver; ``test_multiprocess_cascade.py`` runs it on 2 processes (teachers restored per process).
Measured (2 busy cores): params max |A - B| 2.8e-7 (reward model), 3.7e-9 (GRPO), 1.2e-7 (RLHF); metrics within
3e-6 relative; each A+B pair 20-45 s, the kill and resume ~30 s.
"""
import json
import time

import numpy as np
import pytest

import multiprocess_testing as mp
from nemocascade import model as model_lib
from nemocascade.rewards import reward_model as rm

CONFIG = "tests/launch/rl_stages_config.py"
STEPS = 3
METRICS_RTOL, METRICS_ATOL, PARAMS_ATOL = 1e-5, 1e-6, 1e-5


def _workdir(root, kind):
    return root / f"rl_stages_config-{kind}" / "0"


def _run_stage(tmp_path, kind: str, overrides=None, init_params=model_lib.init_params):
    """Runs stage ``kind`` as A and B, checks what every stage must satisfy, returns (B's metrics, the
    evaluations [A's, B's], A's workdir)."""
    start = time.perf_counter()
    one, two = tmp_path / "one", tmp_path / "two"
    single_out, multi_out = mp.run_one_and_two(f"{CONFIG}:{kind}", one, two, overrides or {})
    seconds = time.perf_counter() - start
    dir_one, dir_two = _workdir(one, kind), _workdir(two, kind)
    metrics_one, metrics_two = mp.metrics(dir_one), mp.metrics(dir_two)
    assert [m["step"] for m in metrics_two] == list(range(1, STEPS + 1))
    mp.assert_same_metrics(metrics_one, metrics_two, rtol=METRICS_RTOL, atol=METRICS_ATOL)
    worst, loose = mp.param_gap(*(mp.final_params(d / "checkpoints", init_params) for d in (dir_one, dir_two)))
    print(f"{kind}: max |param diff| {worst:.3g}, {loose:.4%} of entries > 2e-7; A+B {seconds:.1f} s")
    assert worst <= PARAMS_ATOL, f"{kind}: final params differ by up to {worst}"
    evals = [json.loads((d / "eval.json").read_text()) for d in (dir_one, dir_two)]
    assert evals[0].keys() == evals[1].keys()
    # Progress and evaluation lines from process 0 only (each line of process i starts with "[p<i>] ").
    assert len(mp.progress_lines(multi_out, "[p0] ", kind)) == STEPS
    assert len(mp.progress_lines(single_out, "", kind)) == STEPS
    assert not [line for line in multi_out if line.startswith(f"[p1] {kind} step ") or
                line.startswith(f"[p1] [{kind}]")]
    # Every process saved its data-iterator state with every checkpoint, at the 1-process run's position.
    for step in range(1, STEPS + 1):
        positions = mp.data_positions(dir_two / "checkpoints", step, 2)
        assert positions[0] == positions[1] == mp.data_positions(dir_one / "checkpoints", step, 1)[0]
    return metrics_two, evals, dir_one


@pytest.mark.slow
def test_reward_model_and_rlhf_two_processes_train_like_one(tmp_path):
    metrics, evals, reward_model_one = _run_stage(tmp_path / "rm", "reward_model", init_params=rm.init_reward_params)
    assert metrics[-1]["loss"] < metrics[0]["loss"]  # it trains
    one, two = evals[0]["reward_model"], evals[1]["reward_model"]
    assert one["num_pairs"] == two["num_pairs"] == 16
    assert one["pairwise_accuracy"] == two["pairwise_accuracy"]
    assert two["margin_mean"] == pytest.approx(one["margin_mean"], rel=METRICS_RTOL, abs=METRICS_ATOL)

    # RLHF scored by A's reward model (its scores of the rollouts, split over both processes, are gathered), with
    # the rollouts packed (every process packs the same global batch; the KL reference scores the packed rows).
    overrides = {"rl.reward_model": str(reward_model_one / "checkpoints"), "rl.kl_coef": "0.03",
                 "rl.pack_rollouts": "True"}
    metrics, evals, _ = _run_stage(tmp_path / "rlhf", "rlhf", overrides)
    assert evals[0] == evals[1]
    assert all(m["grad_norm"] > 0 for m in metrics) and metrics[-1]["kl"] > 0
    assert all(8 <= m["train_rows"] < 16 for m in metrics)     # packed into fewer rows, whole 8-device units


def _kill_and_resume(tmp_path, kind: str, overrides, straight_root) -> None:
    """Runs ``kind`` as 2 x 4 again, SIGKILLs it at its first checkpoint, relaunches it on the same workdir and
    checks that it resumed there and ended like the uninterrupted 2 x 4 run under ``straight_root``: the same
    ``metrics.jsonl`` and ``eval.json``, bit-identical final params."""
    root, log = tmp_path / "killed", tmp_path / "killed.log"
    workdir, straight = _workdir(root, kind), _workdir(straight_root, kind)
    interrupted_at = mp.kill_at_first_checkpoint(
        mp.start(f"{CONFIG}:{kind}", root, 2, overrides, log_path=log),
        workdir / "checkpoints", log)
    assert 0 < interrupted_at < STEPS
    out = mp.finish(mp.start(f"{CONFIG}:{kind}", root, 2, overrides),
                    f"{kind}: the resumed 2-process run")
    assert f"[p0] [{kind}] resuming from the checkpoint of step {interrupted_at} in {workdir / 'checkpoints'}" in out
    resumed = [int(line.split()[3].split("/")[0]) for line in mp.progress_lines(out, "[p0] ", kind)]
    assert resumed == list(range(interrupted_at + 1, STEPS + 1))
    for name in ("metrics.jsonl", "eval.json"):
        assert (workdir / name).read_text() == (straight / name).read_text(), name
    params, straight_params = (mp.final_params(d / "checkpoints") for d in (workdir, straight))
    for key, value in straight_params.items():
        np.testing.assert_array_equal(params[key], value, err_msg=key)


@pytest.mark.slow
def test_grpo_two_processes_train_like_one_and_resume_exactly(tmp_path):
    overrides = {"rl.kl_coef": "0.1"}
    metrics, evals, _ = _run_stage(tmp_path / "grpo", "grpo", overrides)
    assert evals[0] == evals[1] and evals[1]["if"]["num_examples"] == 8
    assert any(m["reward"] > 0 and m["grad_norm"] > 0 for m in metrics)  # some rollouts earn a reward
    assert metrics[-1]["kl"] > 0  # the policy moved away from the frozen reference
    # Exact resume on 2 processes (the frozen KL reference is rebuilt from the stage's start).
    _kill_and_resume(tmp_path / "grpo", "grpo", overrides, tmp_path / "grpo" / "two")
