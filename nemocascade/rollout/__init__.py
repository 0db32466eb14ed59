"""Rollouts served by the same JAX model: a KV-cache sampler over the train state's own params."""
from nemocascade.rollout.generate import Rollouts, SamplingParams, generate
from nemocascade.rollout.multi_turn import EpisodeLimits, generate_episodes
from nemocascade.rollout.sampling import filter_logits, sample_tokens

__all__ = ["EpisodeLimits", "Rollouts", "SamplingParams", "filter_logits", "generate", "generate_episodes",
           "sample_tokens"]
