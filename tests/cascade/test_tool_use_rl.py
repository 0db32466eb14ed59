"""An RL stage on a multi-turn domain: episodes against the environment, observations masked out of the loss, the
final turn scored; the turn settings are checked against the domains before anything runs."""
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemocascade import configs, environments
from nemocascade import data as data_lib
from nemocascade.cascade import pipeline
from nemocascade.rollout import EpisodeLimits, Rollouts
from nemocascade.stages import episodes, grpo
from nemocascade.stages.prompts import decode_samples
from nemocascade.stages.sft import parse_toy_mix

SMALL_MODEL = dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, expert_hidden_size=32, max_seq_len=512)
TURN_TOKENS = 4


def _stage_config(**rl):
    settings = dict(steps=1, prompts_per_step=4, num_samples=2, max_new_tokens=96, max_prompt_tokens=352,
                    max_turns=3, max_turn_tokens=TURN_TOKENS, filter_uniform_groups=False)
    settings.update(rl)
    stage = configs.tiny_rl_stage("grpo", domains=("tool_use",), **settings)
    config = configs.cascade_config(name="tool_use", model="tiny", mesh=configs.mesh_config(), order=("grpo",),
                                    stages={"grpo": stage}, data=configs.shared_data_config(),
                                    eval_cfg=configs.eval_config(domains=("tool_use",), num_examples=4,
                                                                 max_new_tokens=96, max_turns=3,
                                                                 max_turn_tokens=TURN_TOKENS))
    config.model.update(SMALL_MODEL)
    return config


def _always_end_of_turn(params, eos_id):
    """Params whose every next token is ``eos_id`` (probability ~1): equal embeddings, a silent layer, and an LM
    head that reads only the eos direction. Each turn is then the end-of-turn token alone."""
    params = jax.tree.map(jnp.zeros_like, params)
    params["embed"] = jnp.ones_like(params["embed"])
    params["final_norm"]["scale"] = jnp.ones_like(params["final_norm"]["scale"])
    params["lm_head"] = params["lm_head"].at[:, eos_id].set(1.0)
    return params


class AnswersTwice:
    """Answers the first two turns of every episode with a tool result; the third turn ends it. Turns come in row
    order, turn by turn, and the 2 rows of a prompt share its id: calls 1-4 of an id are its first two turns."""

    def __init__(self):
        self.calls = {}

    def respond(self, example, turns):
        assert turns[-1] == "" and len(turns) == self.calls.get(example["id"], 0) // 2 + 1   # eos alone, dropped
        self.calls[example["id"]] = self.calls.get(example["id"], 0) + 1
        return None if self.calls[example["id"]] > 4 else [{"role": "tool", "content": json.dumps({"ok": True})}]

    def check_examples(self, examples):
        del examples


def test_episodes_train_on_the_sampled_turns_only(tmp_path, monkeypatch):
    monkeypatch.setitem(environments._ENVIRONMENTS, "tool_use", AnswersTwice())
    config = pipeline.stage_config(_stage_config(), "grpo")
    stage = grpo.GRPOStage(config, str(tmp_path / "run"))
    eos = stage.tokenizer.eos_id
    params = _always_end_of_turn(stage.ctx.init_params_fn(jax.random.PRNGKey(0)), eos)
    examples = data_lib.toy_examples("tool_use", "train", 4)
    batch, metrics = stage.make_batch(types.SimpleNamespace(step=0, params=params), examples)
    assert metrics["turns"] == 3.0 and metrics["finished_fraction"] == 1.0
    # Per row: 3 sampled turns of one token (eos) each, around two rendered tool results that are not trained on.
    observation = stage.tokenizer.encode(data_lib.render_observation(
        [{"role": "tool", "content": json.dumps({"ok": True})}], thinking=False))
    np.testing.assert_array_equal(batch["mask"].sum(axis=1), 3.0)
    for row in range(8):
        trained = batch["targets"][row][batch["mask"][row] > 0]
        assert trained.tolist() == [eos] * 3
        start = int(np.flatnonzero(batch["segment_ids"][row]).max()) + 1 - (3 + 2 * len(observation))
        response = batch["tokens"][row, start:start + 3 + 2 * len(observation)].tolist()
        assert response[0] == eos and response[1:1 + len(observation)] == observation
    np.testing.assert_allclose(batch["rollout_logprobs"][batch["mask"] > 0], 0.0, atol=1e-5)   # p(eos) ~ 1


