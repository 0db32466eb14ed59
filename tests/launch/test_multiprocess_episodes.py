"""Multi-turn episodes on 2 processes x 4 CPU devices play like 1 process x 8 (``episodes_entry.py``).

``launch.local --entry=episodes_entry`` runs the same episodes twice at once, as A = 1 x 8 and B = 2 x 4: the rows'
caches are split over every device (both processes) in the first turn, gathered into fewer rows as episodes end,
and fed observations longer than one feeding call; the environment answers on every process from the gathered
tokens. Checks: both processes of B return the same rows, equal to A's (tokens exactly, log-probs to 1e-5), and the
episodes really took several turns of different counts with observations over ``FEED_CHUNK`` tokens.
"""
import numpy as np

import multiprocess_testing as mp
from nemocascade.rollout import multi_turn

CONFIG = "tests/launch/rl_stages_config.py:grpo"      # its model: the 1-layer dense tiny model
ENTRY = ("--entry=episodes_entry", f"--env=PYTHONPATH={mp.REPO}/tests/launch")


def _episodes(root, process: int) -> dict:
    with np.load(root / "rl_stages_config-grpo" / "0" / "episodes" / f"process_{process}.npz") as f:
        return dict(f)


def test_episodes_on_two_processes_play_like_one(tmp_path):
    mp.run_one_and_two(CONFIG, tmp_path / "one", tmp_path / "two", {}, launcher_args=ENTRY)
    one, two, other = _episodes(tmp_path / "one", 0), _episodes(tmp_path / "two", 0), _episodes(tmp_path / "two", 1)
    for key in one:
        np.testing.assert_array_equal(two[key], other[key], err_msg=key)
    for key in ("tokens", "observed", "finished", "response_lengths"):
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    np.testing.assert_allclose(one["logprobs"], two["logprobs"], rtol=1e-5, atol=1e-5)
    # The episodes exercised the multi-turn path: observations fed in several calls, rows ending at different turns.
    runs = [len(run) for flags in one["observed"] for run in "".join("x" if f else " " for f in flags).split()]
    assert max(runs) > multi_turn.FEED_CHUNK
    observations_per_row = {sum(1 for _ in "".join("x" if f else " " for f in flags).split())
                            for flags in one["observed"]}
    assert len(observations_per_row) > 1, observations_per_row
