"""The KV-cache sampler: exactly on-policy log-probs, greedy = argmax of full forwards, stops, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemocascade import model as m
from nemocascade import sharding
from nemocascade.rollout import generate
from rollout_testing import full_forward_logprobs

BASE = m.presets.tiny().replace(vocab_size=48, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                num_experts=4, num_experts_per_tok=2, expert_hidden_size=16, max_seq_len=64)
SIGMOID = BASE.replace(router_score="sigmoid", num_kv_heads=1, moe_activation="squared_relu",
                       routed_scaling_factor=2.5)
HYBRID = m.presets.tiny_hybrid().replace(vocab_size=48, d_model=32, num_heads=4, num_kv_heads=2, num_experts=4,
                                         expert_hidden_size=16, max_seq_len=64, mamba_num_heads=4, mamba_head_dim=8,
                                         mamba_state_size=8, mamba_n_groups=2, mamba_chunk_size=4)
PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20], [30, 31, 32, 33]]
_forward = jax.jit(m.forward, static_argnums=(1,))


@pytest.mark.parametrize("cfg", [BASE, SIGMOID, HYBRID], ids=["softmax-gqa2", "sigmoid-mqa", "mamba-hybrid"])
@pytest.mark.parametrize("packed", [False, True], ids=["rows", "packed"])
def test_logprobs_equal_full_forward(cfg, packed):
    """The hybrid's Mamba-2 layers decode from their conv + SSM states (O(1) per token), its attention
    layers from the KV cache; the full forward recomputes everything from the tokens."""
    params = m.init_params(cfg, jax.random.PRNGKey(1))
    ro = generate(params, cfg, PROMPTS, max_new_tokens=9, num_samples=2, temperature=0.8, stop_tokens=(3,),
                  rng=jax.random.PRNGKey(4))
    assert ro.tokens.shape[0] == 8
    np.testing.assert_array_equal(ro.prompt_lengths, np.repeat([len(p) for p in PROMPTS], 2))
    reference = full_forward_logprobs(params, cfg, ro, 0.8, packed)
    for i, ref in enumerate(reference):
        p, r = ro.prompt_lengths[i], ro.response_lengths[i]
        np.testing.assert_allclose(ro.logprobs[i, p:p + r], ref, rtol=1e-5, atol=1e-5)
        assert np.all(ro.logprobs[i, :p] == 0) and np.all(ro.logprobs[i, p + r:] == 0)


def test_greedy_equals_stepwise_argmax_of_full_forwards():
    params = m.init_params(BASE, jax.random.PRNGKey(2))
    ro = generate(params, BASE, PROMPTS[:2], max_new_tokens=6, temperature=0.0, rng=jax.random.PRNGKey(0))
    for i, prompt in enumerate(PROMPTS[:2]):
        seq = list(prompt)
        for _ in range(6):
            logits, _ = _forward(params, BASE, jnp.asarray([seq], jnp.int32))
            seq.append(int(jnp.argmax(logits[0, -1])))
        assert ro.responses()[i] == seq[len(prompt):]
        assert not ro.finished[i] and ro.response_lengths[i] == 6


def test_stop_tokens_end_rows_and_nothing_after_counts():
    params = m.init_params(BASE, jax.random.PRNGKey(3))
    free = generate(params, BASE, PROMPTS, max_new_tokens=8, temperature=0.0, rng=jax.random.PRNGKey(0))
    stop = free.responses()[0][2]          # the third greedy token of row 0 becomes a stop token
    ro = generate(params, BASE, PROMPTS, max_new_tokens=8, temperature=0.0, stop_tokens=(stop,),
                  rng=jax.random.PRNGKey(0))
    response = ro.responses()[0]
    assert response[-1] == stop and stop not in response[:-1] and ro.finished[0]
    assert response == free.responses()[0][:len(response)]
    end = ro.prompt_lengths[0] + ro.response_lengths[0]
    assert np.all(ro.tokens[0, end:] == 0) and np.all(ro.logprobs[0, end:] == 0)
    assert ro.response_mask()[0].sum() == len(response)


def test_same_key_same_rollouts_and_sharded_mesh_matches():
    params = m.init_params(BASE, jax.random.PRNGKey(5))
    a = generate(params, BASE, PROMPTS, max_new_tokens=5, num_samples=2, rng=jax.random.PRNGKey(9))
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(params, sharding.param_shardings(mesh, BASE))
    b = generate(sharded, BASE, PROMPTS, max_new_tokens=5, num_samples=2, rng=jax.random.PRNGKey(9), mesh=mesh)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-5, atol=1e-5)


def test_think_budget_forces_end_of_reasoning():
    params = m.init_params(BASE, jax.random.PRNGKey(6))
    ro = generate(params, BASE, PROMPTS[:2], max_new_tokens=8, temperature=1.0, rng=jax.random.PRNGKey(1),
                  think_budget=3, think_end_tokens=(40, 41))
    for i, response in enumerate(ro.responses()):
        closed_at = response.index(40)
        assert closed_at <= 3 and response[closed_at + 1] == 41
        p = ro.prompt_lengths[i]
        assert ro.response_mask()[i, p + 3:p + 5].sum() <= 2


def test_bad_prompts_are_refused_clearly():
    params = m.init_params(BASE, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(params, BASE, [[1], []], max_new_tokens=2, rng=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len=64"):
        generate(params, BASE, [[1] * 60], max_new_tokens=10, rng=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="outside"):
        generate(params, BASE, [[1, 99]], max_new_tokens=2, rng=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        generate(params, BASE, [[1]], max_new_tokens=0, rng=jax.random.PRNGKey(0))
