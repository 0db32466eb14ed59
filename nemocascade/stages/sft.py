"""The SFT stage: packed conversations -> ``losses.sft_loss`` through the shared train step and loop."""
from __future__ import annotations

import jax
import ml_collections

from nemocascade import data as data_lib
from nemocascade import losses
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.stages import policy, runtime

BATCH_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")


def make_sft_loss(cfg: model_lib.ModelConfig, *, z_loss: float = 0.0):
    """``loss_fn(params, batch, rng) -> (loss, metrics)`` for packed batches.

    batch: tokens/targets/segment_ids/positions int32[B, L], loss_mask f32[B, L] (1 on assistant targets).
    loss = masked mean cross-entropy (+ z-loss) + the model's weighted MoE auxiliary losses (the LM head
    chunked when ``cfg.logits_chunk_size`` is set: ``policy.target_logprobs_and_logsumexp``).
    """
    def loss_fn(params, batch, rng):
        del rng
        logprobs, logsumexp, aux = policy.target_logprobs_and_logsumexp(params, cfg, batch)
        ce, ce_aux = losses.sft_loss_from_logprobs(logprobs, logsumexp, batch["loss_mask"], z_loss=z_loss)
        total = ce + aux["moe_aux_loss"] + aux["router_z_loss"]
        metrics = {"ce_loss": ce, "moe_aux_loss": aux["moe_aux_loss"], "router_z_loss": aux["router_z_loss"],
                   "expert_load": aux["expert_load"], "loss_tokens": jax.numpy.sum(batch["loss_mask"])}
        metrics.update({k: v for k, v in ce_aux.items() if jax.numpy.ndim(v) == 0})
        return total, metrics
    return loss_fn


def parse_toy_mix(spec: str) -> dict[str, int]:
    """``"math=6000,if=3000,code=3000"`` -> ``{"math": 6000, ...}`` (the counts set the mixture; 0 drops a
    domain). Raises a ValueError naming ``data.toy_mix`` for anything else."""
    mix = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        domain, _, count = part.partition("=")
        domain = domain.strip()
        if domain not in data_lib.TOY_DOMAINS or not count.strip().isdigit() or domain in mix:
            raise ValueError(f"data.toy_mix={spec!r}: {part!r} is not domain=count with a toy domain from "
                             f"{sorted(data_lib.TOY_DOMAINS)} (once each) and a count >= 0")
        mix[domain] = int(count)
    if not any(mix.values()):
        raise ValueError(f"data.toy_mix={spec!r} selects no examples (and data.jsonl is not set)")
    return {d: n for d, n in mix.items() if n}


def sft_examples(data_cfg: ml_collections.ConfigDict, seed: int) -> list[dict]:
    """Training conversations: a JSONL file if ``data.jsonl`` is set, else ``data.toy_mix`` of the toy domains
    (domain -> example count; the counts set the mixture)."""
    if data_cfg.jsonl:
        return list(data_lib.read_jsonl(data_cfg.jsonl, on_error=data_cfg.on_bad_row))
    examples = []
    for domain, count in parse_toy_mix(data_cfg.toy_mix).items():
        examples.extend(data_lib.toy_sft_examples(domain, "train", count, seed=seed))
    return examples


def run(config: ml_collections.ConfigDict, workdir: str, *, initial_params=None):
    """Trains ``config.train.steps`` SFT steps in ``workdir`` (resuming if a checkpoint is there).

    ``config.data.batch_size`` is the global batch (packed rows per step over all processes); with several
    processes each one reads the same packed stream and puts its devices' rows on the mesh, so the run
    trains on the same batches as a single process on the same global mesh.
    Returns ``(StageContext, final TrainState)``.
    """
    ctx = runtime.build_context(config, workdir)
    runtime.check_sequence_split(ctx.mesh, config.data.seq_len, "data.seq_len")
    tokenizer = data_lib.load_tokenizer(config.data.tokenizer)
    if tokenizer.vocab_size > ctx.model_cfg.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but model.vocab_size is "
                         f"{ctx.model_cfg.vocab_size}")
    # One global stream on every process (not a shard per process): see ``runtime.put_global_batch``.
    dataset = data_lib.make_sft_dataset(
        sft_examples(config.data, config.seed), tokenizer, seq_len=config.data.seq_len,
        batch_size=config.data.batch_size, seed=config.seed, thinking=config.data.thinking,
        too_long=config.data.too_long, shard_index=0, shard_count=1)
    iterator = iter(dataset)
    state, state_shardings = runtime.init_or_restore_state(ctx, initial_params=initial_params,
                                                           data_iterator=iterator)
    batch_sharding = sharding_lib.batch_sharding(ctx.mesh)
    step_fn = runtime.build_step(ctx, make_sft_loss(ctx.model_cfg), state_shardings,
                                 {k: batch_sharding for k in BATCH_KEYS})

    def next_batch(_state):
        batch = next(iterator)
        return runtime.put_global_batch({k: batch[k] for k in BATCH_KEYS}, batch_sharding), {}

    state = runtime.train_and_close(ctx, state=state, step_fn=step_fn, next_batch=next_batch,
                                    data_iterator=iterator,
                                    tokens_per_step=config.data.batch_size * config.data.seq_len)
    return ctx, state
