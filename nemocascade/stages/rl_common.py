"""The part of every RL stage that is the same: prompts -> rollouts -> scored samples -> train batch.

A concrete stage (GRPO, MOPD, RLHF) supplies ``loss_fn()`` and ``extra_batch(...)`` (advantages, or
teacher log-probs), may replace the reward fns (``make_reward_fns``) and may weight rows (0 drops a row
from the loss). Rollouts are drawn from ``state.params`` itself (no copy) with a key derived from
(seed, step), so a resumed stage redraws exactly the rollouts it would have drawn.
"""
from __future__ import annotations

from typing import Sequence

import jax
import ml_collections
import numpy as np

from nemocascade import data as data_lib
from nemocascade import rewards as rewards_lib
from nemocascade import sharding as sharding_lib
from nemocascade.rollout import generate
from nemocascade.stages import runtime
from nemocascade.stages.prompts import decode_samples, encode_prompts
from nemocascade.stages.rollout_batch import rollout_batch


def score_rewards(samples: Sequence[dict], reward_fns: dict) -> tuple[np.ndarray, list[dict]]:
    """Scores each sample with its own domain's reward fn; returns (f32[N], per-sample infos)."""
    rewards = np.zeros(len(samples), np.float32)
    infos: list[dict] = [{} for _ in samples]
    for domain in sorted({s["domain"] for s in samples}):
        if domain not in reward_fns:
            raise ValueError(f"no reward fn for domain {domain!r}; configured: {sorted(reward_fns)}")
        rows = [i for i, s in enumerate(samples) if s["domain"] == domain]
        values, info = reward_fns[domain].score([samples[i] for i in rows])
        rewards[rows] = np.asarray(values, np.float32)
        for i, row_info in zip(rows, info):
            infos[i] = row_info
    return rewards, infos


def rl_examples(rl: ml_collections.ConfigDict, seed: int) -> list[dict]:
    """Training prompts: ``rl.jsonl`` if set, else the toy domains of ``rl.domains`` (mixed)."""
    if rl.jsonl:
        return list(data_lib.read_jsonl(rl.jsonl, on_error=rl.on_bad_row))
    examples = []
    for domain in rl.domains:
        examples.extend(data_lib.toy_examples(domain, "train", rl.prompts_per_domain, seed=seed))
    return examples


class RLStage:
    """Shared driver; subclasses define ``loss_fn`` and ``extra_batch``."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.ctx = runtime.build_context(config, workdir)
        self.tokenizer = data_lib.load_tokenizer(config.data.tokenizer)
        rl = config.rl
        self.width = rl.max_prompt_tokens + rl.max_new_tokens
        if self.width > self.ctx.model_cfg.max_seq_len:
            raise ValueError(f"rl.max_prompt_tokens + rl.max_new_tokens = {self.width} exceeds "
                             f"model.max_seq_len = {self.ctx.model_cfg.max_seq_len}")
        self.reward_fns = self.make_reward_fns()

    def make_reward_fns(self) -> dict:
        """Domain -> reward fn (``score(samples) -> (f32[N], infos)``); by default the registered verifier
        of each of ``rl.domains`` (RLHF overrides this with its reward model)."""
        return {d: rewards_lib.get_reward_fn(d) for d in sorted(set(self.config.rl.domains))}

    def loss_fn(self):
        raise NotImplementedError

    def extra_batch(self, batch, samples, rewards):
        """Given the rollout batch (numpy), its decoded samples and rewards f32[N], returns
        (extra batch arrays, row weights f32[N] or None (0 drops a row from the loss), host metrics)."""
        raise NotImplementedError

    def make_batch(self, state, examples: Sequence[dict]):
        rl = self.config.rl
        prompts = encode_prompts(examples, self.tokenizer, thinking=self.config.data.thinking)
        too_long = [i for i, p in enumerate(prompts) if len(p) > rl.max_prompt_tokens]
        if too_long:
            raise ValueError(f"prompt(s) {too_long[:5]} exceed rl.max_prompt_tokens={rl.max_prompt_tokens}")
        rng = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), state.step)
        rollouts = generate(state.params, self.ctx.model_cfg, prompts, max_new_tokens=rl.max_new_tokens,
                            num_samples=rl.num_samples, temperature=rl.temperature, top_p=rl.top_p,
                            stop_tokens=(self.tokenizer.eos_id,), rng=rng, mesh=self.ctx.mesh,
                            pad_id=self.tokenizer.pad_id)
        samples = decode_samples(rollouts, examples, self.tokenizer, num_samples=rl.num_samples)
        rewards, _ = score_rewards(samples, self.reward_fns)
        if rl.unfinished_reward_zero:
            rewards = np.where(rollouts.finished, rewards, 0.0).astype(np.float32)
        batch = rollout_batch(rollouts, width=self.width)
        extra, weights, host_metrics = self.extra_batch(batch, samples, rewards)
        batch.update(extra)
        if weights is not None:
            batch["mask"] = batch["mask"] * (np.asarray(weights) > 0)[:, None]
        host_metrics = {"reward": float(rewards.mean()),
                        "response_length": float(rollouts.response_lengths.mean()),
                        "finished_fraction": float(rollouts.finished.mean()), **host_metrics}
        return batch, host_metrics

    def run(self, *, initial_params=None):
        ctx, rl = self.ctx, self.config.rl
        # One global prompt stream on every process (same rollouts everywhere): see runtime.put_global_batch.
        prompt_iter = iter(data_lib.make_prompt_dataset(rl_examples(rl, self.config.seed),
                                                        batch_size=rl.prompts_per_step, seed=self.config.seed,
                                                        shard_index=0, shard_count=1))
        state, state_shardings = runtime.init_or_restore_state(ctx, initial_params=initial_params,
                                                               data_iterator=prompt_iter)
        batch_sharding = sharding_lib.batch_sharding(ctx.mesh)
        step_fn = runtime.build_step(ctx, self.loss_fn(), state_shardings)

        def next_batch(state):
            batch, host_metrics = self.make_batch(state, next(prompt_iter))
            return runtime.put_global_batch(batch, batch_sharding), host_metrics

        state = runtime.train_and_close(ctx, state=state, step_fn=step_fn, next_batch=next_batch,
                                        data_iterator=prompt_iter,
                                        tokens_per_step=rl.prompts_per_step * rl.num_samples * self.width)
        return ctx, state
