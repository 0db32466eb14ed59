"""Parity with transformers' NemotronHForCausalLM (float32, eager attention, its PyTorch Mamba-2 path):
logits after import, logits of transformers on our export, greedy generations."""
import numpy as np
from hf_parity_testing import (TOL, check_export, check_greedy, hf_logits, imported_fixture, load_hf, our_logits,
                               torch, transformers)

from nemocascade.hf import save_pretrained

# Every layer kind (Mamba-2, MoE, attention, dense MLP), 2 Mamba groups, SSD chunks of 8 < the 24 tokens,
# a scaled sigmoid router; initializer_range 0.1 so that the logits spread (std ~1) and 1e-4 means something.
TINY = dict(vocab_size=256, hidden_size=64, layers_block_type=["linear_attention", "moe", "full_attention",
            "linear_attention", "mlp", "moe"], num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=96, mamba_num_heads=4, mamba_head_dim=16, ssm_state_size=8, n_groups=2, conv_kernel=4,
            chunk_size=8, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
            moe_shared_expert_intermediate_size=48, routed_scaling_factor=1.5, initializer_range=0.1,
            layer_norm_epsilon=1e-5, max_position_embeddings=128)
TOKENS = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 24))


def _perturb_ones(model):
    """transformers initialises norm scales, D and the router correction bias to constants; make them random
    so that a swapped, flattened-wrong or dropped one shows in the logits."""
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith(("norm.weight", "norm_f.weight", ".D", "e_score_correction_bias")):
                tensor.add_(0.3 * torch.randn_like(tensor))


def _hf_model(directory):
    """A random tiny NemotronHForCausalLM saved in ``directory``, as transformers loads it back."""
    torch.manual_seed(0)
    model = transformers.NemotronHForCausalLM(transformers.NemotronHConfig(**TINY))
    _perturb_ones(model)
    model.save_pretrained(directory)
    return load_hf(directory)


imported = imported_fixture(_hf_model, "nemotron_h_tiny")


def test_logits_match_after_import(imported):
    model, _, cfg, params, _ = imported
    assert cfg.layer_kinds == ("mamba", "moe", "attention", "mamba", "mlp", "moe")
    want = hf_logits(model, TOKENS)
    got = our_logits(params, cfg, TOKENS)
    assert want.std() > 0.5
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    # The correction bias was imported and changes the routing (so the match above covers its mapping).
    moe = params["layer_1"]["moe"]
    assert np.abs(np.asarray(moe["router_bias"])).max() > 0.1
    unbiased = {**params, "layer_1": {**params["layer_1"], "moe": {**moe, "router_bias": moe["router_bias"] * 0}}}
    assert np.abs(our_logits(unbiased, cfg, TOKENS) - want).max() > 1e-2


def test_export_reloads_in_transformers(imported, tmp_path):
    _, directory, cfg, params, hf_config = imported
    save_pretrained(str(tmp_path), params, cfg, family="nemotron_h", base_config=hf_config, dtype="float32")
    check_export(directory, str(tmp_path), params, cfg, TOKENS)


def test_greedy_generations_match(imported):
    model, _, cfg, params, _ = imported
    check_greedy(model, params, cfg, new=10)
