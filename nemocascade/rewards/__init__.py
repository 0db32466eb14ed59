"""Verifiable rewards by domain: math answers, instruction-following rules, code in a sandbox, and the
multi-domain RL mix (multiple-choice letters, tool calls, structured output against a JSON Schema), and the final
answer of a multi-turn tool-use episode (``tool_use``), and the tests on the repository a software-repair episode
left (``swe``).

``get_reward_fn(domain, **options).score(samples) -> (rewards f32[N], infos)``; see ``base.py`` for the
contract and the shaping options, ``registry.py`` for adding domains, ``nemocascade/sandbox/SANDBOX.md`` for code
isolation.
RLHF scores with models under the same contract: ``reward_model.py`` (a Bradley-Terry scalar head) and
``pairwise_judge.py`` (a generative judge comparing pairs of a prompt's rollouts); the judged domains
(``JUDGED_DOMAINS``: long-context RL's) with ``answer_judge.py`` (an LLM judge of the answer against the reference).
"""
from nemocascade.rewards.base import RewardFn, Shaping, Verification
from nemocascade.rewards.code_reward import CodeReward, extract_code
from nemocascade.sandbox.code_sandbox import (Sandbox, SandboxError, SandboxLimits, Submission, SubmissionResult,
                                              shared_sandbox)
from nemocascade.rewards.if_reward import InstructionFollowingReward
from nemocascade.rewards.math_reward import MathReward
from nemocascade.rewards.math_verify import MathVerifier, extract_answer, extract_boxed
from nemocascade.rewards.mcqa_reward import MultipleChoiceReward
from nemocascade.rewards.registry import JUDGED_DOMAINS, get_reward_fn, register, registered_domains
from nemocascade.rewards.structured_output_reward import StructuredOutputReward
from nemocascade.rewards.swe_reward import SweReward
from nemocascade.rewards.thinking import split_thinking
from nemocascade.rewards.tool_call_reward import ToolCallReward
from nemocascade.rewards.tool_use_reward import ToolUseReward

__all__ = [
    "JUDGED_DOMAINS", "CodeReward", "InstructionFollowingReward", "MathReward", "MathVerifier", "MultipleChoiceReward",
    "RewardFn",
    "Sandbox", "SandboxError", "SandboxLimits", "Shaping", "StructuredOutputReward", "Submission", "SubmissionResult",
    "SweReward",
    "ToolCallReward", "ToolUseReward", "Verification", "extract_answer", "extract_boxed", "extract_code",
    "get_reward_fn", "register", "registered_domains", "shared_sandbox", "split_thinking",
]
