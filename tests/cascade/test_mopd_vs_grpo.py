"""Cascade options behind ``experiments/mopd_vs_grpo.py``: ``init_from``, pinned MOPD teachers
(``rl.teacher_stages``) and the report's branch comparison (``compare``).

The pipeline runs with stand-in stage runners (each records the config and initial params it was handed) and a
stand-in evaluation with fixed per-stage scores, so the choices the pipeline makes can be checked exactly.
"""

import pytest
from experiment_testing import load_experiment

from nemocascade import configs
from nemocascade.cascade import pipeline, report
from nemocascade.cascade.ledger import Ledger

# Held-out pass@1 per stage (math, if): ``a`` is the best math stage, so an unpinned MOPD teacher would be ``a``.
SCORES = {"sft": (0.6, 0.5), "a": (0.7, 0.4), "m": (0.65, 0.45), "b": (0.5, 0.55)}


def _score(value):
    return {"pass_at_1": value, "mean_reward": value, "num_examples": 8}


def _cascade(stages: dict, order, compare=None):
    return configs.cascade_config(name="t", model="tiny", mesh=configs.mesh_config(), order=order, stages=stages,
                                  eval_cfg=configs.eval_config(domains=("math", "if"), num_examples=8),
                                  data=configs.shared_data_config(), compare=compare)


@pytest.fixture
def recorded(stand_in_stages):
    """Stand-in runners (conftest.py) scored by ``SCORES``; returns {stage: (cfg, initial params)}."""
    return stand_in_stages(lambda name: {"math": _score(SCORES[name][0]), "if": _score(SCORES[name][1])})


def _stages(*, m_teachers="math=sft", b_init="sft", rm_stage=False):
    stages = {"sft": configs.stage("sft", **configs.tiny_sft_stage()),
              "a": configs.tiny_rl_stage("grpo", domains=("math",)),
              "m": configs.tiny_rl_stage("mopd", domains=("math", "if"), teacher_stages=m_teachers),
              "b": configs.tiny_rl_stage("grpo", domains=("math",))}
    stages["b"].init_from = b_init
    if rm_stage:
        stages["rm"] = configs.stage("reward_model", **configs.tiny_reward_model_stage())
    return stages


def _grpo_with_teachers():
    stages = _stages()
    stages["a"].rl.teacher_stages = "math=sft"
    return stages


def test_init_from_and_pinned_teachers(recorded, tmp_path):
    ledger = pipeline.run_cascade(_cascade(_stages(), ("sft", "a", "m", "b")), str(tmp_path))
    assert recorded["a"][1] == "params of sft"             # init_from "": the latest policy stage
    assert recorded["m"][1] == "params of a"
    assert recorded["b"][1] == "params of sft"             # init_from="sft" skips a and m
    # math is pinned to sft (a scores higher); if is unpinned: the best earlier if score (sft 0.5 > a 0.4).
    assert recorded["m"][0].rl.teachers.to_dict() == {"math": f"{tmp_path}/sft/checkpoints",
                                                      "if": f"{tmp_path}/sft/checkpoints"}
    assert ledger.entry("m")["teachers"] == {d: {"stage": "sft", "checkpoint_dir": f"{tmp_path}/sft/checkpoints"}
                                             for d in ("math", "if")}
    assert Ledger(str(tmp_path / "ledger.json")).entries == ledger.entries


def test_unpinned_teachers_are_the_best_in_the_ledger(recorded, tmp_path):
    pipeline.run_cascade(_cascade(_stages(m_teachers=""), ("sft", "a", "m")), str(tmp_path))
    assert recorded["m"][0].rl.teachers.to_dict() == {"math": f"{tmp_path}/a/checkpoints",
                                                      "if": f"{tmp_path}/sft/checkpoints"}


