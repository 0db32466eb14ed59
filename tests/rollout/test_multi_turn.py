"""Multi-turn episodes: sampled turns exactly on-policy around environment observations; limits; errors."""
import threading

import jax
import numpy as np
import pytest

from nemocascade import model as m
from nemocascade import sharding
from nemocascade.rollout import EpisodeLimits, generate_episodes, multi_turn
from rollout_testing import full_forward_logprobs

BASE = m.presets.tiny().replace(vocab_size=48, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                num_experts=4, num_experts_per_tok=2, expert_hidden_size=16, max_seq_len=96)
HYBRID = m.presets.tiny_hybrid().replace(vocab_size=48, d_model=32, num_heads=4, num_kv_heads=2, num_experts=4,
                                         expert_hidden_size=16, max_seq_len=96, mamba_num_heads=4,
                                         mamba_head_dim=8, mamba_state_size=8, mamba_n_groups=2, mamba_chunk_size=4)
PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20], [30, 31, 32, 33]]
STOPS = tuple(range(1, 13))     # a random 48-token model ends a turn after a few tokens
FINAL = (1, 2, 3, 4)            # a turn ending in one of these is the episode's last


class RecordingEnvironment:
    """Ends the episode on a turn ending in FINAL, else answers with 1-3 observation ids (40+) depending on the
    row and its turn count; records ``(turn_ids, answer)`` per row."""

    def __init__(self):
        self.calls = {}

    def __call__(self, row, turn_ids):
        calls = self.calls.setdefault(row, [])
        answer = None if turn_ids[-1] in FINAL else [40 + row % 8] + [47] * (len(calls) % 3)
        calls.append((list(turn_ids), answer))
        return answer


LIMITS = EpisodeLimits(max_turns=3, turn_tokens=8, total_tokens=40)
TEMPERATURE = 0.8    # one sampling setting (and turn budget) for every test: the compiled turns are shared


class MeetingEnvironment(RecordingEnvironment):
    """A ``RecordingEnvironment`` whose first two calls wait for each other (up to ``timeout`` seconds): calls made
    one after another never meet, and the first one's wait fails with ``threading.BrokenBarrierError``."""

    def __init__(self, timeout: float):
        super().__init__()
        self.barrier, self.lock, self.count = threading.Barrier(2, timeout=timeout), threading.Lock(), 0

    def __call__(self, row, turn_ids):
        with self.lock:
            self.count += 1
            meets = self.count <= 2
        if meets:
            self.barrier.wait()
        return super().__call__(row, turn_ids)


def _episodes(params, cfg, env, *, limits=LIMITS, temperature=TEMPERATURE, rng=7, mesh=None, respond_workers=1):
    return generate_episodes(params, cfg, PROMPTS, env, limits=limits, num_samples=2, temperature=temperature,
                             stop_tokens=STOPS, rng=jax.random.PRNGKey(rng), mesh=mesh, respond_workers=respond_workers)


def _assert_on_policy(params, cfg, ro):
    """The sampler's log-probs of the sampled tokens are those of one forward over each finished row;
    observations get 0 and no mask."""
    assert ro.observed.any() and (ro.response_mask().sum(axis=1) > 0).all()
    reference = full_forward_logprobs(params, cfg, ro, TEMPERATURE, packed=False)
    for i, ref in enumerate(reference):
        p, r = ro.prompt_lengths[i], ro.response_lengths[i]
        sampled = ~ro.observed[i, p:p + r]
        np.testing.assert_allclose(ro.logprobs[i, p:p + r][sampled], ref[sampled], rtol=1e-5, atol=1e-5)
        assert np.all(ro.logprobs[i, p:p + r][~sampled] == 0)
        np.testing.assert_array_equal(ro.response_mask()[i, p:p + r], sampled.astype(np.float32))


@pytest.mark.parametrize("cfg", [BASE, HYBRID], ids=["moe", "mamba-hybrid"])
def test_sampled_turns_equal_one_full_forward(cfg):
    """Each row's cache lives through the episode (later turns feed only the last turn's stop token and the
    observation), and still every turn's log-probs are those of one forward over the finished row."""
    params = m.init_params(cfg, jax.random.PRNGKey(1))
    _assert_on_policy(params, cfg, _episodes(params, cfg, RecordingEnvironment()))


def test_long_observations_are_fed_in_chunks():
    """Observations longer than FEED_CHUNK take several feeding calls, in which rows with shorter observations
    feed nothing (attention slots and Mamba-2 states must stay as they were)."""
    params = m.init_params(HYBRID, jax.random.PRNGKey(8))
    long_answers = lambda row, turn: None if turn[-1] in FINAL else [40 + row % 8] * (1 + 7 * (row % 4))  # noqa
    ro = _episodes(params, HYBRID, long_answers, limits=EpisodeLimits(max_turns=3, turn_tokens=8, total_tokens=64))
    observation_lengths = [len(run) for flags in ro.observed for run in "".join("x" if f else " " for f in flags)
                           .split()]
    assert max(observation_lengths) > multi_turn.FEED_CHUNK > min(observation_lengths)
    _assert_on_policy(params, HYBRID, ro)


