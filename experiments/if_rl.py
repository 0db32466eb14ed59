"""IF-RL: GRPO on instruction following with rule verifiers, the first RL stage of the Cascade, after SFT.

A cascade of two stages, ``sft`` -> ``if_rl`` (kind ``grpo``; an RL stage alone would start from random
weights). As in the recipe: groups whose rewards are all equal are dropped (DAPO dynamic filtering) and a
response that hits ``max_new_tokens`` gets reward 0 (``rl.filter_uniform_groups`` and
``rl.unfinished_reward_zero``, both on).

Presets (``--config=experiments/if_rl.py:PRESET``):
  tiny (default): the tiny MoE on the toy ``if`` domain, CPU minutes.
  nano30b: RECIPE.md's IF-RL (thinking mode, 128 prompts x 16 rollouts, 49K-token responses, ~180 steps,
    lr 3e-6, no KL, router frozen) on a v5p-64 (``configs.nano30b_mesh``); needs the released IF-RL subset as
    JSONL.
"""
import ml_collections

from nemocascade import configs

ORDER = ("sft", "if_rl")


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    if preset == "tiny":
        stages = {"sft": configs.stage("sft", **configs.tiny_sft_stage()),
                  "if_rl": configs.tiny_rl_stage("grpo", domains=("if",))}
        return configs.cascade_config(name="if_rl", model="tiny", mesh=configs.mesh_config(), order=ORDER,
                                      stages=stages, eval_cfg=configs.eval_config(domains=("if", "math")),
                                      data=configs.shared_data_config())
    if preset == "nano30b":
        stages = {"sft": configs.nano30b_sft_stage(),
                  "if_rl": configs.nano30b_rl_stage("grpo", domains=("if",), jsonl="if_rl.jsonl", steps=180,
                                                    max_new_tokens=49152)}
        return configs.cascade_config(name="if_rl", model=configs.nano30b_model(), mesh=configs.nano30b_mesh(),
                                      order=ORDER,
                                      stages=stages, eval_cfg=configs.eval_config(domains=("if", "math"),
                                                                                  num_examples=512,
                                                                                  max_new_tokens=49152),
                                      data=configs.nano30b_shared_data(),
                                      init_checkpoint=configs.NANO30B_BASE_CHECKPOINT)
    raise ValueError(f"unknown preset {preset!r} for experiments/if_rl.py; known: tiny, nano30b")
