"""The generative pairwise judge: verdict parsing, comparisons, aggregation (against float64 numpy references and
hand-computed values), the judge's prompt, grouping in ``score`` (a scripted judge) and its settings loaded with
its checkpoint (the judge model itself: ``test_judge_model.py``)."""
import json

import numpy as np
import pytest
from judge_testing import CFG, TOKENIZER, save_judge

from nemocascade import configs
from nemocascade import data as data_lib
from nemocascade.rewards import pairwise_judge as pj
from nemocascade.rewards.judge_model import JudgeModel


def _verdict(s1, s2, ranking):
    return json.dumps({"score_1": s1, "score_2": s2, "ranking": ranking})


# ------------------------------------------------------------------------------------------ parsing
def test_the_last_valid_verdict_after_the_reasoning_counts():
    text = f"<think>maybe {_verdict(1, 5, 6)}</think>First {_verdict(2, 2, 3)} then, finally,\n{_verdict(4, 2.5, 2)}"
    assert pj.parse_judgement(text) == pj.Judgement(4.0, 2.5, 2.0, True)
    # an invalid object after a valid one does not hide it
    assert pj.parse_judgement(f"{_verdict(5, 1, 1)} and {{\"score_1\": 7}}") == pj.Judgement(5.0, 1.0, 1.0, True)


@pytest.mark.parametrize("text", [
    "no verdict at all",
    '{"score_1": 4, "score_2": 2}',                               # no ranking
    _verdict(6, 2, 2), _verdict(4, 0, 2), _verdict(4, 2, 7), _verdict(4, 2, 0.5),   # out of range
    '{"score_1": true, "score_2": 2, "ranking": 2}',              # a bool is not a score
    '{"score_1": "4", "score_2": 2, "ranking": 2}',
    '{"score_1": NaN, "score_2": 2, "ranking": 2}',
    '{score_1: 4, score_2: 2, ranking: 2}',                       # not JSON
    f"<think>{_verdict(5, 1, 1)}</think>",                        # only inside the reasoning
    f"<think>{_verdict(5, 1, 1)}",                                # reasoning never closed: no answer
])
def test_a_missing_or_invalid_verdict_is_neutral(text):
    assert pj.parse_judgement(text) == pj.NEUTRAL == pj.Judgement(3.0, 3.0, 3.5, False)


# ------------------------------------------------------------------------------------------ comparisons
def test_comparison_pairs():
    assert pj.comparison_pairs(4, "all_pairs") == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert pj.comparison_pairs(4, "circular") == [(0, 1), (1, 2), (2, 3), (3, 0)]
    assert pj.comparison_pairs(2, "circular") == [(0, 1)]
    assert pj.comparison_pairs(3, "circular", swap_positions=True) == [(0, 1), (1, 2), (2, 0), (1, 0), (2, 1),
                                                                        (0, 2)]
    assert pj.comparison_pairs(1, "all_pairs") == [] and pj.comparison_pairs(0, "circular") == []
    with pytest.raises(ValueError, match="judge strategy must be one of"):
        pj.comparison_pairs(3, "round_robin")


def _reference_mean_scores(n, pairs, judgements, tiebreak):
    """float64 incidence-matrix form: totals = F^T s1 + S^T s2, counts = column sums of F + S."""
    first = np.zeros((len(pairs), n))
    second = np.zeros((len(pairs), n))
    for k, (i, j) in enumerate(pairs):
        first[k, i] = second[k, j] = 1.0
    s1 = np.array([v.score_1 for v in judgements], np.float64)
    s2 = np.array([v.score_2 for v in judgements], np.float64)
    ranking = np.array([v.ranking for v in judgements], np.float64)
    shift = tiebreak * np.sign(3.5 - ranking) * (s1 == s2)
    totals = first.T @ (s1 + shift) + second.T @ (s2 - shift)
    counts = first.sum(0) + second.sum(0)
    return np.where(counts > 0, totals / np.maximum(counts, 1), 3.0)


@pytest.mark.parametrize("strategy,swap", [("all_pairs", False), ("circular", True), ("all_pairs", True)])
def test_mean_scores_equal_the_float64_reference(strategy, swap):
    rng = np.random.default_rng(0)
    for n in (2, 3, 6):
        pairs = pj.comparison_pairs(n, strategy, swap_positions=swap)
        judgements = [pj.Judgement(float(rng.integers(1, 6)), float(rng.integers(1, 6)),
                                   float(rng.choice([1, 2, 3, 3.5, 4, 5, 6])), True) for _ in pairs]
        np.testing.assert_allclose(pj.mean_scores(n, pairs, judgements, tiebreak=0.4),
                                   _reference_mean_scores(n, pairs, judgements, 0.4), rtol=0, atol=1e-12)


