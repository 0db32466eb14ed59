"""Rollouts served by the same JAX model: a KV-cache sampler over the train state's own params."""
from nemocascade.rollout.generate import Rollouts, SamplingParams, generate
from nemocascade.rollout.sampling import filter_logits, sample_tokens

__all__ = ["Rollouts", "SamplingParams", "filter_logits", "generate", "sample_tokens"]
