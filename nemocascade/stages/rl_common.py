"""The part of every RL stage that is the same: prompts -> rollouts -> scored samples -> train batch.

A concrete stage (GRPO, MOPD, RLHF) supplies ``loss_fn()`` and ``extra_batch(...)`` (advantages, or teacher
log-probs), may replace the reward fns (``make_reward_fns``) and may drop samples (``sample_weights``: GRPO's DAPO
filter; a dropped sample is not trained on: its row is padding, or with packing it is not packed). Rollouts are
drawn from ``state.params`` itself (no copy) with a key derived from (seed, step), so a resumed stage redraws
exactly the rollouts it would have drawn. With ``rl.max_turns > 1`` the domains that have an environment are
played as multi-turn episodes (``episodes.sample_rollouts``): the rows then hold the environment's messages between
the sampled turns, masked out of the loss, and the reward fns score the final turn. With ``rl.pack_rollouts`` the
scored samples are packed into fewer training rows before the reference / teacher log-probs and the step
(``rollout_batch.pack_rollout_batch``; metrics ``train_rows`` and ``train_token_fraction``, the share of the
trained row slots that hold a sample's token).

KL reference (``rl.kl_coef > 0``, stages with ``supports_kl``): the stage's initial params stay frozen as
``pi_ref`` and every rollout batch gets ``ref_logprobs`` f32[rows, L] (``policy.frozen_logprobs``, the sampler's
temperature). Memory cost: one params set, for the whole stage. ``pi_ref`` is always the params a fresh start
of the stage begins from, also on resume: ``initial_params`` (in a cascade the previous stage's final
checkpoint, passed again on resume; a separate buffer, as the train state copies them before donating), or,
when the stage starts from random init, the seed's init params built again in buffers of their own.

Multi-process (one process per host, same global mesh): every process builds the same global batch. It reads
the same global prompt stream (seed and position shared, no shard per process) and draws the same rollouts
(same params, same key); the sampler's rows are split over the mesh's batch axes, i.e. over the processes, and
``generate`` gathers them (``sharding.to_host``: ``process_allgather``), so every process holds the full rollout
tokens, decodes them and computes every reward on its own host (host-side rewards are cheap next to a step and
this needs no second exchange); reference and MOPD teacher log-probs are gathered the same way. The identical
host batch then goes onto the mesh through ``runtime.put_global_batch`` (each process transfers its devices'
rows). Metrics and evaluation files are written by process 0 only; checkpoints (with each process's prompt
iterator position) are saved by all processes through orbax. ``tests/launch/test_multiprocess_rl.py`` checks
that 2 processes x 4 devices train like 1 process x 8.
"""
from __future__ import annotations

from typing import Sequence

import jax
import ml_collections
import numpy as np

from nemocascade import data as data_lib
from nemocascade import environments
from nemocascade import rewards as rewards_lib
from nemocascade import sharding as sharding_lib
from nemocascade.data.sources import DEFAULT_DOMAIN
from nemocascade.rewards.answer_judge import AnswerJudgeFn
from nemocascade.rewards.judge_model import JudgeRewardFn
from nemocascade.stages import evaluate, policy, runtime
from nemocascade.stages.episodes import Turns, sample_rollouts
from nemocascade.stages.prompts import decode_samples, encode_prompts
from nemocascade.stages.rollout_batch import pack_rollout_batch, rollout_batch, sample_index
from nemocascade.train import init_params_from_seed


def judged_domains(domains: Sequence[str]) -> list[str]:
    """The domains of ``domains`` that an LLM judge scores (``rewards.JUDGED_DOMAINS``), sorted."""
    return sorted(set(domains) & set(rewards_lib.JUDGED_DOMAINS))


