"""A whole cascade on 2 local processes x 4 CPU devices runs like on 1 process x 8.

``launch.local`` runs ``experiments/mopd.py`` cut to SFT -> math RL -> MOPD (a 1-layer dense tiny model, a few
steps each, ``fsdp`` over all 8 devices so every parameter is split across both processes) as A = 1 x 8 and
B = 2 x 4 at once. Between stages the pipeline hands the finished policy to the next stage in memory, picks
MOPD's teachers from the ledger and restores them from their checkpoints (each process its own shards), and
evaluates every stage with greedy rollouts split over both processes. Checks: the same ledger (stages, steps,
held-out scores, MOPD teachers; paths relative to the workdir), written by process 0 only; the same MOPD
metrics (rtol 1e-5) and final params (no entry off by more than 1e-5: gloo reduces in another order than the
in-process reductions); stage progress and pipeline lines from process 0 only; the same ``report.md``.
"""
import json
import time

import multiprocess_testing as mp

CONFIG = "experiments/mopd.py"
ORDER = ("sft", "math_rl", "mopd")
RL_STEPS = 2


def _overrides() -> dict[str, str]:
    overrides = {
        "order": "('sft','math_rl','mopd')", "mesh.data": "1", "mesh.fsdp": "-1",
        "model.num_layers": "1", "model.block_pattern": "('attention+mlp',)",  # dense: compiles faster than MoE
        "eval.num_examples": "8", "eval.max_new_tokens": "8",  # 8 rows: the rollouts are split over both processes
        "stages.sft.train.steps": "4", "stages.sft.train.log_every": "2", "stages.sft.train.checkpoint_every": "4",
        "stages.sft.optimizer.schedule": "constant", "stages.sft.optimizer.warmup_steps": "0",
        "stages.sft.data.batch_size": "8", "stages.sft.data.seq_len": "128",
        "stages.sft.data.toy_mix": "math=32,if=16,code=16",
    }
    for stage in ("math_rl", "mopd"):
        prefix = f"stages.{stage}"
        overrides.update({f"{prefix}.train.steps": str(RL_STEPS), f"{prefix}.train.log_every": "1",
                          f"{prefix}.train.checkpoint_every": str(RL_STEPS), f"{prefix}.rl.prompts_per_step": "4",
                          f"{prefix}.rl.num_samples": "2", f"{prefix}.rl.max_new_tokens": "8",
                          f"{prefix}.rl.prompts_per_domain": "16",
                          # small updates: Adam turns float-rounding gaps into param gaps that grow with the lr
                          f"{prefix}.optimizer.learning_rate": "1e-4"})
    return overrides


def _workdir(root):
    return root / "mopd" / "0"


def _normalised(workdir, name: str):
    """A file of the workdir with the workdir's path (inside checkpoint paths) replaced by ``<workdir>``."""
    return (workdir / name).read_text().replace(str(workdir), "<workdir>")


def test_cascade_on_two_processes_runs_like_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    start = time.perf_counter()
    single_out, multi_out = mp.run_one_and_two(CONFIG, one, two, tmp_path / "jax_cache", _overrides())
    seconds = time.perf_counter() - start

    ledgers = [json.loads(_normalised(_workdir(root), "ledger.json")) for root in (one, two)]
    assert [entry["stage"] for entry in ledgers[1]["entries"]] == list(ORDER)
    assert set(ledgers[1]["entries"][-1]["teachers"]) == {"math", "if"}
    assert ledgers[0] == ledgers[1]
    assert _normalised(_workdir(one), "report.md") == _normalised(_workdir(two), "report.md")

    metrics = [mp.metrics(_workdir(root) / "mopd") for root in (one, two)]
    assert [m["step"] for m in metrics[1]] == list(range(1, RL_STEPS + 1))
    assert all(m["teacher_gap"] != 0 for m in metrics[1])
    mp.assert_same_metrics(*metrics, rtol=1e-5, atol=1e-6)
    worst, loose = mp.param_gap(*(mp.final_params(_workdir(root) / "mopd" / "checkpoints") for root in (one, two)))
    assert worst <= 1e-5, f"final MOPD params differ by up to {worst}"

    for stage in ORDER:  # process 1 prints no progress or pipeline lines
        assert mp.progress_lines(multi_out, "[p0] ", stage) and not mp.progress_lines(multi_out, "[p1] ", stage)
        assert mp.progress_lines(single_out, "", stage)
    assert not [line for line in multi_out if line.startswith("[p1] [")], [l for l in multi_out if l.startswith("[p1] [")]
    print(f"cascade A vs B: max |MOPD param diff| {worst:.3g}, {loose:.4%} > 2e-7; A+B {seconds:.1f} s")
