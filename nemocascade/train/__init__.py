"""Training spine: state, optimizer and the one jitted train step shared by every stage."""
from nemocascade.train.init import (abstract_train_state, create_train_state, init_params_from_seed,
                                   train_state_from_params)
from nemocascade.train.optimizer import make_optimizer, make_schedule, weight_decay_mask
from nemocascade.train.state import TrainState
from nemocascade.train.step import make_train_step

__all__ = [
    "TrainState", "abstract_train_state", "create_train_state", "init_params_from_seed", "make_optimizer",
    "make_schedule", "make_train_step", "train_state_from_params", "weight_decay_mask",
]
