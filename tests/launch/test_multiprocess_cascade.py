"""A whole cascade on 2 local processes x 4 CPU devices runs like on 1 process x 8.

``launch.local`` runs ``tests/launch/cascade_stages_config.py`` (sft -> sft_more -> math_rl (GRPO) -> mopd, which
starts from ``sft`` and distils from ``sft_more``; a 1-layer dense tiny model, a few steps each, ``fsdp`` over all
8 devices so every parameter is split across both processes) as A = 1 x 8 and B = 2 x 4 at once. Between stages
the pipeline hands the finished policy to the next stage in memory, starts MOPD from an earlier stage's
checkpoint, restores its pinned teachers (each process its own shards) and evaluates every stage with greedy
rollouts split over both processes. Checks: the same ledger (stages, steps, held-out scores, MOPD teachers;
paths relative to the workdir) and ``report.md``, written by process 0 only; the same MOPD metrics (rtol 1e-5)
and nearly the same final params: gloo reduces in another order than the in-process reductions and Adam turns
those rounding gaps in near-zero gradients into gaps of up to a fraction of the lr (1e-4) in a few entries, so
no entry may be off by more than 5e-5 and at most 0.1% by more than 2e-7 (measured: 1.1e-5, 0.03%); stage
progress and stage-tagged lines from process 0 only. ~50 s on 2 idle cores.
"""
import json
import time

import pytest

import multiprocess_testing as mp
from cascade_stages_config import ORDER

CONFIG = "tests/launch/cascade_stages_config.py"
RL_STEPS = 2


def _workdir(root):
    return root / "cascade_stages_config" / "0"


def _normalised(workdir, name: str):
    """A file of the workdir with the workdir's path (inside checkpoint paths) replaced by ``<workdir>``."""
    return (workdir / name).read_text().replace(str(workdir), "<workdir>")


@pytest.mark.slow
def test_cascade_on_two_processes_runs_like_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    start = time.perf_counter()
    single_out, multi_out = mp.run_one_and_two(CONFIG, one, two, {})
    seconds = time.perf_counter() - start

    ledgers = [json.loads(_normalised(_workdir(root), "ledger.json")) for root in (one, two)]
    assert [entry["stage"] for entry in ledgers[1]["entries"]] == list(ORDER)
    teachers = ledgers[1]["entries"][-1]["teachers"]
    assert set(teachers) == {"math", "if"} and all("sft_more" in str(t) for t in teachers.values()), teachers
    assert ledgers[0] == ledgers[1]
    assert _normalised(_workdir(one), "report.md") == _normalised(_workdir(two), "report.md")

    metrics = [mp.metrics(_workdir(root) / "mopd") for root in (one, two)]
    assert [m["step"] for m in metrics[1]] == list(range(1, RL_STEPS + 1))
    assert all(m["teacher_gap"] != 0 for m in metrics[1])
    mp.assert_same_metrics(*metrics, rtol=1e-5, atol=1e-6)
    worst, loose = mp.param_gap(*(mp.final_params(_workdir(root) / "mopd" / "checkpoints") for root in (one, two)))
    assert worst <= 5e-5 and loose <= 1e-3, f"MOPD params differ by up to {worst}; {loose:.3%} by more than 2e-7"

    for stage in ORDER:  # process 1 prints no progress or pipeline lines
        assert mp.progress_lines(multi_out, "[p0] ", stage) and not mp.progress_lines(multi_out, "[p1] ", stage)
        assert mp.progress_lines(single_out, "", stage)
    tagged = [line for line in multi_out if line.startswith("[p0] [") and not line.startswith("[p0] [Gloo]")]
    assert tagged and not [line for line in multi_out if line.startswith("[p1] [") and not
                           line.startswith("[p1] [Gloo]")]
    assert set(ORDER) <= {line.split("]")[1].strip(" [") for line in tagged}  # "[p0] [<stage>] ..." lines
    print(f"cascade A vs B: max |MOPD param diff| {worst:.3g}, {loose:.4%} > 2e-7; A+B {seconds:.1f} s")
