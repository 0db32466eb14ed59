"""Creating a ``TrainState`` already sharded on the mesh, and its abstract twin for restores."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from nemocascade.train.state import TrainState

InitParamsFn = Callable[[jax.Array], Any]


def _init_opt_state(optimizer: optax.GradientTransformation, params, param_shardings):
    """``optimizer.init(params)`` with every params-shaped moment constrained to its parameter's sharding.

    Without the constraint XLA replicates the moments: they are zeros that do not depend on the params,
    so no sharding propagates to them (a full optimizer state per device).
    """
    opt_state = optimizer.init(params)
    if param_shardings is None:
        return opt_state
    return optax.tree_utils.tree_map_params(
        optimizer, jax.lax.with_sharding_constraint, opt_state, param_shardings,
        transform_non_params=lambda x: x, is_leaf=lambda x: isinstance(x, optax.MaskedNode))


def _params_from_seed(init_params_fn: InitParamsFn, rng: jax.Array, param_shardings):
    """(params, state key) of a fresh state: ``rng`` split into the params key and the state's running key."""
    params_rng, state_rng = jax.random.split(rng)
    params = init_params_fn(params_rng)
    if param_shardings is not None:
        params = jax.lax.with_sharding_constraint(params, param_shardings)
    return params, state_rng


def init_params_from_seed(init_params_fn: InitParamsFn, rng: jax.Array, *, param_shardings=None):
    """The params ``create_train_state(init_params_fn, optimizer, rng, param_shardings=...)`` starts from, built
    again in buffers of their own (e.g. an RL stage's frozen reference policy after a random init or a resume)."""
    return jax.jit(lambda r: _params_from_seed(init_params_fn, r, param_shardings)[0])(rng)


def _state_init_fn(init_params_fn: InitParamsFn, optimizer: optax.GradientTransformation, param_shardings):
    def init(rng: jax.Array) -> TrainState:
        params, state_rng = _params_from_seed(init_params_fn, rng, param_shardings)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=_init_opt_state(optimizer, params, param_shardings), rng=state_rng)
    return init


def _compiled_init(init_params_fn, optimizer, param_shardings, rng):
    init = _state_init_fn(init_params_fn, optimizer, param_shardings)
    return jax.jit(init).lower(rng).compile()


def create_train_state(init_params_fn: InitParamsFn, optimizer: optax.GradientTransformation,
                       rng: jax.Array, *, param_shardings=None) -> tuple[TrainState, Any]:
    """Builds the initial state inside one jit so every leaf is born with its final sharding.

    Args:
      init_params_fn: ``rng -> params``.
      optimizer: optax transformation whose ``init`` builds the optimizer state.
      rng: uint32[2] seed key; split into the params key and the state's running key.
      param_shardings: params-shaped pytree of shardings (None: single device / let XLA choose).
        Optimizer moments inherit the sharding of their parameter.
    Returns:
      (state, state_shardings) where ``state_shardings`` is a ``TrainState`` of shardings suitable for
      ``make_train_step`` and for checkpoint restores.
    """
    compiled = _compiled_init(init_params_fn, optimizer, param_shardings, rng)
    return compiled(rng), compiled.output_shardings


def abstract_train_state(init_params_fn: InitParamsFn, optimizer: optax.GradientTransformation,
                         *, param_shardings=None) -> TrainState:
    """A ``TrainState`` of ``jax.ShapeDtypeStruct`` (with shardings) without allocating anything.

    Used to restore a checkpoint onto a (possibly different) mesh: orbax places every array straight
    into the sharding named here.
    """
    rng = jax.random.PRNGKey(0)
    compiled = _compiled_init(init_params_fn, optimizer, param_shardings, rng)
    shapes = jax.eval_shape(_state_init_fn(init_params_fn, optimizer, param_shardings), rng)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, compiled.output_shardings)


def train_state_from_params(params, optimizer: optax.GradientTransformation, rng: jax.Array):
    """A fresh ``TrainState`` around existing params (e.g. an RL stage starting from the SFT checkpoint).

    The params (jax Arrays) keep their shardings; optimizer moments are created beside them with the same
    shardings. Returns ``(state, state_shardings)``.
    """
    shardings = jax.tree.map(lambda p: p.sharding, params)

    def init(params, rng):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=_init_opt_state(optimizer, params, shardings), rng=rng)
    compiled = jax.jit(init).lower(params, rng).compile()
    return compiled(params, rng), compiled.output_shardings
