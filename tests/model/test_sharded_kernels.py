"""On a mesh, the MoE and the Pallas kernels run per device on its own shards (``jax.shard_map``).

Left to XLA's partitioner, the router's top-k and the sort of the token copies were all-gathered, so every
device ran the experts on the whole batch, and a ``pallas_call`` (opaque to the partitioner) would be run on
all-gathered operands. These tests check that each device now routes, sorts and multiplies only its own
tokens' copies, that expert parallelism (a device holds E / expert experts) and tensor parallelism (F / tensor
of each expert's width) give the single-device numbers, and that the Pallas kernels (interpret mode) see local
shapes and give the single-device XLA numbers, values and gradients.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpr_testing import all_eqns
from nemocascade import model as m
from nemocascade import sharding
from nemocascade.model import sequence_layout
from nemocascade.model.attention import self_attention
from nemocascade.rollout import EpisodeLimits, generate, generate_episodes

MOE = m.presets.tiny().replace(vocab_size=64, d_model=32, num_layers=1, num_heads=4, num_kv_heads=2,
                               num_experts=8, num_experts_per_tok=2, expert_hidden_size=16, max_seq_len=64,
                               param_dtype="float64", dtype="float64")
HYBRID = m.presets.tiny_hybrid().replace(vocab_size=64, d_model=32, num_heads=4, num_kv_heads=2, head_dim=16,
                                         mamba_num_heads=4, mamba_head_dim=16, mamba_state_size=8, mamba_n_groups=2,
                                         num_experts=4, expert_hidden_size=16, mamba_chunk_size=4, max_seq_len=64)


def _batch(rows: int, length: int):
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, 64, size=(rows, length)), jnp.int32)
    lengths = rng.integers(length // 3, length + 1, size=(rows, 1))
    seg = np.where(np.arange(length)[None] < lengths, 1, 0)
    seg[:, length // 2:] *= 2  # two packed segments per row (and a padded tail)
    return tokens, jnp.asarray(seg, jnp.int32)


def _loss(params, tokens, seg, cfg):
    logits, aux = m.forward(params, cfg, tokens, segment_ids=seg)
    return jnp.mean(jnp.where(seg[..., None] > 0, logits, 0) ** 2) + aux["moe_aux_loss"], (logits, aux["expert_load"])


def _run(cfg, params, tokens, seg, axes=None):
    """(loss, (logits, expert_load)), grads: on one device, or with params and batch on a mesh of ``axes``."""
    fn = jax.jit(jax.value_and_grad(_loss, has_aux=True), static_argnums=3)
    if axes is None:
        return fn(params, tokens, seg, cfg)
    mesh = sharding.make_mesh(axes)
    batch = sharding.batch_sharding(mesh)
    if tokens.shape[0] % sharding.batch_shards(mesh):  # too few rows to split: every device holds them all
        batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    with jax.set_mesh(mesh):
        return fn(jax.device_put(params, sharding.param_shardings(mesh, cfg)), jax.device_put(tokens, batch),
                  jax.device_put(seg, batch), cfg)


def _assert_same(run, ref, rtol, atol):
    (loss, (logits, load)), grads = run
    (loss_ref, (logits_ref, load_ref)), grads_ref = ref
    np.testing.assert_allclose(loss, loss_ref, rtol=rtol)
    np.testing.assert_allclose(logits, logits_ref, rtol=rtol, atol=atol)
    np.testing.assert_array_equal(load, load_ref)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(grads_ref)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("rows,axes", [
    (8, dict(expert=4, data=2)),              # 2 experts per device; tokens gathered over expert, reduce-scattered
    (8, dict(expert=2, fsdp=2, tensor=2)),    # + half of each expert's width per device, fsdp-gathered weights
    (2, dict(expert=8)),                      # 2 rows: replicated tokens, 1 expert per device, outputs all-reduced
])
def test_moe_on_a_mesh_equals_one_device_in_float64(rows, axes):
    with jax.enable_x64(True):
        params = m.init_params(MOE, jax.random.PRNGKey(0))
        tokens, seg = _batch(rows, 12)
        _assert_same(_run(MOE, params, tokens, seg, axes), _run(MOE, params, tokens, seg), rtol=1e-12, atol=1e-13)


def test_each_device_routes_and_sorts_only_its_own_tokens():
    """data=8: the compiled step sorts N*k / 8 token copies per MoE layer, and never all N*k."""
    cfg = MOE.replace(param_dtype="float32", dtype="float32")
    params = m.init_params(cfg, jax.random.PRNGKey(0))
    tokens, seg = _batch(16, 12)
    mesh = sharding.make_mesh(dict(data=8))
    batch = sharding.batch_sharding(mesh)
    with jax.set_mesh(mesh):
        hlo = jax.jit(_loss, static_argnums=3).lower(
            jax.device_put(params, sharding.param_shardings(mesh, cfg)), jax.device_put(tokens, batch),
            jax.device_put(seg, batch), cfg).compile().as_text()
    sorted_sizes = {int(size) for size in re.findall(r"\(s32\[(\d+)\]\{0\}, s32\[\d+\]\{0\}\) sort\(", hlo)}
    copies = 16 * 12 * cfg.num_experts_per_tok
    assert sorted_sizes == {copies // 8}, sorted_sizes


def test_pallas_kernels_run_per_device_and_equal_xla_on_one_device():
    """A hybrid model (Mamba-2 SSD scan, flash attention, grouped matmul) with kernel_impl="interpret" on a
    data x fsdp x tensor mesh: every pallas_call sits in a shard_map and sees its device's rows (and heads),
    and the loss, logits, expert loads and gradients equal the single-device XLA path's."""
    params = m.init_params(HYBRID, jax.random.PRNGKey(0))
    tokens, seg = _batch(4, 16)
    ref = _run(HYBRID, params, tokens, seg)
    cfg = HYBRID.replace(kernel_impl="interpret")
    axes = dict(data=2, fsdp=1, tensor=2, expert=2)
    mesh = sharding.make_mesh(axes)
    with jax.set_mesh(mesh):
        jaxpr = jax.make_jaxpr(lambda p: _loss(p, tokens, seg, cfg))(params)
    kernels = {}
    for eqn in all_eqns(jaxpr):
        if eqn.primitive.name == "shard_map":
            for inner in all_eqns(eqn.params["jaxpr"]):
                if inner.primitive.name == "pallas_call":
                    kernels.setdefault(eqn.params["jaxpr"], []).append(inner)
    calls = [eqn for eqns in kernels.values() for eqn in eqns]
    assert len([e for e in all_eqns(jaxpr) if e.primitive.name == "pallas_call"]) == len(calls) >= 3
    shapes = [tuple(v.aval.shape) for eqn in calls for v in eqn.invars if getattr(v.aval, "ndim", 0) == 4]
    assert (1, 16, HYBRID.mamba_num_heads // 2, HYBRID.mamba_head_dim) in shapes     # SSD x: 4 rows / 4, heads / 2
    assert (1, 16, HYBRID.num_heads // 2, HYBRID.resolved_head_dim) in shapes       # flash attention q
    _assert_same(_run(cfg, params, tokens, seg, axes), ref, rtol=2e-5, atol=2e-6)


def test_pallas_kernels_under_sequence_parallelism_equal_xla_on_one_device():
    """Rows of 16 tokens split over ``sequence`` (8 per device; a segment boundary and padding cross the shards;
    heads split over ``tensor``, experts over ``expert``) with kernel_impl="interpret": the zigzag layout's two
    chunks of 4 tokens per device, attention as one flash call per chunk at its slots, the SSD kernel per chunk
    plus the passed state, the grouped matmul on each device's tokens: the loss, logits, expert loads and
    gradients equal the single-device XLA path's."""
    params = m.init_params(HYBRID, jax.random.PRNGKey(1))
    tokens, seg = _batch(4, 16)
    cfg = HYBRID.replace(kernel_impl="interpret")
    axes = dict(sequence=2, tensor=2, expert=2)
    with jax.set_mesh(sharding.make_mesh(axes)):
        jaxpr = jax.make_jaxpr(lambda p: _loss(p, tokens, seg, cfg))(params)
    # Flash forward calls take (q offset, q, k, v, q segments, kv segments): one per chunk and attention layer.
    flash_calls = [eqn for eqn in all_eqns(jaxpr) if eqn.primitive.name == "pallas_call"
                   and str(eqn.params["name"]) == "flash_attention_fwd"]
    assert len(flash_calls) == 2 * HYBRID.layer_kinds.count("attention")
    _assert_same(_run(cfg, params, tokens, seg, axes), _run(HYBRID, params, tokens, seg), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("axes", [dict(data=2, tensor=2, expert=2), dict(sequence=2, tensor=2, expert=2)],
                         ids=["data-tensor-expert", "sequence-tensor-expert"])
def test_rollouts_with_pallas_kernels_on_a_mesh_equal_one_device_xla(axes):
    """The sampler on a mesh with kernel_impl="interpret": prefill (flash attention, SSD scan) and decode
    (decode attention, grouped matmul) per device give the single-device XLA rollouts: same tokens, log-probs.
    With ``sequence`` the 8 rows are split over ``expert x sequence`` (the sampler's rows take it)."""
    params = m.init_params(HYBRID, jax.random.PRNGKey(3))
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13], [20], [30, 31, 32, 33]]
    ref = generate(params, HYBRID, prompts, max_new_tokens=4, num_samples=2, rng=jax.random.PRNGKey(9))
    cfg = HYBRID.replace(kernel_impl="interpret")
    mesh = sharding.make_mesh(axes)
    sharded = jax.device_put(params, sharding.param_shardings(mesh, cfg))
    out = generate(sharded, cfg, prompts, max_new_tokens=4, num_samples=2, rng=jax.random.PRNGKey(9), mesh=mesh)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, rtol=1e-5, atol=1e-5)