def test_decoded_samples_hold_the_final_turn():
    tokens = np.array([[7, 8, 1, 2, 9, 9, 3, 4, 0], [7, 8, 5, 6, 0, 0, 0, 0, 0]], np.int32)
    observed = np.zeros_like(tokens, bool)
    observed[0, 4:6] = True
    rollouts = Rollouts(tokens=tokens, logprobs=np.zeros(tokens.shape, np.float32),
                        prompt_lengths=np.array([2, 2], np.int32), response_lengths=np.array([6, 2], np.int32),
                        finished=np.array([True, False]), forced=np.zeros_like(observed), observed=observed)
    tokenizer = types.SimpleNamespace(eos_id=4, decode=lambda ids: " ".join(map(str, ids)))
    examples = [{"id": "a", "domain": "tool_use"}]
    first, second = decode_samples(rollouts, examples, tokenizer, num_samples=2)
    assert (first["response"], first["turns"], first["finished"]) == ("3", 2, True)     # eos dropped
    assert first["assistant_turns"] == ["1 2", "3"]
    assert (second["response"], second["turns"], second["finished"]) == ("5 6", 1, False)
    assert second["assistant_turns"] == ["5 6"]


@pytest.mark.parametrize("rl,message", [
    (dict(max_turns=1), r"rl.max_turns=1: domains \['tool_use'\] are multi-turn"),
    (dict(max_turn_tokens=200), r"rl.max_turn_tokens=200: expected 0 \(= rl.max_new_tokens\) up to "
                                r"rl.max_new_tokens=96"),
])
def test_turn_settings_that_do_not_fit_are_refused(tmp_path, rl, message):
    config = pipeline.stage_config(_stage_config(**rl), "grpo")
    with pytest.raises(ValueError, match=message):
        grpo.GRPOStage(config, str(tmp_path / "run"))


def test_a_cascade_evaluating_a_multi_turn_domain_in_one_turn_is_refused(tmp_path):
    config = _stage_config()
    config.eval.max_turns = 1
    with pytest.raises(ValueError, match=r"eval.max_turns=1: domains \['tool_use'\] are multi-turn"):
        pipeline.run_cascade(config, str(tmp_path / "run"))


def test_the_tiny_preset_fits_its_prompts_and_episodes():
    from experiment_testing import load_experiment

    config = load_experiment("tool_use_rl").get_config("tiny")
    sft, rl = (pipeline.stage_config(config, name) for name in ("sft", "tool_use_rl"))
    tokenizer = data_lib.load_tokenizer(config.data.tokenizer)
    for split in ("train", "heldout"):
        for example in data_lib.toy_sft_examples("tool_use", split, 64):
            prompt, call, result, answer = example["messages"]
            lengths = [len(tokenizer.encode(text)) for text in (
                data_lib.render_prompt([prompt], tools=example["tools"], thinking=False),
                data_lib.render([prompt, call], tools=example["tools"], thinking=False)[len(
                    data_lib.render_prompt([prompt], tools=example["tools"], thinking=False)):],
                data_lib.render_observation([result], thinking=False))]
            assert lengths[0] <= rl.rl.max_prompt_tokens and lengths[1] <= rl.rl.max_turn_tokens
            assert lengths[1] + lengths[2] + rl.rl.max_turn_tokens <= rl.rl.max_new_tokens   # room for the answer
            assert len(tokenizer.encode(data_lib.render(example["messages"], tools=example["tools"],
                                                        thinking=False))) <= sft.data.seq_len
    # The toy domain holds as many distinct train prompts as the preset draws (else a ValueError says so).
    for domain, count in parse_toy_mix(sft.data.toy_mix).items():
        data_lib.toy_examples(domain, "train", max(count, rl.rl.prompts_per_domain))


def test_single_turn_batches_keep_the_whole_budget_in_one_generate_call(monkeypatch):
    """Episodes are played only when a row's domain has an environment; a batch of other domains is one
    ``generate`` call of max_new_tokens (not of the turn budget)."""
    calls = []
    monkeypatch.setattr(episodes, "generate", lambda *a, **kw: calls.append(("generate", kw["max_new_tokens"])))
    monkeypatch.setattr(episodes, "generate_episodes", lambda *a, **kw: calls.append(("episodes", kw["limits"])))
    tokenizer = data_lib.load_tokenizer("")
    turns = episodes.Turns(max_new_tokens=64, max_turns=3, turn_tokens=16)
    common = dict(turns=turns, num_samples=1, temperature=1.0, rng=jax.random.PRNGKey(0), thinking=False)
    episodes.sample_rollouts(None, None, tokenizer, data_lib.toy_examples("math", "train", 2), **common)
    episodes.sample_rollouts(None, None, tokenizer, data_lib.toy_examples("math", "train", 1)
                             + data_lib.toy_examples("tool_use", "train", 1), **common)
    episodes.sample_rollouts(None, None, tokenizer, data_lib.toy_examples("tool_use", "train", 1),
                             **{**common, "turns": episodes.Turns(max_new_tokens=64)})
    assert calls == [("generate", 64), ("episodes", EpisodeLimits(max_turns=3, turn_tokens=16, total_tokens=64)),
                     ("generate", 64)]