def test_mean_scores_by_hand():
    pairs = [(0, 1), (0, 2), (1, 2)]
    judgements = [pj.Judgement(5, 1, 1, True),      # 0: 5, 1: 1
                  pj.Judgement(3, 3, 5, True),      # tie, answer 2 preferred: 0: 2.5, 2: 3.5
                  pj.Judgement(4, 4, 3.5, True)]    # tie, no preference: 1: 4, 2: 4
    np.testing.assert_allclose(pj.mean_scores(3, pairs, judgements, tiebreak=0.5), [3.75, 2.5, 3.75])
    np.testing.assert_allclose(pj.mean_scores(1, [], [], tiebreak=0.5), [3.0])      # no comparison: the default
    with pytest.raises(ValueError, match="3 comparisons but 2 verdicts"):
        pj.mean_scores(3, pairs, judgements[:2], tiebreak=0.5)


def test_length_terms_by_hand():
    aggregation = pj.Aggregation(length_penalty=0.5, conciseness_bonus=1.0, top_fraction=0.5)
    # mean length 20: length terms -0.5 * (n - 20) / 20 = [+0.25, -0.25, 0, 0]; the top 2 (both 4.0): the
    # shorter of them (index 0) gets the bonus
    np.testing.assert_allclose(pj.length_adjusted(np.array([4.0, 4.0, 2.0, 3.0]), [10, 30, 20, 20], aggregation),
                               [5.25, 3.75, 2.0, 3.0])
    # the length terms alone leave the group's mean unchanged
    scores = np.array([1.0, 2.5, 4.0, 5.0, 3.0])
    lengths = [3, 50, 7, 12, 30]
    only_length = pj.length_adjusted(scores, lengths, pj.Aggregation(length_penalty=0.7))
    np.testing.assert_allclose(only_length.mean(), scores.mean(), atol=1e-12)
    np.testing.assert_allclose(scores - only_length, 0.7 * (np.array(lengths) - 20.4) / 20.4, atol=1e-12)
    # ties at the top threshold all count as top; every shortest one of them gets the bonus
    bonus = pj.length_adjusted(np.array([4.0, 4.0, 4.0, 1.0]), [9, 5, 5, 1],
                               pj.Aggregation(conciseness_bonus=2.0, top_fraction=0.25))
    np.testing.assert_allclose(bonus, [4.0, 6.0, 6.0, 1.0])
    with pytest.raises(ValueError, match="top_fraction must be in"):
        pj.Aggregation(top_fraction=0.0)
    with pytest.raises(ValueError, match="length_penalty must be >= 0"):
        pj.Aggregation(length_penalty=-1.0)


# ------------------------------------------------------------------------------------------ judge input
def test_judge_prompt_renders_the_two_answers_as_their_own_turns():
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Say hi."}]
    assert pj.judge_prompt(messages, "Hi!", "Hello there.") == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nSay hi.<|im_end|>\n"
        "<|im_start|>response_1\nHi!<|im_end|>\n<|im_start|>response_2\nHello there.<|im_end|>\n"
        "<|im_start|>assistant\n<think></think>")
    assert pj.judge_prompt(messages[1:], "a", "b", thinking=True).endswith("<|im_start|>assistant\n<think>\n")


@pytest.mark.parametrize("thinking", [False, True])
def test_a_judge_trained_on_toy_transcripts_sees_the_same_prompt_when_it_judges(thinking):
    """The toy ``judge`` SFT conversations and ``judge_prompt`` agree: the ids the judge is trained to continue
    (everything before its verdict, ``render_tokens`` mask 0) are the ids it is given when it judges."""
    for example in data_lib.toy_sft_examples("judge", "train", 20, seed=0):
        user, first, second, verdict = example["messages"]
        ids, mask = data_lib.render_tokens(example["messages"], TOKENIZER, thinking=thinking)
        prompt = TOKENIZER.encode(pj.judge_prompt([user], first["content"], second["content"], thinking=thinking))
        assert ids[:len(prompt)] == prompt and not any(mask[:len(prompt)]) and all(mask[len(prompt):-1])
        assert pj.parse_judgement(TOKENIZER.decode(ids[len(prompt):])).parsed


