"""Sequence packing of RL rollouts (``rl.pack_rollouts``): the packed batch holds every sample intact, trains exactly
like one sample per row (GRPO and MOPD losses and gradients, MoE and Mamba-2 models), and a packed GRPO stage's
first step equals the unpacked one's on fewer rows."""
import functools
import json

import jax
import ml_collections
import numpy as np
import pytest

from nemocascade import configs
from nemocascade import model as m
from nemocascade.cascade import pipeline
from nemocascade.rollout import generate
from nemocascade.stages import grpo, mopd, policy, rollout_batch
from nemocascade.stages.rollout_batch import pack_rollout_batch, packed_row_count, per_token, sample_index

MOE = m.presets.tiny().replace(vocab_size=48, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, num_experts=4,
                               num_experts_per_tok=2, expert_hidden_size=16, max_seq_len=64)
HYBRID = m.presets.tiny_hybrid().replace(vocab_size=48, d_model=32, num_heads=4, num_kv_heads=2, num_experts=4,
                                         expert_hidden_size=16, max_seq_len=64, mamba_num_heads=4, mamba_head_dim=8,
                                         mamba_state_size=8, mamba_n_groups=2, mamba_chunk_size=4)
PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20], [30, 31, 32, 33], [40, 41]]
NUM_SAMPLES, MAX_NEW, WIDTH, TEMPERATURE = 2, 12, 48, 0.9
STOPS = tuple(range(1, 10))     # a random 48-token model ends its answer after a few tokens


@functools.lru_cache(maxsize=2)
def _sampled(cfg):
    """(params, rollouts) of a random ``cfg`` model (each built once per process: the init compiles for ~10 s)."""
    params = jax.jit(m.init_params, static_argnums=0)(cfg, jax.random.PRNGKey(1))
    return params, generate(params, cfg, PROMPTS, max_new_tokens=MAX_NEW, num_samples=NUM_SAMPLES,
                            temperature=TEMPERATURE, stop_tokens=STOPS, rng=jax.random.PRNGKey(3))


def _samples_of(batch, index):
    """sample -> {name: its tokens' values, in order} of a (packed or unpacked) batch."""
    found = {}
    for sample in np.unique(index[index >= 0]).tolist():
        where = index == sample
        rows = np.flatnonzero(where.any(axis=1))
        assert len(rows) == 1, f"sample {sample} is split over rows {rows}"
        found[sample] = {name: value[rows[0]][where[rows[0]]] for name, value in batch.items()}
    return found


def test_packed_batch_holds_every_sample_intact():
    _, ro = _sampled(MOE)
    unpacked = rollout_batch.rollout_batch(ro, width=WIDTH)
    packed, index = pack_rollout_batch(unpacked, micro_batch_rows=10, row_shards=2)
    n = NUM_SAMPLES * len(PROMPTS)
    lengths = ro.prompt_lengths + ro.response_lengths
    assert len(index) == packed_row_count(len(index) - int((index < 0).all(axis=1).sum()), num_samples=n,
                                          micro_batch_rows=10, row_shards=2)
    assert len(index) < n and len(index) % 2 == 0
    before, after = _samples_of(unpacked, sample_index(unpacked)), _samples_of(packed, index)
    assert sorted(after) == list(range(n))
    for sample in range(n):
        assert len(after[sample]["tokens"]) == lengths[sample]
        for name in ("tokens", "targets", "mask", "rollout_logprobs"):
            np.testing.assert_array_equal(after[sample][name], before[sample][name], err_msg=f"{sample} {name}")
        np.testing.assert_array_equal(after[sample]["positions"], np.arange(lengths[sample]))
        assert len(set(after[sample]["segment_ids"])) == 1
    for row in range(len(index)):              # samples first with segments 1, 2, ..., then padding: all zero
        used = index[row] >= 0
        assert used.tolist() == sorted(used.tolist(), reverse=True)
        ids = packed["segment_ids"][row][used]
        assert (np.diff(ids) >= 0).all() and np.array_equal(np.unique(ids), np.arange(1, len(np.unique(ids)) + 1))
        for name, value in packed.items():
            assert not value[row][~used].any(), name
    assert packed["mask"].sum() == unpacked["mask"].sum()


