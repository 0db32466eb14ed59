"""Single-stage configs for ``tests/launch/test_multiprocess_rl.py``:
``--config=tests/launch/rl_stages_config.py:KIND``.

KIND is ``reward_model``, ``grpo`` or ``rlhf`` (on ``chat`` prompts, scored by the reward model
``--override=rl.reward_model=DIR``); multi-process MOPD runs in ``tests/launch/test_multiprocess_cascade.py``.
Each is a
1-layer dense variant of the tiny model (compiles in ~2/3 of the MoE's time) on a mesh with ``fsdp`` over
every device, 3 steps, a log line and a checkpoint every step, so every stage is small enough for a
multi-process test on 2 CPU cores. GRPO starts from random init, whose responses never end with a stop
token within the budget and rarely follow an instruction: ``unfinished_reward_zero`` and
``filter_uniform_groups`` are off, so that the few rewarded responses give non-zero advantages.
"""
import ml_collections

from nemocascade import configs

KINDS = ("reward_model", "grpo", "rlhf")


def get_config(kind: str = "grpo") -> ml_collections.ConfigDict:
    if kind not in KINDS:
        raise ValueError(f"unknown preset {kind!r} for {__file__}; known: {KINDS}")
    config = ml_collections.ConfigDict()
    config.kind = kind
    config.name = kind
    config.seed = 0
    config.model = configs.model_config("tiny")
    config.model.num_layers = 1
    config.model.block_pattern = ("attention+mlp",)
    config.mesh = configs.mesh_config(data=1, fsdp=-1)
    train = configs.train_config(steps=3, log_every=1, checkpoint_every=1, keep_checkpoints=3)
    # Adam turns float-rounding gaps in near-zero gradients (e.g. embedding rows of rare tokens) into param gaps
    # (A vs B) that grow with the lr: these keep them far under the test's 1e-5, and the losses still move.
    optimizer = configs.optimizer_config(learning_rate=3e-4 if kind == "reward_model" else 1e-4)
    if kind == "reward_model":
        fields = configs.tiny_reward_model_stage()
        fields["data"].update(num_pairs=64, seq_len=64, too_long="truncate")
        fields["reward_model"].update(eval_pairs=16, eval_batch_size=16)
        config.update(fields)
        config.optimizer, config.train = optimizer, train
        return config
    rl = dict(prompts_per_domain=32, prompts_per_step=4, num_samples=4, max_new_tokens=12, max_prompt_tokens=80,
              filter_uniform_groups=False, unfinished_reward_zero=False)
    stage = configs.tiny_rl_stage(kind, domains=("chat",) if kind == "rlhf" else ("if",), **rl)
    for key, value in stage.items():
        if key not in ("kind", "init_from"):
            config[key] = value
    config.optimizer, config.train = optimizer, train
    config.data = configs.shared_data_config()
    config.eval = configs.eval_config(domains=("if",), num_examples=8, max_new_tokens=8)
    return config
