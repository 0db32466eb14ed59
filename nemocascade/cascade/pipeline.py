"""Runs a config: one stage, or an ordered cascade of stages with a ledger and MOPD teacher selection.

A cascade config has ``kind = "cascade"``, shared fields (``seed``, ``model``, ``mesh``, ``data``,
``eval``), ``order`` (stage names), ``compare`` (branches the report compares, ``configs.compare_config``) and
``stages.<name>`` (each with its ``kind``, ``init_from``, ``optimizer``, ``train`` and ``data``/``rl`` fields; a
stage's own ``seed`` wins over the shared one). Stage ``<name>`` lives in ``workdir/<name>/``; it starts from the
final params of its ``init_from`` stage (a policy stage earlier in ``order``; "" = the latest one), or with no
policy stage before it from the params of ``init_checkpoint`` (the base model; "" = random init); after it ends
every domain of ``eval.domains`` is evaluated and appended to ``workdir/ledger.json``. A stage already in the
ledger is skipped; an interrupted one resumes from its last checkpoint. A MOPD stage's teachers are, per domain,
the stage pinned by ``rl.teacher_stages`` (``"math=sft,if=if_rl"``), else the best earlier ledger entry; an RLHF
stage with a judge (``rl.judge.checkpoint``, or ``rl.judge.stage``: an earlier stage whose final checkpoint is
the judge) scores with it, else with ``rl.reward_model`` or the latest earlier ``reward_model`` stage; a stage
with a judged domain (long-context RL's) scores that domain with its judge, named the same way. At the end
(also when every stage was skipped) ``workdir/report.md`` and ``workdir/scores.png`` summarise the ledger.
"""
from __future__ import annotations

import copy
import gc
import json
import os

import jax
import ml_collections
from absl import logging

from nemocascade import data as data_lib
from nemocascade import environments
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.cascade import report
from nemocascade.cascade.ledger import Ledger
from nemocascade.checkpoint import restore_policy_params
from nemocascade.rewards import JUDGED_DOMAINS
from nemocascade.stages import evaluate, grpo, mopd, reward_model, rlhf, sft

STAGE_RUNNERS = {"sft": sft.run, "grpo": grpo.run, "mopd": mopd.run, "reward_model": reward_model.run,
                 "rlhf": rlhf.run}
# Stages that train a scorer rather than the policy: they start from the latest policy stage, evaluate
# themselves (their own eval.json) instead of on ``eval.domains``, and no later stage starts from them (the
# same holds for a stage that a later stage names as its judge, ``judge_stages``).
# Any stage's own evaluation (``ctx.evaluation``: the reward model's pairwise accuracy, RLHF's reward-model
# scores or judge win rates) goes into its ledger entry as ``evaluation``.
SCORER_KINDS = ("reward_model",)
SHARED_FIELDS = ("seed", "model", "mesh", "eval")