def test_packing_only_the_kept_samples():
    """``keep``: the dropped samples (e.g. DAPO-filtered groups) get no tokens, the kept ones are packed intact into
    fewer rows; with none kept the batch is one unit of padding rows."""
    _, ro = _sampled(MOE)
    unpacked = rollout_batch.rollout_batch(ro, width=WIDTH)
    n = NUM_SAMPLES * len(PROMPTS)
    keep = np.repeat([True, False, True, False, False], NUM_SAMPLES)
    packed, index = pack_rollout_batch(unpacked, micro_batch_rows=n, row_shards=1, keep=keep)
    everything, _ = pack_rollout_batch(unpacked, micro_batch_rows=n, row_shards=1)
    assert len(index) < len(everything["tokens"])
    after = _samples_of(packed, index)
    assert sorted(after) == np.flatnonzero(keep).tolist()
    before = _samples_of(unpacked, sample_index(unpacked))
    for sample, values in after.items():
        for name in ("tokens", "targets", "mask", "rollout_logprobs"):
            np.testing.assert_array_equal(values[name], before[sample][name], err_msg=f"{sample} {name}")
    assert packed["mask"].sum() == (unpacked["mask"] * keep[:, None]).sum()
    nothing, nothing_index = pack_rollout_batch(unpacked, micro_batch_rows=n, row_shards=2, keep=np.zeros(n, bool))
    assert nothing_index.shape == (2, WIDTH) and (nothing_index < 0).all()
    assert not any(value.any() for value in nothing.values())


def test_sample_spans_gather_and_scatter():
    """Samples located in one pass (a sample may fill its row; a row may start with another sample), moved to
    one per row and back."""
    index = np.array([[0, 0, 1, 1, 1, -1], [2, -1, -1, -1, -1, -1], [3, 3, 3, 3, 3, 3], [4, 5, 5, -1, -1, -1]])
    assert rollout_batch.sample_spans(index) == {0: (0, 0, 2), 1: (0, 2, 5), 2: (1, 0, 1), 3: (2, 0, 6),
                                                 4: (3, 0, 1), 5: (3, 1, 3)}
    values = np.where(index >= 0, 10 * index + np.arange(6), 0)
    batch = {"tokens": values, "segment_ids": (index >= 0).astype(np.int32), "positions": np.zeros_like(index)}
    gathered = rollout_batch.gather_samples(batch, index, [5, 3, 1])
    np.testing.assert_array_equal(gathered["tokens"], [[51, 52, 0, 0, 0, 0], [30, 31, 32, 33, 34, 35],
                                                       [12, 13, 14, 0, 0, 0]])
    np.testing.assert_array_equal(gathered["positions"][0], [0, 1, 0, 0, 0, 0])
    target = np.zeros_like(values)
    rollout_batch.scatter_samples(target, index, gathered["tokens"], np.where(gathered["segment_ids"] > 0,
                                                                             np.array([5, 3, 1])[:, None], -1))
    np.testing.assert_array_equal(target, np.where(np.isin(index, [5, 3, 1]), values, 0))
    with pytest.raises(ValueError, match="sample 5 has 1 tokens in values but 2 in target"):
        rollout_batch.scatter_samples(target, index, gathered["tokens"], np.array([[5, -1, -1, -1, -1, -1]]))


