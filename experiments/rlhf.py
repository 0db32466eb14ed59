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
  nano30b_judge: the same RLHF stage scored by the recipe's generative pairwise judge (``configs.nano30b_judge``):
    ``sft`` -> ``rlhf``, every pair of a prompt's 16 rollouts compared by a GenRM checkpoint (imported with
    ``nemocascade.hf.convert``; ``rl.judge.checkpoint`` is REQUIRED).
  tiny_judge: the recipe's reward, a generative pairwise judge, at toy scale: ``sft`` -> ``judge`` (an SFT stage
    from the SFT policy on toy ``judge`` transcripts: a ``chat`` question, its chosen and rejected answers as
    ``response_1`` / ``response_2`` in a random order, and the verdict JSON) -> ``rlhf`` (from the SFT policy: a
    judge stage is not a policy stage, ``pipeline.judge_stages``;
    every rollout compared with the next one of its prompt, ``circular``, by the judge stage's model;
    ``rl.judge.stage``). Its held-out evaluation is the judge's win rate of the final policy over the SFT policy.
"""
import ml_collections

from nemocascade import configs

ORDER = ("sft", "reward_model", "rlhf")
JUDGE_ORDER = ("sft", "judge", "rlhf")


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    if preset == "tiny":
        stages = {"sft": configs.tiny_chat_sft_stage(),
                  "reward_model": configs.stage("reward_model", **configs.tiny_reward_model_stage()),
                  "rlhf": configs.tiny_rlhf_stage()}
        return configs.cascade_config(name="rlhf", model="tiny", mesh=configs.mesh_config(), order=ORDER,
                                      stages=stages, eval_cfg=configs.eval_config(domains=("math",)),
                                      data=configs.shared_data_config())
    if preset in ("nano30b", "nano30b_judge"):
        stages = {"sft": configs.nano30b_sft_stage(),
                  "reward_model": configs.stage("reward_model", **configs.nano30b_reward_model_stage(tokenizer="")),
                  "rlhf": configs.nano30b_rlhf_stage()}
        if preset == "nano30b_judge":
            del stages["reward_model"]
            stages["rlhf"].rl.judge.update(configs.nano30b_judge())
        return configs.cascade_config(name="rlhf", model=configs.nano30b_model(), mesh=configs.nano30b_mesh(),
                                      order=tuple(s for s in ORDER if s in stages),
                                      stages=stages, eval_cfg=configs.eval_config(domains=("math",), num_examples=512,
                                                                                  max_new_tokens=16384),
                                      data=configs.nano30b_shared_data(),
                                      init_checkpoint=configs.NANO30B_BASE_CHECKPOINT)
    if preset == "tiny_judge":
        stages = {"sft": configs.tiny_chat_sft_stage(), "judge": configs.tiny_judge_sft_stage(init_from="sft"),
                  "rlhf": configs.tiny_rlhf_stage()}
        stages["rlhf"].rl.judge.update(stage="judge", strategy="circular", max_new_tokens=40)
        return configs.cascade_config(name="rlhf_judge", model="tiny", mesh=configs.mesh_config(), order=JUDGE_ORDER,
                                      stages=stages, eval_cfg=configs.eval_config(domains=("math",)),
                                      data=configs.shared_data_config())
    raise ValueError(f"unknown preset {preset!r} for experiments/rlhf.py; known: tiny, nano30b, tiny_judge, "
                     f"nano30b_judge")
