"""The main job: a tiny Nemotron-Cascade 2 up to MOPD (SFT -> IF-RL -> math RL -> MOPD).

MOPD's teachers are chosen per domain from the ledger: the earlier checkpoint with the best held-out
score on that domain (the paper: math <- SFT, preference <- RLHF branch, multi-domain <- IF-RL + MD-RL).

Presets: ``tiny`` (default; CPU, < 15 minutes) and ``nano30b`` (RECIPE.md settings: 128 prompts x 4
rollouts, 98K-token responses, lr 2e-6 with a 30-step warmup from 2e-7, 52 steps, on a TPU mesh).
"""
from nemocascade import configs


def get_config(preset: str = "tiny"):
    if preset == "tiny":
        # IF-RL learns at 2e-4; math RL and MOPD lose held-out math at that rate on the tiny model (2026-12-05:
        # math RL 0.59 -> 0.44) and gain at 5e-5 (see BENCHMARKS.md).
        stages = {
            "sft": configs.stage("sft", **configs.tiny_sft_stage()),
            "if_rl": configs.tiny_rl_stage("grpo", domains=("if",), learning_rate=2e-4),
            "math_rl": configs.tiny_rl_stage("grpo", domains=("math",), learning_rate=5e-5),
            "mopd": configs.tiny_rl_stage("mopd", domains=("math", "if"), learning_rate=5e-5, num_samples=4,
                                          aggregation="seq_mean_token_mean"),
        }
        return configs.cascade_config(name="mopd", model="tiny", mesh=configs.mesh_config(),
                                      order=("sft", "if_rl", "math_rl", "mopd"), stages=stages,
                                      eval_cfg=configs.eval_config(domains=("math", "if")),
                                      data=configs.shared_data_config())
    if preset == "nano30b":
        mopd_optimizer = configs.optimizer_config(learning_rate=2e-6, warmup_steps=30, init_learning_rate=2e-7)
        stages = {
            "sft": configs.nano30b_sft_stage(),
            "if_rl": configs.nano30b_rl_stage("grpo", domains=("if",), jsonl="if_rl.jsonl", steps=180,
                                              max_new_tokens=49152),
            "math_rl": configs.nano30b_rl_stage("grpo", domains=("math",), jsonl="multi_domain_rl.jsonl", steps=70,
                                                max_new_tokens=49152),
            "mopd": configs.nano30b_rl_stage("mopd", domains=("math", "if"), jsonl="mopd.jsonl", steps=52,
                                             max_new_tokens=98304, num_samples=4, aggregation="seq_mean_token_mean",
                                             optimizer=mopd_optimizer, checkpoint_every=4),
        }
        return configs.cascade_config(name="mopd", model=configs.nano30b_model(), mesh=configs.nano30b_mesh(),
                                      order=("sft", "if_rl", "math_rl", "mopd"), stages=stages,
                                      eval_cfg=configs.eval_config(domains=("math", "if"), num_examples=512,
                                                                   max_new_tokens=98304),
                                      data=configs.nano30b_shared_data(),
                                      init_checkpoint=configs.NANO30B_BASE_CHECKPOINT)
    raise ValueError(f"unknown preset {preset!r} for experiments/mopd.py; known: tiny, nano30b")
