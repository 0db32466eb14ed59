"""Parity with transformers' Qwen3MoeForCausalLM (float32, eager attention): logits after import, logits of
transformers on our export, greedy generations."""
import numpy as np
from hf_parity_testing import (TOL, check_export, check_greedy, hf_logits, imported_fixture, load_hf, our_logits,
                               torch, transformers)

from nemocascade.hf import load_pretrained, save_pretrained

# Tiny but complete: GQA, head_dim != hidden/heads, 4 experts top-2; initializer_range 0.1 so that the logits
# spread (std ~1) and a 1e-4 tolerance is meaningful.
TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=24, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
            norm_topk_prob=True, max_position_embeddings=128, initializer_range=0.1, rope_theta=500.0,
            rms_norm_eps=1e-6)


def _hf_model(directory, seed=0, **changes):
    config = transformers.Qwen3MoeConfig(**{**TINY, **changes})
    torch.manual_seed(seed)
    model = transformers.Qwen3MoeForCausalLM(config)
    model.save_pretrained(directory)
    return load_hf(directory)


imported = imported_fixture(_hf_model, "hf_tiny")
TOKENS = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 24))


def test_logits_match_after_import(imported):
    model, _, cfg, params, _ = imported
    want = hf_logits(model, TOKENS)
    got = our_logits(params, cfg, TOKENS)
    assert want.std() > 0.5
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_dense_layers_and_tied_embeddings(tmp_path, mesh):
    model = _hf_model(str(tmp_path), seed=1, num_hidden_layers=3, mlp_only_layers=[1], tie_word_embeddings=True)
    cfg, params, _, _ = load_pretrained(str(tmp_path), mesh, dtype="float32")
    assert cfg.layer_kinds == ("attention+moe", "attention+mlp", "attention+moe") and cfg.tie_embeddings
    np.testing.assert_allclose(our_logits(params, cfg, TOKENS), hf_logits(model, TOKENS), atol=TOL,
                               rtol=0)


def test_export_reloads_in_transformers(imported, tmp_path):
    _, directory, cfg, params, hf_config = imported
    files = save_pretrained(str(tmp_path), params, cfg, base_config=hf_config, dtype="float32",
                            max_shard_bytes=200_000)
    assert "model.safetensors.index.json" in files      # transformers reads our sharded layout too
    check_export(directory, str(tmp_path), params, cfg, TOKENS)


def test_greedy_generations_match(imported):
    model, _, cfg, params, _ = imported
    check_greedy(model, params, cfg, new=12)
