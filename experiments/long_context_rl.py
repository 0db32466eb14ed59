"""Long-context RL: GRPO whose reward is an LLM judge of each answer against the reference answer.

RECIPE.md: long-context RL is rewarded by an LLM judge, with 49K-token responses to inputs of up to 32K tokens,
for 30 steps. The judge (``rl.judge``; ``rewards/answer_judge.py``, after NeMo Gym's ``equivalence_llm_judge``)
reads the question, the reference answer and the rollout's final answer, and writes whether they agree.

A cascade, ``sft`` -> [``judge``] -> ``long_context_rl`` (kind ``grpo`` on the judged domain ``long_context``):
an RL stage alone would start from random weights. The cascade's per-stage evaluation has no domain (a judged
domain needs the judge); the RL stage's own evaluation is its judge's mean reward of greedy held-out answers
before and after (``judge_score`` in the ledger, with toy prompts).

Presets (``--config=experiments/long_context_rl.py:PRESET``):
  tiny (default): CPU minutes. SFT on toy ``long_context`` lookups (a document of 2-4 records ``Kai has 48
    stamps.``, then ``QUESTION: How many stamps does Kai have?``; the reference answer is the sentence, the
    expected answer the count); ``judge``: SFT from ``sft`` on toy ``answer_judge`` transcripts (the judge's
    template, ``[[A=B]]`` / ``[[A!=B]]``; ``configs.tiny_answer_judge_stage``), a judge stage (no stage starts
    from it); GRPO on ``long_context`` judged by it, the judge seeing the question without the document and the
    answer's last number (``configs.tiny_long_context_rl_stage``).
  nano30b: SFT, then RECIPE.md's long-context RL on a v5p-64 (``configs.nano30b_long_context_rl_stage``), judged
    by ``rl.judge.checkpoint`` (REQUIRED: e.g. an instruct model imported with ``nemocascade.hf.convert``).
"""
import ml_collections

from nemocascade import configs


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    if preset == "tiny":
        sft = configs.tiny_sft_stage()
        sft["data"].toy_mix = "long_context=6000"
        stages = {"sft": configs.stage("sft", **sft),
                  "judge": configs.tiny_answer_judge_stage(init_from="sft"),
                  "long_context_rl": configs.tiny_long_context_rl_stage(judge_stage="judge")}
        return configs.cascade_config(name="long_context_rl", model="tiny", mesh=configs.mesh_config(),
                                      order=("sft", "judge", "long_context_rl"), stages=stages,
                                      eval_cfg=configs.eval_config(domains=(),
                                                                   max_new_tokens=configs.TINY_LOOKUP_NEW_TOKENS),
                                      data=configs.shared_data_config())
    if preset == "nano30b":
        stages = {"sft": configs.nano30b_sft_stage(), "long_context_rl": configs.nano30b_long_context_rl_stage()}
        return configs.cascade_config(name="long_context_rl", model=configs.nano30b_model(),
                                      mesh=configs.nano30b_mesh(), order=("sft", "long_context_rl"), stages=stages,
                                      eval_cfg=configs.eval_config(domains=(), num_examples=512, max_new_tokens=49152),
                                      data=configs.nano30b_shared_data(),
                                      init_checkpoint=configs.NANO30B_BASE_CHECKPOINT)
    raise ValueError(f"unknown preset {preset!r} for experiments/long_context_rl.py; known: tiny, nano30b")