def judge_metrics(reward_fns: dict) -> dict[str, float]:
    """``judge_unparsed``: the fraction of the verdicts written since the last call that did not parse, when a
    reward fn is an LLM judge (``JudgeRewardFn``); {} otherwise."""
    judges = {id(fn): fn for fn in reward_fns.values() if isinstance(fn, JudgeRewardFn)}.values()
    if not judges:
        return {}
    total, unparsed = np.sum([judge.take_verdict_counts() for judge in judges], axis=0)
    return {"judge_unparsed": float(unparsed / max(total, 1))}


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


def domain_rewards(samples: Sequence[dict], rewards: np.ndarray, num_domains: int) -> dict[str, float]:
    """``reward_<domain>``: the mean reward of each domain's rollouts in the batch, when the stage has more than
    one domain (the metrics writer averages each one over the steps whose batch had that domain)."""
    if num_domains < 2:
        return {}
    domains = np.array([s["domain"] for s in samples])
    return {f"reward_{d}": float(rewards[domains == d].mean()) for d in sorted(set(domains))}


def rl_examples(rl: ml_collections.ConfigDict, seed: int) -> list[dict]:
    """Training prompts: ``rl.jsonl`` if set, else the toy domains of ``rl.domains`` (mixed)."""
    if rl.jsonl:
        return list(data_lib.read_jsonl(rl.jsonl, on_error=rl.on_bad_row))
    examples = []
    for domain in rl.domains:
        examples.extend(data_lib.toy_examples(domain, "train", rl.prompts_per_domain, seed=seed))
    return examples


def check_examples(examples: Sequence[dict], reward_fns: dict) -> None:
    """Before any rollout: every example's domain has a reward fn and carries the fields that fn needs, and the
    environment of a multi-turn domain can play it (ValueError naming the first bad row's ``path:line``), rather
    than a failure at the step that draws it."""
    by_domain: dict[str, list[dict]] = {}
    for example in examples:
        by_domain.setdefault(example["domain"], []).append(example)
    for domain, rows in sorted(by_domain.items()):
        if domain not in reward_fns:
            where = rows[0].get("origin") or f"example {rows[0]['id']!r}"
            hint = (f" (a row with no 'domain' field gets {domain!r} unless its agent_ref names an agent of "
                    f"data.sources.GYM_AGENT_DOMAINS)" if domain == DEFAULT_DOMAIN else "")
            raise ValueError(f"{where}: {len(rows)} prompt(s) of domain {domain!r}, which has no reward fn; "
                             f"rl.domains gives {sorted(reward_fns)}{hint}")
        reward_fns[domain].check_examples(rows)
        environment = environments.get_environment(domain)
        if environment is not None:
            environment.check_examples(rows)