def test_packed_row_counts():
    """Whole micro-batches of equal size, at most MAX_PACKED_SHAPES counts, never more rows than unpacked."""
    for n, micro_rows, shards in [(16, 16, 2), (16, 4, 2), (2048, 4, 2), (64, 16, 1), (8, 8, 8)]:
        counts = {packed_row_count(needed, num_samples=n, micro_batch_rows=micro_rows, row_shards=shards)
                  for needed in range(1, n + 1)}
        assert len(counts) <= rollout_batch.MAX_PACKED_SHAPES and max(counts) == n
        for rows in counts:
            micro_batches = -(-rows // micro_rows)
            assert rows % micro_batches == 0 and (rows // micro_batches) % shards == 0
    assert packed_row_count(3, num_samples=16, micro_batch_rows=16, row_shards=2) == 4
    assert packed_row_count(5, num_samples=16, micro_batch_rows=4, row_shards=2) == 8   # 2 micro-batches of 4


RL = ml_collections.ConfigDict(dict(temperature=TEMPERATURE, clip_eps_low=0.2, clip_eps_high=0.28, kl_coef=0.0,
                                   aggregation="seq_mean_token_mean", is_low=0.5, is_high=2.0))


@pytest.mark.parametrize("cfg", [MOE, HYBRID], ids=["moe", "mamba-hybrid"])
def test_packed_rows_train_like_one_sample_per_row(cfg):
    """The same rollouts, one per row or packed: the policy's token log-probs (= the sampler's), the GRPO and MOPD
    losses (averaged per response) and their gradients agree to float32 rounding."""
    params, ro = _sampled(cfg)
    unpacked = rollout_batch.rollout_batch(ro, width=WIDTH)
    rng = np.random.default_rng(0)
    unpacked["teacher_logprobs"] = (unpacked["rollout_logprobs"] - rng.uniform(0, 1, (len(ro.tokens), WIDTH))
                                    ).astype(np.float32)
    packed, packed_index = pack_rollout_batch(unpacked, micro_batch_rows=len(ro.tokens), row_shards=1)
    assert len(packed_index) < len(ro.tokens) / 2
    advantages = rng.normal(size=len(ro.tokens)).astype(np.float32)
    layouts = [(unpacked, sample_index(unpacked)), (packed, packed_index)]
    # the per-response mean (token_mean only needs the token log-probs, checked below to be the same)
    losses = {name: jax.jit(jax.value_and_grad(make_loss(cfg, RL), has_aux=True))
              for name, make_loss in (("grpo", grpo.make_grpo_loss), ("mopd", mopd.make_mopd_loss))}
    results = []
    for batch, index in layouts:
        batch = {**batch, "advantages": per_token(advantages, index)}
        lp = policy.frozen_logprobs(params, batch, cfg=cfg, temperature=TEMPERATURE)
        values = {key: (float(loss), grads)
                  for key, fn in losses.items() for (loss, _), grads in [fn(params, batch, None)]}
        results.append((_samples_of({"lp": np.asarray(lp), "mask": batch["mask"]}, index), values))
    (unpacked_lp, unpacked_losses), (packed_lp, packed_losses) = results
    for sample, values in unpacked_lp.items():
        on_response = values["mask"] > 0
        np.testing.assert_allclose(packed_lp[sample]["lp"][on_response], values["lp"][on_response], atol=2e-5)
        # the sampler's log-probs, from the packed rows too (strictly on-policy)
        p, r = ro.prompt_lengths[sample], ro.response_lengths[sample]
        np.testing.assert_allclose(packed_lp[sample]["lp"][on_response], ro.logprobs[sample, p:p + r], atol=2e-5)
    for key in losses:
        np.testing.assert_allclose(packed_losses[key][0], unpacked_losses[key][0], rtol=1e-5, atol=1e-6, err_msg=key)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=key),
                     packed_losses[key][1], unpacked_losses[key][1])


def test_each_teacher_scores_only_its_domains_samples():
    """MOPD's ``teacher_logprobs`` with two teachers (different params) for the samples of two domains: every token of
    a sample holds the log-prob that its own domain's teacher gives it in one forward over the unpacked batch, for an
    unpacked and a packed step batch alike; tokens of no sample hold 0."""
    params, ro = _sampled(MOE)
    other = jax.jit(m.init_params, static_argnums=0)(MOE, jax.random.PRNGKey(9))
    unpacked = rollout_batch.rollout_batch(ro, width=WIDTH)
    domains = ["math" if i % 3 else "if" for i in range(len(ro.tokens))]
    teachers = [(["math"], MOE, params), (["if"], MOE, other)]
    expected = {domain: np.asarray(policy.frozen_logprobs(p, unpacked, cfg=MOE, temperature=TEMPERATURE))
                for domain, p in (("math", params), ("if", other))}
    lengths = ro.prompt_lengths + ro.response_lengths
    packed, packed_index = pack_rollout_batch(unpacked, micro_batch_rows=10, row_shards=2)
    for batch, index in ((unpacked, sample_index(unpacked)), (packed, packed_index)):
        scores = mopd.teacher_logprobs({**batch, "sample_index": index}, domains, teachers, temperature=TEMPERATURE,
                                       row_shards=2)
        assert not scores[index < 0].any()
        for sample, values in _samples_of({"lp": scores}, index).items():
            own = expected[domains[sample]][sample, :lengths[sample]]
            np.testing.assert_allclose(values["lp"], own, atol=2e-5, err_msg=f"sample {sample}")
            assert np.abs(values["lp"] - expected[{"math": "if", "if": "math"}[domains[sample]]][
                sample, :lengths[sample]]).max() > 1e-3        # the other teacher would differ