def test_episodes_with_pallas_kernels_on_a_mesh_equal_one_device_xla():
    """Multi-turn episodes with kernel_impl="interpret" on a mesh: the observations fed into the kept caches by
    decode attention with several queries per row (and the SSD scan from the cached state) give the single-device
    XLA episodes."""
    params = m.init_params(HYBRID, jax.random.PRNGKey(4))
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13], [20], [30, 31, 32, 33]]
    answer = lambda row, turn: None if turn[-1] < 4 else [40 + row] * (1 + 5 * (row % 3))    # noqa: E731
    run = dict(limits=EpisodeLimits(max_turns=2, turn_tokens=6, total_tokens=40), num_samples=2,
               stop_tokens=tuple(range(1, 16)), rng=jax.random.PRNGKey(9))
    ref = generate_episodes(params, HYBRID, prompts, answer, **run)
    cfg = HYBRID.replace(kernel_impl="interpret")
    mesh = sharding.make_mesh(dict(data=2, tensor=2, expert=2))
    sharded = jax.device_put(params, sharding.param_shardings(mesh, cfg))
    out = generate_episodes(sharded, cfg, prompts, answer, mesh=mesh, **run)
    assert ref.observed.sum(axis=1).max() > 1
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, rtol=1e-5, atol=1e-5)


