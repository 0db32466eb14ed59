"""The MoE transformer: packing, padding, MoE against a dense reference, KV cache, float64 gradients."""
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpr_testing import all_eqns
from nemocascade import model as m

CFG = m.presets.tiny().replace(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                               num_experts=4, num_experts_per_tok=2, expert_hidden_size=16, mlp_hidden_size=32,
                               max_seq_len=64, block_pattern=("attention+moe", "attention+mlp"))
SIGMOID = CFG.replace(router_score="sigmoid", moe_activation="squared_relu", routed_scaling_factor=2.5,
                      num_kv_heads=1, qk_norm=True)


_forward = jax.jit(m.forward, static_argnums=(1,))


def _params(cfg, seed=0):
    return m.init_params(cfg, jax.random.PRNGKey(seed))


def _tokens(b, t, seed=1, vocab=64):
    return jnp.asarray(np.random.default_rng(seed).integers(1, vocab, size=(b, t)), jnp.int32)


@pytest.mark.parametrize("cfg", [CFG, SIGMOID], ids=["softmax", "sigmoid"])
def test_packed_row_equals_segments_alone(cfg):
    params = _params(cfg)
    a, b = _tokens(1, 5, seed=2), _tokens(1, 7, seed=3)
    packed = jnp.concatenate([a, b, jnp.zeros((1, 4), jnp.int32)], axis=1)
    seg = jnp.asarray([[1] * 5 + [2] * 7 + [0] * 4], jnp.int32)
    logits, _ = _forward(params, cfg, packed, segment_ids=seg)
    alone_a, _ = _forward(params, cfg, a)
    alone_b, _ = _forward(params, cfg, b)
    np.testing.assert_allclose(logits[0, :5], alone_a[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[0, 5:12], alone_b[0], rtol=1e-5, atol=1e-5)


def test_segment_positions_restart():
    seg = jnp.asarray([[1, 1, 1, 2, 2, 0, 0], [1, 2, 2, 2, 3, 3, 0]])
    np.testing.assert_array_equal(m.segment_positions(seg), [[0, 1, 2, 0, 1, 0, 1], [0, 0, 1, 2, 0, 1, 0]])


def test_padding_tokens_get_no_gradient_and_do_not_count_in_load():
    """Padding uses token id 0 (valid tokens are 1..63): its embedding row gets exactly no gradient, and
    changing what the padding holds changes no gradient, no valid logit and no MoE statistic."""
    params = _params(CFG)
    tokens = _tokens(2, 8)
    seg = jnp.asarray([[1] * 6 + [0] * 2, [1] * 8], jnp.int32)
    padded_zero = jnp.where(seg > 0, tokens, 0)
    padded_other = jnp.where(seg > 0, tokens, 7)

    def loss(p, toks):
        logits, aux = m.forward(p, CFG, toks, segment_ids=seg)
        return jnp.sum(jnp.sin(logits) * (seg > 0)[..., None]) + aux["moe_aux_loss"], (logits, aux)

    run = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (_, (logits, aux)), grads = run(params, padded_zero)
    (_, (logits_other, aux_other)), grads_other = run(params, padded_other)
    assert float(jnp.abs(grads["embed"][0]).max()) == 0.0
    assert float(jnp.abs(grads["embed"][tokens[1, 0]]).max()) > 0.0
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_other)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    valid = np.asarray(seg > 0)
    np.testing.assert_allclose(np.asarray(logits)[valid], np.asarray(logits_other)[valid], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(aux["expert_load"], aux_other["expert_load"])
    np.testing.assert_allclose(np.asarray(aux["expert_load"]).sum(axis=1), 14 * CFG.num_experts_per_tok)
    np.testing.assert_allclose(aux["moe_aux_loss"], aux_other["moe_aux_loss"], rtol=1e-6)


@pytest.mark.parametrize("cfg", [CFG, SIGMOID], ids=["softmax", "sigmoid"])
def test_ragged_moe_equals_dense_reference_and_gradients(cfg):
    params = _params(cfg)
    tokens = _tokens(2, 9)
    dense = cfg.replace(moe_impl="dense")
    f = lambda p, c: _forward(p, c, tokens)[0]
    np.testing.assert_allclose(f(params, cfg), f(params, dense), rtol=1e-5, atol=1e-5)
    g_ragged = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(f(p, cfg)))))(params)
    g_dense = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(f(p, dense)))))(params)
    for a, b in zip(jax.tree.leaves(g_ragged), jax.tree.leaves(g_dense)):   # atol: 1e-5 of the leaf's scale
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_equal_router_scores_equal_dense_average_of_experts():
    """All router logits equal (zero router): every token's output is the mean of its top-k experts'
    outputs with weights 1/k; with k = E the layer is the plain average of all experts."""
    cfg = CFG.replace(num_experts_per_tok=4, num_shared_experts=0, block_pattern=("attention+moe",))
    params = _params(cfg)
    for name in ("layer_0", "layer_1"):
        params[name]["moe"]["router"] = jnp.zeros_like(params[name]["moe"]["router"])
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, cfg.d_model)), jnp.float32)
    from nemocascade.model.moe import MoE
    moe_params = {"params": params["layer_0"]["moe"]}
    y, stats = MoE(cfg).apply(moe_params, x, jnp.ones((1, 6), bool))
    p = params["layer_0"]["moe"]
    tokens = x[0]
    outs = [(jax.nn.silu(tokens @ p["w_gate"][e]) * (tokens @ p["w_up"][e])) @ p["w_down"][e] for e in range(4)]
    np.testing.assert_allclose(y[0], sum(outs) / 4, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["expert_load"], [6, 6, 6, 6])


