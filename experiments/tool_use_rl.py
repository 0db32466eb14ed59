"""Multi-turn tool-use RL: GRPO on episodes in which a tool environment answers the policy's calls.

RECIPE.md's last stage (SWE RL) is agentic: the policy acts over several turns, an environment answers each
action, and the reward judges the episode's outcome. This experiment is that loop at toy scale. Each toy
``tool_use`` prompt asks for a currency conversion at exchange rates only the ``convert`` tool knows
(``data/toy/tool_use.py``); the policy calls it, the environment (``environments/``) answers with a tool result
in the next user turn, and the policy's final turn states the amount, which the ``tool_use`` reward checks. Every
turn is sampled from the policy's own params, continuing the row's cache of the whole episode so far, so the
sampled tokens train strictly on-policy; the tool results are masked out of the loss
(``rollout.generate_episodes``).

SWE RL itself (a repository to repair, rewarded by its tests) is ``experiments/swe_rl.py``. The nano30b preset
here takes the recipe's agentic settings for episodes in an environment registered for the rows' tools.

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

# One 512-token SFT row holds one toy conversation (the tools block is most of it): the tiny model copies the
# numbers (the asked amount into the call, the tool's result into the answer) only after ~600 steps
# (2026-12-07: held-out right 0.031 after 240 steps on 4000 conversations, 0.359 after 600 on 10000).
TINY = dict(sft_conversations=10000, sft_steps=600, sft_seq_len=512, prompt_tokens=352, episode_tokens=256,
            turn_tokens=96, max_turns=3, max_seq_len=640)
NANO30B = dict(jsonl="tool_use_rl.jsonl", episode_tokens=98304, turn_tokens=16384, max_turns=16)


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    return configs.episodes_experiment(preset, name="tool_use_rl", domain="tool_use", tiny=TINY, nano30b=NANO30B)
