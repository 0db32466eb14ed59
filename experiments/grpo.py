"""Multi-domain RL with GRPO on math + instruction following + code (verifiable rewards), after SFT.

A cascade of two stages, ``sft`` -> ``multi_domain_rl`` (kind ``grpo``): an RL stage alone would start
from random weights, which earn no reward on any domain; in a workdir that already holds a finished
``sft`` stage (e.g. from ``experiments/mopd.py``) that stage is reused.

Presets (``--config=experiments/grpo.py:PRESET``):
  tiny (default): the tiny MoE on the toy math/if/code domains, CPU minutes.
  nano30b: RECIPE.md's multi-domain RL (128 prompts x 16 rollouts, 49K-token responses, ~70 steps, lr 3e-6,
    no KL, router frozen) on a v5p-64 (``configs.nano30b_mesh``), on the paper's mix: MCQA 55% / tool calling
    30% / structured output 15%, scored by the ``mcqa`` / ``tool_call`` / ``structured_output`` verifiers.
    Released rows take their domain from their NeMo Gym ``agent_ref`` (``data.sources.GYM_AGENT_DOMAINS``) or
    a ``domain`` field; a row that none of the three reads (e.g. a multi-step tool environment's, which needs
    its tools executed) is refused before the first rollout, naming its ``path:line``.
  tiny_recipe_mix: the same verifiers at toy scale: SFT, then GRPO, on the toy ``mcqa`` / ``tool_call`` /
    ``structured_output`` domains (measured in BENCHMARKS.md).
"""
import ml_collections

from nemocascade import configs

ORDER = ("sft", "multi_domain_rl")
DOMAINS = ("math", "if", "code")
RECIPE_MIX = ("mcqa", "tool_call", "structured_output")
MIX_PROMPT_TOKENS, MIX_NEW_TOKENS = 352, 112  # tiny_recipe_mix: the tool prompts; reasoning + a call or a record


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    if preset == "tiny":
        stages = {"sft": configs.stage("sft", **configs.tiny_sft_stage()),
                  "multi_domain_rl": configs.tiny_rl_stage("grpo", domains=DOMAINS)}
        return configs.cascade_config(name="grpo", model="tiny", mesh=configs.mesh_config(), order=ORDER,
                                      stages=stages, eval_cfg=configs.eval_config(domains=DOMAINS),
                                      data=configs.shared_data_config())
    if preset == "nano30b":
        stages = {"sft": configs.nano30b_sft_stage(),
                  "multi_domain_rl": configs.nano30b_rl_stage("grpo", domains=RECIPE_MIX,
                                                              jsonl="multi_domain_rl.jsonl", steps=70,
                                                              max_new_tokens=49152)}
        return configs.cascade_config(name="grpo", model=configs.nano30b_model(), mesh=configs.nano30b_mesh(),
                                      order=ORDER, stages=stages,
                                      eval_cfg=configs.eval_config(domains=RECIPE_MIX, num_examples=512,
                                                                   max_new_tokens=49152),
                                      data=configs.nano30b_shared_data(),
                                      init_checkpoint=configs.NANO30B_BASE_CHECKPOINT)
    if preset == "tiny_recipe_mix":
        return configs.cascade_config(name="grpo", model="tiny", mesh=configs.mesh_config(), order=ORDER,
                                      stages=_tiny_recipe_mix_stages(),
                                      eval_cfg=configs.eval_config(domains=RECIPE_MIX, max_new_tokens=MIX_NEW_TOKENS),
                                      data=configs.shared_data_config(thinking=True))
    raise ValueError(f"unknown preset {preset!r} for experiments/grpo.py; known: tiny, nano30b, tiny_recipe_mix")


def _tiny_recipe_mix_stages() -> dict:
    """SFT on the toy mcqa / tool_call / structured_output domains (512-token rows: a tool prompt is ~340 tokens),
    then GRPO on them, in thinking mode (the reference reasoning adds the MCQA sum before the letter); the toy
    domains mix equally, not 55 / 30 / 15."""
    sft = configs.tiny_sft_stage()
    sft["data"].update(toy_mix="mcqa=3000,tool_call=3000,structured_output=3000", seq_len=512, thinking=True)
    rl = configs.tiny_rl_stage("grpo", domains=RECIPE_MIX, learning_rate=5e-5, max_prompt_tokens=MIX_PROMPT_TOKENS,
                               max_new_tokens=MIX_NEW_TOKENS)
    return {"sft": configs.stage("sft", **sft), "multi_domain_rl": rl}
