"""A Bradley-Terry reward model (the RLHF stage's scorer): the policy backbone + a scalar head.

Presets (``--config=experiments/reward_model.py:PRESET``):
  tiny (default): the tiny MoE from scratch on toy ``chat`` preference pairs (chosen = a short correct
    answer; rejected = off-topic, rude, repetitive or padded with filler), a few CPU minutes; held-out
    pairwise accuracy lands in ``workdir/eval.json``.
  nano30b: the Nemotron-3-Nano attention/MoE layout on a v5p-64-style mesh (fsdp 8 x expert 8). Needs a
    real tokenizer and JSONL pairs (``data.*``, ``reward_model.eval_jsonl``). The paper's RLHF uses a
    generative pairwise judge, not a Bradley-Terry model (RECIPE.md), so these settings are ours: the usual
    BT recipe of one epoch at a small constant learning rate, 128 pairs per step, sequences up to the
    RLHF stage's 16K-token responses plus their prompts.
"""
import ml_collections

from nemocascade import configs


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.kind = "reward_model"
    config.name = "reward_model"
    config.seed = 0
    if preset == "tiny":
        config.model = configs.model_config("tiny")
        config.mesh = configs.mesh_config()
        config.data = configs.preference_data_config()
        config.reward_model = configs.reward_model_config()
        config.optimizer = configs.optimizer_config(
            learning_rate=1e-3, schedule="cosine", warmup_steps=10, end_learning_rate=1e-4,
            b1=0.9, b2=0.98, weight_decay=0.01)
        config.train = configs.train_config(steps=80, log_every=10, checkpoint_every=40)
    elif preset == "nano30b":
        config.model = configs.model_config("nano30b")
        config.mesh = configs.mesh_config(data=1, fsdp=8, expert=8, tensor=1)
        config.data = configs.preference_data_config(
            tokenizer="REQUIRED: path/to/tokenizer.model", jsonl="REQUIRED: path/to/preference_pairs.jsonl",
            seq_len=20480, batch_size=128, too_long="skip")
        config.reward_model = configs.reward_model_config(eval_jsonl="REQUIRED: path/to/heldout_pairs.jsonl",
                                                          eval_batch_size=64)
        config.optimizer = configs.optimizer_config(
            learning_rate=2e-6, schedule="cosine", warmup_steps=20, init_learning_rate=2e-7,
            end_learning_rate=2e-7, b1=0.9, b2=0.95, weight_decay=0.0)
        config.train = configs.train_config(steps=600, log_every=10, checkpoint_every=100)
    else:
        raise ValueError(f"unknown preset {preset!r} for experiments/reward_model.py; known: tiny, nano30b")
    return config
