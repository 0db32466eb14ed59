"""SWE RL's glue: episodes against the repository environment decode into samples whose turns the ``swe`` reward
replays; the experiment's presets fit their prompts and episodes and take RECIPE.md's settings."""
import types

import numpy as np

from nemocascade import data as data_lib
from nemocascade import rewards
from nemocascade.cascade import pipeline
from nemocascade.data import chat_template
from nemocascade.rollout import Rollouts
from nemocascade.stages import episodes, grpo, rl_common
from nemocascade.stages.prompts import decode_samples, encode_prompts
from nemocascade.stages.sft import parse_toy_mix

from experiment_testing import load_experiment


def _play(examples, tokenizer, turns, num_samples=1):
    """Rows laid out as ``generate_episodes`` writes them (row ``r`` plays ``examples[r // num_samples]``), playing
    ``turns[r]`` (assistant messages) against the registered environment through the stage's
    ``environment_respond``; returns the rollouts and every observation's ids."""
    respond = episodes.environment_respond(examples, tokenizer, num_samples=num_samples, thinking=False)
    prompts = encode_prompts(examples, tokenizer, thinking=False)
    rows, observations = [], []
    for row, messages in enumerate(turns):
        ids, observed = [], []
        for message in messages:
            turn = tokenizer.encode(chat_template.assistant_completion(message, thinking=False)) + [tokenizer.eos_id]
            ids, observed = ids + turn, observed + [False] * len(turn)
            observation = respond(row, turn)
            if observation is None:
                break
            observations.append(list(observation))
            ids, observed = ids + list(observation), observed + [True] * len(observation)
        rows.append((prompts[row // num_samples], ids, observed))
    width = max(len(p) + len(i) for p, i, _ in rows)
    tokens, flags = np.zeros((len(rows), width), np.int32), np.zeros((len(rows), width), bool)
    for r, (prompt, ids, observed) in enumerate(rows):
        tokens[r, :len(prompt) + len(ids)] = prompt + ids
        flags[r, len(prompt):len(prompt) + len(ids)] = observed
    rollouts = Rollouts(tokens=tokens, logprobs=np.zeros(tokens.shape, np.float32),
                        prompt_lengths=np.asarray([len(p) for p, _, _ in rows], np.int32),
                        response_lengths=np.asarray([len(i) for _, i, _ in rows], np.int32),
                        finished=np.ones(len(rows), bool), forced=np.zeros_like(flags), observed=flags)
    return rollouts, observations


def _without_edits(messages):
    return [m for m in messages if "replace_in_file" not in str(m.get("tool_calls"))]


def test_episodes_through_the_stage_glue_are_scored_on_their_replayed_edits():
    tokenizer = data_lib.load_tokenizer("")
    examples = data_lib.toy_sft_examples("swe", "heldout", 3, seed=2)
    prompt_examples = [{**e, "messages": e["messages"][:1]} for e in examples]
    reference_turns = [e["messages"][1::2] for e in examples]
    rollouts, observations = _play(prompt_examples, tokenizer, reference_turns)
    expected = [tokenizer.encode(data_lib.render_observation([m], thinking=False))
                for e in examples for m in e["messages"][2::2]]
    assert observations == expected                       # each tool result as the SFT conversation has it
    samples = decode_samples(rollouts, prompt_examples, tokenizer, num_samples=1)
    assert [s["turns"] for s in samples] == [4, 4, 4]
    assert samples[0]["response"] == examples[0]["messages"][-1]["content"]
    scores, infos = rewards.get_reward_fn("swe").score(samples)
    assert scores.tolist() == [1.0, 1.0, 1.0], [i["reason"] for i in infos]
    # The same episodes without the edit turn: the tests still fail.
    rollouts, _ = _play(prompt_examples, tokenizer, [_without_edits(turns) for turns in reference_turns])
    scores, _ = rewards.get_reward_fn("swe").score(decode_samples(rollouts, prompt_examples, tokenizer, num_samples=1))
    assert scores.tolist() == [0.0, 0.0, 0.0]


def test_the_grpo_stage_rewards_the_episodes_that_repair(tmp_path, monkeypatch):
    """The stage's batch from episodes (one repairing, one not, per prompt): the swe reward, group advantages, and
    no loss on the environment's tokens."""
    config = load_experiment("swe_rl").get_config("tiny")
    config.stages.swe_rl.rl.update(prompts_per_step=4, num_samples=2)
    config.stages.swe_rl.train.grad_accum_steps = 1
    stage = grpo.GRPOStage(pipeline.stage_config(config, "swe_rl"), str(tmp_path / "run"))
    examples = data_lib.toy_examples("swe", "train", 4)
    turns = [t for e in data_lib.toy_sft_examples("swe", "train", 4) for t in (
        e["messages"][1::2], _without_edits(e["messages"][1::2]))]
    played = {}

    def sample_rollouts(params, model_cfg, tokenizer, rows, *, num_samples, **settings):
        assert params == "policy" and rows == examples and num_samples == 2 and settings["turns"].max_turns == 5
        played["rollouts"], _ = _play(rows, tokenizer, turns, num_samples=num_samples)
        return played["rollouts"]

    monkeypatch.setattr(rl_common, "sample_rollouts", sample_rollouts)
    batch, metrics = stage.make_batch(types.SimpleNamespace(step=0, params="policy"), examples)
    assert (metrics["reward"], metrics["turns"], metrics["kept_group_fraction"]) == (0.5, 3.5, 1.0)
    in_row = batch["segment_ids"] > 0                                 # each row holds its own sample
    np.testing.assert_allclose(batch["advantages"], np.where(in_row, np.array([1.0, -1.0] * 4)[:, None], 0.0),
                               atol=1e-5)
    rollouts = played["rollouts"]
    trained = batch["mask"] > 0
    for row in range(8):
        start, length = int(rollouts.prompt_lengths[row]), int(rollouts.response_lengths[row])
        observed = rollouts.observed[row, start:start + length]
        # targets are the next tokens: the response token at position p is predicted at p - 1
        assert trained[row, start - 1:start - 1 + length].tolist() == (~observed).tolist()
        assert trained[row].sum() == (~observed).sum()


def test_the_tiny_preset_fits_its_prompts_and_episodes():
    config = load_experiment("swe_rl").get_config("tiny")
    sft, rl = (pipeline.stage_config(config, name) for name in ("sft", "swe_rl"))
    assert config.model.max_seq_len >= rl.rl.max_prompt_tokens + rl.rl.max_new_tokens
    tokenizer = data_lib.load_tokenizer(config.data.tokenizer)
    for split in ("train", "heldout"):
        for example in data_lib.toy_sft_examples("swe", split, 64):
            prompt, *conversation = example["messages"]
            kwargs = dict(tools=example["tools"], thinking=False)
            assert len(tokenizer.encode(data_lib.render_prompt([prompt], **kwargs))) <= rl.rl.max_prompt_tokens
            turns = [len(tokenizer.encode(chat_template.assistant_completion(m, thinking=False))) + 1
                     for m in conversation[::2]]
            results = [len(tokenizer.encode(data_lib.render_observation([m], thinking=False)))
                       for m in conversation[1::2]]
            assert max(turns) <= rl.rl.max_turn_tokens and len(turns) <= rl.rl.max_turns
            # before the last turn the episode still has room for a whole turn (else it would end unfinished)
            assert sum(turns[:-1]) + sum(results) + rl.rl.max_turn_tokens <= rl.rl.max_new_tokens
            assert len(tokenizer.encode(data_lib.render(example["messages"], **kwargs))) <= sft.data.seq_len
    for domain, count in parse_toy_mix(sft.data.toy_mix).items():
        data_lib.toy_examples(domain, "train", max(count, rl.rl.prompts_per_domain))


def test_the_nano30b_preset_takes_the_recipes_swe_settings():
    stage = load_experiment("swe_rl").get_config("nano30b").stages.swe_rl
    assert stage.kind == "grpo" and stage.rl.domains == ("swe",)
    assert (stage.rl.prompts_per_step, stage.rl.num_samples, stage.rl.temperature) == (16, 64, 0.8)   # RECIPE.md
    assert 40 <= stage.train.steps <= 50 and stage.rl.max_new_tokens == 98304 and stage.rl.max_turns == 64
    assert stage.rl.jsonl.startswith("REQUIRED")