@pytest.mark.parametrize("stages, order, match", [
    (_stages(b_init="nope"), ("sft", "a", "b"), r"stage 'b': init_from='nope' is not a policy stage finished "
                                                r"earlier in order; expected one of \['sft', 'a'\]"),
    (_stages(b_init="m"), ("sft", "b", "m"), r"init_from='m' is not a policy stage finished earlier"),
    (_stages(b_init="rm", rm_stage=True), ("sft", "rm", "b"), r"init_from='rm' is not a policy stage"),
    (_stages(m_teachers="math:sft"), ("sft", "m"), r"rl.teacher_stages='math:sft': expected comma-separated "
                                                   r"domain=stage pairs"),
    (_stages(m_teachers="math=sft,math=a"), ("sft", "a", "m"), r"each domain once"),
    (_stages(m_teachers="code=sft"), ("sft", "m"), r"pins domain 'code', which is not in rl.domains"),
    (_stages(m_teachers="math=b"), ("sft", "m", "b"), r"pins math='b', which is not a policy stage finished"),
    (_grpo_with_teachers(), ("sft", "a"), r"stage 'a' of kind 'grpo' sets rl.teacher_stages, which only a mopd"),
])
def test_bad_init_from_and_teacher_stages_are_clear_errors(recorded, tmp_path, stages, order, match):
    with pytest.raises(ValueError, match=match):
        pipeline.run_cascade(_cascade(stages, order), str(tmp_path))


COMPARE = configs.compare_config(domain="math", reference="sft", start="a", branches="fast=m;slow=b")


def _entry(stage, step, math):
    return {"stage": stage, "kind": "grpo", "checkpoint_dir": f"/w/{stage}", "step": step,
            "scores": {"math": _score(math)}}


def test_report_lists_each_branchs_curve_and_steps_to_recover():
    stages = _stages()
    stages["m2"] = configs.tiny_rl_stage("mopd", domains=("math",))
    compare = configs.compare_config(domain="math", reference="sft", start="a", branches="fast=m,m2;slow=b")
    config = _cascade(stages, ("sft", "a", "m", "m2", "b"), compare=compare)
    # target = 0.60 - 0.02 = 0.58: fast reaches 0.59 after 5 + 5 steps; slow stays below (0.578 < 0.58).
    entries = [_entry("sft", 240, 0.6), _entry("a", 20, 0.4), _entry("m", 5, 0.5), _entry("m2", 5, 0.59),
               _entry("b", 5, 0.578)]
    markdown = report.report_markdown(config, entries, ["math"])
    assert "## fast vs slow on math" in markdown
    assert "pass@1 0.600 minus 0.02 = 0.580" in markdown
    assert "| fast | 0: 0.400, 5: 0.500, 10: 0.590 | 10 |" in markdown
    assert "| slow | 0: 0.400, 5: 0.578 | not recovered in 5 steps |" in markdown
    # A branch still running (m2 not in the ledger) shows the points it has.
    assert "| fast | 0: 0.400, 5: 0.500 | not recovered in 5 steps |" in report.report_markdown(
        config, entries[:3] + entries[4:], ["math"])
    assert "steps to recover" not in report.report_markdown(_cascade(stages, ("sft",)), entries, ["math"])


@pytest.mark.parametrize("branches, match", [
    ("fast=m;fast=b", r"compare.branches='fast=m;fast=b': expected 'name=stage,stage;name=...', each name once"),
    ("fast", r"bad item 'fast'"),
    ("fast=m,zz", r"unknown stages \['zz'\]"),
])
def test_bad_compare_fails_before_any_stage_runs(recorded, tmp_path, branches, match):
    compare = configs.compare_config(domain="math", reference="sft", start="a", branches=branches)
    with pytest.raises(ValueError, match=match):
        pipeline.run_cascade(_cascade(_stages(), ("sft", "a", "m", "b"), compare=compare), str(tmp_path))
    assert recorded == {}


def test_experiment_branches_differ_only_in_kind():
    module = load_experiment("mopd_vs_grpo")
    for preset in ("tiny", "nano30b"):
        config = module.get_config(preset)
        branches = report.parse_branches(config)
        assert list(branches) == ["mopd", "grpo"] and config.compare.start == "regress"
        for k, (m, g) in enumerate(zip(branches["mopd"], branches["grpo"]), start=1):
            mopd, grpo = (pipeline.stage_config(config, n) for n in (m, g))
            assert (mopd.kind, grpo.kind, mopd.seed, grpo.seed) == ("mopd", "grpo", k, k)
            assert (mopd.init_from, grpo.init_from) == (("regress", "regress") if k == 1 else (f"mopd_{k - 1}",
                                                                                              f"grpo_{k - 1}"))
            assert mopd.rl.teacher_stages == "math=sft" and grpo.rl.teacher_stages == ""
            assert mopd.optimizer.to_dict() == grpo.optimizer.to_dict() and mopd.train.steps == grpo.train.steps
            for field in ("domains", "prompts_per_step", "num_samples", "max_new_tokens", "jsonl"):
                assert mopd.rl[field] == grpo.rl[field], field
