"""The RLHF stage: GRPO on rollouts scored by a reward-model checkpoint, and its place in a cascade.

A small reward model (random head) is saved as a ``reward_model`` stage saves it; a 2-step RLHF stage then
scores its rollouts with that checkpoint. The rewards it trains on are checked against an independent
recomputation (params restored from the checkpoint, ``reward_scores`` on the re-encoded prompt + answer),
and its advantages against a float64 numpy group standardisation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from experiment_testing import load_experiment

from nemocascade import configs
from nemocascade import data as data_lib
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.cascade import pipeline
from nemocascade.cascade.ledger import Ledger
from nemocascade.checkpoint import Checkpointer, restore_params
from nemocascade.data.toy import judge as toy_judge
from nemocascade.rewards import pairwise_judge as pj
from nemocascade.rewards import reward_model as rm
from nemocascade.rewards.thinking import split_thinking
from nemocascade.stages import grpo, mopd, rlhf, runtime
from nemocascade.train import train_state_from_params

SMALL_MODEL = dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, expert_hidden_size=32, max_seq_len=128)
STEPS, PROMPTS, SAMPLES = 2, 2, 4


def _cascade(stages, order):
    config = configs.cascade_config(name="t", model="tiny", mesh=configs.mesh_config(), order=order, stages=stages,
                                    eval_cfg=configs.eval_config(domains=("math",), num_examples=8,
                                                                 max_new_tokens=8),
                                    data=configs.shared_data_config())
    config.model.update(SMALL_MODEL)
    return config


def _rlhf_config(reward_model_dir, *, judge_dir=""):
    config = pipeline.stage_config(_cascade({"rlhf": configs.tiny_rlhf_stage()}, ("rlhf",)), "rlhf")
    config.train.update(steps=STEPS, log_every=1, checkpoint_every=STEPS)
    config.rl.update(prompts_per_step=PROMPTS, num_samples=SAMPLES, max_new_tokens=8, max_prompt_tokens=48,
                     prompts_per_domain=16, filter_uniform_groups=False, reward_model=reward_model_dir)
    config.rl.judge.checkpoint = judge_dir
    return config


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    """A reward-model checkpoint as a ``reward_model`` stage saves it (``TrainState`` + config), with a random
    head so that samples get different rewards (training it is covered by tests/rewards/test_reward_model.py)."""
    config = pipeline.stage_config(_cascade({"reward_model": configs.stage(
        "reward_model", **configs.tiny_reward_model_stage())}, ("reward_model",)), "reward_model")
    cfg = runtime.model_config_from(config)
    params = jax.jit(lambda r: rm.init_reward_params(cfg, r))(jax.random.PRNGKey(1))
    params[rm.HEAD] = {"w": jax.random.normal(jax.random.PRNGKey(2), (cfg.d_model,)), "b": jnp.float32(0.5)}
    return _save_params(str(tmp_path_factory.mktemp("rm") / "checkpoints"), params, config)


def _save_params(directory, params, config):
    """``params`` saved in ``directory`` as a stage saves its ``TrainState`` (step 1, with ``config``)."""
    state, _ = train_state_from_params(params, optax.sgd(0.1), jax.random.PRNGKey(0))
    checkpointer = Checkpointer(directory, async_save=False)
    checkpointer.save(1, state, config=config)
    checkpointer.close()
    return directory


def _independent_scores(checkpoint_dir, samples):
    """Rewards recomputed from the checkpoint: params restored on one device, each prompt + final answer
    re-encoded as one non-thinking turn, ``reward_scores`` at the last real token; 0 for an unclosed
    reasoning block (the reward-fn contract)."""
    cfg = model_lib.ModelConfig(**{**configs.model_config("tiny").to_dict(), **SMALL_MODEL})
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shapes = jax.eval_shape(lambda r: rm.init_reward_params(cfg, r), jax.random.PRNGKey(0))
    params = restore_params(checkpoint_dir, jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes))
    tokenizer = data_lib.load_tokenizer("")
    splits = [split_thinking(s["response"]) for s in samples]
    rows = [rm.encode_response(tokenizer, s["messages"], split.answer) for s, split in zip(samples, splits)]
    tokens, segment_ids = rm.pad_rows(rows, 128, tokenizer.pad_id)
    scores = np.asarray(rm.reward_scores(params, cfg, jnp.asarray(tokens), jnp.asarray(segment_ids)))
    return np.where([split.closed for split in splits], scores, 0.0)


def test_rlhf_trains_on_the_reward_models_scores(reward_model_dir, tmp_path):
    stage = rlhf.RLHFStage(_rlhf_config(reward_model_dir), str(tmp_path / "rlhf"))
    seen = []
    grpo_extra_batch = stage.extra_batch

    def recording_extra_batch(batch, samples, rewards):
        extra, metrics = grpo_extra_batch(batch, samples, rewards)
        seen.append((samples, np.array(rewards), extra["advantages"][:, 0]))   # row i's first token: sample i
        return extra, metrics

    stage.extra_batch = recording_extra_batch
    ctx, state = stage.run(initial_params=None)
    assert int(state.step) == STEPS and len(seen) == STEPS
    for samples, rewards, advantages in seen:
        assert len(samples) == PROMPTS * SAMPLES and {s["domain"] for s in samples} == {"chat"}
        expected = _independent_scores(reward_model_dir, samples)
        assert np.std(expected) > 1e-3, expected                        # the comparison can tell samples apart
        np.testing.assert_allclose(rewards, expected, rtol=1e-4, atol=1e-5)
        groups = expected.astype(np.float64).reshape(PROMPTS, SAMPLES)
        reference = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(advantages, reference.reshape(-1), rtol=1e-3, atol=1e-3)
    # The stage's own evaluation: the reward model's mean score of greedy answers to held-out chat prompts.
    assert ctx.evaluation["reward_model_score"]["chat"]["before"] is None      # no starting params were given
    assert ctx.evaluation["reward_model_score"]["chat"]["num_examples"] == 8
    assert np.isfinite(ctx.evaluation["reward_model_score"]["chat"]["after"])


def test_missing_reward_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="rl.reward_model is empty: RLHF needs the checkpoint directory"):
        rlhf.RLHFStage(_rlhf_config(""), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="is not a directory"):
        rlhf.RLHFStage(_rlhf_config(str(tmp_path / "nowhere")), str(tmp_path / "b"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no finished checkpoint"):
        rlhf.RLHFStage(_rlhf_config(str(tmp_path / "empty")), str(tmp_path / "c"))


def test_cascade_fills_the_reward_model_from_the_ledger(tmp_path, stand_in_stages):
    """Stage runners replaced by recorders: the rlhf stage is handed the latest reward_model stage's checkpoint
    dir and starts from the latest policy stage; the ledger keeps which reward model it used."""
    order = ("sft", "rm_old", "rm_new", "rlhf")
    config = _cascade({"sft": configs.stage("sft", **configs.tiny_sft_stage()),
                       "rm_old": configs.stage("reward_model", **configs.tiny_reward_model_stage()),
                       "rm_new": configs.stage("reward_model", **configs.tiny_reward_model_stage()),
                       "rlhf": configs.tiny_rlhf_stage()}, order)
    calls = stand_in_stages(lambda name: {"math": {"pass_at_1": 0.5, "mean_reward": 0.5, "num_examples": 8}})
    ledger = pipeline.run_cascade(config, str(tmp_path))
    rlhf_cfg, initial = calls["rlhf"]
    assert rlhf_cfg.rl.reward_model == f"{tmp_path}/rm_new/checkpoints"
    assert config.stages.rlhf.rl.reward_model == ""          # the caller's config is not filled in
    assert initial == "params of sft"
    assert ledger.entry("rlhf")["reward_model"] == {"stage": "rm_new", "checkpoint_dir": rlhf_cfg.rl.reward_model}
    assert Ledger(str(tmp_path / "ledger.json")).entry("rlhf") == ledger.entry("rlhf")
    assert (tmp_path / "report.md").exists() and (tmp_path / "scores.png").exists()


# ------------------------------------------------------------------------------------------ pairwise judge
@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    """A policy-shaped checkpoint (random params) as the judge; its verdicts are scripted in the tests below."""
    config = _rlhf_config("")
    cfg = runtime.model_config_from(config)
    params = jax.jit(lambda r: model_lib.init_params(cfg, r))(jax.random.PRNGKey(5))
    return _save_params(str(tmp_path_factory.mktemp("judge") / "checkpoints"), params, config)


def _shorter_is_better(self, prompts):
    """Scripted verdicts: the shorter answer (in characters) scores 5, the longer 1; equal lengths tie at 3 with a
    ranking preferring answer 1."""
    texts = []
    for ids in prompts:
        text = self.model.tokenizer.decode(ids)
        one = text.split("<|im_start|>response_1\n")[1].split("<|im_end|>")[0]
        two = text.split("<|im_start|>response_2\n")[1].split("<|im_end|>")[0]
        s1, s2, ranking = (3, 3, 2) if len(one) == len(two) else (5, 1, 1) if len(one) < len(two) else (1, 5, 6)
        texts.append(f'{{"score_1": {s1}, "score_2": {s2}, "ranking": {ranking}}}')
    return texts


def _reference_judge_rewards(samples):
    """float64 per group: each closed answer's mean over the others of 5 (shorter), 1 (longer) or 3 +- 0.5 (equal:
    +0.5 when it came first, i.e. has the lower index); 0 for an unclosed reasoning block."""
    rewards = np.zeros(len(samples))
    answers = [split_thinking(s["response"]) for s in samples]
    for group in range(len(samples) // SAMPLES):
        members = [i for i in range(group * SAMPLES, (group + 1) * SAMPLES) if answers[i].closed]
        for i in members:
            scores = [5.0 if len(answers[i].answer) < len(answers[j].answer) else
                      1.0 if len(answers[i].answer) > len(answers[j].answer) else 3.5 if i < j else 2.5
                      for j in members if j != i]
            rewards[i] = np.mean(scores) if scores else 3.0
    return rewards


def test_rlhf_trains_on_the_judges_verdicts(judge_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(pj.PairwiseJudgeFn, "judge_texts", _shorter_is_better)
    config = _rlhf_config("", judge_dir=judge_dir)
    stage = rlhf.RLHFStage(config, str(tmp_path / "rlhf"))
    assert isinstance(stage.reward_fns["chat"], pj.PairwiseJudgeFn)
    seen = []
    grpo_extra_batch = stage.extra_batch

    def recording_extra_batch(batch, samples, rewards):
        extra, metrics = grpo_extra_batch(batch, samples, rewards)
        seen.append((samples, np.array(rewards)))
        return extra, metrics

    stage.extra_batch = recording_extra_batch
    unparsed = []
    make_batch = stage.make_batch
    stage.make_batch = lambda state, examples: unparsed.append(make_batch(state, examples)) or unparsed[-1]
    greedy = []
    greedy_samples = stage.greedy_samples
    stage.greedy_samples = lambda params, examples: greedy.append(greedy_samples(params, examples)) or greedy[-1]
    initial = sharding_lib.init_params_sharded(stage.ctx.model_cfg, jax.random.PRNGKey(0), stage.ctx.mesh)
    ctx, state = stage.run(initial_params=initial)
    assert int(state.step) == STEPS and len(seen) == STEPS
    assert [metrics["judge_unparsed"] for _, metrics in unparsed] == [0.0] * STEPS
    for samples, rewards in seen:
        expected = _reference_judge_rewards(samples)
        assert np.std(expected) > 0.1, expected                         # the verdicts tell samples apart
        np.testing.assert_allclose(rewards, expected, rtol=1e-6)
    # The held-out evaluation: the final policy's greedy answer wins when it is the shorter one (both orders)
    assert len(greedy) == 2
    start, final = ([split_thinking(s["response"]) for s in answers] for answers in greedy)
    lengths = np.array([[len(a.answer) if a.closed else np.inf for a in answers] for answers in (start, final)])
    expected = np.mean((lengths[1] < lengths[0]) + 0.5 * (lengths[1] == lengths[0]))
    result = ctx.evaluation["judge_win_rate"]["chat"]
    assert result == {"win_rate": expected, "num_examples": 8, "parse_failure_fraction": 0.0}


def test_rlhf_scores_with_a_reward_model_or_a_judge_not_both(judge_dir, reward_model_dir, tmp_path):
    with pytest.raises(ValueError, match="are both set: RLHF scores with one of them"):
        rlhf.RLHFStage(_rlhf_config(reward_model_dir, judge_dir=judge_dir), str(tmp_path / "a"))


@pytest.mark.parametrize("field,value", [("reward_model", "/rm"), ("judge.checkpoint", "/j"), ("judge.stage", "sft")])
def test_only_an_rlhf_stage_takes_a_reward_model_or_a_judge(tmp_path, field, value):
    config = _rlhf_config("")
    section = config.rl.judge if field.startswith("judge.") else config.rl
    section[field.split(".")[-1]] = value
    for stage_class in (grpo.GRPOStage, mopd.MOPDStage):
        with pytest.raises(ValueError, match=rf"rl.{field}='{value}': only an rlhf stage scores with a reward model"
                                             rf".* with a judge \({stage_class.__name__} uses"):
            stage_class(config, str(tmp_path))


def test_a_cascade_keeps_the_judge_of_its_rlhf_stage(tmp_path, stand_in_stages):
    order = ("sft", "reward_model", "rlhf")
    stages = {"sft": configs.stage("sft", **configs.tiny_sft_stage()),
              "reward_model": configs.stage("reward_model", **configs.tiny_reward_model_stage()),
              "rlhf": configs.tiny_rlhf_stage()}
    stages["rlhf"].rl.judge.checkpoint = "/judges/genrm"
    calls = stand_in_stages(lambda name: {"math": {"pass_at_1": 0.5, "mean_reward": 0.5, "num_examples": 8}})
    ledger = pipeline.run_cascade(_cascade(stages, order), str(tmp_path))
    rlhf_cfg, _ = calls["rlhf"]
    assert rlhf_cfg.rl.reward_model == ""                     # not filled from the ledger: the judge scores
    assert ledger.entry("rlhf")["judge"] == {"stage": None, "checkpoint_dir": "/judges/genrm"}
    assert "reward_model" not in ledger.entry("rlhf")


def test_a_cascade_fills_the_judge_from_an_earlier_stage(tmp_path, stand_in_stages):
    """``rl.judge.stage`` names an earlier (SFT) stage: its final checkpoint becomes the judge. Like a reward model
    the judge stage is not a policy stage: it is not evaluated, and the RLHF stage (no ``init_from``) starts from
    the SFT policy, not from the judge."""
    config = load_experiment("rlhf").get_config("tiny_judge")
    config.model.update(SMALL_MODEL)
    assert config.stages.rlhf.init_from == "" and pipeline.judge_stages(config) == {"judge"}
    calls = stand_in_stages(lambda name: {"math": {"pass_at_1": 0.5, "mean_reward": 0.5, "num_examples": 8}})
    ledger = pipeline.run_cascade(config, str(tmp_path))
    rlhf_cfg, initial = calls["rlhf"]
    assert rlhf_cfg.rl.judge.checkpoint == f"{tmp_path}/judge/checkpoints" and initial == "params of sft"
    assert calls["judge"][1] == "params of sft"
    assert ledger.entry("rlhf")["judge"] == {"stage": "judge", "checkpoint_dir": f"{tmp_path}/judge/checkpoints"}
    assert ledger.entry("judge")["scores"] == {} and ledger.entry("rlhf")["scores"]["math"]["pass_at_1"] == 0.5
    # nothing can start from the judge
    config.stages.rlhf.init_from = "judge"
    assert config.stages.rlhf.rl.judge.checkpoint == ""      # the caller's config is not filled in
    (tmp_path / "again").mkdir()
    with pytest.raises(ValueError, match=r"init_from='judge' is not a policy stage finished earlier in order; "
                                         r"expected one of \['sft'\]"):
        pipeline.run_cascade(config, str(tmp_path / "again"))


@pytest.mark.parametrize("change,message", [
    (lambda c: c.stages.rlhf.rl.judge.update(stage="rlhf_later"), r"rl.judge.stage='rlhf_later' is not a stage "
                                                                   r"finished earlier in order; expected one of"),
    (lambda c: c.stages.rlhf.rl.judge.update(checkpoint="/j"), r"sets both rl.judge.stage='judge' and "
                                                                r"rl.judge.checkpoint='/j'; give one"),
    (lambda c: c.stages.judge.update(kind="grpo", rl=configs.rl_config(domains=("math",),
                                                                       judge=configs.judge_config(stage="sft"))),
     r"stage 'judge' of kind 'grpo' sets rl.judge.stage, which only an rlhf stage or one with a judged domain "
     r"\('long_context',\) in rl.domains uses"),
])
def test_bad_judge_stages_are_refused(tmp_path, stand_in_stages, change, message):
    config = load_experiment("rlhf").get_config("tiny_judge")
    change(config)
    stand_in_stages(lambda name: {})
    with pytest.raises(ValueError, match=message):
        pipeline.run_cascade(config, str(tmp_path))


def test_the_tiny_judge_has_room_for_its_verdicts():
    """The tiny_judge preset: the longest judge prompt (the RLHF prompt budget, two whole responses, the template)
    plus the judge's budget fit the model, and that budget holds a whole toy verdict and its stop token."""
    config = load_experiment("rlhf").get_config("tiny_judge")
    rlhf_cfg = pipeline.stage_config(config, "rlhf")
    tokenizer = data_lib.load_tokenizer("")
    template = len(tokenizer.encode(pj.judge_prompt([{"role": "user", "content": ""}], "", "")))
    judge_rows = rlhf_cfg.rl.max_prompt_tokens + 2 * rlhf_cfg.rl.max_new_tokens + template
    assert judge_rows + rlhf_cfg.rl.judge.max_new_tokens <= config.model.max_seq_len
    verdicts = {toy_judge.verdict(position) for position in (1, 2)}
    assert max(len(tokenizer.encode(v)) + 1 for v in verdicts) <= rlhf_cfg.rl.judge.max_new_tokens
    judge_cfg = pipeline.stage_config(config, "judge")
    assert judge_cfg.kind == "sft" and judge_cfg.data.toy_mix.startswith("judge=")
