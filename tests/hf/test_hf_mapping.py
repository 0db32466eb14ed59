"""Our params <-> Hugging Face tensors without torch: round trips, on-disk layout, bad checkpoints, the CLI."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemocascade import sharding
from nemocascade.checkpoint import Checkpointer
from nemocascade.hf import convert, load_pretrained, qwen3_moe, save_pretrained
from nemocascade.hf import mapping
from nemocascade.hf.mapping import param_shapes
from nemocascade.hf.safetensors_io import SINGLE_FILE, CheckpointReader, TensorSpec, write_checkpoint
from cpu_env import cpu_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# d_model 32, 4 heads x 8, 2 KV heads, 4 experts of width 16, layer 1 dense (mlp_only_layers=[1]).
HF_CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 64, "hidden_size": 32,
    "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 8, "moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2,
    "norm_topk_prob": True, "mlp_only_layers": [1], "max_position_embeddings": 64, "bos_token_id": 7,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000.0}, "dtype": "float32",
}


def _random_params(cfg, seed=0):
    """Random normal params of our tree's shapes (norm scales too, so a swapped norm would show); the router
    bias, which Qwen3-MoE lacks, stays 0. Host numpy: no model compile needed."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda p, s: np.zeros(s.shape, s.dtype) if "router_bias" in jax.tree_util.keystr(p)
        else rng.normal(size=s.shape).astype(s.dtype), param_shapes(cfg))


def _saved(tmp_path, hf_config=HF_CONFIG, dtype="float32", **cfg_changes):
    cfg = qwen3_moe.config_from_hf(hf_config).replace(**cfg_changes)
    params = _random_params(cfg)
    save_pretrained(str(tmp_path), params, cfg, base_config=hf_config, dtype=dtype)
    return cfg, params


def test_round_trip_and_disk_layout(tmp_path, mesh):
    cfg, params = _saved(tmp_path)
    reader = CheckpointReader(str(tmp_path))
    d, h, kv, dh, e, f = 32, 4, 2, 8, 4, 16
    # transformers' nn.Linear layout [out, in], per-expert names, the dense layer's MLP.
    attention = params["layer_0"]["attention"]
    np.testing.assert_array_equal(reader.read("model.layers.0.self_attn.q_proj.weight"),
                                  np.asarray(attention["wq"]).reshape(d, h * dh).T)
    np.testing.assert_array_equal(reader.read("model.layers.0.self_attn.o_proj.weight"),
                                  np.asarray(attention["wo"]).reshape(h * dh, d).T)
    assert reader.info("model.layers.0.self_attn.k_proj.weight").shape == (kv * dh, d)
    np.testing.assert_array_equal(reader.read("model.layers.0.mlp.experts.3.down_proj.weight"),
                                  np.asarray(params["layer_0"]["moe"]["w_down"][3]).T)
    assert reader.info("model.layers.0.mlp.experts.2.gate_proj.weight").shape == (f, d)
    assert reader.info("model.layers.0.mlp.gate.weight").shape == (e, d)
    np.testing.assert_array_equal(reader.read("model.layers.1.mlp.up_proj.weight"),
                                  np.asarray(params["layer_1"]["mlp"]["w_up"]).T)
    np.testing.assert_array_equal(reader.read("lm_head.weight"), np.asarray(params["lm_head"]).T)
    assert not any("router_bias" in n or "experts.4" in n for n in reader.names())
    with open(tmp_path / "config.json") as fh:
        assert json.load(fh)["bos_token_id"] == 7

    cfg2, loaded, family, _ = load_pretrained(str(tmp_path), mesh)
    assert cfg2 == cfg and family.name == "qwen3_moe"
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), loaded, params)
    want = sharding.param_shardings(mesh, cfg)
    assert jax.tree.all(jax.tree.map(lambda x, s: x.sharding.is_equivalent_to(s, x.ndim), loaded, want))
    assert loaded["layer_0"]["moe"]["w_up"].sharding.spec[0] == "expert"


def test_bfloat16_export_and_tied_head(tmp_path, mesh):
    hf = dict(HF_CONFIG, tie_word_embeddings=True, mlp_only_layers=[])
    cfg, params = _saved(tmp_path, hf, dtype="bfloat16")
    reader = CheckpointReader(str(tmp_path))
    assert "lm_head.weight" not in reader.names()
    assert reader.info("model.embed_tokens.weight").dtype == np.dtype(jnp.bfloat16)
    _, loaded, _, _ = load_pretrained(str(tmp_path), mesh)
    rounded = jax.tree.map(lambda x: np.asarray(x).astype(jnp.bfloat16).astype(np.float32), params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), loaded, rounded)
    assert loaded["embed"].dtype == np.float32 and cfg.tie_embeddings


