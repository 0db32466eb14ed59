"""The reward model: scores at the last real token, Bradley-Terry training, batched scoring, the stage end to end."""
import functools
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemocascade import data as data_lib
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.rewards import reward_model as rm
from nemocascade.stages import reward_model as rm_stage
from nemocascade.train import create_train_state, make_optimizer, make_train_step
from cpu_env import cpu_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = model_lib.ModelConfig(vocab_size=1024, d_model=32, num_layers=2, num_heads=2, num_kv_heads=1, num_experts=4,
                            num_experts_per_tok=2, expert_hidden_size=32, mlp_hidden_size=64, max_seq_len=128)
TOKENIZER = data_lib.load_tokenizer("")
SCORE = jax.jit(lambda params, tokens, segment_ids: rm.reward_scores(params, CFG, tokens, segment_ids))


@functools.lru_cache(maxsize=None)
def _params(seed=0):
    """Reward-model params with a random (non-zero) head, so that scores depend on every hidden unit."""
    params = jax.jit(lambda r: rm.init_reward_params(CFG, r))(jax.random.PRNGKey(seed))
    kw, kb = jax.random.split(jax.random.PRNGKey(seed + 100))
    return {**params, rm.HEAD: {"w": jax.random.normal(kw, (CFG.d_model,)), "b": jax.random.normal(kb, ())}}


def _sequences(n, seed=0, lengths=(5, 12)):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(1, CFG.vocab_size, size=int(rng.choice(lengths)))) for _ in range(n)]


def _reference_scores(params, sequences):
    """Without padding (sequences of one length at a time): last token's hidden state . w + b, in numpy."""
    w, b = np.asarray(params[rm.HEAD]["w"], np.float64), float(params[rm.HEAD]["b"])
    hidden_fn = jax.jit(lambda p, t: model_lib.hidden_states(rm.backbone_params(p), CFG, t)[0])
    out = np.zeros(len(sequences))
    for length in sorted({len(ids) for ids in sequences}):
        rows = [i for i, ids in enumerate(sequences) if len(ids) == length]
        hidden = np.asarray(hidden_fn(params, jnp.asarray([sequences[i] for i in rows], jnp.int32)), np.float64)
        out[rows] = hidden[:, -1] @ w + b
    return out


def test_params_are_the_policy_tree_plus_a_head_and_lm_head_is_frozen():
    policy = jax.eval_shape(lambda r: model_lib.init_params(CFG, r), jax.random.PRNGKey(0))
    params = rm.init_reward_params(CFG, None, backbone=policy)
    assert set(params) == set(policy) | {rm.HEAD}
    assert jax.tree.structure(rm.backbone_params(params)) == jax.tree.structure(policy)
    assert params[rm.HEAD]["w"].shape == (CFG.d_model,) and params[rm.HEAD]["b"].shape == ()
    mask = rm.trainable_mask(params, CFG)
    assert mask[rm.HEAD] == {"w": True, "b": True}
    assert mask["lm_head"] is False and mask["embed"] is True
    assert mask["layer_0"]["moe"]["router_bias"] is False
    with pytest.raises(ValueError, match="already have"):
        rm.init_reward_params(CFG, None, backbone=params)


def test_scores_match_last_token_reference_and_ignore_padding():
    params = _params()
    sequences = _sequences(6)
    assert {len(ids) for ids in sequences} == {5, 12}
    expected = _reference_scores(params, sequences)
    for width in (12, 40):
        got = np.asarray(SCORE(params, *rm.pad_rows(sequences, width, pad_id=0)))
        assert got.dtype == np.float32 and got.shape == (6,)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # Left padding (real tokens at the end of the row) reads the same last token at the same positions.
    tokens = np.zeros((len(sequences), 16), np.int32)
    segment_ids = np.zeros_like(tokens)
    for i, ids in enumerate(sequences):
        tokens[i, -len(ids):], segment_ids[i, -len(ids):] = ids, 1
    np.testing.assert_allclose(SCORE(params, tokens, segment_ids), expected, rtol=1e-4, atol=1e-4)
    # What sits in padding slots does not matter; an earlier real token does.
    noisy = np.where(segment_ids == 0, 7, tokens)
    np.testing.assert_allclose(SCORE(params, noisy, segment_ids), expected, rtol=1e-4, atol=1e-4)
    first = np.argmax(segment_ids, axis=1)
    edited = tokens.copy()
    edited[np.arange(6), first] = (tokens[np.arange(6), first] + 1) % CFG.vocab_size
    assert np.all(np.abs(np.asarray(SCORE(params, edited, segment_ids)) - expected) > 1e-4)


