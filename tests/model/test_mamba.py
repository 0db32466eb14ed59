"""Mamba-2: chunked SSD and the whole mixer against float64 numpy recurrences; packing, caches, sharding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemocascade import model as m
from nemocascade import sharding
from nemocascade.model.mamba import Mamba2
from nemocascade.model.ssd import segment_starts, ssd_chunked, ssd_step

HYBRID = m.presets.tiny_hybrid().replace(vocab_size=64, d_model=32, num_heads=4, num_kv_heads=2, num_experts=4,
                                         expert_hidden_size=16, max_seq_len=64, mamba_num_heads=4,
                                         mamba_head_dim=8, mamba_state_size=8, mamba_n_groups=2,
                                         mamba_chunk_size=4)
_forward = jax.jit(m.forward, static_argnums=(1,))
_ssd_chunked = jax.jit(ssd_chunked, static_argnames=("chunk_size",))


@pytest.fixture(scope="module")
def params():
    """HYBRID's params, made once (an eager init compiles every op it meets: seconds per config)."""
    return m.init_params(HYBRID, jax.random.PRNGKey(0))


def sequential_ssm(x, dt, a, b, c, starts, h0):
    """float64 numpy, token by token: h = exp(dt a) h + dt x b^T (h = 0 first at a start), y = h c."""
    bsz, t, h, _ = x.shape
    per_group = h // b.shape[2]
    state = np.array(h0, np.float64)
    y = np.zeros(x.shape)
    for row in range(bsz):
        for i in range(t):
            if starts[row, i]:
                state[row] = 0.0
            for head in range(h):
                g = head // per_group
                state[row, head] = (np.exp(dt[row, i, head] * a[head]) * state[row, head]
                                    + dt[row, i, head] * np.outer(x[row, i, head], b[row, i, g]))
                y[row, i, head] = state[row, head] @ c[row, i, g]
    return y, state


def _ssm_inputs(seed=0, bsz=2, t=13, h=4, p=3, g=2, n=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(bsz, t, h, p))
    dt = rng.uniform(0.01, 0.8, size=(bsz, t, h))
    dt[1, 9:11] = 0.0                                  # padding tokens between two segments
    a = -rng.uniform(0.3, 2.0, size=h)
    b, c = rng.normal(size=(bsz, t, g, n)), rng.normal(size=(bsz, t, g, n))
    starts = np.zeros((bsz, t), bool)
    starts[0, 5] = True                                # row 0: segments of 5 and 8 tokens
    starts[1, [3, 4, 11]] = True                       # row 1: a 1-token segment, and a reset after padding
    h0 = rng.normal(size=(bsz, h, p, n))
    return x, dt, a, b, c, starts, h0


@pytest.mark.parametrize("chunk", [1, 4, 5, 13, 32], ids=lambda c: f"chunk{c}")
def test_chunked_ssd_equals_sequential_recurrence_in_float64(chunk):
    """T = 13: chunks of 1 and 13 divide it, 4 and 5 do not (padded last chunk), 32 exceeds it."""
    x, dt, a, b, c, starts, h0 = _ssm_inputs()
    want_y, want_state = sequential_ssm(x, dt, a, b, c, starts, h0)
    with jax.enable_x64(True):
        y, state = _ssd_chunked(*map(jnp.asarray, (x, dt, a, b, c, starts)), chunk_size=chunk,
                               initial_state=jnp.asarray(h0))
        assert y.dtype == jnp.float64
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(state, want_state, rtol=1e-10, atol=1e-10)


def test_chunked_ssd_without_initial_state_starts_from_zeros():
    x, dt, a, b, c, starts, h0 = _ssm_inputs(seed=1)
    want_y, want_state = sequential_ssm(x, dt, a, b, c, starts, np.zeros_like(h0))
    with jax.enable_x64(True):
        y, state = _ssd_chunked(*map(jnp.asarray, (x, dt, a, b, c, starts)), chunk_size=4)
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(state, want_state, rtol=1e-10, atol=1e-10)


