"""A ``launch.local`` entry point (``--entry=episodes_entry``) for ``test_multiprocess_episodes.py``.

Every process starts ``jax.distributed`` as ``nemocascade.launch`` does, then plays the same multi-turn episodes
on a mesh of every global device: ``--config``'s model with random params split over ``fsdp`` x ``data``, 8 rows
(4 prompts x 2 samples) whose caches are split over all devices in the first turn and gathered into fewer rows as
episodes end. The environment answers a turn that does not end in ``FINAL`` with 1 to 22 ids (longer than one
feeding call's ``FEED_CHUNK``). Each process writes the gathered ``Rollouts`` to
``<workdir>/episodes/process_<i>.npz``.
"""
from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from nemocascade import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file: its model plays the episodes.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where episodes/process_<i>.npz goes.")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = distributed.define_flags()

PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20], [30, 31, 32, 33]]
STOPS = tuple(range(1, 200))    # a random 1024-token model ends a 16-token turn with a stop token 97% of the time
FINAL = tuple(range(1, 40))     # a turn ending in one of these is the episode's last


def respond(row: int, turn_ids: list[int]):
    return None if turn_ids[-1] in FINAL else [300 + row] * (1 + 7 * (row % 4))


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    _DISTRIBUTED.maybe_initialize()
    import jax  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    from nemocascade import model as model_lib  # pylint: disable=import-outside-toplevel
    from nemocascade import sharding  # pylint: disable=import-outside-toplevel
    from nemocascade.rollout import EpisodeLimits, generate_episodes  # pylint: disable=import-outside-toplevel

    cfg = model_lib.ModelConfig.from_dict(_CONFIG.value.model.to_dict())
    mesh = sharding.make_mesh(dict(data=2, fsdp=-1))
    params = sharding.init_params_sharded(cfg, jax.random.PRNGKey(1), mesh)
    ro = generate_episodes(params, cfg, PROMPTS, respond, limits=EpisodeLimits(max_turns=3, turn_tokens=16,
                                                                               total_tokens=96),
                           num_samples=2, temperature=0.8, stop_tokens=STOPS, rng=jax.random.PRNGKey(7), mesh=mesh)
    out_dir = os.path.join(os.path.abspath(_WORKDIR.value), "episodes")
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, f"process_{jax.process_index()}.npz"), tokens=ro.tokens, logprobs=ro.logprobs,
             observed=ro.observed, finished=ro.finished, response_lengths=ro.response_lengths)
    print(f"episodes: process {jax.process_index()} of {jax.process_count()} wrote {len(ro.tokens)} rows", flush=True)


if __name__ == "__main__":
    app.run(main)