def packed_micro_batch_rows(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> int:
    """Rows per micro-batch of an RL stage whose rollouts are packed (``rl.pack_rollouts``): those of its unpacked
    batch, ``prompts_per_step * num_samples / train.grad_accum_steps``; a packed batch then runs as many
    micro-batches as its rows fill. A ValueError when they do not split evenly, or for an aggregation whose
    normaliser depends on the row count."""
    rl, accum = config.rl, config.train.grad_accum_steps
    if rl.aggregation == "seq_mean_token_sum_norm":
        raise ValueError("rl.pack_rollouts with rl.aggregation='seq_mean_token_sum_norm': its B * T normaliser "
                         "would change with the packed row count; use token_mean or seq_mean_token_mean")
    rows = rl.prompts_per_step * rl.num_samples
    if rows % accum:
        raise ValueError(f"rl.prompts_per_step * rl.num_samples = {rows} is not a multiple of "
                         f"train.grad_accum_steps = {accum}")
    runtime.check_batch_split(mesh, rows // accum, "rl.pack_rollouts: a micro-batch's rows")
    return rows // accum


def reference_params(ctx: runtime.StageContext, initial_params=None):
    """The frozen KL reference: ``initial_params`` as given (no copy; the train state holds its own buffers), or
    the params the stage's random init from ``ctx.config.seed`` starts from (built again: one params set)."""
    if initial_params is not None:
        return initial_params
    return init_params_from_seed(ctx.init_params_fn, jax.random.PRNGKey(ctx.config.seed),
                                 param_shardings=ctx.param_shardings)


class RLStage:
    """Shared driver; subclasses define ``loss_fn`` and ``extra_batch``; ``supports_kl`` = the loss reads
    ``batch["ref_logprobs"]`` (else ``rl.kl_coef > 0`` is refused); ``scores_with_models`` = the rewards come
    from ``rl.reward_model`` or ``rl.judge`` (else setting them is refused rather than ignored)."""

    supports_kl = False
    scores_with_models = False

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        if config.rl.kl_coef < 0 or (config.rl.kl_coef > 0 and not self.supports_kl):
            raise ValueError(f"rl.kl_coef={config.rl.kl_coef}: expected 0, or > 0 for a GRPO / RLHF stage "
                             f"({type(self).__name__} has no KL term)")
        scorers = {k: v for k, v in (("rl.reward_model", config.rl.reward_model),
                                     ("rl.judge.checkpoint", config.rl.judge.checkpoint),
                                     ("rl.judge.stage", config.rl.judge.stage)) if v}
        if judged_domains(config.rl.domains) and not self.scores_with_models:
            scorers.pop("rl.judge.checkpoint", None)           # the answer judge of the judged domains
            scorers.pop("rl.judge.stage", None)
        if scorers and not self.scores_with_models:
            raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in scorers.items())}: only an rlhf stage scores "
                             f"with a reward model, and only an rlhf stage or one with a judged domain "
                             f"{rewards_lib.JUDGED_DOMAINS} in rl.domains with a judge ({type(self).__name__} uses "
                             f"its domains' verifiers or teachers)")
        self.config = config
        self.reference = None  # frozen KL reference params while ``run`` runs with rl.kl_coef > 0
        self.ctx = runtime.build_context(config, workdir)
        self.tokenizer = data_lib.load_tokenizer(config.data.tokenizer)
        rl = config.rl
        self.width = rl.max_prompt_tokens + rl.max_new_tokens
        if self.width > self.ctx.model_cfg.max_seq_len:
            raise ValueError(f"rl.max_prompt_tokens + rl.max_new_tokens = {self.width} exceeds "
                             f"model.max_seq_len = {self.ctx.model_cfg.max_seq_len}")
        runtime.check_sequence_split(self.ctx.mesh, self.width, "rl.max_prompt_tokens + rl.max_new_tokens")
        runtime.check_batch_split(self.ctx.mesh, rl.prompts_per_step * rl.num_samples,
                                  "rl.prompts_per_step * rl.num_samples")
        environments.check_turns(rl.domains, rl.max_turns, "rl.max_turns")
        if not 0 <= rl.max_turn_tokens <= rl.max_new_tokens:
            raise ValueError(f"rl.max_turn_tokens={rl.max_turn_tokens}: expected 0 (= rl.max_new_tokens) up to "
                             f"rl.max_new_tokens={rl.max_new_tokens}")
        self.turns = Turns(max_new_tokens=rl.max_new_tokens, max_turns=rl.max_turns, turn_tokens=rl.max_turn_tokens)
        self.micro_batch_rows = packed_micro_batch_rows(config, self.ctx.mesh) if rl.pack_rollouts else None
        self.reward_fns = self.make_reward_fns()

    def make_reward_fns(self) -> dict:
        """Domain -> reward fn (``score(samples) -> (f32[N], infos)``); by default the registered verifier
        of each of ``rl.domains``, and for the judged domains the answer judge that ``rl.judge`` names (RLHF
        overrides this with its reward model or pairwise judge)."""
        rl = self.config.rl
        judged = judged_domains(rl.domains)
        if judged and not rl.judge.checkpoint:
            raise ValueError(f"rl.domains {judged} are scored by an LLM judge against the reference answer "
                             f"(rewards/answer_judge.py): set rl.judge.checkpoint (a checkpoint dir of this "
                             f"project), or rl.judge.stage in a cascade")
        judge = (AnswerJudgeFn.from_settings(rl.judge, default_tokenizer=self.config.data.tokenizer,
                                             mesh=self.ctx.mesh, seed=self.config.seed) if judged else None)
        return {d: judge if d in judged else rewards_lib.get_reward_fn(d) for d in sorted(set(rl.domains))}

    def heldout_examples(self, domains) -> dict[str, list[dict]]:
        """``{domain: eval.num_examples held-out toy examples}`` for ``domains`` ({} when the prompts come from
        ``rl.jsonl``)."""
        if self.config.rl.jsonl:
            return {}
        return {domain: data_lib.toy_examples(domain, "heldout", self.config.eval.num_examples, seed=self.config.seed)
                for domain in domains}

    def greedy_samples(self, params, examples) -> list[dict]:
        return evaluate.greedy_samples(params, self.ctx.model_cfg, self.tokenizer, examples,
                                       max_new_tokens=self.config.eval.max_new_tokens,
                                       thinking=self.config.data.thinking, mesh=self.ctx.mesh,
                                       max_turns=self.config.eval.max_turns,
                                       turn_tokens=self.config.eval.max_turn_tokens)

    def heldout_scores(self, params, domains) -> dict[str, dict]:
        """``{domain: {"mean_reward", "num_examples"}}``: the stage's reward fn's mean reward of greedy answers to
        held-out toy prompts of ``domains`` ({} when the prompts come from ``rl.jsonl``)."""
        scores = {}
        for domain, examples in self.heldout_examples(domains).items():
            rewards, _ = self.reward_fns[domain].score(self.greedy_samples(params, examples))
            scores[domain] = {"mean_reward": float(np.mean(rewards)), "num_examples": len(examples)}
        return scores

    def run_scored(self, key: str, label: str, domains, *, initial_params=None):
        """``RLStage.run``, with the stage's own evaluation ``ctx.evaluation[key]``: per domain of ``domains``,
        ``heldout_scores`` of the starting params (when given; else None) and of the final ones."""
        before = self.heldout_scores(initial_params, domains) if initial_params is not None else {}
        ctx, state = RLStage.run(self, initial_params=initial_params)
        after = self.heldout_scores(state.params, domains)
        if after:
            ctx.evaluation = {key: {
                d: {"before": before[d]["mean_reward"] if d in before else None,
                    "after": after[d]["mean_reward"], "num_examples": after[d]["num_examples"]} for d in after}}
            for domain, result in ctx.evaluation[key].items():
                start = "n/a" if result["before"] is None else f"{result['before']:.3f}"
                if jax.process_index() == 0:
                    print(f"[{ctx.name}] held-out {domain}: {label} {start} -> {result['after']:.3f} "
                          f"({result['num_examples']} prompts)", flush=True)
        return ctx, state

    def loss_fn(self):
        raise NotImplementedError

    def sample_weights(self, samples, rewards):
        """Given the decoded samples and their rewards f32[N], returns (sample weights f32[N] or None, host
        metrics). A sample of weight 0 is dropped, i.e. not trained on at all (no policy loss, no MoE aux loss):
        its row becomes padding, or with ``rl.pack_rollouts`` it is not packed. The default keeps every sample."""
        del samples, rewards
        return None, {}

    def extra_batch(self, batch, samples, rewards):
        """Given the rollout batch (numpy [rows, width]; ``batch["sample_index"]`` names each token's sample, see
        ``rollout_batch.per_token``; no token names a dropped sample), its decoded samples and rewards
        f32[N], returns (extra batch arrays of the batch's [rows, width], host metrics)."""
        raise NotImplementedError

    def make_batch(self, state, examples: Sequence[dict]):
        rl = self.config.rl
        prompts = encode_prompts(examples, self.tokenizer, thinking=self.config.data.thinking)
        too_long = [i for i, p in enumerate(prompts) if len(p) > rl.max_prompt_tokens]
        if too_long:
            raise ValueError(f"prompt(s) {too_long[:5]} exceed rl.max_prompt_tokens={rl.max_prompt_tokens}")
        rng = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), state.step)
        rollouts = sample_rollouts(state.params, self.ctx.model_cfg, self.tokenizer, examples, turns=self.turns,
                                   num_samples=rl.num_samples, temperature=rl.temperature, top_p=rl.top_p, rng=rng,
                                   thinking=self.config.data.thinking, mesh=self.ctx.mesh, prompts=prompts)
        samples = decode_samples(rollouts, examples, self.tokenizer, num_samples=rl.num_samples)
        rewards, _ = score_rewards(samples, self.reward_fns)
        if rl.unfinished_reward_zero:
            rewards = np.where(rollouts.finished, rewards, 0.0).astype(np.float32)
        weights, weight_metrics = self.sample_weights(samples, rewards)
        kept = None if weights is None else np.asarray(weights) > 0
        batch = rollout_batch(rollouts, width=self.width)
        if self.micro_batch_rows:
            batch, index = pack_rollout_batch(batch, micro_batch_rows=self.micro_batch_rows,
                                              row_shards=runtime.batch_ways(self.ctx.mesh), keep=kept)
            host_metrics = {"train_rows": float(len(index)), "train_token_fraction": float((index >= 0).mean())}
        else:
            if kept is not None:           # the dropped samples' rows become padding: no loss, no MoE aux loss
                batch["segment_ids"] = batch["segment_ids"] * kept[:, None]
                batch["mask"] = batch["mask"] * kept[:, None]
            index, host_metrics = sample_index(batch), {}
        if self.reference is not None:
            ref_logprobs = policy.frozen_logprobs(self.reference, batch, cfg=self.ctx.model_cfg,
                                                  temperature=rl.temperature)
            batch["ref_logprobs"] = sharding_lib.to_host(ref_logprobs)
        extra, stage_metrics = self.extra_batch({**batch, "sample_index": index}, samples, rewards)
        batch.update(extra)
        host_metrics = {**host_metrics, **weight_metrics, "reward": float(rewards.mean()),
                        "response_length": float(rollouts.response_lengths.mean()),
                        "finished_fraction": float(rollouts.finished.mean()), **stage_metrics,
                        **({"turns": float(np.mean([s["turns"] for s in samples]))} if rl.max_turns > 1 else {}),
                        **domain_rewards(samples, rewards, len(set(rl.domains))), **judge_metrics(self.reward_fns)}
        return batch, host_metrics

    def run(self, *, initial_params=None):
        ctx, rl = self.ctx, self.config.rl
        # One global prompt stream on every process (same rollouts everywhere): see runtime.put_global_batch.
        examples = rl_examples(rl, self.config.seed)
        check_examples(examples, self.reward_fns)
        prompt_iter = iter(data_lib.make_prompt_dataset(examples, batch_size=rl.prompts_per_step,
                                                        seed=self.config.seed, shard_index=0, shard_count=1))
        state, state_shardings = runtime.init_or_restore_state(ctx, initial_params=initial_params,
                                                               data_iterator=prompt_iter)
        if rl.kl_coef > 0:
            self.reference = reference_params(ctx, initial_params)
        batch_sharding = sharding_lib.batch_sharding(ctx.mesh)
        step_fn = runtime.build_step(ctx, self.loss_fn(), state_shardings, micro_batch_rows=self.micro_batch_rows)

        def next_batch(state):
            batch, host_metrics = self.make_batch(state, next(prompt_iter))
            return runtime.put_global_batch(batch, batch_sharding), host_metrics

        state = runtime.train_and_close(ctx, state=state, step_fn=step_fn, next_batch=next_batch,
                                        data_iterator=prompt_iter,
                                        tokens_per_step=rl.prompts_per_step * rl.num_samples * self.width)
        self.reference = None
        return ctx, state
