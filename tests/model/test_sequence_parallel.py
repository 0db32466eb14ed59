"""Sequence parallelism: a row's tokens split over the ``sequence`` mesh axis give the single-device numbers.

A float64 hybrid (Mamba-2, attention + MoE, MLP) on packed rows whose segments and padding cross the shard
boundaries: logits, router statistics and gradients on meshes with ``sequence`` > 1 equal one device's to float64
round-off, so the all-gathered attention keys, the conv halo and the SSM state passed between shards are exact.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpr_testing import all_eqns
from nemocascade import model as m
from nemocascade import sharding
from nemocascade.model.attention import chunked_query_attention, grouped_attention
from nemocascade.rollout import generate

SP_MODEL = m.presets.tiny_hybrid().replace(
    vocab_size=64, d_model=32, num_layers=4, block_pattern=("mamba", "attention+moe", "mamba", "mlp"), num_heads=4,
    num_kv_heads=2, use_rope=True, num_experts=4, expert_hidden_size=16, mlp_hidden_size=24, max_seq_len=64,
    mamba_num_heads=4, mamba_head_dim=8, mamba_state_size=8, mamba_n_groups=2, mamba_chunk_size=4,
    dtype="float64", param_dtype="float64")
ROWS, LENGTH = 4, 32


def _loss(params, tokens, seg, cfg=SP_MODEL):
    logits, aux = m.forward(params, cfg, tokens, segment_ids=seg)
    token_loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], -1)[..., 0]
    loss = jnp.sum(token_loss * (seg > 0)) / jnp.sum(seg > 0) + aux["moe_aux_loss"] + aux["router_z_loss"]
    return loss, (logits, aux)


_loss_and_grad = jax.jit(jax.value_and_grad(_loss, has_aux=True))


@pytest.fixture(scope="module")
def reference():
    """Packed rows of 32 tokens (4 per shard at sequence=8): segments that start and end inside shards and span
    several, padding in the middle and at the end; params, the batch and the single-device results."""
    with jax.enable_x64(True):
        params = m.init_params(SP_MODEL, jax.random.PRNGKey(3))
        rng = np.random.default_rng(11)
        seg = np.zeros((ROWS, LENGTH), np.int32)
        seg[0, :13], seg[0, 13:30] = 1, 2                     # 13 and 17 tokens, 2 padding
        seg[1, :] = 1                                         # one sequence over all 8 shards
        seg[2, :5], seg[2, 5:6], seg[2, 9:27] = 1, 2, 3       # a 1-token segment, padding inside the row
        seg[3, 2:31] = 1                                      # left padding
        tokens = jnp.asarray(np.where(seg > 0, rng.integers(1, SP_MODEL.vocab_size, (ROWS, LENGTH)), 0), jnp.int32)
        seg = jnp.asarray(seg)
        (loss, (logits, aux)), grads = _loss_and_grad(params, tokens, seg)
        return params, tokens, seg, (loss, logits, aux, grads)


@pytest.mark.parametrize("axes", [dict(sequence=8), dict(data=2, sequence=4), dict(sequence=2, expert=2, tensor=2),
                                  dict(sequence=2, tensor=4)],
                         ids=["sequence8", "data2-sequence4", "sequence2-expert2-tensor2", "sequence2-tensor4"])
def test_sequence_parallel_forward_and_grads_equal_one_device(reference, axes):
    params, tokens, seg, (loss_ref, logits_ref, aux_ref, grads_ref) = reference
    mesh = sharding.make_mesh(axes)
    with jax.enable_x64(True), jax.set_mesh(mesh):
        batch = sharding.batch_sharding(mesh)
        (loss, (logits, aux)), grads = _loss_and_grad(
            jax.device_put(params, sharding.param_shardings(mesh, SP_MODEL)), jax.device_put(tokens, batch),
            jax.device_put(seg, batch))
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-11, atol=1e-11)
    for name in ("balance_loss", "z_loss", "expert_load"):
        np.testing.assert_allclose(aux[name], aux_ref[name], rtol=1e-12, atol=1e-12, err_msg=name)
    for path, got in jax.tree_util.tree_leaves_with_path(grads):
        want = grads_ref
        for key in path:
            want = want[key.key]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("axes, bound", [(dict(sequence=8), 0.2), (dict(sequence=4, tensor=2), 0.155)],
                         ids=["sequence8", "sequence4-tensor2"])
def test_sequence_shards_run_one_eighth_of_the_work(reference, axes, bound):
    """Per-device compiled FLOPs of the forward on 8 devices against one device: each device runs its own
    tokens' projections, experts and scan (on tensor=2, half the Mamba heads) and its queries' share of the
    attention scores (a zigzag layout's first chunk only over the first half of the keys). Measured: 0.133 and
    0.136 (0.137 with consecutive chunks, 0.166 with the Mamba heads whole on each tensor device)."""
    params, tokens, seg, _ = reference
    forward = jax.jit(lambda p, t, s: _loss(p, t, s)[0])
    with jax.enable_x64(True):
        whole = forward.lower(params, tokens, seg).compile().cost_analysis()["flops"]
        mesh = sharding.make_mesh(axes)
        with jax.set_mesh(mesh):
            split = forward.lower(jax.device_put(params, sharding.param_shardings(mesh, SP_MODEL)),
                                  tokens, seg).compile().cost_analysis()["flops"]
    assert split / whole < bound, (split, whole)


@pytest.mark.parametrize("axes, local_groups", [(dict(data=2, sequence=2, tensor=2), 1),
                                                (dict(sequence=2, tensor=4), 1)],
                         ids=["groups-split", "one-group-per-device"])
def test_mamba_shards_split_heads_over_tensor(reference, axes, local_groups):
    """Each device's conv and scan take its tokens and its share of the Mamba heads: on tensor=2 the H=4 heads
    with their G=2 groups; on tensor=4 (which does not divide G) one head each, with the B/C channels of the group
    it lies in. The shard_map of the conv and scan gets [rows, T/S, H/tensor, P] inputs and gathers the conv halo
    of its m=2 zigzag chunks over (H/tensor) P + 2 N channels (the values are checked by the equality test above)."""
    params, tokens, seg, _ = reference
    mesh = sharding.make_mesh(axes)
    with jax.enable_x64(True), jax.set_mesh(mesh):
        sharded = jax.device_put(params, sharding.param_shardings(mesh, SP_MODEL))
        jaxpr = jax.make_jaxpr(lambda p: _loss(p, tokens, seg)[0])(sharded)
    rows, tokens = ROWS // axes.get("data", 1), LENGTH // axes["sequence"]
    heads = SP_MODEL.mamba_num_heads // axes["tensor"]
    head_dim, state = SP_MODEL.mamba_head_dim, SP_MODEL.mamba_state_size
    inputs = lambda eqn: [v.aval.shape for v in eqn.params["jaxpr"].invars]  # noqa: E731
    mamba_shards = [eqn for eqn in all_eqns(jaxpr) if eqn.primitive.name == "shard_map"
                    and (rows, tokens, heads) in inputs(eqn)]               # dt: only the Mamba mixer takes it
    assert len(mamba_shards) == SP_MODEL.block_pattern.count("mamba")
    for eqn in mamba_shards:
        assert (rows, tokens, heads, head_dim) in inputs(eqn), inputs(eqn)  # x
        halo = [inner.invars[0].aval.shape for inner in all_eqns(eqn.params["jaxpr"])
                if inner.primitive.name == "all_gather"]
        assert (rows, 2, SP_MODEL.mamba_conv_kernel - 1, heads * head_dim + 2 * local_groups * state) in halo, halo


def test_sequence_parallelism_needs_a_conv_window_per_shard(reference):
    params, tokens, seg, _ = reference
    short = SP_MODEL.replace(block_pattern=("mamba",), num_layers=1)
    with jax.enable_x64(True):
        short_params = m.init_params(short, jax.random.PRNGKey(0))
    with jax.enable_x64(True), jax.set_mesh(sharding.make_mesh(dict(sequence=8))):
        with pytest.raises(ValueError, match="2 tokens per shard, fewer than the conv window's K-1 = 3"):
            jax.eval_shape(lambda p: _loss(p, tokens[:, :16], seg[:, :16], short), short_params)


def _sequence_collectives(fn, *args) -> set[str]:
    """The sequence-parallel collectives (K/V and conv halo all-gathers, the zigzag layout's ppermutes) in
    ``fn``'s jaxpr."""
    return {eqn.primitive.name for eqn in all_eqns(jax.make_jaxpr(fn)(*args))} & {"all_gather", "ppermute"}


def test_sampler_calls_keep_rows_whole_on_sequence_devices(reference):
    """With a cache (prefill, decode) the tokens are not split (no K/V gather, no conv halo; the same forward
    without a cache gathers both: in 16-token rows on sequence=4 the zigzag chunks would be shorter than the conv
    window, so its tokens stay in consecutive chunks, with no ppermute), and the cached forward on a sequence
    mesh equals one device's."""
    params, tokens, seg, _ = reference
    cached = jax.jit(lambda p, t, c: m.forward(p, SP_MODEL, t, segment_ids=jnp.ones_like(t), cache=c)[0])
    uncached = jax.jit(lambda p, t: m.forward(p, SP_MODEL, t, segment_ids=jnp.ones_like(t))[0])
    with jax.enable_x64(True):
        want = cached(params, tokens[:, :16], m.init_cache(SP_MODEL, ROWS, 16))
        mesh = sharding.make_mesh(dict(sequence=4, data=2))
        with jax.set_mesh(mesh):
            sharded = jax.device_put(params, sharding.param_shardings(mesh, SP_MODEL))
            cache = m.init_cache(SP_MODEL, ROWS, 16)
            assert _sequence_collectives(cached, sharded, tokens[:, :16], cache) == set()
            assert _sequence_collectives(uncached, sharded, tokens[:, :16]) == {"all_gather"}
            got = cached(sharded, tokens[:, :16], cache)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_sampler_splits_its_rows_over_sequence_devices(reference):
    """The sampler's rows take the ``sequence`` devices too: 8 rollout rows on data=2 x sequence=4 run one row
    per device (compiled FLOPs of a cached forward per device ~1/8 of one device's; with the rows split over
    ``data`` alone it is 1/2), and ``generate`` there gives one device's rollouts."""
    params, _, _, _ = reference
    prompts = [[3, 4, 5], [6, 7], [8, 9, 10, 11, 12], [13]]
    cached = jax.jit(lambda p, t, c: m.forward(p, SP_MODEL, t, segment_ids=jnp.ones_like(t), cache=c)[0])
    tokens = jnp.tile(jnp.arange(1, 9, dtype=jnp.int32), (8, 1))
    with jax.enable_x64(True):
        want = generate(params, SP_MODEL, prompts, max_new_tokens=6, num_samples=2, rng=jax.random.PRNGKey(2))
        whole = cached.lower(params, tokens, m.init_cache(SP_MODEL, 8, 16)).compile().cost_analysis()["flops"]
        mesh = sharding.make_mesh(dict(data=2, sequence=4))
        sharded = jax.device_put(params, sharding.param_shardings(mesh, SP_MODEL))
        got = generate(sharded, SP_MODEL, prompts, max_new_tokens=6, num_samples=2, rng=jax.random.PRNGKey(2),
                       mesh=mesh)
        rows = sharding.sampler_rows_sharding(mesh, 8)
        assert rows.spec == jax.sharding.PartitionSpec(("data", "sequence"))
        with jax.set_mesh(mesh):
            cache = jax.device_put(m.init_cache(SP_MODEL, 8, 16), rows)
            split = cached.lower(sharded, jax.device_put(tokens, rows), cache).compile().cost_analysis()["flops"]
    assert split / whole < 0.2, (split, whole)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(got.logprobs, want.logprobs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunk", [3, 7, 16])
def test_chunked_query_attention_equals_one_masked_attention(chunk):
    """Queries at slots 4..10 of 12-token rows, in chunks of 3 (the last one padded), 7 (one) or 16 (> T): the
    outputs and the gradients of q, keys and values equal one attention with the whole causal/segment mask."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(chunk)
        first, t, s = 4, 7, 12
        q = jnp.asarray(rng.normal(size=(2, t, 4, 5)))
        keys, values = (jnp.asarray(rng.normal(size=(2, s, 2, 5))) for _ in range(2))
        key_segments = jnp.asarray([[1] * 6 + [2] * 4 + [0] * 2, [0] + [1] * 11], jnp.int32)
        segments = key_segments[:, first:first + t]
        weights = jnp.asarray(rng.normal(size=q.shape))
        causal = jnp.arange(s)[None, :] <= (first + jnp.arange(t))[:, None]
        same = (segments[:, :, None] == key_segments[:, None, :]) & (segments[:, :, None] > 0)

        def chunked(q, keys, values):
            out = chunked_query_attention(q, segments, keys, values, key_segments, first + jnp.arange(t),
                                          query_chunk=chunk)
            return jnp.sum(out * weights), out

        def whole(q, keys, values):
            out = grouped_attention(q, keys, values, causal[None] & same)
            return jnp.sum(out * weights), out

        (_, got), got_grads = jax.value_and_grad(chunked, argnums=(0, 1, 2), has_aux=True)(q, keys, values)
        (_, want), want_grads = jax.value_and_grad(whole, argnums=(0, 1, 2), has_aux=True)(q, keys, values)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    assert np.all(np.asarray(got)[0, 6:] == 0)    # queries 10 (segment 0) and beyond see nothing
    for a, b in zip(got_grads, want_grads):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_stages_refuse_training_rows_the_sequence_axis_does_not_split(tmp_path):
    """SFT rows of data.seq_len = 100 tokens and GRPO rows of 90 + 12 = 102 on a sequence=8 mesh: clear errors
    naming the fields, before any data is read or any step is compiled."""
    from nemocascade import configs
    from nemocascade.cascade import pipeline
    from nemocascade.stages import grpo, sft

    stages = {
        "sft": configs.stage("sft", data=configs.sft_data_config(toy_mix="math=4", seq_len=100, batch_size=8),
                             optimizer=configs.optimizer_config(learning_rate=1e-3),
                             train=configs.train_config(steps=1, log_every=1, checkpoint_every=1)),
        "rl": configs.stage("grpo", rl=configs.rl_config(domains=("if",), prompts_per_step=2, num_samples=4,
                                                         max_new_tokens=12, max_prompt_tokens=90,
                                                         prompts_per_domain=4),
                            optimizer=configs.optimizer_config(learning_rate=1e-3),
                            train=configs.train_config(steps=1, log_every=1, checkpoint_every=1)),
    }
    config = configs.cascade_config(name="split", model="tiny", mesh=configs.mesh_config(data=1, sequence=8),
                                    order=("sft", "rl"), stages=stages, eval_cfg=configs.eval_config(),
                                    data=configs.shared_data_config())
    with pytest.raises(ValueError, match=r"data.seq_len = 100 is not a multiple of mesh.sequence = 8"):
        sft.run(pipeline.stage_config(config, "sft"), str(tmp_path / "sft"))
    with pytest.raises(ValueError, match=r"rl.max_prompt_tokens \+ rl.max_new_tokens = 102 is not a multiple of "
                                         r"mesh.sequence = 8"):
        grpo.run(pipeline.stage_config(config, "rl"), str(tmp_path / "rl"))
