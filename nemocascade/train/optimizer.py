"""Optax optimizer built from an ``ml_collections`` config.

The config (a ``ConfigDict`` or any mapping) has these fields:

=====================  =====================================================================
``name``               ``"adamw"`` (the recipe's optimizer) or ``"sgd"`` (tests, debugging)
``learning_rate``      peak learning rate (float, > 0)
``schedule``           ``"constant"`` or ``"cosine"`` (both after a linear warmup)
``warmup_steps``       linear warmup length in optimizer steps, from ``init_learning_rate``
``init_learning_rate`` learning rate at step 0 of the warmup (the paper's MOPD: 2e-7 -> 2e-6)
``end_learning_rate``  final learning rate of the cosine decay (SFT: 5e-5 -> 5e-6)
``total_steps``        steps over which the cosine decays (warmup included)
``b1``, ``b2``, ``eps`` AdamW moments (recipe: 0.9/0.95 for RL, 0.9/0.98 for SFT)
``weight_decay``       decoupled weight decay; never applied to norms, biases, router biases
``grad_clip_norm``     global-norm clipping threshold (0 disables)
=====================  =====================================================================

Parameters marked not trainable (``trainable_mask`` leaf ``False``: the router bias of aux-loss-free
balancing always, router weights when frozen) receive exactly zero updates and keep no moments.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import optax

_FIELDS = {
    "name", "learning_rate", "schedule", "warmup_steps", "init_learning_rate", "end_learning_rate",
    "total_steps", "b1", "b2", "eps", "weight_decay", "grad_clip_norm",
}
_NO_DECAY_NAME_PARTS = ("norm", "bias", "scale")


def _get(cfg: Mapping[str, Any], key: str):
    if key not in cfg:
        raise ValueError(f"optimizer config is missing field {key!r}; expected fields: {sorted(_FIELDS)}")
    return cfg[key]


def _check_fields(cfg: Mapping[str, Any]) -> None:
    unknown = set(cfg.keys()) - _FIELDS
    if unknown:
        raise ValueError(f"optimizer config has unknown field(s) {sorted(unknown)}; valid: {sorted(_FIELDS)}")


def make_schedule(cfg: Mapping[str, Any]) -> optax.Schedule:
    """Learning rate as a function of the optimizer step (int) -> float32 scalar."""
    _check_fields(cfg)
    peak = float(_get(cfg, "learning_rate"))
    warmup = int(_get(cfg, "warmup_steps"))
    init = float(_get(cfg, "init_learning_rate"))
    kind = _get(cfg, "schedule")
    if peak <= 0:
        raise ValueError(f"optimizer.learning_rate must be > 0, got {peak}")
    if warmup < 0:
        raise ValueError(f"optimizer.warmup_steps must be >= 0, got {warmup}")
    if kind == "constant":
        if warmup == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
                [optax.linear_schedule(init, peak, warmup), optax.constant_schedule(peak)], [warmup])
    if kind == "cosine":
        total = int(_get(cfg, "total_steps"))
        if total <= warmup:
            raise ValueError(
                    f"optimizer.total_steps ({total}) must exceed optimizer.warmup_steps ({warmup}) for a cosine schedule")
        return optax.warmup_cosine_decay_schedule(
                init_value=init, peak_value=peak, warmup_steps=warmup, decay_steps=total,
                end_value=float(_get(cfg, "end_learning_rate")))
    raise ValueError(f"optimizer.schedule must be 'constant' or 'cosine', got {kind!r}")


def weight_decay_mask(params) -> Any:
    """True for the leaves that get weight decay: matrices that are not norms, biases or scales."""
    def decays(path, leaf) -> bool:
        names = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path).lower()
        return leaf.ndim >= 2 and not any(part in names for part in _NO_DECAY_NAME_PARTS)
    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg: Mapping[str, Any], trainable_mask=None) -> optax.GradientTransformation:
    """Builds the optimizer; ``trainable_mask`` is a params-shaped pytree of bools (None: all trainable)."""
    _check_fields(cfg)
    schedule = make_schedule(cfg)
    name = _get(cfg, "name")
    if name == "adamw":
        core = optax.adamw(
                schedule, b1=float(_get(cfg, "b1")), b2=float(_get(cfg, "b2")), eps=float(_get(cfg, "eps")),
                weight_decay=float(_get(cfg, "weight_decay")), mask=weight_decay_mask)
    elif name == "sgd":
        core = optax.sgd(schedule)
    else:
        raise ValueError(f"optimizer.name must be 'adamw' or 'sgd', got {name!r}")
    clip = float(_get(cfg, "grad_clip_norm"))
    chain = [optax.clip_by_global_norm(clip)] if clip > 0 else []
    chain.append(core)
    tx = optax.chain(*chain)
    if trainable_mask is None:
        return tx
    labels = jax.tree_util.tree_map(lambda t: "train" if t else "frozen", trainable_mask)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
