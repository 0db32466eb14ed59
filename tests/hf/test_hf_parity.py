"""Parity with transformers' Qwen3MoeForCausalLM (float32, eager attention): logits after import, logits of
transformers on our export, greedy generations."""
import jax
import numpy as np
import pytest

from nemocascade import sharding
from nemocascade.hf import load_pretrained, save_pretrained
from nemocascade.hf.safetensors_io import CheckpointReader
from nemocascade.model import forward
from nemocascade.rollout import generate

torch = pytest.importorskip("torch", reason="HF parity needs torch (the `test` extra: torch==2.13.0 CPU build)")
transformers = pytest.importorskip("transformers", reason="HF parity needs transformers (the `test` extra)")

TOL = 1e-4
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
    return transformers.AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager",
                                                             dtype=torch.float32).eval()


def _our_logits(params, cfg, tokens):
    return np.asarray(jax.jit(lambda p, t: forward(p, cfg, t)[0])(params, tokens))


def _hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh({"expert": 2, "tensor": 2, "fsdp": 2})


@pytest.fixture(scope="module")
def imported(tmp_path_factory, mesh):
    """(transformers model, its directory, our config, our params sharded on the mesh, its config.json)."""
    directory = str(tmp_path_factory.mktemp("hf_tiny"))
    model = _hf_model(directory)
    cfg, params, _, hf_config = load_pretrained(directory, mesh, dtype="float32")
    return model, directory, cfg, params, hf_config


TOKENS = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 24))


def test_logits_match_after_import(imported):
    model, _, cfg, params, _ = imported
    want = _hf_logits(model, TOKENS)
    got = _our_logits(params, cfg, TOKENS)
    assert want.std() > 0.5
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_dense_layers_and_tied_embeddings(tmp_path, mesh):
    model = _hf_model(str(tmp_path), seed=1, num_hidden_layers=3, mlp_only_layers=[1], tie_word_embeddings=True)
    cfg, params, _, _ = load_pretrained(str(tmp_path), mesh, dtype="float32")
    assert cfg.layer_kinds == ("attention+moe", "attention+mlp", "attention+moe") and cfg.tie_embeddings
    np.testing.assert_allclose(_our_logits(params, cfg, TOKENS), _hf_logits(model, TOKENS), atol=TOL,
                               rtol=0)


def test_export_reloads_in_transformers(imported, tmp_path):
    _, directory, cfg, params, hf_config = imported
    files = save_pretrained(str(tmp_path), params, cfg, base_config=hf_config, dtype="float32",
                            max_shard_bytes=200_000)
    assert "model.safetensors.index.json" in files      # transformers reads our sharded layout too
    source, exported = CheckpointReader(directory), CheckpointReader(str(tmp_path))
    assert exported.names() == source.names()
    for name in source.names():
        assert exported.read(name).tobytes() == source.read(name).tobytes(), name
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), attn_implementation="eager",
                                                                dtype=torch.float32).eval()
    np.testing.assert_allclose(_hf_logits(reloaded, TOKENS), _our_logits(params, cfg, TOKENS),
                               atol=TOL, rtol=0)


def test_greedy_generations_match(imported):
    model, _, cfg, params, _ = imported
    prompts = np.random.default_rng(1).integers(0, TINY["vocab_size"], size=(3, 7))
    new = 12
    ours = generate(params, cfg, prompts.tolist(), max_new_tokens=new, temperature=0.0, rng=jax.random.PRNGKey(0))
    with torch.no_grad():
        theirs = model.generate(torch.tensor(prompts), attention_mask=torch.ones(prompts.shape, dtype=torch.long),
                                max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    theirs = theirs[:, prompts.shape[1]:].numpy()
    assert ours.responses() == theirs.tolist()
    assert len({tuple(r) for r in theirs.tolist()}) == 3
