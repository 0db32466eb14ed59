"""Long-context RL: a GRPO stage whose judged domain (``long_context``) is rewarded by an answer judge, and its
place in a cascade.

The judge is a checkpoint (random params) whose verdicts are scripted: answers whose shown part (the last number,
the tiny preset's ``answer_regex``) has an even number of characters agree with the reference. The rewards the
stage trains on are checked against that rule recomputed from the samples; what the judge is shown (the question
without the document) and its held-out evaluation are checked too.
"""
import re

import jax
import numpy as np
import pytest
from experiment_testing import load_experiment

from nemocascade import data as data_lib
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.cascade import pipeline
from nemocascade.data.judge_prompts import EQUAL_LABEL
from nemocascade.rewards import answer_judge as aj
from nemocascade.rewards.thinking import split_thinking
from nemocascade.stages import grpo, runtime
from test_rlhf import _save_params

SMALL_MODEL = dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, expert_hidden_size=32, max_seq_len=256)
STEPS, PROMPTS, SAMPLES = 2, 2, 4


def _config(**stage_changes):
    config = load_experiment("long_context_rl").get_config("tiny")
    config.model.update(SMALL_MODEL)
    config.eval.update(num_examples=4, max_new_tokens=8)
    config.stages.long_context_rl.update(stage_changes)
    return config


def _stage_config(judge_dir):
    config = pipeline.stage_config(_config(), "long_context_rl")
    config.train.update(steps=STEPS, log_every=1, checkpoint_every=STEPS)
    config.rl.update(prompts_per_step=PROMPTS, num_samples=SAMPLES, max_new_tokens=8, prompts_per_domain=16,
                     filter_uniform_groups=False, unfinished_reward_zero=False)
    config.rl.judge.update(stage="", checkpoint=judge_dir)
    return config


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    config = pipeline.stage_config(_config(), "long_context_rl")
    cfg = runtime.model_config_from(config)
    params = jax.jit(lambda r: model_lib.init_params(cfg, r))(jax.random.PRNGKey(5))
    return _save_params(str(tmp_path_factory.mktemp("judge") / "checkpoints"), params, config)


SHOWN = re.compile(r"QUESTION: (.*)\nANSWER A: (.*)\nANSWER B: (.*?)<\|im_end\|>", re.DOTALL)


def _even_answers_agree(self, prompts):
    """Scripted verdicts: answer B agrees with answer A when it has an even number of characters."""
    texts = []
    for ids in prompts:
        question, _, answer = SHOWN.search(self.model.tokenizer.decode(ids)).groups()
        self.shown = getattr(self, "shown", []) + [question]
        texts.append(EQUAL_LABEL if len(answer) % 2 == 0 else "[[A!=B]]")
    return texts


def _shown_answer(answer: str) -> str:
    """What the toy judge sees of a final answer (``answer_regex``): its last number, else the whole (stripped)."""
    numbers = re.findall(r"[0-9]+", answer)
    return numbers[-1] if numbers else answer.strip()


def _reference_rewards(samples):
    """1 for a closed, non-empty final answer whose shown part has an even length, else 0."""
    answers = [split_thinking(s["response"]) for s in samples]
    return np.array([float(a.closed and bool(a.answer.strip()) and len(_shown_answer(a.answer)) % 2 == 0)
                     for a in answers])


