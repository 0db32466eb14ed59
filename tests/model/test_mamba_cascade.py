"""A Mamba-2 / attention / MoE hybrid trains through the real SFT and GRPO stages (the cascade does not care
which blocks the model has), on an fsdp x sequence x tensor mesh that splits the Mamba-2 heads and, in the train
steps (not in the sampler), every row's tokens: GRPO's importance ratio of 1 says that the sequence-parallel
training forward gives the sampler's log-probs."""
import json
import os

import jax
import numpy as np
import pytest

from nemocascade import configs
from nemocascade.cascade import pipeline
from nemocascade.stages import grpo, sft

SMALL = dict(d_model=32, num_heads=2, num_kv_heads=1, expert_hidden_size=32, max_seq_len=128, mamba_num_heads=4,
             mamba_head_dim=8, mamba_state_size=8, mamba_n_groups=2, mamba_chunk_size=16)
SFT_STEPS, RL_STEPS = 4, 2


def _stage_configs():
    stages = {
        "sft": configs.stage("sft", data=configs.sft_data_config(toy_mix="math=16,if=16", seq_len=128, batch_size=4),
                             optimizer=configs.optimizer_config(learning_rate=3e-3),
                             train=configs.train_config(steps=SFT_STEPS, log_every=1, checkpoint_every=SFT_STEPS)),
        "rl": configs.stage("grpo", rl=configs.rl_config(domains=("if",), prompts_per_step=2, num_samples=4,
                                                         max_new_tokens=12, max_prompt_tokens=96,
                                                         prompts_per_domain=8, filter_uniform_groups=False),
                            optimizer=configs.optimizer_config(learning_rate=1e-3),
                            train=configs.train_config(steps=RL_STEPS, log_every=1, checkpoint_every=RL_STEPS)),
    }
    config = configs.cascade_config(name="hybrid", model="tiny_hybrid",
                                    mesh=configs.mesh_config(data=1, fsdp=2, sequence=2, tensor=2), order=("sft", "rl"),
                                    stages=stages, eval_cfg=configs.eval_config(), data=configs.shared_data_config())
    config.model.update(SMALL)
    return pipeline.stage_config(config, "sft"), pipeline.stage_config(config, "rl")


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_tiny_hybrid_trains_through_sft_then_grpo(tmp_path):
    sft_cfg, rl_cfg = _stage_configs()
    assert sft_cfg.model.block_pattern == ("mamba", "attention", "mamba", "moe")
    ctx, sft_state = sft.run(sft_cfg, str(tmp_path / "sft"))
    assert int(sft_state.step) == SFT_STEPS
    assert ctx.param_shardings["layer_0"]["mamba"]["w_x"].spec == jax.sharding.PartitionSpec(("fsdp", "sequence"),
                                                                                             "tensor", None)
    losses = [row["loss"] for row in _metrics(str(tmp_path / "sft"))]
    assert len(losses) == SFT_STEPS and np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    before = jax.device_get(sft_state.params["layer_0"]["mamba"])

    _, rl_state = grpo.run(rl_cfg, str(tmp_path / "rl"), initial_params=sft_state.params)
    assert int(rl_state.step) == RL_STEPS
    rows = _metrics(str(tmp_path / "rl"))
    assert len(rows) == RL_STEPS
    for row in rows:
        # On-policy: the sampler's cached decode (conv + SSM states) gave the training forward's log-probs.
        assert abs(row["ratio_mean"] - 1.0) < 1e-4 and abs(row["approx_kl"]) < 1e-6, row
        assert 0.0 <= row["reward"] <= 1.0 and np.isfinite(row["loss"])
    after = jax.device_get(rl_state.params["layer_0"]["mamba"])
    moved = [name for name in before if not np.array_equal(before[name], after[name])]
    assert "w_x" in moved and "A_log" in moved, moved
