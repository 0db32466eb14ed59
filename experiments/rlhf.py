"""RLHF: SFT -> a Bradley-Terry reward model on preference pairs -> GRPO on rollouts scored by that model.

A cascade: ``sft`` (the toy domains plus ``chat``) -> ``reward_model`` (backbone from the SFT policy,
trained on ``chat`` preference pairs; held-out pairwise accuracy in the ledger) -> ``rlhf`` (kind ``rlhf``:
``chat`` prompts, rewards = the reward model's scores, standardised per group as GRPO advantages; its
``rl.reward_model`` is filled from the ledger). The RLHF stage starts from the SFT policy (a reward model is
never a starting point) and reports the reward model's mean score of greedy answers to held-out prompts
before and after (``evaluation`` in ``workdir/ledger.json``, and ``workdir/report.md``).

Presets (``--config=experiments/rlhf.py:PRESET``):
  tiny (default): the tiny MoE, CPU, roughly ten minutes on two cores (SFT is most of it).
  nano30b: RECIPE.md's RLHF settings (16K-token responses, 30 steps, 128 prompts x 16 rollouts, lr 3e-6) on a
    v5p-64 (``configs.nano30b_mesh``), with the recipe's KL coefficient 0.03 against the RLHF stage's starting
    policy (the SFT checkpoint, kept frozen beside the trained params: one more params set in device memory);
    the recipe's generative pairwise judge is replaced by a Bradley-Terry model.
"""
import ml_collections

from nemocascade import configs

ORDER = ("sft", "reward_model", "rlhf")


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    if preset == "tiny":
        stages = {"sft": configs.tiny_chat_sft_stage(),
                  "reward_model": configs.stage("reward_model", **configs.tiny_reward_model_stage()),
                  "rlhf": configs.tiny_rlhf_stage()}
        return configs.cascade_config(name="rlhf", model="tiny", mesh=configs.mesh_config(), order=ORDER,
                                      stages=stages, eval_cfg=configs.eval_config(domains=("math",)),
                                      data=configs.shared_data_config())
    if preset == "nano30b":
        stages = {"sft": configs.nano30b_sft_stage(),
                  "reward_model": configs.stage("reward_model", **configs.nano30b_reward_model_stage(tokenizer="")),
                  "rlhf": configs.nano30b_rlhf_stage()}
        return configs.cascade_config(name="rlhf", model=configs.nano30b_model(), mesh=configs.nano30b_mesh(),
                                      order=ORDER,
                                      stages=stages, eval_cfg=configs.eval_config(domains=("math",), num_examples=512,
                                                                                  max_new_tokens=16384),
                                      data=configs.nano30b_shared_data(),
                                      init_checkpoint=configs.NANO30B_BASE_CHECKPOINT)
    raise ValueError(f"unknown preset {preset!r} for experiments/rlhf.py; known: tiny, nano30b")
