"""The train state: one pytree that holds everything a step reads and writes."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training; checkpointed whole.

    Attributes:
      step: int32 scalar, optimizer steps taken so far.
      params: the model's parameter pytree (plain nested dict).
      opt_state: the optax state for ``params``.
      rng: uint32[2] PRNG key; each step splits off its own key, so a resumed run draws the same numbers.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
