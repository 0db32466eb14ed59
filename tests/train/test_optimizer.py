"""Optimizer construction: schedules against closed forms, masks, and config errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemocascade.train import make_optimizer, make_schedule, weight_decay_mask


def _cfg(**overrides):
    cfg = dict(name="adamw", learning_rate=1e-3, schedule="cosine", warmup_steps=10, init_learning_rate=0.0,
               end_learning_rate=1e-4, total_steps=110, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
               grad_clip_norm=1.0)
    cfg.update(overrides)
    return cfg


def test_warmup_cosine_matches_closed_form():
    schedule = make_schedule(_cfg())
    for step in [0, 5, 10, 30, 60, 109, 110]:
        if step < 10:
            expected = 1e-3 * step / 10
        else:
            progress = (step - 10) / 100
            expected = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress))
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-9)


def test_warmup_constant_from_init_rate():
    schedule = make_schedule(_cfg(schedule="constant", warmup_steps=30, init_learning_rate=2e-7,
                                  learning_rate=2e-6))
    np.testing.assert_allclose(float(schedule(0)), 2e-7, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(15)), 2e-7 + (2e-6 - 2e-7) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(30)), 2e-6, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(500)), 2e-6, rtol=1e-6)


def test_weight_decay_mask_skips_norms_and_vectors():
    params = {"layer": {"w": jnp.ones((3, 4)), "bias": jnp.ones((4,)), "norm": {"scale": jnp.ones((4,))}},
              "router_bias": jnp.ones((8,)), "embed": jnp.ones((10, 4))}
    mask = weight_decay_mask(params)
    assert mask["layer"]["w"] and mask["embed"]
    assert not mask["layer"]["bias"] and not mask["layer"]["norm"]["scale"] and not mask["router_bias"]


def test_frozen_leaves_get_exactly_zero_update_and_decay_applies_to_matrices():
    params = {"w": jnp.ones((2, 2)), "frozen": jnp.ones((2, 2)), "norm_scale": jnp.ones((2,))}
    grads = jax.tree.map(jnp.zeros_like, params)  # zero grads: only weight decay can move a leaf
    tx = make_optimizer(_cfg(schedule="constant", warmup_steps=0, weight_decay=0.5, learning_rate=0.1),
                        trainable_mask={"w": True, "frozen": False, "norm_scale": True})
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(updates["frozen"]), 0.0)
    np.testing.assert_array_equal(np.asarray(updates["norm_scale"]), 0.0)


@pytest.mark.parametrize("bad, message", [
    (dict(schedule="linear"), "schedule"),
    (dict(name="lion"), "optimizer.name"),
    (dict(total_steps=5), "total_steps"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(momentum=0.9), "unknown field"),
])
def test_bad_config_is_named(bad, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(_cfg(**bad))