SMALL_MODEL = dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, expert_hidden_size=32, max_seq_len=160)


def _stage_config(*, pack_rollouts, aggregation="seq_mean_token_mean"):
    stage = configs.tiny_rl_stage("grpo", domains=("math",), steps=1, learning_rate=3e-2, prompts_per_step=4,
                                  num_samples=4, max_new_tokens=8, max_prompt_tokens=152, prompts_per_domain=8,
                                  filter_uniform_groups=False, aggregation=aggregation, pack_rollouts=pack_rollouts)
    stage.train.update(log_every=1, checkpoint_every=1)
    config = configs.cascade_config(name="pack", model="tiny", mesh=configs.mesh_config(data=2, fsdp=4),
                                    order=("grpo",), stages={"grpo": stage}, data=configs.shared_data_config(),
                                    eval_cfg=configs.eval_config(domains=("math",), num_examples=4, max_new_tokens=8))
    config.model.update(SMALL_MODEL)
    return pipeline.stage_config(config, "grpo")


def _first_step(tmp_path, name, weights=None, **settings):
    """(the first step's (batch, host metrics), the lines of metrics.jsonl); ``weights`` f32[N]: the step's sample
    weights in place of GRPO's filter (which on a random model drops every group: no reward differs)."""
    stage = grpo.GRPOStage(_stage_config(**settings), str(tmp_path / name))
    if weights is not None:
        stage.sample_weights = lambda samples, rewards: (weights, {"kept_group_fraction": float(weights.mean())})
    seen = []
    make_batch = stage.make_batch
    stage.make_batch = lambda state, examples: seen.append(make_batch(state, examples)) or seen[-1]
    ctx, _ = stage.run()
    metrics = [line for line in open(ctx.workdir + "/metrics.jsonl")]
    return seen[0], metrics


def test_packed_grpo_stage_steps_like_the_unpacked_one_on_fewer_rows(tmp_path):
    """Also when samples are dropped (two of the four groups): the packed batch holds only the kept ones."""
    weights = np.repeat(np.float32([1, 0, 0, 1]), 4)
    (packed_batch, packed_host), packed_lines = _first_step(tmp_path, "packed", weights, pack_rollouts=True)
    (batch, host), lines = _first_step(tmp_path, "unpacked", weights, pack_rollouts=False)
    packed_metrics, metrics = json.loads(packed_lines[0]), json.loads(lines[0])
    assert len(batch["tokens"]) == 16 and packed_host["train_rows"] == len(packed_batch["tokens"]) < 16
    assert 0 < packed_host["train_token_fraction"] <= 1 and "train_rows" not in host
    assert packed_batch["mask"].sum() == batch["mask"].sum() > 0
    assert not batch["mask"][4:12].any() and packed_host["kept_group_fraction"] == host["kept_group_fraction"] == 0.5
    unpacked_tokens = sum(int((row > 0).sum()) for row in batch["segment_ids"][weights > 0])
    assert int((packed_batch["segment_ids"] > 0).sum()) == unpacked_tokens     # only the kept samples are packed
    for key in ("reward", "response_length", "num_tokens", "kept_group_fraction"):
        assert packed_metrics[key] == metrics[key], key
    for key in ("pg_loss", "loss", "grad_norm", "advantage_mean"):
        np.testing.assert_allclose(packed_metrics[key], metrics[key], rtol=2e-5, atol=1e-6, err_msg=key)


def test_packing_refuses_the_dr_grpo_normaliser(tmp_path):
    with pytest.raises(ValueError, match="rl.pack_rollouts with rl.aggregation='seq_mean_token_sum_norm'"):
        grpo.GRPOStage(_stage_config(pack_rollouts=True, aggregation="seq_mean_token_sum_norm"), str(tmp_path))