def test_expert_without_tokens_forward_and_grad():
    cfg = SIGMOID.replace(block_pattern=("attention+moe",))
    params = _params(cfg)
    for name in ("layer_0", "layer_1"):   # expert 3 is never selected: its correction bias is very negative
        params[name]["moe"]["router_bias"] = params[name]["moe"]["router_bias"].at[3].set(-100.0)
    tokens = _tokens(2, 8)

    def loss(p):
        logits, aux = m.forward(p, cfg, tokens)
        return jnp.mean(logits ** 2), aux

    (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert np.all(np.asarray(aux["expert_load"])[:, 3] == 0)
    assert np.isfinite(float(value))
    g = grads["layer_0"]["moe"]["w_up"]
    assert float(jnp.abs(g[3]).max()) == 0.0 and float(jnp.abs(g[:3]).max()) > 0.0
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(grads))


@pytest.mark.parametrize("cfg", [CFG, SIGMOID], ids=["softmax", "sigmoid"])
def test_kv_cache_prefill_and_decode_equal_full_forward(cfg):
    params = _params(cfg)
    lengths = [3, 6]
    full = _tokens(2, 10, seed=5)
    cache = m.init_cache(cfg, 2, 16)
    prompt = jnp.where(jnp.arange(6)[None] < jnp.asarray(lengths)[:, None], full[:, :6], 0)
    seg = (jnp.arange(6)[None] < jnp.asarray(lengths)[:, None]).astype(jnp.int32)
    logits, aux = _forward(params, cfg, prompt, segment_ids=seg, cache=cache)
    cache = aux["cache"]
    np.testing.assert_array_equal(cache["lengths"], lengths)
    full_logits = [_forward(params, cfg, full[i:i + 1, :lengths[i] + 4])[0][0] for i in range(2)]
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(logits[i, :n], full_logits[i][:n], rtol=1e-5, atol=1e-5)
    for step in range(4):
        nxt = jnp.stack([full[i, lengths[i] + step] for i in range(2)])[:, None]
        step_logits, aux = _forward(params, cfg, nxt, segment_ids=jnp.ones((2, 1), jnp.int32), cache=cache)
        cache = aux["cache"]
        for i, n in enumerate(lengths):
            np.testing.assert_allclose(step_logits[i, 0], full_logits[i][n + step], rtol=1e-5, atol=1e-5)


