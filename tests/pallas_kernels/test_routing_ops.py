"""Routing ops against independent oracles.

router_topk: a float64 numpy oracle, gradients by central finite differences of that oracle.
permute / unpermute: the dense one-hot reference (permutation built from per-expert ranks and
applied by matrix products), gradients by autodiff of the reference.
"""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from pallas_kernels.routing import permute, reference, router_topk, unpermute

T, E, K, D = 6, 8, 3, 5


def _topk_np(logits, k, score, bias, normalize, scaling):
    """float64 oracle: (dense weights [T, E], chosen [T, k] by decreasing selection, scores)."""
    logits = np.asarray(logits, np.float64)
    if score == "softmax":
        e = np.exp(logits - logits.max(-1, keepdims=True))
        scores = e / e.sum(-1, keepdims=True)
    else:
        scores = 1.0 / (1.0 + np.exp(-logits))
    selection = scores + (0.0 if bias is None else np.asarray(bias, np.float64))
    chosen = np.argsort(-selection, axis=-1, kind="stable")[:, :k]
    dense = np.zeros_like(scores)
    np.put_along_axis(dense, chosen, np.take_along_axis(scores, chosen, -1), -1)
    if normalize:
        dense = dense / dense.sum(-1, keepdims=True)
    return dense * scaling, chosen, scores


def _dense(weights, ids):
    out = np.zeros((weights.shape[0], E))
    np.put_along_axis(out, np.asarray(ids), np.asarray(weights, np.float64), -1)
    return out


ROUTER_CASES = [
    dict(score="softmax", bias=False, normalize=True, scaling=1.0),
    dict(score="softmax", bias=False, normalize=False, scaling=2.5),
    dict(score="sigmoid", bias=True, normalize=True, scaling=2.5),
    dict(score="sigmoid", bias=False, normalize=False, scaling=1.0),
]


@pytest.mark.parametrize("case", ROUTER_CASES)
def test_router_topk_forward_and_gradient(case):
    logits = jax.random.normal(jax.random.key(0), (T, E), jnp.float32) * 2
    bias = jax.random.normal(jax.random.key(1), (E,), jnp.float32) * 0.3 if case["bias"] else None
    kwargs = dict(score=case["score"], normalize=case["normalize"], scaling=case["scaling"])
    weights, ids, scores = router_topk(logits, K, bias=bias, **kwargs)
    assert weights.dtype == jnp.float32 and ids.dtype == jnp.int32 and scores.dtype == jnp.float32
    want_dense, want_ids, want_scores = _topk_np(logits, K, case["score"], bias, case["normalize"],
                                                 case["scaling"])
    np.testing.assert_array_equal(np.asarray(ids), want_ids)
    np.testing.assert_allclose(_dense(weights, ids), want_dense, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(scores), want_scores, rtol=1e-5, atol=1e-7)

    # Gradient of <weights, c> w.r.t. logits (selection held fixed, as top-k is piecewise const).
    cot = np.asarray(jax.random.normal(jax.random.key(2), (T, K)), np.float64)
    grad = jax.grad(lambda x: jnp.sum(router_topk(x, K, bias=bias, **kwargs)[0] * cot))(logits)
    cot_dense = np.zeros((T, E))
    np.put_along_axis(cot_dense, want_ids, cot, -1)
    base = np.asarray(logits, np.float64)
    numeric = np.zeros_like(base)
    h = 1e-6
    for t in range(T):
        for e in range(E):
            step = np.zeros_like(base)
            step[t, e] = h
            up = _topk_np(base + step, K, case["score"], bias, case["normalize"], case["scaling"])
            down = _topk_np(base - step, K, case["score"], bias, case["normalize"],
                            case["scaling"])
            numeric[t, e] = np.sum((up[0] - down[0]) * cot_dense) / (2 * h)
    np.testing.assert_allclose(np.asarray(grad), numeric, rtol=1e-4, atol=1e-5)


def test_bias_steers_selection_but_not_weights():
    logits = jnp.zeros((1, 4)).at[0, 0].set(3.0)
    bias = jnp.array([0.0, 0.0, 0.0, 10.0])
    weights, ids, _ = router_topk(logits, 1, score="sigmoid", bias=bias, normalize=False)
    assert int(ids[0, 0]) == 3
    np.testing.assert_allclose(float(weights[0, 0]), 0.5, rtol=1e-6)  # sigmoid(0), bias-free


def test_router_topk_matches_dense_reference_module():
    logits = jax.random.normal(jax.random.key(3), (T, E))
    bias = jax.random.normal(jax.random.key(4), (E,)) * 0.3
    weights, ids, _ = router_topk(logits, K, score="sigmoid", bias=bias, scaling=2.0)
    dense = reference.router_topk_dense(logits, K, score="sigmoid", bias=bias, scaling=2.0)
    np.testing.assert_allclose(_dense(weights, ids), np.asarray(dense), rtol=1e-6, atol=1e-7)


