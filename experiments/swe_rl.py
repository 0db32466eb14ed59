"""SWE RL: GRPO on software-repair episodes, rewarded by the tests on the repository the episode left.

RECIPE.md's last stage: the policy works on a repository over many turns (reads files, edits them, runs the
tests), and the reward is whether the project's tests pass afterwards. Here each row carries its repository
(``repo``: path -> text) and its tests (``tests``: Python statements); the repository environment
(``environments/repository.py``) answers the policy's ``read_file`` / ``replace_in_file`` / ``run_tests`` /
``list_files`` calls, and the ``swe`` reward (``rewards/swe_reward.py``) replays the episode's edits and runs the
tests in the code sandbox (``nemocascade/sandbox``): 1 when all pass. Turns are sampled on-policy from the
episode's cache; the tool results are masked out of the loss (``rollout.generate_episodes``).

Not modelled: repositories too big for a row (a real SWE-bench checkout lives on disk or in a container), shell
tools, and a judge of the repair (RECIPE.md: "repair judged / tests"; only tests here).

Presets (``--config=experiments/swe_rl.py:PRESET``):
  tiny (default): SFT on toy ``swe`` conversations (``data/toy/swe.py``: a one-file module whose function has the
    wrong operator; read it, replace the line, run the tests, say what was fixed), then GRPO on episodes of up to
    5 turns of up to 144 tokens, 512 in all; the evaluation after each stage plays the held-out repairs the same
    way, greedily. A toy prompt is ~560 tokens (three tools), a reference episode ~355. Measured in BENCHMARKS.md
    on half the steps (300 SFT + 10 GRPO, 55 minutes on 2 cores): the policy learns the tool format, but its
    edits are no-ops and held-out pass@1 stays 0.
  nano30b: SFT, then GRPO with RECIPE.md's SWE settings (16 prompts x 64 rollouts, temperature 0.8, 45 steps,
    98K-token episodes; ours: up to 64 turns of up to 16K tokens) on the ``swe`` rows of ``rl.jsonl`` (REQUIRED:
    each with ``tools`` (the repository functions), ``repo`` and ``tests``); rows are checked before any rollout.
"""
import ml_collections

from nemocascade import configs

# A toy prompt is ~560 tokens (three tools), a reference episode ~355 (its longest turn 127, a tool result <= 69).
# SFT rows of 1024 tokens hold one conversation each; 64 RL rows of 1088 tokens in one backward pass (XLA's CPU
# attention, no remat) need a 24 GiB buffer, hence 4 micro-batches.
TINY = dict(sft_conversations=10000, sft_steps=600, sft_seq_len=1024, prompt_tokens=576, episode_tokens=512,
            turn_tokens=144, max_turns=5, rl_grad_accum=4)
NANO30B = dict(jsonl="swe_rl.jsonl", episode_tokens=98304, turn_tokens=16384, max_turns=64)


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    return configs.episodes_experiment(preset, name="swe_rl", domain="swe", tiny=TINY, nano30b=NANO30B)
