"""A stage's per-device memory and step FLOPs on a topology, and whether it fits.

Phases of a step, per device (all terms in bytes, see ``memory.py`` for the activation formulas):
  resident  params (``param_dtype``) + optimizer moments (AdamW: 2 per trainable leaf, in the params'
            dtype, sharded like their params) + other models' params (MOPD teachers, the RLHF reward model)
  train     resident + gradients (the params' size and dtype; twice that with ``grad_accum_steps > 1``:
            the running sum and the micro-batch's) + saved activations of one micro-batch + one layer's
            weights gathered over ``fsdp`` and cast to the compute dtype
  rollout   resident + KV cache + the larger of the prefill's workspace and, for multi-turn episodes, an
            observation's feeding call's (RL stages only)
  judge     resident + the judge's KV cache + prefill workspace for one of its sampler calls (RLHF with a
            pairwise judge, sized as the policy; the policy's rollouts are done by then)
The plan fits when the largest phase stays under ``HEADROOM`` of the device's HBM.

Step FLOPs are model FLOPs (``model.flops_per_token``: 6 x active matmul params per token plus the causal
attention term 6 x attention layers x L x H x Dh; remat recomputation is not counted, as MFU conventions
go). RL stages add the forward passes of sampling and scoring, 2/6 of the training FLOPs each: the
rollout itself (multi-turn episodes keep their cache, so they too pass each token once), plus the teacher (MOPD)
or reward model (RLHF) scoring the rows once, or a pairwise judge's sampler calls (a forward over each call's
rows x slots). The step time at a given MFU is ``FLOPs / (devices x peak x MFU)``; decoding is bandwidth-bound,
so for RL stages it is a floor.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import ml_collections
import numpy as np

from nemocascade import hardware
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.model.layers import dtype_of
from nemocascade.planning import memory
from nemocascade.planning.shards import abstract_params, param_layout
from nemocascade.planning.workload import Workload, workload
from nemocascade.rewards import reward_model as reward_model_lib
from nemocascade.rollout.multi_turn import FEED_CHUNK

HEADROOM = 0.9            # usable fraction of HBM (XLA's own buffers, fragmentation, uncounted temporaries)
MOMENTS = {"adamw": 2, "sgd": 0}
TERMS = ("params", "optimizer", "other_models", "grads", "activations", "layer_gather", "kv_cache", "prefill",
         "judge_kv_cache", "judge_prefill")
TRAIN_TERMS = ("params", "optimizer", "other_models", "grads", "activations", "layer_gather")
ROLLOUT_TERMS = ("params", "optimizer", "other_models", "kv_cache", "prefill")
JUDGE_TERMS = ("params", "optimizer", "other_models", "judge_kv_cache", "judge_prefill")
PROMPT_BUCKET = 16        # rollout/generate.py rounds prompt widths up to a multiple of 16


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per-device bytes by term (``TERMS``), the step's FLOPs and what they were computed for.

    ``tokens_per_device``: tokens of one micro-batch on one device; ``batch_split``: ways the micro-batch's
    rows are split over devices (1 = replicated), each row's tokens further over ``sequence``
    (``memory.sequence_split``).
    """

    workload: Workload
    topology: hardware.Topology
    axis_sizes: dict[str, int]
    cfg: model_lib.ModelConfig
    param_count: dict[str, int]
    bytes: dict[str, int]
    tokens_per_device: int
    batch_split: int
    train_flops: float
    rollout_flops: float

    @property
    def train_peak(self) -> int:
        return sum(self.bytes[t] for t in TRAIN_TERMS)

    @property
    def rollout_peak(self) -> int:
        return sum(self.bytes[t] for t in ROLLOUT_TERMS) if self.workload.rollout else 0

    @property
    def judge_peak(self) -> int:
        return sum(self.bytes[t] for t in JUDGE_TERMS) if self.workload.judge else 0

    @property
    def peak(self) -> int:
        return max(self.train_peak, self.rollout_peak, self.judge_peak)

    @property
    def budget(self) -> float:
        return HEADROOM * self.topology.hbm_bytes

    @property
    def fits(self) -> bool:
        return self.peak <= self.budget

    @property
    def step_flops(self) -> float:
        return self.train_flops + self.rollout_flops

    def step_seconds(self, mfu: float, topology: hardware.Topology | None = None) -> float | None:
        """Step time at ``mfu`` on ``topology`` (default: the planned one); None without a peak."""
        topology = topology or self.topology
        if topology.peak_flops is None:
            return None
        return self.step_flops / (topology.num_devices * topology.peak_flops * mfu)

    def biggest(self) -> str:
        """The largest term of the phase that sets the peak."""
        phases = ((self.train_peak, TRAIN_TERMS), (self.rollout_peak, ROLLOUT_TERMS), (self.judge_peak, JUDGE_TERMS))
        terms = max(phases, key=lambda phase: phase[0])[1]
        return max(terms, key=lambda t: self.bytes[t])

    def suggestion(self) -> str:
        """What to change to shrink ``biggest()`` (config overrides of this code base)."""
        wl, cfg, term = self.workload, self.cfg, self.biggest()
        if term in ("params", "optimizer", "grads", "other_models"):
            return (f"shard the parameters over more devices (--config.mesh.fsdp / --config.mesh.expert, now "
                    f"{self.axis_sizes}) or pick a larger topology; params are {cfg.param_dtype}")
        if term == "activations":
            if self.tokens_per_device > wl.seq_len:
                tips = [f"raise --config.train.grad_accum_steps (now {wl.grad_accum_steps}; the micro-batch has "
                        f"{self.tokens_per_device} tokens per device)"]
            else:
                tips = [f"split the rows' tokens over devices with --config.mesh.sequence (sequence parallelism; "
                        f"now {self.axis_sizes.get('sequence', 1)}) or shorter rows "
                        f"(--config.data.seq_len, now {wl.seq_len}): a device holds at most one row per micro-batch"]
            if cfg.remat != "full":
                tips.append(f"set --config.model.remat=full (now {cfg.remat!r})")
            if wl.lm_head_loss and not cfg.logits_chunk_size:
                tips.append("chunk the LM head --config.model.logits_chunk_size=2048 (the full path keeps "
                            "f32 logits and their softmax, 8 bytes x vocabulary per token)")
            if cfg.kernel_impl == "xla" and any("attention" in k for k in cfg.layer_kinds):
                tips.append("use flash attention --config.model.kernel_impl=auto (the XLA path keeps "
                            "f32 [heads, L] probabilities per token)")
            if self.batch_split == 1 and np.prod(list(self.axis_sizes.values())) > 1:
                tips.append("make the micro-batch's rows divisible by data x fsdp x expert (it is replicated now)")
            return "; ".join(tips)
        if term == "layer_gather":
            return "split the layers' weights further with --config.mesh.tensor or --config.mesh.expert"
        if term == "kv_cache":
            return ("fewer rollout rows per device: lower rl.prompts_per_step x rl.num_samples or "
                    "rl.max_new_tokens, or spread the rows over more devices")
        if term in ("judge_kv_cache", "judge_prefill"):
            return (f"fewer judge rows per sampler call (rl.judge.batch_size, now {wl.judge.rows}), a smaller "
                    f"rl.judge.max_new_tokens, or shorter rollouts (the judge reads whole responses)")
        tip = "lower rl.max_prompt_tokens or the rollout rows per device"
        if cfg.kernel_impl == "xla":
            tip += ("; use flash attention --config.model.kernel_impl=auto (the XLA path keeps one layer's f32 "
                    "attention scores over every pair of prompt positions)")
        return tip


