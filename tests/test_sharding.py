"""Sharded forward/backward equal the single-device ones; mesh errors are clear."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemocascade import model as m
from nemocascade import sharding

CFG = m.presets.tiny().replace(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                               num_experts=8, num_experts_per_tok=2, expert_hidden_size=16, max_seq_len=64)


def _loss(params, tokens, seg):
    logits, aux = m.forward(params, CFG, tokens, segment_ids=seg)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * (seg > 0)) + aux["moe_aux_loss"], logits


@pytest.fixture(scope="module")
def reference():
    params = m.init_params(CFG, jax.random.PRNGKey(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, size=(8, 12)), jnp.int32)
    seg = jnp.asarray(np.repeat([[1] * 7 + [2] * 3 + [0] * 2], 8, axis=0), jnp.int32)
    (loss, logits), grads = jax.jit(jax.value_and_grad(_loss, has_aux=True))(params, tokens, seg)
    return params, tokens, seg, logits, grads


@pytest.mark.parametrize("axes", [dict(data=2, fsdp=2, tensor=2), dict(expert=8), dict(fsdp=4, expert=2),
                                  dict(fsdp=2, sequence=2, tensor=2)])
def test_sharded_forward_and_grad_equal_single_device(reference, axes):
    params, tokens, seg, logits_ref, grads_ref = reference
    mesh = sharding.make_mesh(axes)
    shardings = sharding.param_shardings(mesh, CFG)
    sharded = jax.device_put(params, shardings)
    batch = sharding.batch_sharding(mesh)
    with jax.set_mesh(mesh):
        (_, logits), grads = jax.jit(jax.value_and_grad(_loss, has_aux=True))(
            sharded, jax.device_put(tokens, batch), jax.device_put(seg, batch))
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_embed_dimension_is_split_over_fsdp_and_sequence_together():
    specs = sharding.param_partition_specs(sharding.make_mesh(dict(fsdp=2, sequence=4)), CFG)
    assert specs["layer_0"]["attention"]["wq"] == jax.sharding.PartitionSpec(("fsdp", "sequence"), None, None)
    specs = sharding.param_partition_specs(sharding.make_mesh(dict(sequence=2, tensor=4)), CFG)
    assert specs["layer_0"]["attention"]["wo"] == jax.sharding.PartitionSpec("tensor", None, "sequence")
    specs = sharding.param_partition_specs(sharding.make_mesh(dict(fsdp=8)), CFG.replace(d_model=36, num_heads=2))
    assert specs["layer_0"]["attention"]["wq"] == jax.sharding.PartitionSpec(None, None, None)  # 8 does not divide 36


def test_params_are_born_sharded():
    mesh = sharding.make_mesh(dict(fsdp=2, expert=2, tensor=2))
    params = sharding.init_params_sharded(CFG, jax.random.PRNGKey(0), mesh)
    w_up = params["layer_0"]["moe"]["w_up"]
    assert w_up.sharding.spec == jax.sharding.PartitionSpec("expert", "fsdp", "tensor")
    assert len(w_up.addressable_shards) == 8 and w_up.addressable_shards[0].data.shape == (4, 16, 8)
    np.testing.assert_allclose(np.asarray(w_up),
                               np.asarray(m.init_params(CFG, jax.random.PRNGKey(0))["layer_0"]["moe"]["w_up"]),
                               rtol=1e-6, atol=1e-7)


def test_mesh_errors_are_clear():
    with pytest.raises(ValueError, match=r"product 12 but there are 8 devices"):
        sharding.make_mesh(dict(data=3, tensor=4))
    with pytest.raises(ValueError, match="unknown axis name"):
        sharding.make_mesh(dict(model=8))
    with pytest.raises(ValueError, match="only one mesh axis may be -1"):
        sharding.make_mesh(dict(data=-1, fsdp=-1))
    with pytest.raises(ValueError, match="need 5 entries"):
        sharding.make_mesh((2, 4))
    with pytest.raises(TypeError, match="mesh axis sizes must be ints"):
        sharding.make_mesh(dict(data=8.0))
    assert sharding.make_mesh(dict(data=-1, tensor=2)).shape["data"] == 4


def test_mesh_from_tuple_and_config_dict_with_auto_axes():
    mesh = sharding.make_mesh((1, 2, 2, 1, 2))
    assert dict(mesh.shape) == dict(data=1, fsdp=2, expert=2, sequence=1, tensor=2)
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    from nemocascade import configs
    assert dict(sharding.make_mesh(configs.mesh_config(data=-1, expert=4)).shape) == dict(data=2, fsdp=1, expert=4,
                                                                                          sequence=1, tensor=1)