def test_sequence_shards_run_one_flash_call_per_zigzag_chunk_at_its_slots():
    """512-token rows on sequence=4 (zigzag chunks of 64): each device's chunks ``i`` and ``7 - i`` go to one flash
    call each, the first over the first half of the row's gathered keys (256: chunk i < 4 lies there), the second
    over all 512, at q_offset 64 i and 64 (7 - i), traced from the device's place (one call serves all devices)."""
    q, k = jnp.ones((2, 512, 4, 16)), jnp.ones((2, 512, 2, 16))
    seg = jnp.ones((2, 512), jnp.int32)
    with jax.set_mesh(sharding.make_mesh(dict(sequence=4, data=2))):
        split = sequence_layout.sequence_split(HYBRID, 512)
        assert split == (("sequence",), 2)
        jaxpr = jax.make_jaxpr(lambda q, k: self_attention(q, k, k, seg, "interpret", split=split))(q, k)
    calls = [e for e in all_eqns(jaxpr) if e.primitive.name == "pallas_call"
             and str(e.params["name"]) == "flash_attention_fwd"]
    assert sorted(tuple(v.aval.shape for v in e.invars[:3]) for e in calls) == [
        ((1,), (1, 64, 4, 16), (1, 256, 2, 16)), ((1,), (1, 64, 4, 16), (1, 512, 2, 16))]