def test_float64_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        cfg = CFG.replace(dtype="float64", param_dtype="float64", d_model=16, expert_hidden_size=8,
                          mlp_hidden_size=8, num_heads=2, num_kv_heads=1)
        params = m.init_params(cfg, jax.random.PRNGKey(0))
        tokens = _tokens(1, 5)
        targets = _tokens(1, 5, seed=9)

        def loss(p):
            logits, aux = m.forward(p, cfg, tokens)
            lp = jax.nn.log_softmax(logits.astype(jnp.float64))
            return -jnp.mean(jnp.take_along_axis(lp, targets[..., None], -1)) + aux["moe_aux_loss"]

        grads = jax.jit(jax.grad(loss))(params)
        loss = jax.jit(loss)
        rng = np.random.default_rng(0)
        for path in (("layer_0", "attention", "wq"), ("layer_0", "moe", "w_up"), ("layer_1", "mlp", "w_down"),
                     ("lm_head",), ("layer_0", "moe", "router")):
            leaf = params
            for key in path:
                leaf = leaf[key]
            direction = rng.normal(size=leaf.shape)

            def along(eps, path=path, direction=direction):
                p = jax.tree.map(lambda x: x, params)
                node = p
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = node[path[-1]] + eps * direction
                return float(loss(p))

            eps = 1e-6
            numeric = (along(eps) - along(-eps)) / (2 * eps)
            g = grads
            for key in path:
                g = g[key]
            analytic = float(np.sum(np.asarray(g) * direction))
            np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8, err_msg=str(path))


def test_router_bias_update_moves_toward_balance():
    cfg = SIGMOID
    params = _params(cfg)
    load = jnp.asarray([[10.0, 0.0, 5.0, 5.0]])
    new = m.update_router_bias(params, load, 0.1)
    np.testing.assert_allclose(new["layer_0"]["moe"]["router_bias"], [-0.1, 0.1, 0.0, 0.0])
    mask = m.trainable_mask(params, cfg, freeze_router=True)
    assert not mask["layer_0"]["moe"]["router_bias"] and not mask["layer_0"]["moe"]["router"]
    assert mask["layer_0"]["moe"]["w_up"]
    assert m.trainable_mask(params, cfg)["layer_0"]["moe"]["router"]


def test_cached_chunk_near_the_end_drops_overflowing_padding():
    """A second multi-token call at non-zero lengths whose right padding runs past the cache's end: valid
    tokens land at lengths + t (the overflowing padding is dropped, not clamped onto valid slots)."""
    cfg = CFG
    params = _params(cfg)
    full = _tokens(2, 6, seed=11)
    cache = m.init_cache(cfg, 2, 7)
    seg1 = jnp.asarray([[1, 1, 1, 1], [1, 1, 0, 0]], jnp.int32)
    _, aux = _forward(params, cfg, jnp.where(seg1 > 0, full[:, :4], 0), segment_ids=seg1, cache=cache)
    chunk = jnp.asarray([full[0, 4:6].tolist() + [0, 0], full[1, 2:6].tolist()], jnp.int32)
    seg2 = jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1]], jnp.int32)   # row 0: slots 4, 5 valid, 6 pad, 7 dropped
    logits, aux = _forward(params, cfg, chunk, segment_ids=seg2, cache=aux["cache"])
    np.testing.assert_array_equal(aux["cache"]["lengths"], [6, 6])
    reference, _ = _forward(params, cfg, full)
    np.testing.assert_allclose(logits[0, :2], reference[0, 4:6], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[1], reference[1, 2:6], rtol=1e-5, atol=1e-5)


def test_remat_policies_give_the_same_gradients():
    params = _params(CFG)
    tokens = _tokens(2, 6)

    def grads(cfg):
        return jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(m.forward(p, cfg, tokens)[0]))))(params)

    reference = grads(CFG)
    for policy in ("full", "dots"):
        for a, b in zip(jax.tree.leaves(grads(CFG.replace(remat=policy))), jax.tree.leaves(reference)):
            # Recomputed activations may be fused and rounded differently (jax 0.11: up to 7e-7 on
            # leaves of scale ~2), so the absolute slack scales with the leaf; a wrong residual is O(scale).
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(b))), err_msg=policy)