def test_single_steps_equal_sequential_recurrence():
    x, dt, a, b, c, _, h0 = _ssm_inputs(seed=2)
    want_y, want_state = sequential_ssm(x, dt, a, b, c, np.zeros(x.shape[:2], bool), h0)
    with jax.enable_x64(True):
        step = jax.jit(ssd_step)
        state, ys = jnp.asarray(h0), []
        for i in range(x.shape[1]):
            y, state = step(state, *(jnp.asarray(v[:, i]) for v in (x, dt)), jnp.asarray(a),
                            jnp.asarray(b[:, i]), jnp.asarray(c[:, i]))
            ys.append(y)
    np.testing.assert_allclose(jnp.stack(ys, axis=1), want_y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(state, want_state, rtol=1e-10, atol=1e-10)


def test_chunked_ssd_gradients_equal_a_stepwise_scan_in_float64():
    """Autodiff through the masked (-inf) chunk decays is finite and equals autodiff through the plain
    token-by-token scan, for every input."""
    inputs = _ssm_inputs(seed=3)
    with jax.enable_x64(True):
        x, dt, a, b, c, starts, h0 = map(jnp.asarray, inputs)
        weights = jnp.asarray(np.random.default_rng(4).normal(size=x.shape))

        def chunked(x, dt, a, b, c, h0):
            return jnp.sum(weights * jnp.sin(ssd_chunked(x, dt, a, b, c, starts, chunk_size=5,
                                                         initial_state=h0)[0]))

        def stepwise(x, dt, a, b, c, h0):
            def step(state, inputs):
                xi, dti, bi, ci, start = inputs
                return ssd_step(jnp.where(start[:, None, None, None], 0.0, state), xi, dti, a, bi, ci)[::-1]
            moved = [jnp.moveaxis(v, 1, 0) for v in (x, dt, b, c, starts)]
            _, ys = jax.lax.scan(step, h0, moved)
            return jnp.sum(weights * jnp.sin(jnp.moveaxis(ys, 0, 1)))

        args = (x, dt, a, b, c, h0)
        got_value, got = jax.jit(jax.value_and_grad(chunked, argnums=range(6)))(*args)
        want_value, want = jax.jit(jax.value_and_grad(stepwise, argnums=range(6)))(*args)
        np.testing.assert_allclose(got_value, want_value, rtol=1e-10)
    for name, g, w in zip(("x", "dt", "a", "b", "c", "h0"), got, want):
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-10, err_msg=name)


def test_segment_starts_ignore_padding():
    seg = jnp.asarray([[1, 1, 2, 2, 0, 0], [0, 1, 1, 0, 3, 3]])
    np.testing.assert_array_equal(segment_starts(seg), [[0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0]])


def _silu(v):
    return v / (1.0 + np.exp(-v))


def numpy_mixer(p, x, cfg):
    """The Mamba-2 mixer on one fresh sequence x [T, D], float64 numpy, written from the equations."""
    h, hd, g, n, k = (cfg.mamba_num_heads, cfg.mamba_head_dim, cfg.mamba_n_groups, cfg.mamba_state_size,
                      cfg.mamba_conv_kernel)
    t, d = x.shape
    p = {name: np.asarray(v, np.float64) for name, v in p.items()}
    z = x @ p["w_z"].reshape(d, h * hd)
    u = np.concatenate([x @ p["w_x"].reshape(d, -1), x @ p["w_b"].reshape(d, -1), x @ p["w_c"].reshape(d, -1)], 1)
    padded = np.concatenate([np.zeros((k - 1, u.shape[1])), u])
    conv = p["conv_bias"] + sum(p["conv_weight"][i] * padded[i:i + t] for i in range(k))
    u = _silu(conv)
    xs = u[:, :h * hd].reshape(1, t, h, hd)
    b = u[:, h * hd:h * hd + g * n].reshape(1, t, g, n)
    c = u[:, h * hd + g * n:].reshape(1, t, g, n)
    dt = np.log1p(np.exp(x @ p["w_dt"] + p["dt_bias"]))[None]
    y, _ = sequential_ssm(xs, dt, -np.exp(p["A_log"]), b, c, np.zeros((1, t), bool), np.zeros((1, h, hd, n)))
    y = (y + p["D"][:, None] * xs)[0].reshape(t, h * hd) * _silu(z)
    grouped = y.reshape(t, g, -1)
    y = (grouped / np.sqrt(np.mean(grouped ** 2, axis=-1, keepdims=True) + cfg.rms_norm_eps)).reshape(t, -1)
    return (y * p["norm_scale"].reshape(-1)) @ p["w_out"].reshape(h * hd, d)