class ShorterIsBetterJudge(pj.PairwiseJudgeFn):
    """A scripted judge: reads the two answers back from the judge prompt's text; the shorter answer scores 5,
    the longer 1; equal lengths give 3 and 3 with a ranking that prefers answer 1 (a tie for the tiebreak)."""

    def __init__(self, **options):
        super().__init__(JudgeModel(None, CFG, TOKENIZER), **options)
        self.prompts = []

    def judge_texts(self, prompts):
        texts = []
        for ids in prompts:
            text = TOKENIZER.decode(ids)
            self.prompts.append(text)
            one = text.split("<|im_start|>response_1\n")[1].split("<|im_end|>")[0]
            two = text.split("<|im_start|>response_2\n")[1].split("<|im_end|>")[0]
            if len(one) == len(two):
                texts.append("<think>hmm</think>" + _verdict(3, 3, 2))
            else:
                texts.append(_verdict(5, 1, 1) if len(one) < len(two) else _verdict(1, 5, 6))
        return texts


def _sample(group, user, response):
    return {"messages": [{"role": "user", "content": user}], "response": response, "rollout_group": group}


def test_score_compares_the_rollouts_of_each_prompt_and_skips_unclosed_reasoning():
    judge = ShorterIsBetterJudge(aggregation=pj.Aggregation(tiebreak=0.5))
    samples = [_sample(0, "first question", "aa"), _sample(0, "first question", "<think>never closed"),
               _sample(0, "first question", "bbbb"), _sample(0, "first question", "<think>x</think>cc"),
               _sample(1, "second question", "ddd"), _sample(1, "second question", "e")]
    rewards, infos = judge.score(samples)
    # group 0 judges answers "aa", "bbbb", "cc": pairs (aa, bbbb) -> 5 / 1, (aa, cc) -> tie, answer 1 preferred
    # -> 3.5 / 2.5, (bbbb, cc) -> 1 / 5; group 1: (ddd, e) -> 1 / 5; the unclosed response gets 0, unjudged
    np.testing.assert_allclose(rewards, [4.25, 0.0, 1.0, 3.75, 1.0, 5.0])
    assert len(judge.prompts) == 4 and judge.take_verdict_counts() == (4, 0)
    assert judge.take_verdict_counts() == (0, 0)                          # counted once
    assert all("first question" in p for p in judge.prompts[:3]) and "second question" in judge.prompts[3]
    assert "never closed" not in "".join(judge.prompts)
    assert [info.get("judge_comparisons") for info in infos] == [2, None, 2, 2, 1, 1]
    assert infos[1]["reason"] == "reasoning block not closed"
    assert infos[0]["judge_parse_failures"] == 0 and infos[0]["answer_tokens"] == len(TOKENIZER.encode("aa"))
    with pytest.raises(ValueError, match="has no field 'rollout_group'"):
        judge.score([{"messages": [], "response": "a"}])


def test_swapped_positions_cancel_a_judge_that_always_prefers_answer_1():
    class FirstIsBetterJudge(ShorterIsBetterJudge):
        def judge_texts(self, prompts):
            return [_verdict(5, 1, 1)] * len(prompts)

    samples = [_sample(0, "q", text) for text in ("a", "bb", "ccc", "dddd")]
    biased, _ = FirstIsBetterJudge().score(samples)
    np.testing.assert_allclose(biased, [5.0, 11 / 3, 7 / 3, 1.0])        # the order of the rollouts decides
    fair, _ = FirstIsBetterJudge(swap_positions=True).score(samples)
    np.testing.assert_allclose(fair, [3.0] * 4)


def test_unparsed_verdicts_are_neutral_and_counted():
    class RamblingJudge(ShorterIsBetterJudge):
        def judge_texts(self, prompts):
            return ["I like both of them, really."] * len(prompts)

    judge = RamblingJudge()
    rewards, infos = judge.score([_sample(0, "q", text) for text in ("a", "bb", "ccc")])
    np.testing.assert_allclose(rewards, [3.0, 3.0, 3.0])
    assert [info["judge_parse_failures"] for info in infos] == [2, 2, 2]
    assert judge.take_verdict_counts() == (3, 3)


def test_the_judge_and_its_comparison_settings_load_from_a_checkpoint(tmp_path):
    directory = save_judge(tmp_path / "judge")
    settings = configs.judge_config(checkpoint=directory, strategy="circular", max_new_tokens=5, tiebreak=0.25,
                                    swap_positions=True)
    judge = pj.PairwiseJudgeFn.from_settings(settings)
    assert judge.model.cfg == CFG and judge.model.max_new_tokens == 5
    assert judge.strategy == "circular" and judge.swap_positions and judge.aggregation == pj.Aggregation(tiebreak=0.25)