def test_sharded_mesh_matches():
    """The cache split over a mesh's rows, and gathered as episodes end, gives the unsharded episodes."""
    params = m.init_params(BASE, jax.random.PRNGKey(9))
    plain = _episodes(params, BASE, RecordingEnvironment())
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    sharded = _episodes(jax.device_put(params, sharding.param_shardings(mesh, BASE)), BASE, RecordingEnvironment(),
                        mesh=mesh)
    assert plain.observed.any()
    np.testing.assert_array_equal(plain.tokens, sharded.tokens)
    np.testing.assert_allclose(plain.logprobs, sharded.logprobs, rtol=1e-5, atol=1e-5)


def test_rows_interleave_turns_and_the_environments_observations():
    params = m.init_params(BASE, jax.random.PRNGKey(2))
    env = RecordingEnvironment()
    limits = LIMITS
    ro = _episodes(params, BASE, env)
    assert ro.finished.any() and ro.observed.any()
    for row in range(len(ro.tokens)):
        p, r = ro.prompt_lengths[row], ro.response_lengths[row]
        np.testing.assert_array_equal(ro.tokens[row, :p], PROMPTS[row // 2])
        response, observed = ro.tokens[row, p:p + r].tolist(), ro.observed[row, p:p + r]
        calls = env.calls.get(row, [])
        assert 0 < r <= limits.total_tokens and len(calls) <= limits.max_turns
        pos = 0
        for turn, answer in calls:       # each turn shown to the environment, then its answer if one was appended
            assert response[pos:pos + len(turn)] == turn and turn[-1] in STOPS
            assert not observed[pos:pos + len(turn)].any()
            pos += len(turn)
            if answer is not None and pos < r:
                assert response[pos:pos + len(answer)] == answer and observed[pos:pos + len(answer)].all()
                pos += len(answer)
        if pos < r:                      # a last turn that hit the turn budget: never shown to the environment
            assert r - pos == limits.turn_tokens and response[-1] not in STOPS and not observed[pos:].any()
        assert bool(ro.finished[row]) == (pos == r and bool(calls) and calls[-1][1] is None)


def test_limits_end_episodes_unfinished():
    params = m.init_params(BASE, jax.random.PRNGKey(3))
    never_done = lambda row, turn: [41, 42]      # noqa: E731  (the environment always answers)
    one_turn = _episodes(params, BASE, never_done, limits=EpisodeLimits(max_turns=1, turn_tokens=8, total_tokens=40))
    assert not one_turn.finished.any() and not one_turn.observed.any()
    capped = _episodes(params, BASE, never_done, limits=EpisodeLimits(max_turns=50, turn_tokens=8, total_tokens=30))
    assert not capped.finished.any()
    assert (capped.response_lengths <= 30).all()
    # A turn whose tokens would follow an observation that leaves less than a whole turn budget is not played.
    for row in range(len(capped.tokens)):
        p, r = capped.prompt_lengths[row], capped.response_lengths[row]
        observed = capped.observed[row, p:p + r]
        assert not observed[-1]                  # no row ends on an observation
        last_observation = np.flatnonzero(observed).max(initial=-1)
        assert last_observation + 1 + 8 <= 30
        # and the episode stopped only because a turn hit its budget or the next would not have fit
        assert capped.tokens[row, p + r - 1] not in STOPS or r + 2 + 8 > 30


def test_same_key_same_episodes_and_greedy_samples_of_a_prompt_agree():
    """Also when the environment answers a turn's rows on several threads: they run at once (the first two calls
    meet) and the episodes are the same as with the calls in row order."""
    params = m.init_params(BASE, jax.random.PRNGKey(4))
    first = _episodes(params, BASE, RecordingEnvironment())
    again = _episodes(params, BASE, MeetingEnvironment(timeout=30), respond_workers=4)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    np.testing.assert_array_equal(first.logprobs, again.logprobs)
    with pytest.raises(threading.BrokenBarrierError):       # in row order the first two calls cannot meet
        _episodes(params, BASE, MeetingEnvironment(timeout=1))
    by_content = lambda row, turn: None if turn[-1] in FINAL else [40 + len(turn) % 8, 47]  # noqa: E731
    greedy = _episodes(params, BASE, by_content, temperature=0.0)
    # Both samples of a prompt see the same history at every turn (the environment answers the turn's content
    # alone), so greedy decoding makes them equal.
    np.testing.assert_array_equal(greedy.tokens[0::2], greedy.tokens[1::2])


def test_bad_limits_and_prompts_are_refused():
    with pytest.raises(ValueError, match="turn_tokens must be in"):
        EpisodeLimits(max_turns=2, turn_tokens=50, total_tokens=40)
    with pytest.raises(ValueError, match="max_turns must be >= 1"):
        EpisodeLimits(max_turns=0, turn_tokens=5, total_tokens=40)
    params = m.init_params(BASE, jax.random.PRNGKey(5))
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len=96"):
        generate_episodes(params, BASE, [[5] * 60], lambda row, turn: None, rng=jax.random.PRNGKey(0),
                          limits=EpisodeLimits(max_turns=2, turn_tokens=8, total_tokens=40))
