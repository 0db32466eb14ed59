"""MOPD: the student's rollouts scored token by token by each domain's teacher (same ``forward``).

Token advantage ``a_t = log pi_teacher(y_t) - log pi_rollout(y_t)`` on the sampled token, importance
weight gated to [is_low, is_high], aggregated per response then over responses (the paper's Eq. 4:
``rl.aggregation = "seq_mean_token_mean"``). Teachers are params restored from earlier checkpoints; a
checkpoint shared by several domains is loaded once, and scores only the samples of its own domains, packed
into as few rows as they fill (``teacher_logprobs``: with T teachers the step's teacher forwards cover the batch
once, not T times). Teacher and student must share the tokenizer and vocabulary: that is checked against
each teacher's saved config and refused otherwise.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from nemocascade import losses
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.checkpoint import Checkpointer, restore_policy_params
from nemocascade.stages import policy, runtime
from nemocascade.stages.rl_common import RLStage
from nemocascade.stages.rollout_batch import pack_samples, scatter_samples


def make_mopd_loss(cfg, rl):
    """``loss_fn(params, batch, rng)``; batch adds ``teacher_logprobs`` f32[rows, L] to the rollout batch (responses
    told apart by ``segment_ids``: the paper's per-response mean holds for packed rows too)."""
    def loss_fn(params, batch, rng):
        del rng
        logprobs, aux = policy.token_logprobs(params, cfg, batch, temperature=rl.temperature)
        loss, loss_aux = losses.mopd_loss(logprobs, batch["rollout_logprobs"], batch["teacher_logprobs"],
                                          batch["mask"], is_low=rl.is_low, is_high=rl.is_high,
                                          aggregation=rl.aggregation, segment_ids=batch["segment_ids"])
        total = loss + aux["moe_aux_loss"] + aux["router_z_loss"]
        metrics = {"mopd_loss": loss, **policy.moe_metrics(aux),
                   **{k: v for k, v in loss_aux.items() if jnp.ndim(v) == 0}}
        return total, metrics
    return loss_fn


def check_teacher_compatible(teacher_config: dict, student_config, checkpoint_dir: str) -> model_lib.ModelConfig:
    """Refuses a teacher whose tokenizer or vocabulary differs from the student's; returns its ModelConfig."""
    teacher_model = model_lib.ModelConfig.from_dict(teacher_config["model"])
    if teacher_model.vocab_size != student_config.model.vocab_size:
        raise ValueError(f"teacher {checkpoint_dir} has vocab_size {teacher_model.vocab_size}, the student "
                         f"{student_config.model.vocab_size}: MOPD needs a shared vocabulary")
    teacher_tokenizer = teacher_config.get("data", {}).get("tokenizer")
    if teacher_tokenizer != student_config.data.tokenizer:
        raise ValueError(f"teacher {checkpoint_dir} was trained with tokenizer {teacher_tokenizer!r}, the student "
                         f"uses {student_config.data.tokenizer!r}: MOPD needs a shared tokenizer")
    return teacher_model


def teacher_logprobs(batch: dict[str, np.ndarray], sample_domains: Sequence[str], teachers, *, temperature: float,
                     row_shards: int) -> np.ndarray:
    """f32[rows, width]: each sampled token's log-prob under the teacher of its sample's domain (0 on tokens of no
    sample).

    Each teacher scores only its own domains' samples, packed into as few rows as they fill
    (``rollout_batch.pack_samples``), so the teachers' forwards together cover each token once, whatever their
    number.

    Args:
      batch: the step's rollout batch (packed or not) with ``sample_index``; ``sample_domains``: each sample's.
      teachers: ``[(domains, ModelConfig, params)]``, one per distinct teacher.
      temperature: the sampler's; row_shards: the mesh's batch split (the packed rows are a multiple of it).
    """
    index = batch["sample_index"]
    arrays = {k: batch[k] for k in ("tokens", "targets", "segment_ids", "positions")}
    scores = np.zeros(index.shape, np.float32)
    domains = np.asarray(sample_domains)
    for taught_domains, cfg, params in teachers:
        taught = np.flatnonzero(np.isin(domains, taught_domains))
        if taught.size:
            scored_batch, scored_index = pack_samples(arrays, index, taught, num_samples=len(domains),
                                                      row_shards=row_shards)
            scored = sharding_lib.to_host(policy.frozen_logprobs(params, scored_batch, cfg=cfg,
                                                                 temperature=temperature))
            scatter_samples(scores, index, scored, scored_index)
    return scores


class MOPDStage(RLStage):
    """``config.rl.teachers`` maps each domain to a checkpoint directory (the cascade fills it from the ledger)."""

    def __init__(self, config, workdir):
        super().__init__(config, workdir)
        teachers = dict(config.rl.teachers)
        missing = sorted(set(config.rl.domains) - set(teachers))
        if missing:
            raise ValueError(f"rl.teachers has no checkpoint for domain(s) {missing}")
        self.teacher_of_domain = teachers
        self.teachers = {}  # checkpoint dir -> (ModelConfig, params); each dir loaded once
        for directory in sorted(set(teachers.values())):
            saved = Checkpointer(directory, async_save=False)
            teacher_cfg = check_teacher_compatible(saved.restore_config(), config, directory)
            saved.close()
            self.teachers[directory] = (teacher_cfg, restore_policy_params(directory, teacher_cfg, self.ctx.mesh))

    def loss_fn(self):
        return make_mopd_loss(self.ctx.model_cfg, self.config.rl)

    def extra_batch(self, batch, samples, rewards):
        teachers = [([d for d, t in self.teacher_of_domain.items() if t == directory], teacher_cfg, params)
                    for directory, (teacher_cfg, params) in self.teachers.items()]
        teacher_lp = teacher_logprobs(batch, [s["domain"] for s in samples], teachers,
                                      temperature=self.config.rl.temperature,
                                      row_shards=runtime.batch_ways(self.ctx.mesh))
        mask = np.asarray(batch["mask"])
        gap = (teacher_lp - np.asarray(batch["rollout_logprobs"])) * mask
        return {"teacher_logprobs": teacher_lp}, {"teacher_gap": float(gap.sum() / max(mask.sum(), 1.0))}


def run(config, workdir, *, initial_params=None):
    return MOPDStage(config, workdir).run(initial_params=initial_params)