_param_count = functools.lru_cache(maxsize=8)(model_lib.param_count)
_flops_per_token = functools.lru_cache(maxsize=32)(model_lib.flops_per_token)


def _trainable(cfg: model_lib.ModelConfig, wl: Workload):
    shapes = abstract_params(cfg)
    if wl.kind == "reward_model":   # the policy's lm_head stays in the tree, frozen
        return reward_model_lib.trainable_mask(shapes, cfg, freeze_router=wl.freeze_router)
    return model_lib.trainable_mask(shapes, cfg, freeze_router=wl.freeze_router)


def resolve_mesh(mesh: Mapping[str, int], topology: hardware.Topology) -> dict[str, int]:
    """The config's mesh axes fitted to the topology's device count (one axis may be -1)."""
    try:
        return sharding_lib.resolve_axis_sizes(dict(mesh), topology.num_devices)
    except ValueError as err:
        raise ValueError(f"config.mesh {dict(mesh)} does not fit {topology.name} ({topology.num_devices} devices): "
                         f"{err}. Override it, e.g. --config.mesh.fsdp=-1 --config.mesh.expert=1") from None


def _bucketed(prompt_len: int) -> int:
    return -(-prompt_len // PROMPT_BUCKET) * PROMPT_BUCKET


def _sampling_bytes(cfg: model_lib.ModelConfig, rollout, axis_sizes: Mapping[str, int]) -> tuple[int, int]:
    """(KV/SSM cache, prefill or feeding workspace) bytes per device of one sampler call over ``rollout``'s rows."""
    rows_per_device = rollout.rows // memory.sampler_split(rollout.rows, axis_sizes)
    prompt = _bucketed(rollout.prompt_len)
    slots = prompt + rollout.new_tokens
    workspace = memory.prefill_bytes(cfg, rows_per_device, prompt, axis_sizes["tensor"])
    if rollout.turns > 1:
        workspace = max(workspace, memory.cached_feed_bytes(cfg, rows_per_device, min(FEED_CHUNK, slots), slots,
                                                            axis_sizes["tensor"]))
    return memory.kv_cache_bytes(cfg, rows_per_device, slots), workspace


def make_plan(config: ml_collections.ConfigDict, topology: hardware.Topology, stage: str | None = None) -> Plan:
    """The ``Plan`` of one stage of ``config`` on ``topology`` with the config's mesh (see module docstring)."""
    cfg = model_lib.ModelConfig.from_dict(config.model.to_dict())
    axis_sizes = resolve_mesh(config.mesh.to_dict(), topology)
    wl = workload(config, stage)
    if wl.rows % wl.grad_accum_steps:
        raise ValueError(f"stage {wl.stage!r}: {wl.rows} rows per step are not divisible by "
                         f"train.grad_accum_steps={wl.grad_accum_steps}")
    layout = param_layout(cfg, axis_sizes, _trainable(cfg, wl))
    compute_bytes = np.dtype(dtype_of(cfg.dtype)).itemsize
    micro_rows = wl.rows // wl.grad_accum_steps
    split = memory.batch_split(micro_rows, axis_sizes)
    sequence = memory.sequence_split(wl.seq_len, axis_sizes)
    tokens_per_device = micro_rows // split * wl.seq_len // sequence
    if wl.optimizer not in MOMENTS:
        raise ValueError(f"optimizer.name={wl.optimizer!r}: the planner knows {sorted(MOMENTS)}")
    terms = dict.fromkeys(TERMS, 0)
    terms.update(
        params=layout.device_bytes,
        optimizer=MOMENTS[wl.optimizer] * layout.trainable_device_bytes,
        other_models=wl.resident_models * layout.device_bytes,
        grads=layout.device_bytes * (2 if wl.grad_accum_steps > 1 else 1),
        activations=tokens_per_device * memory.activation_bytes_per_token(
            cfg, axis_sizes["tensor"], wl.seq_len, lm_head_loss=wl.lm_head_loss,
            gather=memory.expert_gather(cfg, micro_rows, axis_sizes), sequence=sequence)
        + (memory.lm_head_workspace_bytes(cfg, micro_rows // split, wl.seq_len, axis_sizes["tensor"])
           if wl.lm_head_loss else 0)
        + memory.sequence_attention_workspace_bytes(cfg, micro_rows // split, wl.seq_len, axis_sizes["tensor"],
                                                    sequence),
        layer_gather=layout.gathered_layer_elements * compute_bytes)
    flops_per_token = _flops_per_token(cfg, wl.seq_len)
    rollout_flops = 0.0
    if wl.rollout is not None:
        terms["kv_cache"], terms["prefill"] = _sampling_bytes(cfg, wl.rollout, axis_sizes)
        scorer_passes = 1 if wl.resident_models and wl.judge is None else 0
        rollout_flops = (1 + scorer_passes) * wl.tokens * flops_per_token / 3
    if wl.judge is not None:
        terms["judge_kv_cache"], terms["judge_prefill"] = _sampling_bytes(cfg, wl.judge, axis_sizes)
        slots = _bucketed(wl.judge.prompt_len) + wl.judge.new_tokens
        rollout_flops += wl.judge_calls * wl.judge.rows * slots * flops_per_token / 3
    return Plan(workload=wl, topology=topology, axis_sizes=axis_sizes, cfg=cfg,
                param_count=_param_count(cfg), bytes=terms, tokens_per_device=tokens_per_device,
                batch_split=split, train_flops=wl.tokens * flops_per_token, rollout_flops=rollout_flops)
