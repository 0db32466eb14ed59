"""Runs a config: one stage, or an ordered cascade of stages with a ledger and MOPD teacher selection.

A cascade config has ``kind = "cascade"``, shared fields (``seed``, ``model``, ``mesh``, ``data``,
``eval``), ``order`` (stage names) and ``stages.<name>`` (each with its ``kind``, ``optimizer``, ``train``
and ``data``/``rl`` fields). Stage ``<name>`` lives in ``workdir/<name>/``; it starts from the previous
stage's final params; after it ends every domain of ``eval.domains`` is evaluated and appended to
``workdir/ledger.json``. A stage already in the ledger is skipped; an interrupted one resumes from its
last checkpoint. A MOPD stage's teachers are, per domain, the best earlier ledger entry; an RLHF stage
without ``rl.reward_model`` scores with the latest earlier ``reward_model`` stage. At the end (also when
every stage was skipped) ``workdir/report.md`` and ``workdir/scores.png`` summarise the ledger.
"""
from __future__ import annotations

import gc
import json
import os

import jax
import ml_collections
from absl import logging

from nemocascade import data as data_lib
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.cascade import report
from nemocascade.cascade.ledger import Ledger
from nemocascade.checkpoint import restore_params
from nemocascade.stages import evaluate, grpo, mopd, reward_model, rlhf, sft

STAGE_RUNNERS = {"sft": sft.run, "grpo": grpo.run, "mopd": mopd.run, "reward_model": reward_model.run,
                 "rlhf": rlhf.run}
# Stages that train a scorer rather than the policy: they start from the latest policy stage, evaluate
# themselves (their own eval.json) instead of on ``eval.domains``, and no later stage starts from them.
# Any stage's own evaluation (``ctx.evaluation``: the reward model's pairwise accuracy, RLHF's reward-model
# scores) goes into its ledger entry as ``evaluation``.
SCORER_KINDS = ("reward_model",)
SHARED_FIELDS = ("seed", "model", "mesh", "eval")


def stage_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The full single-stage config of cascade stage ``name`` (shared fields + the stage's own)."""
    if name not in config.stages:
        raise ValueError(f"cascade order names stage {name!r}, but config.stages has {sorted(config.stages)}")
    own = config.stages[name]
    merged = ml_collections.ConfigDict({"name": name, **{k: config[k] for k in SHARED_FIELDS}})
    for key, value in own.items():
        merged[key] = value
    data = ml_collections.ConfigDict(config.data.to_dict())
    for key, value in own.get("data", {}).items():
        data[key] = value
    merged.data = data
    return merged


def _previous_params(config, workdir: str, previous: str, mesh):
    model_cfg = model_lib.ModelConfig.from_dict(config.model.to_dict())
    shapes = jax.eval_shape(lambda r: model_lib.init_params(model_cfg, r), jax.random.PRNGKey(0))
    shardings = sharding_lib.param_shardings(mesh, model_cfg)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    return restore_params(os.path.join(workdir, previous, "checkpoints"), abstract)


def _evaluate(config, stage_cfg, ctx, params) -> dict:
    tokenizer = data_lib.load_tokenizer(stage_cfg.data.tokenizer)
    return evaluate.evaluate_domains(params, ctx.model_cfg, tokenizer, domains=config.eval.domains,
                                     num_examples=config.eval.num_examples,
                                     max_new_tokens=config.eval.max_new_tokens, seed=config.seed,
                                     thinking=stage_cfg.data.thinking, mesh=ctx.mesh)


def run_cascade(config: ml_collections.ConfigDict, workdir: str) -> Ledger:
    ledger = Ledger(os.path.join(workdir, "ledger.json"))
    mesh = sharding_lib.make_mesh(config.mesh.to_dict())
    done: list[str] = []
    for name in config.order:
        stage_cfg = stage_config(config, name)
        stage_dir = os.path.join(workdir, name)
        if ledger.entry(name) is not None:
            logging.info("stage %s is in the ledger: skipped", name)
            done.append(name)
            continue
        teachers = None
        if stage_cfg.kind == "mopd":
            teachers = {d: ledger.best_for(d, among=done) for d in stage_cfg.rl.domains}
            with stage_cfg.unlocked():
                stage_cfg.rl.teachers = {d: e["checkpoint_dir"] for d, e in teachers.items()}
        scorer_entry = None
        if stage_cfg.kind == "rlhf" and not stage_cfg.rl.reward_model:
            scorer_entry = _latest_reward_model(ledger, done)
            if scorer_entry is not None:
                with stage_cfg.unlocked():
                    stage_cfg.rl.reward_model = scorer_entry["checkpoint_dir"]
        runner = STAGE_RUNNERS.get(stage_cfg.kind)
        if runner is None:
            raise ValueError(f"stage {name!r} has kind {stage_cfg.kind!r}; known: {sorted(STAGE_RUNNERS)}")
        policies = [n for n in done if ledger.entry(n)["kind"] not in SCORER_KINDS]
        initial = _previous_params(config, workdir, policies[-1], mesh) if policies else None
        ctx, state = runner(stage_cfg, stage_dir, initial_params=initial)
        del initial
        scorer = stage_cfg.kind in SCORER_KINDS
        scores = {} if scorer else _evaluate(config, stage_cfg, ctx, state.params)
        entry = {"stage": name, "kind": stage_cfg.kind, "checkpoint_dir": ctx.checkpoint_dir,
                 "step": int(state.step), "scores": scores}
        if ctx.evaluation is not None:
            entry["evaluation"] = ctx.evaluation
        if teachers is not None:
            entry["teachers"] = {d: {"stage": e["stage"], "checkpoint_dir": e["checkpoint_dir"]}
                                 for d, e in teachers.items()}
        if stage_cfg.kind == "rlhf":
            entry["reward_model"] = {"stage": scorer_entry["stage"] if scorer_entry else None,
                                     "checkpoint_dir": stage_cfg.rl.reward_model}
        ledger.append(entry)
        _print_scores(name, scores)
        done.append(name)
        del state, ctx
        gc.collect()
    if jax.process_index() == 0:
        report.write_report(config, ledger, workdir)
    return ledger


def _latest_reward_model(ledger: Ledger, done) -> dict | None:
    """The ledger entry of the last finished ``reward_model`` stage among ``done`` (None if there is none)."""
    scorers = [ledger.entry(n) for n in done if ledger.entry(n)["kind"] == "reward_model"]
    return scorers[-1] if scorers else None


def _print_scores(stage: str, scores: dict) -> None:
    for domain, result in scores.items():
        print(f"[{stage}] eval {domain}: pass@1 {result['pass_at_1']:.3f}, mean reward {result['mean_reward']:.3f} "
              f"({result['num_examples']} held-out prompts)", flush=True)


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Entry used by ``nemocascade.launch``: a cascade, or a single stage treated as a one-stage cascade."""
    if config.kind == "cascade":
        run_cascade(config, workdir)
        return
    runner = STAGE_RUNNERS.get(config.kind)
    if runner is None:
        raise ValueError(f"config.kind={config.kind!r} is not known; known: cascade, {sorted(STAGE_RUNNERS)}")
    ctx, state = runner(config, workdir)
    if config.kind in SCORER_KINDS:
        return
    scores = _evaluate(config, config, ctx, state.params)
    with open(os.path.join(workdir, "eval.json"), "w") as f:
        json.dump(scores, f, indent=2, sort_keys=True)
    _print_scores(config.name, scores)
