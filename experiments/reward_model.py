"""A Bradley-Terry reward model (the RLHF stage's scorer): the policy backbone + a scalar head.

Presets (``--config=experiments/reward_model.py:PRESET``):
  tiny (default): the tiny MoE from scratch on toy ``chat`` preference pairs (chosen = a short correct
    answer; rejected = off-topic, rude, repetitive or padded with filler), a few CPU minutes; held-out
    pairwise accuracy lands in ``workdir/eval.json``.
  nano30b: the Nemotron-3-Nano attention/MoE layout on a v5p-64 (``configs.nano30b_mesh``). Needs a
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
    config.init_checkpoint = ""   # the base model's checkpoint (python -m nemocascade.hf.convert import); "" = random
    if preset == "tiny":
        config.model = configs.model_config("tiny")
        config.mesh = configs.mesh_config()
        config.update(configs.tiny_reward_model_stage())
    elif preset == "nano30b":
        config.model = configs.nano30b_model()
        config.init_checkpoint = configs.NANO30B_BASE_CHECKPOINT
        config.mesh = configs.nano30b_mesh()
        config.update(configs.nano30b_reward_model_stage())
    else:
        raise ValueError(f"unknown preset {preset!r} for experiments/reward_model.py; known: tiny, nano30b")
    return config