def test_mixer_on_a_packed_row_equals_numpy_reference_per_segment(params):
    """Segments of 5 and 6 tokens and 3 padding tokens in one row (chunks of 4 straddle the boundary):
    every valid token's output equals the numpy mixer run on its own segment."""
    with jax.enable_x64(True):
        cfg = HYBRID.replace(dtype="float64", param_dtype="float64")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(1, 14, cfg.d_model))
        seg = np.asarray([[1] * 5 + [2] * 6 + [0] * 3], np.int32)
        mixer = jax.tree.map(lambda v: np.asarray(v, np.float64) + 0.3 * rng.normal(size=v.shape),
                             params["layer_0"]["mamba"])                   # D and the norm scale away from 1
        out, cache = jax.jit(Mamba2(cfg).apply)({"params": mixer}, jnp.asarray(x), jnp.asarray(seg))
    assert cache is None
    for lo, hi in ((0, 5), (5, 11)):
        np.testing.assert_allclose(out[0, lo:hi], numpy_mixer(mixer, x[0, lo:hi], cfg), rtol=1e-9, atol=1e-10)


def _tokens(b, t, seed=1):
    return jnp.asarray(np.random.default_rng(seed).integers(1, 64, size=(b, t)), jnp.int32)


def _hybrid_loss(params, tokens, seg):
    logits, aux = m.forward(params, HYBRID, tokens, segment_ids=seg)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * (seg > 0)) + aux["moe_aux_loss"], logits


_loss_and_grad = jax.jit(jax.value_and_grad(_hybrid_loss, has_aux=True))


@pytest.fixture(scope="module")
def packed_batch(params):
    """8 rows of 16: row 0 packs segments of 6 and 7 tokens then 3 padding tokens, rows 1 and 2 hold
    those segments alone (right-padded), rows 3-7 random packings; with the single-device logits/grads."""
    rng = np.random.default_rng(7)
    tokens = rng.integers(1, 64, size=(8, 16))
    tokens[1, :6], tokens[2, :7] = tokens[0, :6], tokens[0, 6:13]
    seg = np.zeros((8, 16), np.int32)
    seg[0, :6], seg[0, 6:13], seg[1, :6], seg[2, :7] = 1, 2, 1, 1
    seg[3:] = np.sort(rng.integers(0, 4, size=(5, 16)), axis=1)
    tokens, seg = jnp.asarray(np.where(seg > 0, tokens, 0), jnp.int32), jnp.asarray(seg)
    (_, logits), grads = _loss_and_grad(params, tokens, seg)
    return tokens, seg, logits, grads


def test_hybrid_packed_row_equals_segments_alone_and_ignores_padding(params, packed_batch):
    tokens, seg, logits, _ = packed_batch
    np.testing.assert_allclose(logits[0, :6], logits[1, :6], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[0, 6:13], logits[2, :7], rtol=1e-5, atol=1e-5)
    (_, other_padding), _ = _loss_and_grad(params, jnp.where(seg > 0, tokens, 9), seg)
    valid = np.asarray(seg) > 0
    np.testing.assert_allclose(np.asarray(other_padding)[valid], np.asarray(logits)[valid], rtol=1e-6, atol=1e-6)


