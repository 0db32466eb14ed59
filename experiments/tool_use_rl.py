"""Multi-turn tool-use RL: GRPO on episodes in which a tool environment answers the policy's calls.

RECIPE.md's last stage (SWE RL) is agentic: the policy acts over several turns, an environment answers each
action, and the reward judges the episode's outcome. This experiment is that loop at toy scale. Each toy
``tool_use`` prompt asks for a currency conversion at exchange rates only the ``convert`` tool knows
(``data/toy/tool_use.py``); the policy calls it, the environment (``environments/``) answers with a tool result
in the next user turn, and the policy's final turn states the amount, which the ``tool_use`` reward checks. Every
turn is sampled from the policy's own params, continuing the row's cache of the whole episode so far, so the
sampled tokens train strictly on-policy; the tool results are masked out of the loss
(``rollout.generate_episodes``).

Not modelled: SWE RL's environment itself (repository tools, running a project's tests) and its reward (a repair
judged, or tests passing). The nano30b preset takes the recipe's agentic settings for episodes in an environment
registered for the rows' tools.

Presets (``--config=experiments/tool_use_rl.py:PRESET``):
  tiny (default): ~30 CPU minutes. SFT on toy ``tool_use`` conversations (call, result, answer), then GRPO on
    episodes of up to 3 turns (``rl.max_turns``) of up to 96 tokens (``rl.max_turn_tokens``), 256 tokens in
    all; the evaluation after each stage plays the held-out prompts the same way, greedily. The model's
    ``max_seq_len`` is 640: a toy tool prompt is ~340 tokens and an episode ~130.
  nano30b: SFT, then GRPO with RECIPE.md's agentic settings (16 prompts x 64 rollouts, temperature 0.8, 45 steps,
    98K-token episodes; ours: up to 16 turns of up to 16K tokens) on ``tool_use`` rows of ``rl.jsonl`` (REQUIRED:
    each with its ``tools`` and an integer ``answer``). The stage refuses rows whose tools have no function in
    the registered ``tool_use`` environment (the built-in one has the toy ``convert`` only): register one for the
    rows' tools (``environments.register("tool_use", ToolEnvironment({...}), overwrite=True)``) in the program
    that launches the run.
"""
import ml_collections

from nemocascade import configs

PROMPT_TOKENS, EPISODE_TOKENS, TURN_TOKENS, MAX_TURNS = 352, 256, 96, 3
MAX_SEQ_LEN = 640
NANO30B_EPISODE_TOKENS, NANO30B_TURN_TOKENS, NANO30B_MAX_TURNS = 98304, 16384, 16
# One 512-token SFT row holds one toy conversation (the tools block is most of it): the tiny model copies the
# numbers (the asked amount into the call, the tool's result into the answer) only after ~600 steps
# (2026-12-07: held-out right 0.031 after 240 steps on 4000 conversations, 0.359 after 600 on 10000).
SFT_STEPS, SFT_CONVERSATIONS = 600, 10000


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    if preset == "tiny":
        sft = configs.tiny_sft_stage()
        sft["data"].update(toy_mix=f"tool_use={SFT_CONVERSATIONS}", seq_len=512)
        sft["train"].steps = SFT_STEPS
        rl = configs.tiny_rl_stage("grpo", domains=("tool_use",), learning_rate=1e-4, max_prompt_tokens=PROMPT_TOKENS,
                                   max_new_tokens=EPISODE_TOKENS, max_turns=MAX_TURNS, max_turn_tokens=TURN_TOKENS)
        config = configs.cascade_config(
            name="tool_use_rl", model="tiny", mesh=configs.mesh_config(), order=("sft", "tool_use_rl"),
            stages={"sft": configs.stage("sft", **sft), "tool_use_rl": rl}, data=configs.shared_data_config(),
            eval_cfg=configs.eval_config(domains=("tool_use",), max_new_tokens=EPISODE_TOKENS, max_turns=MAX_TURNS,
                                         max_turn_tokens=TURN_TOKENS))
        config.model.max_seq_len = MAX_SEQ_LEN
        return config
    if preset == "nano30b":
        rl = configs.nano30b_rl_stage("grpo", domains=("tool_use",), jsonl="tool_use_rl.jsonl", steps=45,
                                      max_new_tokens=NANO30B_EPISODE_TOKENS, prompts_per_step=16, num_samples=64,
                                      temperature=0.8, max_turns=NANO30B_MAX_TURNS,
                                      max_turn_tokens=NANO30B_TURN_TOKENS)
        return configs.cascade_config(name="tool_use_rl", model=configs.nano30b_model(), mesh=configs.nano30b_mesh(),
                                      order=("sft", "tool_use_rl"),
                                      stages={"sft": configs.nano30b_sft_stage(), "tool_use_rl": rl},
                                      eval_cfg=configs.eval_config(domains=(), num_examples=512,
                                                                   max_new_tokens=NANO30B_EPISODE_TOKENS),
                                      data=configs.nano30b_shared_data(),
                                      init_checkpoint=configs.NANO30B_BASE_CHECKPOINT)
    raise ValueError(f"unknown preset {preset!r} for experiments/tool_use_rl.py; known: tiny, nano30b")