def _routing_inputs(seed, dtype, num_tokens=T, num_experts=E, k=K):
    keys = jax.random.split(jax.random.key(seed), 4)
    logits = jax.random.normal(keys[0], (num_tokens, num_experts))
    weights, ids, _ = router_topk(logits, k)
    x = jax.random.normal(keys[1], (num_tokens, D)).astype(dtype)
    y = jax.random.normal(keys[2], (num_tokens * k, D)).astype(dtype)
    cot = jax.random.normal(keys[3], (num_tokens, D)).astype(dtype)
    return weights, ids, x, y, cot


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
def test_permute_and_grad_match_dense_reference(dtype, tol):
    weights, ids, x, _, _ = _routing_inputs(5, dtype)
    x_sorted, group_sizes, sort_idx = permute(x, ids, E)
    want_sorted, want_sizes = reference.permute_dense(x, ids, E)
    assert x_sorted.dtype == dtype and group_sizes.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(group_sizes), np.asarray(want_sizes))
    np.testing.assert_array_equal(np.asarray(x_sorted, np.float32), np.asarray(want_sorted))
    flat = np.asarray(ids).reshape(-1)
    np.testing.assert_array_equal(np.asarray(sort_idx), np.argsort(flat, kind="stable"))
    cot = jax.random.normal(jax.random.key(6), (T * K, D)).astype(dtype)
    grad = jax.grad(lambda v: jnp.sum((permute(v, ids, E)[0] * cot).astype(jnp.float32)))(x)
    want = jax.grad(lambda v: jnp.sum(reference.permute_dense(v, ids, E)[0]
                                      * cot.astype(jnp.float32)))(x.astype(jnp.float32))
    assert grad.dtype == dtype
    np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(want), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
def test_unpermute_and_grads_match_dense_reference(dtype, tol):
    weights, ids, _, y, cot = _routing_inputs(7, dtype)
    _, _, sort_idx = permute(jnp.zeros((T, D)), ids, E)

    def ours(y_, w_):
        return jnp.sum(unpermute(y_, sort_idx, w_).astype(jnp.float32) * cot.astype(jnp.float32))

    def dense(y_, w_):
        return jnp.sum(reference.unpermute_dense(y_, ids, w_, E) * cot.astype(jnp.float32))

    out = unpermute(y, sort_idx, weights)
    assert out.dtype == dtype
    want = reference.unpermute_dense(y.astype(jnp.float32), ids, weights, E)
    rel = np.linalg.norm(np.asarray(out, np.float32) - want) / np.linalg.norm(want)
    assert rel < tol
    d_y, d_w = jax.grad(ours, (0, 1))(y, weights)
    want_d_y, want_d_w = jax.grad(dense, (0, 1))(y.astype(jnp.float32), weights)
    assert d_y.dtype == dtype and d_w.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(d_y, np.float32), np.asarray(want_d_y), rtol=tol, atol=tol)
    np.testing.assert_allclose(np.asarray(d_w), np.asarray(want_d_w), rtol=tol, atol=tol)


def test_round_trip_through_identity_experts_returns_weighted_tokens():
    """permute -> (identity experts) -> unpermute gives sum_j w[t, j] * x[t], end to end."""
    weights, ids, x, _, _ = _routing_inputs(8, jnp.float32, num_tokens=16, num_experts=4, k=2)
    x_sorted, group_sizes, sort_idx = permute(x, ids, 4)
    assert int(group_sizes.sum()) == 32
    out = unpermute(x_sorted, sort_idx, weights)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x * weights.sum(1, keepdims=True)),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("call,error,match", [
    (lambda: router_topk(jnp.ones((4,)), 1), ValueError, "logits must have shape"),
    (lambda: router_topk(jnp.ones((4, 3), jnp.int32), 1), TypeError, "logits must be an array of float"),
    (lambda: router_topk(jnp.ones((4, 3)), 4), ValueError, "k must be an int in"),
    (lambda: router_topk(jnp.ones((4, 3)), 1, score="relu"), ValueError, "score must be one of"),
    (lambda: router_topk(jnp.ones((4, 3)), 1, bias=jnp.ones(4)), ValueError,
     "bias must have shape"),
    (lambda: permute(jnp.ones((4, 2)), jnp.ones((4, 2)), 3), TypeError, "expert_ids must be an array of int"),
    (lambda: permute(jnp.ones((4, 2)), jnp.ones((5, 2), jnp.int32), 3), ValueError, "5 tokens"),
    (lambda: permute(jnp.ones((4, 2)), jnp.ones((4, 2), jnp.int32), 0), ValueError,
     "num_experts must be"),
    (lambda: unpermute(jnp.ones((8, 2)), jnp.arange(6), jnp.ones((4, 2))), ValueError,
     "sort_idx must have shape"),
    (lambda: unpermute(jnp.ones((8, 2)), jnp.ones(8), jnp.ones((4, 2))), TypeError,
     "sort_idx must be an array of int dtype"),
    (lambda: unpermute(jnp.ones((6, 2)), jnp.arange(8), jnp.ones((4, 2))), ValueError,
     "y_sorted has 6 rows"),
])
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