def _pair_batch(n, seed):
    """Chosen: a random sequence containing token 7 somewhere; rejected: the same without it."""
    rng = np.random.default_rng(seed)
    rows = []
    for ids in _sequences(n, seed, lengths=(4, 6, 8, 10)):
        ids = [i if i != 7 else 8 for i in ids]
        chosen = list(ids)
        chosen[int(rng.integers(0, len(ids)))] = 7
        rows += [chosen, ids]
    tokens, segment_ids = rm.pad_rows(rows, 12, pad_id=0)
    return {"tokens": tokens.reshape(n, 2, 12), "segment_ids": segment_ids.reshape(n, 2, 12)}


def test_bradley_terry_training_learns_the_preference():
    params0 = jax.eval_shape(lambda r: rm.init_reward_params(CFG, r), jax.random.PRNGKey(0))
    optimizer = make_optimizer(dict(name="adamw", learning_rate=3e-3, schedule="constant", warmup_steps=0,
                                    init_learning_rate=0.0, end_learning_rate=0.0, total_steps=1, b1=0.9, b2=0.98,
                                    eps=1e-8, weight_decay=0.0, grad_clip_norm=1.0),
                               trainable_mask=rm.trainable_mask(params0, CFG))
    state, shardings = create_train_state(lambda r: rm.init_reward_params(CFG, r), optimizer, jax.random.PRNGKey(0))
    lm_head0 = np.asarray(state.params["lm_head"])
    step = make_train_step(rm_stage.make_reward_model_loss(CFG), optimizer, state_shardings=shardings)
    history = []
    for i in range(40):
        state, metrics = step(state, _pair_batch(16, seed=i))
        history.append(float(metrics["bt_loss"]))
    assert history[0] == pytest.approx(math.log(2), abs=1e-6)      # zero head: every reward is 0
    assert np.mean(history[-5:]) < 0.35, history
    np.testing.assert_array_equal(np.asarray(state.params["lm_head"]), lm_head0)   # unused, frozen
    heldout = _pair_batch(64, seed=1000)
    scores = SCORE(state.params, heldout["tokens"].reshape(128, 12),
                   heldout["segment_ids"].reshape(128, 12)).reshape(64, 2)
    assert float(jnp.mean(scores[:, 0] > scores[:, 1])) > 0.85


def _samples(n):
    return [{"domain": "chat", "id": str(i), "messages": [{"role": "user", "content": f"Q{i}?"}],
             "response": "ok " * (i + 1)} for i in range(n)]