def _rewrite(directory, replace=None, drop=None, add=None):
    """Rewrites model.safetensors with one tensor replaced, dropped or added."""
    reader = CheckpointReader(str(directory))
    tensors = {n: np.array(reader.read(n)) for n in reader.names() if n != drop}
    del reader
    if replace:
        tensors[replace[0]] = replace[1]
    if add:
        tensors[add] = np.zeros((2,), np.float32)
    write_checkpoint(str(directory), [TensorSpec(n, t.dtype, t.shape, lambda t=t: t) for n, t in tensors.items()])


@pytest.mark.parametrize("change, message", [
    (dict(replace=("model.layers.0.self_attn.k_proj.weight", np.zeros((8, 32), np.float32))),
     r"tensor 'model.layers.0.self_attn.k_proj.weight' has shape \[8, 32\], expected \[16, 32\] "
     r"\(for our parameter layer_0/attention/wk"),
    (dict(drop="model.layers.0.mlp.experts.2.up_proj.weight"),
     r"lacks tensor\(s\) \['model.layers.0.mlp.experts.2.up_proj.weight'\]"),
    (dict(add="model.layers.0.self_attn.q_proj.bias"),
     r"has tensor\(s\) \['model.layers.0.self_attn.q_proj.bias'\] that the config does not use"),
    (dict(replace=("model.norm.weight", np.zeros((32,), np.int32))),
     r"tensor 'model.norm.weight' has dtype int32, expected a float type"),
])
def test_bad_checkpoints_name_the_tensor(tmp_path, mesh, change, message):
    _saved(tmp_path)
    _rewrite(tmp_path, **change)
    with pytest.raises(ValueError, match=message):
        load_pretrained(str(tmp_path), mesh)


def test_config_that_does_not_fit_the_weights(tmp_path, mesh):
    _saved(tmp_path)
    with open(tmp_path / "config.json", "w") as fh:
        json.dump(dict(HF_CONFIG, num_experts=8), fh)
    with pytest.raises(ValueError, match=r"lacks tensor\(s\) \['model.layers.0.mlp.experts.4.down_proj.weight'"):
        load_pretrained(str(tmp_path), mesh)


def test_export_refuses_a_nonzero_router_bias(tmp_path):
    cfg = qwen3_moe.config_from_hf(HF_CONFIG)
    params = _random_params(cfg)
    params["layer_0"]["moe"]["router_bias"][2] = 0.5
    with pytest.raises(ValueError, match="parameter layer_0/moe/router_bias is not 0.0 everywhere"):
        save_pretrained(str(tmp_path), params, cfg)


def test_tables_must_cover_the_params():
    cfg = qwen3_moe.config_from_hf(HF_CONFIG)
    rules = qwen3_moe.rules(cfg)
    mapping.check_rules_cover(rules, param_shapes(cfg), "qwen3_moe")
    with_shared = cfg.replace(num_shared_experts=1)
    with pytest.raises(ValueError, match=r"qwen3_moe format has no tensor for parameter\(s\) \['layer_0/moe/shared"):
        mapping.check_rules_cover(qwen3_moe.rules(with_shared), param_shapes(with_shared), "qwen3_moe")
    with pytest.raises(ValueError, match=r"repeated \['embed'\]"):
        mapping.check_rules_cover(rules + rules[:1], param_shapes(cfg), "qwen3_moe")
    with pytest.raises(ValueError, match="part 'mlp' this format has no tensors for"):
        mapping.table_rules(cfg, [], {"attention": (), "moe": ()})


def _convert_cli(*args: str) -> None:
    """Runs ``python -m nemocascade.hf.convert`` in a fresh process (absl's global FLAGS stay untouched)."""
    result = subprocess.run([sys.executable, "-m", "nemocascade.hf.convert", *args], cwd=REPO, env=cpu_env(8),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"convert {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_cli_import_then_export_is_byte_identical(tmp_path):
    _saved(tmp_path / "hf", dtype="bfloat16")
    _convert_cli("import", f"--hf_dir={tmp_path / 'hf'}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
                 "--mesh_axes=fsdp=2,expert=4")
    with pytest.raises(ValueError, match="already holds checkpoint step 0"):
        convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "ckpt"), sharding.make_mesh({"fsdp": -1}))
    _convert_cli("export", f"--hf_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
                 "--max_shard_size=20KB")
    saved = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    assert saved.restore_config(0)["hf"]["family"] == "qwen3_moe"
    saved.close()
    source, exported = CheckpointReader(str(tmp_path / "hf")), CheckpointReader(str(tmp_path / "out"))
    assert exported.names() == source.names() and not os.path.exists(tmp_path / "out" / SINGLE_FILE)
    assert len({exported.info(n).file for n in exported.names()}) > 1     # shards of <= 20 KB
    for name in source.names():
        assert exported.info(name).dtype == source.info(name).dtype
        assert exported.read(name).tobytes() == source.read(name).tobytes(), name
