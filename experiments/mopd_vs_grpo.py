"""The paper's sample-efficiency claim at toy scale: from the same regressed checkpoint, MOPD recovers the
teacher's math score in fewer RL steps than GRPO.

Order: ``sft`` -> ``regress`` (GRPO on math at a learning rate that loses held-out math) -> ``mopd_1`` ..
``mopd_K`` (MOPD on math, teacher pinned to ``sft``) -> ``grpo_1`` .. ``grpo_K`` (GRPO on math). Segment 1 of
each branch starts from ``regress``, segment k from segment k - 1 of its branch (``init_from``). Both branches
have the same segment length, learning rate, prompts and rollouts per step; segment k of either branch draws
its prompts and rollouts with seed k (the held-out eval keeps the shared seed). The eval after every segment
puts both curves (math pass@1 vs cumulative RL steps) in the ledger; ``compare`` makes the report list each
branch's steps to recover the teacher's score (within 0.02).

Presets: ``tiny`` (default; CPU: 8 segments x 5 steps = 40 RL steps per branch, 513 s wall from scratch on
2 cores, sft included) and ``nano30b`` (the nano30b SFT stage; RECIPE.md's RL settings: 128 prompts x 16
rollouts, router frozen, MOPD's lr 2e-6; the regression at 10x the recipe's GRPO lr; 4 x 13 = 52 steps per
branch, MOPD's step count).
"""
import ml_collections

from nemocascade import configs

TINY_SEGMENTS = 8                 # x 5 steps: 40 RL steps per branch
NANO30B_SEGMENTS = 4              # x 13 steps: 52, MOPD's step count in RECIPE.md
BRANCHES = ("mopd", "grpo")


def _branch_stages(make_stage, segments: int) -> dict:
    """``mopd_k`` / ``grpo_k`` for k = 1..segments; ``make_stage(kind, seed, init_from)`` builds one segment."""
    stages = {}
    for kind in BRANCHES:
        for k in range(1, segments + 1):
            stages[f"{kind}_{k}"] = make_stage(kind, k, "regress" if k == 1 else f"{kind}_{k - 1}")
    return stages


def _cascade(model, mesh, stages: dict, segments: int, eval_cfg, data,
             init_checkpoint: str = "") -> ml_collections.ConfigDict:
    order = ("sft", "regress") + tuple(f"{kind}_{k}" for kind in BRANCHES for k in range(1, segments + 1))
    branches = ";".join(f"{kind}=" + ",".join(f"{kind}_{k}" for k in range(1, segments + 1)) for kind in BRANCHES)
    compare = configs.compare_config(domain="math", reference="sft", start="regress", branches=branches)
    return configs.cascade_config(name="mopd_vs_grpo", model=model, mesh=mesh, order=order, stages=stages,
                                  eval_cfg=eval_cfg, data=data, compare=compare, init_checkpoint=init_checkpoint)


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    if preset == "tiny":
        # GRPO on math at 2e-4 regresses held-out math (2026-12-05: 0.61 -> 0.44); both branches learn at 5e-5,
        # where math RL and MOPD gain (BENCHMARKS.md).
        def segment(kind, seed, init_from):
            cfg = configs.tiny_rl_stage(kind, domains=("math",), steps=5, learning_rate=5e-5,
                                        teacher_stages="math=sft" if kind == "mopd" else "")
            cfg.update(dict(seed=seed, init_from=init_from))
            return cfg

        stages = {"sft": configs.stage("sft", **configs.tiny_sft_stage()),
                  "regress": configs.tiny_rl_stage("grpo", domains=("math",), steps=20, learning_rate=2e-4),
                  **_branch_stages(segment, TINY_SEGMENTS)}
        return _cascade("tiny", configs.mesh_config(), stages, TINY_SEGMENTS, configs.eval_config(domains=("math",)),
                        configs.shared_data_config())
    if preset == "nano30b":
        def segment(kind, seed, init_from):
            cfg = configs.nano30b_rl_stage(kind, domains=("math",), jsonl="math_rl.jsonl", steps=13,
                                           max_new_tokens=49152, learning_rate=2e-6, checkpoint_every=13,
                                           teacher_stages="math=sft" if kind == "mopd" else "")
            cfg.update(dict(seed=seed, init_from=init_from))
            return cfg

        stages = {"sft": configs.nano30b_sft_stage(),
                  "regress": configs.nano30b_rl_stage("grpo", domains=("math",), jsonl="math_rl.jsonl", steps=20,
                                                      max_new_tokens=49152, learning_rate=3e-5),
                  **_branch_stages(segment, NANO30B_SEGMENTS)}
        return _cascade(configs.nano30b_model(), configs.nano30b_mesh(), stages, NANO30B_SEGMENTS,
                        configs.eval_config(domains=("math",), num_examples=512, max_new_tokens=49152),
                        configs.nano30b_shared_data(), configs.NANO30B_BASE_CHECKPOINT)
    raise ValueError(f"unknown preset {preset!r} for experiments/mopd_vs_grpo.py; known: tiny, nano30b")
