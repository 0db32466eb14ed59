"""A tiny random-init judge model, its params and a checkpoint of it, for the judge reward tests."""
import dataclasses

import jax
import optax

from nemocascade import data as data_lib
from nemocascade import model as model_lib
from nemocascade.checkpoint import Checkpointer
from nemocascade.train import train_state_from_params

TOKENIZER = data_lib.load_tokenizer("")
CFG = model_lib.ModelConfig(vocab_size=TOKENIZER.vocab_size, d_model=32, num_layers=1, num_heads=2, num_kv_heads=1,
                            num_experts=4, num_experts_per_tok=2, expert_hidden_size=32, mlp_hidden_size=64,
                            max_seq_len=256)


def judge_params(seed: int = 3):
    return jax.jit(lambda r: model_lib.init_params(CFG, r))(jax.random.PRNGKey(seed))


def save_judge(directory, params=None) -> str:
    """A finished checkpoint of the judge (``params``, else ``judge_params()``) in ``directory``, as a stage saves
    it (model config and tokenizer path); returns the directory."""
    state, _ = train_state_from_params(params if params is not None else judge_params(), optax.sgd(0.1),
                                       jax.random.PRNGKey(0))
    checkpointer = Checkpointer(str(directory), async_save=False)
    checkpointer.save(4, state, config={"model": dataclasses.asdict(CFG), "data": {"tokenizer": ""}})
    checkpointer.close()
    return str(directory)