def stage_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The full single-stage config of cascade stage ``name`` (shared fields + the stage's own), a copy: filling it
    in (MOPD teachers, the reward model, the judge) leaves ``config`` as it was."""
    if name not in config.stages:
        raise ValueError(f"cascade order names stage {name!r}, but config.stages has {sorted(config.stages)}")
    own = config.stages[name]
    merged = ml_collections.ConfigDict({"name": name, **{k: copy.deepcopy(config[k]) for k in SHARED_FIELDS}})
    for key, value in own.items():
        merged[key] = copy.deepcopy(value)
    data = ml_collections.ConfigDict(config.data.to_dict())
    for key, value in own.get("data", {}).items():
        if key == "tokenizer" and not value:
            continue  # "" inherits the cascade's tokenizer
        if key == "tokenizer" and data.tokenizer and value != data.tokenizer:
            raise ValueError(f"stage {name!r}: data.tokenizer={value!r} differs from the cascade's data.tokenizer="
                             f"{data.tokenizer!r}; every stage shares one tokenizer (MOPD teachers score the same "
                             f"ids): set it once as data.tokenizer")
        if key == "thinking" and value != data.thinking:
            raise ValueError(f"stage {name!r}: data.thinking={value!r} differs from the cascade's data.thinking="
                             f"{data.thinking!r}; every stage renders prompts and answers in one mode (an SFT policy "
                             f"trained in the other mode has never seen the RL prompts' assistant prefix)")
        data[key] = value
    merged.data = data
    return merged


def _policy_params(config, directory: str, mesh):
    """The params of the latest checkpoint in ``directory``, shaped by ``config.model`` and placed on ``mesh``."""
    return restore_policy_params(directory, model_lib.ModelConfig.from_dict(config.model.to_dict()), mesh)


def _previous_params(config, workdir: str, previous: str, mesh):
    return _policy_params(config, os.path.join(workdir, previous, "checkpoints"), mesh)


def _base_params(config, mesh=None):
    """The params of ``config.init_checkpoint`` (a checkpoint directory, e.g. written by ``python -m
    nemocascade.hf.convert import`` from the base model), which a stage with no earlier policy stage starts from;
    None (random init from the seed) when it is "". ``mesh``: the run's (default: made from ``config.mesh``)."""
    directory = config.get("init_checkpoint", "")
    if not directory:
        return None
    mesh = mesh if mesh is not None else sharding_lib.make_mesh(config.mesh.to_dict())
    try:
        return _policy_params(config, directory, mesh)
    except Exception as err:  # orbax's errors come from deep inside: name the field and the directory
        raise ValueError(f"init_checkpoint={directory!r}: cannot restore params of config.model from it "
                         f"({type(err).__name__}: {err})") from err


def _evaluate(config, stage_cfg, ctx, params) -> dict:
    tokenizer = data_lib.load_tokenizer(stage_cfg.data.tokenizer)
    return evaluate.evaluate_domains(params, ctx.model_cfg, tokenizer, domains=config.eval.domains,
                                     num_examples=config.eval.num_examples,
                                     max_new_tokens=config.eval.max_new_tokens, seed=config.seed,
                                     thinking=stage_cfg.data.thinking, mesh=ctx.mesh,
                                     max_turns=config.eval.max_turns, turn_tokens=config.eval.max_turn_tokens)


def run_cascade(config: ml_collections.ConfigDict, workdir: str) -> Ledger:
    ledger = Ledger(os.path.join(workdir, "ledger.json"), writer=jax.process_index() == 0)
    report.parse_branches(config)           # a bad ``compare`` fails now, not after every stage ran
    check_judges(config)
    environments.check_turns(config.eval.domains, config.eval.max_turns, "eval.max_turns")
    mesh = sharding_lib.make_mesh(config.mesh.to_dict())
    judges = judge_stages(config)
    done: list[str] = []
    for name in config.order:
        stage_cfg = stage_config(config, name)
        stage_dir = os.path.join(workdir, name)
        if ledger.entry(name) is not None:
            logging.info("stage %s is in the ledger: skipped", name)
            done.append(name)
            continue
        policies = [n for n in done if ledger.entry(n)["kind"] not in SCORER_KINDS and n not in judges]
        teachers = None
        if stage_cfg.kind != "mopd" and "rl" in stage_cfg and stage_cfg.rl.teacher_stages:
            raise ValueError(f"stage {name!r} of kind {stage_cfg.kind!r} sets rl.teacher_stages, which only a mopd "
                             f"stage uses")
        if stage_cfg.kind == "mopd":
            teachers = _teachers(stage_cfg, ledger, policies)
            with stage_cfg.unlocked():
                stage_cfg.rl.teachers = {d: e["checkpoint_dir"] for d, e in teachers.items()}
        if "rl" in stage_cfg and stage_cfg.rl.judge.stage:
            with stage_cfg.unlocked():
                stage_cfg.rl.judge.checkpoint = _judge_checkpoint(stage_cfg, ledger, done)
        scorer_entry = None
        if stage_cfg.kind == "rlhf" and not stage_cfg.rl.reward_model and not stage_cfg.rl.judge.checkpoint:
            scorer_entry = _latest_reward_model(ledger, done)
            if scorer_entry is not None:
                with stage_cfg.unlocked():
                    stage_cfg.rl.reward_model = scorer_entry["checkpoint_dir"]
        runner = STAGE_RUNNERS.get(stage_cfg.kind)
        if runner is None:
            raise ValueError(f"stage {name!r} has kind {stage_cfg.kind!r}; known: {sorted(STAGE_RUNNERS)}")
        start = _start_stage(stage_cfg, policies)
        initial = _previous_params(config, workdir, start, mesh) if start else _base_params(config, mesh)
        ctx, state = runner(stage_cfg, stage_dir, initial_params=initial)
        del initial
        scorer = stage_cfg.kind in SCORER_KINDS or name in judges
        scores = {} if scorer else _evaluate(config, stage_cfg, ctx, state.params)
        entry = {"stage": name, "kind": stage_cfg.kind, "checkpoint_dir": ctx.checkpoint_dir,
                 "step": int(state.step), "scores": scores}
        if ctx.evaluation is not None:
            entry["evaluation"] = ctx.evaluation
        if teachers is not None:
            entry["teachers"] = {d: {"stage": e["stage"], "checkpoint_dir": e["checkpoint_dir"]}
                                 for d, e in teachers.items()}
        if uses_judge(stage_cfg) and stage_cfg.rl.judge.checkpoint:
            entry["judge"] = {"stage": stage_cfg.rl.judge.stage or None,
                              "checkpoint_dir": stage_cfg.rl.judge.checkpoint}
        elif stage_cfg.kind == "rlhf":
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


def judge_stages(config: ml_collections.ConfigDict) -> set[str]:
    """The stages of ``config.order`` that a later stage names as its judge (``rl.judge.stage``): like the
    ``SCORER_KINDS`` they are not evaluated on ``eval.domains``, and no stage starts from them or takes them as a
    MOPD teacher."""
    own = [config.stages[n] for n in config.order if n in config.stages]
    return {s.rl.judge.stage for s in own if "rl" in s and "judge" in s.rl and s.rl.judge.stage}


def uses_judge(stage_cfg) -> bool:
    """Whether the stage may score with ``rl.judge``: an rlhf stage (its pairwise judge), or an RL stage with a
    judged domain (their answer judge)."""
    return "rl" in stage_cfg and (stage_cfg.kind == "rlhf" or bool(set(stage_cfg.rl.domains) & set(JUDGED_DOMAINS)))


def check_judges(config: ml_collections.ConfigDict) -> None:
    """Before the first stage runs: every stage of ``order`` with a judged domain names its judge (``rl.judge``
    checkpoint or stage), rather than failing when that stage starts, after the earlier ones ran."""
    for name in config.order:
        own = config.stages.get(name)
        if own is None or "rl" not in own or own.get("kind") == "rlhf":
            continue
        judged = sorted(set(own.rl.domains) & set(JUDGED_DOMAINS))
        if judged and not own.rl.judge.checkpoint and not own.rl.judge.stage:
            raise ValueError(f"stage {name!r}: rl.domains {judged} are scored by an LLM judge against the reference "
                             f"answer; set stages.{name}.rl.judge.checkpoint or .stage")


def _start_stage(stage_cfg, policies) -> str | None:
    """The stage whose final params stage ``stage_cfg.name`` starts from: ``init_from`` if set (it must be a
    finished policy stage among ``policies``), else the latest of ``policies`` (None: random init)."""
    if not stage_cfg.init_from:
        return policies[-1] if policies else None
    if stage_cfg.init_from not in policies:
        raise ValueError(f"stage {stage_cfg.name!r}: init_from={stage_cfg.init_from!r} is not a policy stage "
                         f"finished earlier in order; expected one of {policies}")
    return stage_cfg.init_from


def parse_teacher_stages(spec: str) -> dict[str, str]:
    """``"math=sft,if=if_rl"`` -> ``{"math": "sft", "if": "if_rl"}`` ("" -> {})."""
    pinned = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        domain, sep, stage = (x.strip() for x in item.partition("="))
        if not sep or not domain or not stage or domain in pinned:
            raise ValueError(f"rl.teacher_stages={spec!r}: expected comma-separated domain=stage pairs, "
                             f"each domain once (bad item {item!r})")
        pinned[domain] = stage
    return pinned


def _teachers(stage_cfg, ledger: Ledger, policies) -> dict[str, dict]:
    """A MOPD stage's teacher ledger entry per domain of ``rl.domains``: the stage pinned by ``rl.teacher_stages``,
    else the best of the finished policy stages ``policies`` on that domain."""
    pinned = parse_teacher_stages(stage_cfg.rl.teacher_stages)
    for domain, teacher in pinned.items():
        if domain not in stage_cfg.rl.domains:
            raise ValueError(f"stage {stage_cfg.name!r}: rl.teacher_stages pins domain {domain!r}, which is not "
                             f"in rl.domains {tuple(stage_cfg.rl.domains)}")
        if teacher not in policies:
            raise ValueError(f"stage {stage_cfg.name!r}: rl.teacher_stages pins {domain}={teacher!r}, which is not "
                             f"a policy stage finished earlier in order; expected one of {policies}")
    return {d: ledger.entry(pinned[d]) if d in pinned else ledger.best_for(d, among=policies)
            for d in stage_cfg.rl.domains}


def _judge_checkpoint(stage_cfg, ledger: Ledger, done) -> str:
    """The final checkpoint dir of the stage ``rl.judge.stage`` names (finished earlier in order), for a stage
    that judges (``uses_judge``) and does not also give ``rl.judge.checkpoint``."""
    judge = stage_cfg.rl.judge
    if not uses_judge(stage_cfg):
        raise ValueError(f"stage {stage_cfg.name!r} of kind {stage_cfg.kind!r} sets rl.judge.stage, which only an "
                         f"rlhf stage or one with a judged domain {JUDGED_DOMAINS} in rl.domains uses")
    if judge.checkpoint:
        raise ValueError(f"stage {stage_cfg.name!r} sets both rl.judge.stage={judge.stage!r} and "
                         f"rl.judge.checkpoint={judge.checkpoint!r}; give one")
    if judge.stage not in done:
        raise ValueError(f"stage {stage_cfg.name!r}: rl.judge.stage={judge.stage!r} is not a stage finished earlier "
                         f"in order; expected one of {list(done)}")
    return ledger.entry(judge.stage)["checkpoint_dir"]


def _latest_reward_model(ledger: Ledger, done) -> dict | None:
    """The ledger entry of the last finished ``reward_model`` stage among ``done`` (None if there is none)."""
    scorers = [ledger.entry(n) for n in done if ledger.entry(n)["kind"] == "reward_model"]
    return scorers[-1] if scorers else None


def _print_scores(stage: str, scores: dict) -> None:
    if jax.process_index() != 0:  # every process evaluated the same rollouts (gathered); one prints
        return
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
    if config.kind not in SCORER_KINDS:
        environments.check_turns(config.eval.domains, config.eval.max_turns, "eval.max_turns")
    ctx, state = runner(config, workdir, initial_params=_base_params(config))
    if config.kind in SCORER_KINDS:
        return
    scores = _evaluate(config, config, ctx, state.params)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "eval.json"), "w") as f:
            json.dump(scores, f, indent=2, sort_keys=True)
    _print_scores(config.name, scores)