def test_hybrid_cache_prefill_chunk_and_decode_equal_full_forward(params):
    """Right-padded prompts of 3 and 6 tokens, a second multi-token call (chunked scan from the cached
    state and conv history), then single-token steps (the O(1) recurrence): the full forward's logits."""
    full = _tokens(2, 16, seed=5)
    lengths = np.asarray([3, 6])
    reference, _ = _forward(params, HYBRID, full[:, :15],
                            segment_ids=jnp.asarray((np.arange(15)[None] < (lengths + 9)[:, None]).astype(np.int32)))
    full_logits = [reference[i, :n + 9] for i, n in enumerate(lengths)]
    cache = m.init_cache(HYBRID, 2, 20)
    assert cache["layers"]["layer_0"]["conv"].shape == (2, 3, 4 * 8 + 2 * 2 * 8)
    assert cache["layers"]["layer_0"]["ssm"].shape == (2, 4, 8, 8)
    seg = (np.arange(6)[None] < lengths[:, None]).astype(np.int32)
    logits, aux = _forward(params, HYBRID, jnp.where(seg > 0, full[:, :6], 0), segment_ids=jnp.asarray(seg),
                           cache=cache)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(logits[i, :n], full_logits[i][:n], rtol=1e-5, atol=1e-5)
    chunk = jnp.stack([full[i, n:n + 5] for i, n in enumerate(lengths)])
    logits, aux = _forward(params, HYBRID, chunk, segment_ids=jnp.ones((2, 5), jnp.int32), cache=aux["cache"])
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(logits[i], full_logits[i][n:n + 5], rtol=1e-5, atol=1e-5)
    cache = aux["cache"]
    for step in range(4):
        nxt = jnp.stack([full[i, n + 5 + step] for i, n in enumerate(lengths)])[:, None]
        step_logits, aux = _forward(params, HYBRID, nxt, segment_ids=jnp.ones((2, 1), jnp.int32), cache=cache)
        cache = aux["cache"]
        for i, n in enumerate(lengths):
            np.testing.assert_allclose(step_logits[i, 0], full_logits[i][n + 5 + step], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cache["lengths"], lengths + 9)


def test_hybrid_sharded_forward_and_grad_equal_single_device(params, packed_batch):
    tokens, seg, logits_ref, grads_ref = packed_batch
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    shardings = sharding.param_shardings(mesh, HYBRID)
    assert shardings["layer_0"]["mamba"]["w_x"].spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    assert shardings["layer_0"]["mamba"]["w_out"].spec == jax.sharding.PartitionSpec("tensor", None, "fsdp")
    assert shardings["layer_0"]["mamba"]["A_log"].spec == jax.sharding.PartitionSpec("tensor")
    batch = sharding.batch_sharding(mesh)
    with jax.set_mesh(mesh):
        (_, logits), grads = _loss_and_grad(jax.device_put(params, shardings), jax.device_put(tokens, batch),
                                            jax.device_put(seg, batch))
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_hybrid_flops_per_token_by_hand():
    """d 32, vocab 64; Mamba-2 4 heads x 8, 2 groups, state 8, chunk 4; attention 4 heads / 2 KV x 8;
    4 squared-ReLU experts of 16, top-2, one shared MLP of 16."""
    d, inner, g, n, chunk, seq = 32, 4 * 8, 2, 8, 4, 16
    mamba = d * (2 * inner + 2 * g * n + 4) + inner * d              # w_z, w_x, w_b, w_c, w_dt; w_out
    attention = d * 4 * 8 * 2 + d * 2 * 8 * 2                         # wq, wo; wk, wv
    moe = d * 4 + 2 * (2 * d * 16) + 2 * d * 16                        # router, 2 of 4 experts, shared MLP
    matmul = 2 * mamba + attention + moe + d * 64                      # + LM head
    ssd = chunk * (g * n + inner) + 2 * inner * n
    expected = 6 * matmul + 6 * seq * 4 * 8 + 6 * 2 * ssd
    assert m.flops_per_token(HYBRID, seq) == pytest.approx(expected, rel=1e-12)
