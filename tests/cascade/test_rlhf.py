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

from nemocascade import configs
from nemocascade import data as data_lib
from nemocascade import model as model_lib
from nemocascade.cascade import pipeline
from nemocascade.cascade.ledger import Ledger
from nemocascade.checkpoint import Checkpointer, restore_params
from nemocascade.rewards import reward_model as rm
from nemocascade.rewards.thinking import split_thinking
from nemocascade.stages import rlhf, runtime
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


def _rlhf_config(reward_model_dir):
    config = pipeline.stage_config(_cascade({"rlhf": configs.tiny_rlhf_stage()}, ("rlhf",)), "rlhf")
    config.train.update(steps=STEPS, log_every=1, checkpoint_every=STEPS)
    config.rl.update(prompts_per_step=PROMPTS, num_samples=SAMPLES, max_new_tokens=8, max_prompt_tokens=48,
                     prompts_per_domain=16, filter_uniform_groups=False, reward_model=reward_model_dir)
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
    state, _ = train_state_from_params(params, optax.sgd(0.1), jax.random.PRNGKey(0))
    directory = str(tmp_path_factory.mktemp("rm") / "checkpoints")
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
        extra, weights, metrics = grpo_extra_batch(batch, samples, rewards)
        seen.append((samples, np.array(rewards), extra["advantages"]))
        return extra, weights, metrics

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
    assert initial == "params of sft"
    assert ledger.entry("rlhf")["reward_model"] == {"stage": "rm_new", "checkpoint_dir": rlhf_cfg.rl.reward_model}
    assert Ledger(str(tmp_path / "ledger.json")).entry("rlhf") == ledger.entry("rlhf")
    assert (tmp_path / "report.md").exists() and (tmp_path / "scores.png").exists()