def test_grpo_trains_on_the_answer_judges_verdicts(judge_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(aj.AnswerJudgeFn, "judge_texts", _even_answers_agree)
    stage = grpo.GRPOStage(_stage_config(judge_dir), str(tmp_path / "lc"))
    judge = stage.reward_fns["long_context"]
    assert isinstance(judge, aj.AnswerJudgeFn) and judge.question_regex is not None
    seen = []
    grpo_extra_batch = stage.extra_batch
    stage.extra_batch = lambda batch, samples, rewards: (seen.append((samples, np.array(rewards)))
                                                         or grpo_extra_batch(batch, samples, rewards))
    metrics = []
    make_batch = stage.make_batch

    def recording_make_batch(state, examples):
        batch, host_metrics = make_batch(state, examples)
        metrics.append(host_metrics)
        return batch, host_metrics

    stage.make_batch = recording_make_batch
    initial = sharding_lib.init_params_sharded(stage.ctx.model_cfg, jax.random.PRNGKey(0), stage.ctx.mesh)
    ctx, state = stage.run(initial_params=initial)
    assert int(state.step) == STEPS and len(seen) == STEPS
    for samples, rewards in seen:
        expected = _reference_rewards(samples)
        assert 0 < expected.mean() < 1, expected                          # the verdicts tell samples apart
        np.testing.assert_array_equal(rewards, expected)
    assert all(m["judge_unparsed"] == 0.0 for m in metrics)
    # the judge saw each question without its document
    assert judge.shown and all(q.startswith("How many ") and q.endswith(" have?") for q in judge.shown)
    # the stage's own evaluation: the judge's mean reward of greedy held-out answers, before and after
    result = ctx.evaluation["judge_score"]["long_context"]
    assert result["num_examples"] == 4 and 0 <= result["before"] <= 1 and 0 <= result["after"] <= 1


def test_a_judged_domain_needs_a_judge(tmp_path):
    config = _stage_config("")
    with pytest.raises(ValueError, match=r"rl.domains \['long_context'\] are scored by an LLM judge against the "
                                         r"reference answer .*: set rl.judge.checkpoint"):
        grpo.GRPOStage(config, str(tmp_path))


def test_a_cascade_fills_the_answer_judge_from_its_judge_stage(tmp_path, stand_in_stages):
    """``rl.judge.stage`` of the GRPO stage names the ``judge`` SFT stage: its checkpoint is the judge, it is not
    evaluated, and the RL stage starts from the SFT policy."""
    config = _config()
    assert pipeline.judge_stages(config) == {"judge"}
    calls = stand_in_stages(lambda name: {})
    ledger = pipeline.run_cascade(config, str(tmp_path))
    stage_cfg, initial = calls["long_context_rl"]
    assert stage_cfg.rl.judge.checkpoint == f"{tmp_path}/judge/checkpoints" and initial == "params of sft"
    assert calls["judge"][1] == "params of sft"
    assert ledger.entry("long_context_rl")["judge"] == {"stage": "judge",
                                                       "checkpoint_dir": f"{tmp_path}/judge/checkpoints"}


def test_a_cascade_without_the_judge_of_a_judged_domain_stops_before_its_first_stage(tmp_path, stand_in_stages):
    config = load_experiment("cascade").get_config("tiny_long_context")
    config.stages.long_context_rl.rl.judge.stage = ""
    calls = stand_in_stages(lambda name: {})
    with pytest.raises(ValueError, match=r"stage 'long_context_rl': rl.domains \['long_context'\] are scored by an "
                                         r"LLM judge .*; set stages.long_context_rl.rl.judge.checkpoint or .stage"):
        pipeline.run_cascade(config, str(tmp_path))
    assert calls == {}


@pytest.mark.parametrize("experiment,preset,judge", [("long_context_rl", "tiny", "judge"),
                                                      ("cascade", "tiny_long_context", "lc_judge")])
def test_the_tiny_presets_have_room_for_the_documents_answers_and_verdicts(experiment, preset, judge):
    """Every toy long_context prompt fits the prompt budget; the longest judge prompt (the template, the longest
    question, reference and answer budget) plus the judge's budget fit the model; a toy verdict and its stop token
    fit the judge's budget; the SFT stage learns the lookups and the judge stage the verdicts."""
    config = load_experiment(experiment).get_config(preset)
    stage = pipeline.stage_config(config, "long_context_rl")
    assert stage.rl.judge.stage == judge and judge in config.order
    assert "long_context=" in config.stages.sft.data.toy_mix
    assert config.stages[judge].data.toy_mix == "answer_judge=20000"
    tokenizer = data_lib.load_tokenizer("")
    examples = data_lib.toy_examples("long_context", "train", 500) + data_lib.toy_examples("long_context",
                                                                                         "heldout", 100)
    prompts = [tokenizer.encode(data_lib.render_prompt(e["messages"])) for e in examples]
    assert max(len(p) for p in prompts) <= stage.rl.max_prompt_tokens
    judge_fn = aj.AnswerJudgeFn(aj.JudgeModel(None, None, tokenizer), question_regex=stage.rl.judge.question_regex)
    longest_question = max((aj.last_match(e["messages"][-1]["content"], judge_fn.question_regex) for e in examples),
                           key=len)
    judge_prompt = tokenizer.encode(judge_fn.judge_prompt(longest_question, "99", ""))
    assert len(judge_prompt) + stage.rl.max_new_tokens + stage.rl.judge.max_new_tokens <= config.model.max_seq_len
    for verdict in ("[[A=B]]", "[[A!=B]]"):
        assert len(tokenizer.encode(verdict)) + 1 <= stage.rl.judge.max_new_tokens
