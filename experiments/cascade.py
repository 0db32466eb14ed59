"""The whole Nemotron-Cascade 2 post-training, in the paper's order.

``sft`` -> ``if_rl`` -> ``multi_domain_rl`` -> ``mopd`` -> ``reward_model`` -> ``rlhf`` -> ``code_rl``
(RECIPE.md: IF-RL first because it lowers human-preference scores, which RLHF restores; code RL last; SWE RL
comes after it: ``experiments/swe_rl.py``, started from this cascade's checkpoint with ``init_checkpoint``).
Every policy stage starts from the previous one and is evaluated on math / if / code afterwards
(``workdir/ledger.json``); MOPD's teachers are the best earlier stage per domain; the reward model
is trained (backbone from the latest policy) just before RLHF, which scores with it; ``workdir/report.md`` and
``workdir/scores.png`` summarise the run.

Multi-domain RL: at nano30b on RECIPE.md's mix (MCQA / tool calling / structured output, their own verifiers;
``experiments/grpo.py`` says how released rows are read); the tiny preset keeps math / if / code.

Long-context RL (``experiments/long_context_rl.py``): GRPO on the judged domain ``long_context``, rewarded by an
LLM judge of each answer against the reference answer. It is left out of the default order; the
``*_long_context`` presets put it between RLHF and code RL, where the paper has it. At toy scale its judge is the
``lc_judge`` stage (SFT from ``sft`` on toy answer-judge transcripts; the SFT stage also learns the toy lookups);
at nano30b ``stages.long_context_rl.rl.judge.checkpoint`` is REQUIRED (e.g. an instruct model imported with
``nemocascade.hf.convert``).

Presets (``--config=experiments/cascade.py:PRESET``):
  tiny (default): the tiny MoE on the toy domains, CPU (tens of minutes on two cores).
  nano30b: RECIPE.md's settings per stage on a v5p-64 (``configs.nano30b_mesh``: each stage plans to fit,
    ``python -m nemocascade.plan``); needs the real tokenizer and data (JSONL).
  tiny_long_context, nano30b_long_context: the same with long-context RL.
"""
import ml_collections

from nemocascade import configs

ORDER = ("sft", "if_rl", "multi_domain_rl", "mopd", "reward_model", "rlhf", "code_rl")
TINY_LONG_CONTEXT_ORDER = ORDER[:6] + ("lc_judge", "long_context_rl") + ORDER[6:]
NANO30B_LONG_CONTEXT_ORDER = ORDER[:6] + ("long_context_rl",) + ORDER[6:]
DOMAINS = ("math", "if", "code")
RECIPE_MIX = ("mcqa", "tool_call", "structured_output")   # RECIPE.md's multi-domain RL data (see experiments/grpo.py)
PRESETS = ("tiny", "nano30b", "tiny_long_context", "nano30b_long_context")


def _tiny_stages(*, long_context: bool) -> dict:
    sft = configs.tiny_chat_sft_stage()
    if long_context:
        sft.data.toy_mix += ",long_context=3000"
    return {
        "sft": sft,
        "if_rl": configs.tiny_rl_stage("grpo", domains=("if",)),
        "multi_domain_rl": configs.tiny_rl_stage("grpo", domains=DOMAINS, learning_rate=5e-5),
        "mopd": configs.tiny_rl_stage("mopd", domains=DOMAINS, learning_rate=5e-5, num_samples=4,
                                      aggregation="seq_mean_token_mean"),
        "reward_model": configs.stage("reward_model", **configs.tiny_reward_model_stage()),
        "rlhf": configs.tiny_rlhf_stage(),
        "lc_judge": configs.tiny_answer_judge_stage(init_from="sft"),
        "long_context_rl": configs.tiny_long_context_rl_stage(judge_stage="lc_judge"),
        "code_rl": configs.tiny_rl_stage("grpo", domains=("code",), top_p=0.95),
    }


def _nano30b_stages() -> dict:
    mopd_optimizer = configs.optimizer_config(learning_rate=2e-6, warmup_steps=30, init_learning_rate=2e-7)
    return {
        "sft": configs.nano30b_sft_stage(),
        "if_rl": configs.nano30b_rl_stage("grpo", domains=("if",), jsonl="if_rl.jsonl", steps=180,
                                          max_new_tokens=49152),
        "multi_domain_rl": configs.nano30b_rl_stage("grpo", domains=RECIPE_MIX, jsonl="multi_domain_rl.jsonl",
                                                    steps=70, max_new_tokens=49152),
        "mopd": configs.nano30b_rl_stage("mopd", domains=DOMAINS, jsonl="mopd.jsonl", steps=52, max_new_tokens=98304,
                                         num_samples=4, aggregation="seq_mean_token_mean", optimizer=mopd_optimizer,
                                         checkpoint_every=4),
        "reward_model": configs.stage("reward_model", **configs.nano30b_reward_model_stage(tokenizer="")),
        "rlhf": configs.nano30b_rlhf_stage(),
        "long_context_rl": configs.nano30b_long_context_rl_stage(),
        "code_rl": configs.nano30b_rl_stage("grpo", domains=("code",), jsonl="code_rl.jsonl", steps=22,
                                            max_new_tokens=120832, top_p=0.95),   # 118K-token responses
    }


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for experiments/cascade.py; known: {', '.join(PRESETS)}")
    long_context = preset.endswith("_long_context")
    if preset.startswith("tiny"):
        order = TINY_LONG_CONTEXT_ORDER if long_context else ORDER
        return configs.cascade_config(name="cascade", model="tiny", mesh=configs.mesh_config(), order=order,
                                      stages=_tiny_stages(long_context=long_context),
                                      eval_cfg=configs.eval_config(domains=DOMAINS),
                                      data=configs.shared_data_config())
    order = NANO30B_LONG_CONTEXT_ORDER if long_context else ORDER
    return configs.cascade_config(name="cascade", model=configs.nano30b_model(), mesh=configs.nano30b_mesh(),
                                  order=order, stages=_nano30b_stages(),
                                  eval_cfg=configs.eval_config(domains=DOMAINS, num_examples=512,
                                                               max_new_tokens=49152),
                                  data=configs.nano30b_shared_data(),
                                  init_checkpoint=configs.NANO30B_BASE_CHECKPOINT)
