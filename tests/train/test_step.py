"""The one train step: equals a hand-rolled optax update, accumulation is exact, state is donated."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nemocascade.train import TrainState, create_train_state, make_train_step


def _loss_fn(params, batch, rng):
    del rng
    pred = batch["x"] @ params["w"] + params["b"]
    per_example = jnp.mean((pred - batch["y"]) ** 2, axis=-1)
    return jnp.mean(per_example), {"mean_pred": jnp.mean(pred)}


def _init(rng):
    k1, k2 = jax.random.split(rng)
    return {"w": jax.random.normal(k1, (5, 3)), "b": jax.random.normal(k2, (3,))}


def _batch(n=8):
    rng = np.random.default_rng(0)
    return {"x": jnp.asarray(rng.normal(size=(n, 5)), jnp.float32),
            "y": jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)}


def test_step_matches_manual_optax_update():
    tx = optax.adamw(1e-2, weight_decay=0.0)
    state, shardings = create_train_state(_init, tx, jax.random.PRNGKey(0))
    params0 = jax.tree.map(np.asarray, state.params)
    step = make_train_step(_loss_fn, tx, state_shardings=shardings)
    new_state, metrics = step(state, _batch())

    grads = jax.grad(lambda p: _loss_fn(p, _batch(), None)[0])(params0)
    updates, _ = tx.update(grads, tx.init(params0), params0)
    expected = optax.apply_updates(params0, updates)
    for key in ("w", "b"):
        np.testing.assert_allclose(np.asarray(new_state.params[key]), np.asarray(expected[key]), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["loss"]), float(_loss_fn(params0, _batch(), None)[0]), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(optax.tree.norm(grads)), rtol=1e-6)
    assert int(new_state.step) == 1


def test_gradient_accumulation_equals_full_batch():
    tx = optax.sgd(0.1)
    state_a, sh = create_train_state(_init, tx, jax.random.PRNGKey(1))
    state_b, _ = create_train_state(_init, tx, jax.random.PRNGKey(1))
    full = make_train_step(_loss_fn, tx, state_shardings=sh)
    accum = make_train_step(_loss_fn, tx, state_shardings=sh, grad_accum_steps=4)
    out_a, m_a = full(state_a, _batch())
    out_b, m_b = accum(state_b, _batch())
    for key in ("w", "b"):
        np.testing.assert_allclose(np.asarray(out_a.params[key]), np.asarray(out_b.params[key]), rtol=1e-5,
                                   atol=1e-7)
    np.testing.assert_allclose(float(m_a["loss"]), float(m_b["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(m_a["mean_pred"]), float(m_b["mean_pred"]), rtol=1e-5, atol=1e-6)


def test_micro_batch_rows_split_each_batch_into_the_fewest_equal_micro_batches():
    """For batches whose row count varies (packed RL rollouts): ``ceil(rows / micro_batch_rows)`` micro-batches of
    equal size, whose mean gradient is the full batch's."""
    def loss_fn(params, batch, rng):
        loss, metrics = _loss_fn(params, batch, rng)
        return loss, {**metrics, "micro_rows": jnp.float32(batch["x"].shape[0])}

    tx = optax.sgd(0.1)
    _, sh = create_train_state(_init, tx, jax.random.PRNGKey(1))
    step = make_train_step(loss_fn, tx, state_shardings=sh, micro_batch_rows=4)
    full = make_train_step(loss_fn, tx, state_shardings=sh)
    for rows, micro_rows in ((12, 4), (6, 3), (4, 4), (2, 2)):
        state, _ = create_train_state(_init, tx, jax.random.PRNGKey(1))
        reference, _ = create_train_state(_init, tx, jax.random.PRNGKey(1))
        out, metrics = step(state, _batch(rows))
        expected, _ = full(reference, _batch(rows))
        assert float(metrics["micro_rows"]) == micro_rows
        np.testing.assert_allclose(np.asarray(out.params["w"]), np.asarray(expected.params["w"]), rtol=1e-5, atol=1e-7)
    state, _ = create_train_state(_init, tx, jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match="a batch of 5 rows does not split into 2 equal micro-batches"):
        step(state, _batch(5))


def test_state_is_donated_and_rng_advances():
    tx = optax.sgd(0.1)
    state, sh = create_train_state(_init, tx, jax.random.PRNGKey(2))
    step = make_train_step(_loss_fn, tx, state_shardings=sh)
    old_w, old_rng = state.params["w"], np.asarray(state.rng)
    new_state, _ = step(state, _batch())
    assert old_w.is_deleted()
    assert not np.array_equal(np.asarray(new_state.rng), old_rng)


def test_post_update_hook_runs_inside_step():
    tx = optax.sgd(0.0)
    state, sh = create_train_state(_init, tx, jax.random.PRNGKey(3))
    before = np.asarray(state.params["b"])

    def hook(params, metrics):
        return {**params, "b": params["b"] + metrics["mean_pred"]}

    step = make_train_step(_loss_fn, tx, state_shardings=sh, post_update_fn=hook)
    new_state, metrics = step(state, _batch())
    np.testing.assert_allclose(np.asarray(new_state.params["b"]), before + float(metrics["mean_pred"]),
                               rtol=1e-6)


def test_train_state_is_a_pytree():
    state = TrainState(step=jnp.zeros((), jnp.int32), params={"a": jnp.ones(2)}, opt_state=(), rng=jnp.zeros(2))
    assert len(jax.tree.leaves(state)) == 3