def test_bfloat16_compute_stays_close_to_float32_and_router_bias_stays_float32():
    bf16 = CFG.replace(dtype="bfloat16", param_dtype="bfloat16")
    shapes = jax.eval_shape(lambda r: m.init_params(bf16, r), jax.random.PRNGKey(0))
    assert shapes["layer_0"]["attention"]["wq"].dtype == jnp.bfloat16
    assert shapes["layer_0"]["moe"]["router_bias"].dtype == jnp.float32
    params = _params(CFG)
    tokens = _tokens(2, 8)
    reference, _ = _forward(params, CFG, tokens)
    logits, _ = _forward(params, CFG.replace(dtype="bfloat16"), tokens)
    assert logits.dtype == jnp.float32
    error = float(jnp.max(jnp.abs(logits - reference)) / jnp.max(jnp.abs(reference)))
    assert error < 0.05, error


def test_kernel_impl_runs_the_pallas_kernels_or_says_they_are_missing():
    """kernel_impl="interpret": the Pallas flash attention, decode attention, grouped matmul and SSD scan
    (in the Pallas interpreter) give the XLA path's logits, with and without a KV / SSM cache: a packed forward,
    ragged rows fed into an empty cache, a decode step, and two ragged tokens fed after it (decode attention of
    several queries per row)."""
    # head dim 16: the GPU kernels' minimum (the interpreter runs the GPU kernels)
    cfg = CFG.replace(d_model=64, num_layers=2, block_pattern=("mamba", "attention+moe"), mamba_head_dim=8,
                      mamba_state_size=8, mamba_chunk_size=4)
    pallas = cfg.replace(kernel_impl="interpret")
    params = _params(cfg)
    tokens = _tokens(2, 8)
    try:
        importlib.import_module("pallas_kernels.gmm.ops")
        importlib.import_module("pallas_kernels.attention.ops")
        importlib.import_module("pallas_kernels.ssd.ops")
    except ImportError:
        with pytest.raises(ValueError, match=r"kernel_impl='interpret' needs pallas_kernels\."):
            m.forward(params, pallas, tokens)
        return
    seg = jnp.asarray([[1] * 5 + [2] * 3, [1] * 6 + [0] * 2], jnp.int32)
    prompt_seg = jnp.asarray([[1] * 3 + [0] * 3, [1] * 6], jnp.int32)

    feed_seg = jnp.asarray([[1, 1], [1, 0]], jnp.int32)

    @functools.partial(jax.jit, static_argnums=0)
    def full_prefill_and_decode(c):
        """Logits of a packed forward, of one decode step after feeding rows of 3 and 6 tokens, and of 2 and 1
        tokens fed after that step (padding positions zeroed: nothing reads them)."""
        logits, _ = m.forward(params, c, tokens, segment_ids=seg)
        _, aux = m.forward(params, c, tokens[:, :6], segment_ids=prompt_seg, cache=m.init_cache(c, 2, 16))
        step, aux = m.forward(params, c, tokens[:, 6:7], segment_ids=jnp.ones((2, 1), jnp.int32),
                              cache=aux["cache"])
        fed, _ = m.forward(params, c, tokens[:, 6:8], segment_ids=feed_seg, cache=aux["cache"])
        return logits, step, fed * feed_seg[..., None]

    for got, want in zip(full_prefill_and_decode(pallas), full_prefill_and_decode(cfg)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_clear_errors_before_compiling():
    params = _params(CFG)
    tokens = _tokens(2, 4)
    with pytest.raises(TypeError, match="tokens must be an integer array"):
        m.forward(params, CFG, tokens.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"segment_ids shape \(2, 3\) differs from tokens shape \(2, 4\)"):
        m.forward(params, CFG, tokens, segment_ids=jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"tokens must be int32\[B, T\]"):
        m.forward(params, CFG, tokens[0])
    with pytest.raises(ValueError, match="4 tokens do not fit a cache of 3 slots"):
        m.forward(params, CFG, tokens, cache=m.init_cache(CFG, 2, 3))
    with pytest.raises(ValueError, match="does not match the batch size 2"):
        m.forward(params, CFG, tokens, cache=m.init_cache(CFG, 3, 8))
    with pytest.raises(ValueError, match="exceeds max_seq_len=64"):
        m.init_cache(CFG, 2, 65)
    with pytest.raises(ValueError, match=r"expert_load must be \[num_moe_layers=1, E\]"):
        m.update_router_bias(params, jnp.zeros((2, 4)), 0.1)


@pytest.mark.parametrize("dtype, tie_embeddings", [("float32", False), ("float32", True), ("bfloat16", False)])
def test_head_logits_of_the_hidden_states_are_the_forward_logits(dtype, tie_embeddings):
    """The sampler's prefill computes logits of the last prompt position only, from the hidden states."""
    cfg = CFG.replace(dtype=dtype, tie_embeddings=tie_embeddings)
    params = _params(cfg)
    tokens = _tokens(2, 7)
    logits, _ = _forward(params, cfg, tokens)
    hidden, _ = m.hidden_states(params, cfg, tokens)
    assert hidden.dtype == jnp.float32 and hidden.shape == (2, 7, cfg.d_model)
    last = m.head_logits(params, cfg, hidden[:, -1])
    assert last.dtype == jnp.float32 and last.shape == (2, cfg.vocab_size)
    tol = 1e-6 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(last, logits[:, -1], rtol=tol, atol=tol * float(jnp.max(jnp.abs(logits))))
    assert m.lm_head(params, cfg).shape == (cfg.d_model, cfg.vocab_size)


@pytest.mark.parametrize("kernel_impl", ["xla", "interpret"])
def test_prefill_into_an_empty_cache_equals_the_cached_path(kernel_impl):
    """prefill=True (self-attention of the prompt: flash attention with the Pallas kernels) gives the cached
    path's logits at every valid position and the same cache, so decoding after it is unchanged."""
    cfg = CFG.replace(d_model=64, num_layers=2, block_pattern=("mamba", "attention+moe"), mamba_head_dim=8,
                      mamba_state_size=8, mamba_chunk_size=4, kernel_impl=kernel_impl)
    params = _params(cfg)
    tokens = _tokens(2, 9)
    prompt_seg = jnp.asarray([[1] * 4 + [0] * 5, [1] * 9], jnp.int32)  # right-padded prompts of 4 and 9

    @functools.partial(jax.jit, static_argnums=0)
    def prefill_then_step(prefill):
        hidden, aux = m.hidden_states(params, cfg, tokens, segment_ids=prompt_seg, cache=m.init_cache(cfg, 2, 16),
                                      prefill=prefill)
        step, _ = m.forward(params, cfg, tokens[:, :1], segment_ids=jnp.ones((2, 1), jnp.int32), cache=aux["cache"])
        return hidden, aux["cache"], step

    (hidden, cache, step), (want_hidden, want_cache, want_step) = prefill_then_step(True), prefill_then_step(False)
    valid = np.asarray(prompt_seg) > 0
    np.testing.assert_allclose(np.asarray(hidden)[valid], np.asarray(want_hidden)[valid], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cache["lengths"], [4, 9])
    np.testing.assert_array_equal(cache["lengths"], want_cache["lengths"])
    for name, layer in cache["layers"].items():
        for key, value in layer.items():
            got, want = np.asarray(value), np.asarray(want_cache["layers"][name][key])
            if key in ("k", "v"):  # slots past each prompt are overwritten by decode before anything reads them
                got, want = got[:, :9][valid], want[:, :9][valid]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{name}/{key}")
    np.testing.assert_allclose(step, want_step, rtol=1e-5, atol=1e-5)
    if kernel_impl == "interpret":  # the prefill's attention is the flash kernel, not the XLA path
        jaxpr = jax.make_jaxpr(lambda: m.hidden_states(params, cfg, tokens, segment_ids=prompt_seg,
                                                       cache=m.init_cache(cfg, 2, 16), prefill=True))()
        kernels = {str(eqn.params["name"]) for eqn in all_eqns(jaxpr) if eqn.primitive.name == "pallas_call"}
        assert "flash_attention_fwd" in kernels, kernels
    with pytest.raises(ValueError, match="prefill=True needs the"):
        m.hidden_states(params, cfg, tokens, prefill=True)