def test_reward_model_fn_scores_in_fixed_batches():
    params, tok = _params(1), TOKENIZER
    samples = _samples(7)
    rows = [rm.encode_response(tok, s["messages"], s["response"].strip()) for s in samples]
    expected = SCORE(params, *rm.pad_rows(rows, 48, tok.pad_id))     # SCORE is checked against numpy above
    fn = rm.RewardModelFn(params, CFG, tok, batch_size=3, max_len=48)
    rewards, infos = fn.score(samples)
    assert rewards.dtype == np.float32 and rewards.shape == (7,)            # 7 = 3 + 3 + 1 (padded block)
    np.testing.assert_allclose(rewards, expected, rtol=1e-4, atol=1e-4)
    assert fn._scores._cache_size() == 1                                    # one compile for every block
    assert all(info["reason"] == "" and info["rm_score"] == pytest.approx(r) for info, r in zip(infos, rewards))
    for batch_size, mesh in ((8, None), (4, sharding_lib.make_mesh({"data": -1}))):
        other = rm.RewardModelFn(params, CFG, tok, batch_size=batch_size, max_len=48, mesh=mesh)
        np.testing.assert_allclose(other.score(samples)[0], rewards, rtol=1e-4, atol=1e-4)
    assert other.batch_size == 8                                            # rounded up to the 8 batch shards
    # The reasoning block is not scored; an over-long sequence keeps its end and says so.
    thought = fn.score([{**samples[2], "response": "<think>long thoughts</think>" + samples[2]["response"]}])[0]
    np.testing.assert_allclose(thought, rewards[2:3], rtol=1e-5, atol=1e-5)
    short = rm.RewardModelFn(params, CFG, tok, batch_size=3, max_len=8)
    _, infos = short.score(samples[:1])
    assert infos[0]["truncated"] and "last 8 of" in infos[0]["reason"]
    with pytest.raises(ValueError, match="no field 'messages'"):
        fn.score([{"response": "x"}])


def test_pairs_from_jsonl_with_line_numbered_errors(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."},
            {"messages": [{"role": "user", "content": "2+2?"}],
             "chosen": {"role": "assistant", "content": "<think>add</think>4"}, "rejected": "5"},
            {"prompt": "No rejected here", "chosen": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(data_lib.JsonlError, match=r"pairs.jsonl:3: .*missing \['rejected'\]"):
        rm_stage.read_pairs_jsonl(str(path))
    pairs = rm_stage.read_pairs_jsonl(str(path), on_error="skip")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("Hello!", "Go away."), ("4", "5")]
    batch = next(iter(rm_stage.make_pair_dataset(pairs, TOKENIZER, seq_len=32, batch_size=2,
                                                 seed=0)))
    assert batch["tokens"].shape == batch["segment_ids"].shape == (2, 2, 32)
    with pytest.raises(ValueError, match="longer than data.seq_len=8"):
        next(iter(rm_stage.make_pair_dataset(pairs, TOKENIZER, seq_len=8, batch_size=2, seed=0)))


STEPS = 40


@pytest.mark.slow
def test_launch_trains_a_reward_model_that_ranks_heldout_pairs(tmp_path):
    """``experiments/reward_model.py`` through the launcher, shortened (the default trains 80 steps on 4000 pairs
    and evaluates 500). One CPU device: 8 simulated devices on a small CI machine are ~3x slower (the mesh
    path of scoring is covered above)."""
    workdir = str(tmp_path / "rm")
    overrides = (f"--config.train.steps={STEPS}", f"--config.optimizer.total_steps={STEPS}",
                 "--config.train.checkpoint_every=20", "--config.data.num_pairs=1000",
                 "--config.reward_model.eval_pairs=200")
    proc = subprocess.run([sys.executable, "-m", "nemocascade.launch", "--config=experiments/reward_model.py",
                           f"--workdir={workdir}", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env=cpu_env())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    with open(os.path.join(workdir, "eval.json")) as f:
        result = json.load(f)["reward_model"]
    assert result["num_pairs"] == 200 and result["truncated_sequences"] == 0
    assert result["pairwise_accuracy"] > 0.8, result
    assert min(result["accuracy_by_rejected_kind"].values()) > 0.5, result
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert [line["step"] for line in lines] == list(range(10, STEPS + 1, 10))
    assert lines[-1]["bt_loss"] < 0.5 * lines[0]["bt_loss"]
    # The saved reward model, loaded back as a reward fn, ranks the same held-out pairs the same way.
    scorer = rm.RewardModelFn.from_checkpoint(os.path.join(workdir, "checkpoints"), batch_size=64)
    assert scorer.max_len == 128
    again = rm_stage.evaluate_pairs(scorer, rm_stage.toy_pairs("chat", "heldout", 200, seed=0))
    assert again["pairwise_accuracy"] == pytest.approx(result["pairwise_accuracy"])
