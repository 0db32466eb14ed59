"""A small cascade for ``tests/launch/test_multiprocess_cascade.py``
(``--config=tests/launch/cascade_stages_config.py``).

sft -> sft_more (2 more SFT steps from sft's policy) -> math_rl (GRPO) -> mopd, where MOPD starts from ``sft``
(``init_from``) and distils from ``sft_more`` on both domains (``rl.teacher_stages``): a teacher that differs from
its student, so the token advantages are real log-prob gaps rather than float noise (a student distilling from
its own starting policy sees advantages of ~1e-7 whose signs are rounding). A 1-layer dense variant of the tiny
model on a mesh with ``fsdp`` over every device; a few steps per stage.
"""
import ml_collections

from nemocascade import configs

ORDER = ("sft", "sft_more", "math_rl", "mopd")


def _sft_stage(steps: int) -> ml_collections.ConfigDict:
    fields = configs.tiny_sft_stage()
    fields["data"].update(batch_size=8, seq_len=128, toy_mix="math=32,if=16,code=16")
    fields["optimizer"] = configs.optimizer_config(learning_rate=1e-3, schedule="constant", warmup_steps=0)
    fields["train"] = configs.train_config(steps=steps, log_every=2, checkpoint_every=steps)
    return configs.stage("sft", **fields)


def _rl_stage(kind: str, domains, **rl) -> ml_collections.ConfigDict:
    stage = configs.tiny_rl_stage(kind, domains=domains, steps=2, learning_rate=1e-4, prompts_per_step=4,
                                  num_samples=2, max_new_tokens=8, prompts_per_domain=16, **rl)
    stage.train = configs.train_config(steps=2, log_every=1, checkpoint_every=2)
    return stage


def get_config() -> ml_collections.ConfigDict:
    mopd = _rl_stage("mopd", ("math", "if"), aggregation="seq_mean_token_mean",
                     teacher_stages="math=sft_more,if=sft_more")
    mopd.init_from = "sft"
    stages = {"sft": _sft_stage(4), "sft_more": _sft_stage(2), "math_rl": _rl_stage("grpo", ("math",)), "mopd": mopd}
    config = configs.cascade_config(name="cascade_stages", model="tiny", mesh=configs.mesh_config(data=1, fsdp=-1),
                                    order=ORDER, stages=stages,
                                    # 8 rows: the evaluation's rollouts are split over both processes
                                    eval_cfg=configs.eval_config(domains=("math", "if"), num_examples=8,
                                                                 max_new_tokens=8),
                                    data=configs.shared_data_config())
    config.model.num_layers = 1
    config.model.block_pattern = ("attention+mlp",)  # dense: compiles in ~2/3 of the MoE's time
    return config
