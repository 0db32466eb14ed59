"""A generative pairwise judge (GenRM) as a reward: a language model compares every pair of a prompt's rollouts
in writing, and its verdicts are aggregated into one reward per rollout.

RECIPE.md: Nemotron-Cascade 2's RLHF scores rollouts with a generative reward model that compares pairs of
rollouts of a prompt; scores are aggregated per response, length-normalised, with a conciseness bonus. This
module is that path (``rl.judge`` of an ``rlhf`` stage); the Bradley-Terry reward model (``reward_model.py``)
is the cheaper stand-in.

The judge is a ``JudgeModel`` (``judge_model.py``: the policy's ``forward`` with other params, run by the same
sampler). Its input follows the GenRM format of NeMo Gym's
``genrm_compare`` (Qwen3-Nemotron-235B-A22B-GenRM): the prompt's turns, then the two final answers as turns of
the roles ``response_1`` and ``response_2``, then the assistant header; this project's ChatML template renders
it (``judge_prompt``)::

    <|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>response_1\\n{answer 1}<|im_end|>\\n
    <|im_start|>response_2\\n{answer 2}<|im_end|>\\n<|im_start|>assistant\\n<think></think>

(``<think>\\n`` instead of ``<think></think>`` with ``thinking=True``). A judge whose own chat template renders
those roles differently is not supported. The judge writes, after optional reasoning, a JSON object
``{"score_1": s1, "score_2": s2, "ranking": r}``: the helpfulness of each answer in [1, 5] and a ranking in
[1, 6] (1: answer 1 much better ... 6: answer 2 much better; 3.5 would be no preference). The last such object
of its answer counts (``parse_judgement``); a verdict without one, or with a value out of range, takes the
neutral defaults ``(3, 3, 3.5)`` and is counted as a parse failure.

Aggregation over the G rollouts of one prompt (``mean_scores``, then ``length_adjusted``):

1. comparisons (``comparison_pairs``): ``all_pairs`` judges each of the G(G-1)/2 pairs once, ``circular``
   judges rollout i against rollout (i+1) mod G (G comparisons); ``swap_positions`` judges each comparison a
   second time with the answers in the other order (the judge's position bias cancels);
2. each comparison gives answer 1 ``s1`` and answer 2 ``s2``; a tie (``s1 == s2``) is broken by the ranking:
   the preferred answer gains ``tiebreak``, the other loses it (ranking 3.5: neither);
3. a rollout's score is the mean over the comparisons it took part in (the default score with none: G = 1);
4. length normalisation: ``score -= length_penalty * (n - mean(n)) / mean(n)`` with ``n`` the answer's
   length in judge tokens, zero-centred over the group (the group's mean reward is unchanged);
5. conciseness bonus: the shortest answer(s) among the ``ceil(top_fraction * G)`` best-scored (answers tied
   with the last of them count too) get ``conciseness_bonus``.

Rollouts whose reasoning block never closed have no answer: they are left out of the comparisons and get the
``RewardFn`` reward 0 (``base.py``). The exact forms of steps 2, 4 and 5 are ours: the paper names the steps,
not their formulas.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Sequence

import numpy as np

from nemocascade.data.chat_template import render_prompt
from nemocascade.rewards.base import Verification
from nemocascade.rewards.judge_model import JudgeModel, JudgeRewardFn
from nemocascade.rewards.thinking import split_thinking

STRATEGIES = ("all_pairs", "circular")
SCORE_RANGE = (1.0, 5.0)
RANKING_RANGE = (1.0, 6.0)
NEUTRAL_RANKING = 3.5
DEFAULT_SCORE = 3.0
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")


# ------------------------------------------------------------------------------------------ verdicts
@dataclasses.dataclass(frozen=True)
class Judgement:
    """One comparison's verdict: helpfulness ``score_1`` / ``score_2`` in [1, 5], ``ranking`` in [1, 6]
    (1 = answer 1 much better, 6 = answer 2 much better); ``parsed`` is False when these are the defaults."""
    score_1: float
    score_2: float
    ranking: float
    parsed: bool


NEUTRAL = Judgement(DEFAULT_SCORE, DEFAULT_SCORE, NEUTRAL_RANKING, False)


def parse_judgement(text: str) -> Judgement:
    """The verdict in a judge's output: the last ``{...}`` after its reasoning block that is a JSON object with
    numeric ``score_1``, ``score_2`` in [1, 5] and ``ranking`` in [1, 6]; ``NEUTRAL`` when there is none."""
    answer = split_thinking(text).answer
    for candidate in reversed(_JSON_OBJECT.findall(answer)):
        try:
            verdict = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        values = [verdict.get(key) for key in ("score_1", "score_2", "ranking")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            continue
        (s1, s2, rank), (lo, hi), (rlo, rhi) = values, SCORE_RANGE, RANKING_RANGE
        if lo <= s1 <= hi and lo <= s2 <= hi and rlo <= rank <= rhi:
            return Judgement(float(s1), float(s2), float(rank), True)
    return NEUTRAL


# ------------------------------------------------------------------------------------------ aggregation
def comparison_pairs(num_responses: int, strategy: str, *, swap_positions: bool = False) -> list[tuple[int, int]]:
    """``(first, second)`` indices of the comparisons among ``num_responses`` answers (module docstring, step 1);
    none for fewer than 2 answers. ``circular`` with 2 answers is the one pair."""
    if strategy not in STRATEGIES:
        raise ValueError(f"judge strategy must be one of {STRATEGIES}, got {strategy!r}")
    n = num_responses
    if n < 2:
        return []
    if strategy == "all_pairs" or n == 2:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    else:
        pairs = [(i, (i + 1) % n) for i in range(n)]
    return pairs + [(j, i) for i, j in pairs] if swap_positions else pairs


@dataclasses.dataclass(frozen=True)
class Aggregation:
    """How verdicts become rewards (module docstring, steps 2-5)."""
    tiebreak: float = 0.5
    length_penalty: float = 0.0
    conciseness_bonus: float = 0.0
    top_fraction: float = 0.2

    def __post_init__(self):
        for name in ("tiebreak", "length_penalty", "conciseness_bonus"):
            if getattr(self, name) < 0:
                raise ValueError(f"judge {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"judge top_fraction must be in (0, 1], got {self.top_fraction!r}")


def mean_scores(num_responses: int, pairs: Sequence[tuple[int, int]], judgements: Sequence[Judgement], *,
                tiebreak: float) -> np.ndarray:
    """f64[num_responses]: each answer's mean score over its comparisons, ties broken by the ranking (module
    docstring, steps 2-3); ``judgements`` holds one verdict per pair of ``pairs``, in order."""
    if len(pairs) != len(judgements):
        raise ValueError(f"{len(pairs)} comparisons but {len(judgements)} verdicts")
    totals = np.zeros(num_responses)
    counts = np.zeros(num_responses)
    for (first, second), verdict in zip(pairs, judgements):
        s1, s2 = verdict.score_1, verdict.score_2
        if s1 == s2 and verdict.ranking != NEUTRAL_RANKING:
            shift = tiebreak if verdict.ranking < NEUTRAL_RANKING else -tiebreak
            s1, s2 = s1 + shift, s2 - shift
        totals[[first, second]] += (s1, s2)
        counts[[first, second]] += 1
    return np.where(counts > 0, totals / np.maximum(counts, 1), DEFAULT_SCORE)


def length_adjusted(scores: np.ndarray, lengths: Sequence[int], aggregation: Aggregation) -> np.ndarray:
    """f64[G]: one group's ``scores`` with the length normalisation and the conciseness bonus (module docstring,
    steps 4-5); ``lengths`` are the answers' lengths in tokens."""
    scores = np.asarray(scores, np.float64)
    n = np.asarray(lengths, np.float64)
    if n.shape != scores.shape:
        raise ValueError(f"{scores.size} scores but {n.size} lengths")
    if scores.size == 0:
        return scores
    rewards = scores - aggregation.length_penalty * (n - n.mean()) / max(n.mean(), 1.0)
    top = np.argsort(-scores, kind="stable")[:math.ceil(aggregation.top_fraction * scores.size)]
    best = np.flatnonzero(scores >= scores[top].min())
    rewards[best[n[best] == n[best].min()]] += aggregation.conciseness_bonus
    return rewards


# ------------------------------------------------------------------------------------------ judge input
def judge_prompt(messages: Sequence[dict], answer_1: str, answer_2: str, *, thinking: bool = False) -> str:
    """The judge's generation prompt for one comparison (module docstring): the prompt's turns, the two answers
    as ``response_1`` / ``response_2`` turns, the assistant header and the mode's prefix."""
    return render_prompt(list(messages) + [{"role": "response_1", "content": answer_1},
                                           {"role": "response_2", "content": answer_2}], thinking=thinking)


# ------------------------------------------------------------------------------------------ reward fn
class PairwiseJudgeFn(JudgeRewardFn):
    """The reward-fn contract backed by a generative judge (module docstring).

    A sample is ``{"messages", "response", "rollout_group": int, ...}``: rollouts with the same
    ``rollout_group`` answer the same prompt and are compared with each other (``stages.prompts.decode_samples``
    numbers them). Info per sample: ``judge_score`` (before the length terms), ``judge_comparisons``,
    ``judge_parse_failures`` (of its comparisons), ``answer_tokens``; ``take_verdict_counts`` counts the verdicts
    across calls.

    Args:
      model: the ``JudgeModel`` (params, tokenizer, sampling).
      strategy, swap_positions: which comparisons (``comparison_pairs``).
      aggregation: ``Aggregation``.
      options: ``RewardFn`` options (``require_thinking``, shaping).
    """
    domain = "chat"
    required_fields = {"messages": list, "rollout_group": int}

    def __init__(self, model: JudgeModel, *, strategy: str = "all_pairs", swap_positions: bool = False,
                 aggregation: Aggregation = Aggregation(), **options):
        super().__init__(model, **options)
        comparison_pairs(2, strategy)                         # validates the strategy name
        self.strategy, self.swap_positions, self.aggregation = strategy, swap_positions, aggregation

    @classmethod
    def from_settings(cls, judge, *, default_tokenizer: str = "", mesh=None, seed: int = 0) -> "PairwiseJudgeFn":
        """The judge that ``judge`` (``configs.judge_config`` fields) names (``JudgeModel.from_settings``), with
        its comparison and aggregation settings."""
        aggregation = Aggregation(tiebreak=judge.tiebreak, length_penalty=judge.length_penalty,
                                  conciseness_bonus=judge.conciseness_bonus, top_fraction=judge.top_fraction)
        return cls(JudgeModel.from_settings(judge, default_tokenizer=default_tokenizer, mesh=mesh, seed=seed),
                   strategy=judge.strategy, swap_positions=judge.swap_positions, aggregation=aggregation)

    def verify_batch(self, samples: Sequence[dict], answers: Sequence[str]) -> list[Verification]:
        groups: dict[int, list[int]] = {}
        for i, sample in enumerate(samples):
            groups.setdefault(sample["rollout_group"], []).append(i)
        group_pairs = [comparison_pairs(len(members), self.strategy, swap_positions=self.swap_positions)
                       for members in groups.values()]
        tokenizer = self.model.tokenizer
        prompts = [tokenizer.encode(judge_prompt(samples[members[i]]["messages"], answers[members[i]],
                                                 answers[members[j]], thinking=self.model.thinking))
                   for members, pairs in zip(groups.values(), group_pairs) for i, j in pairs]
        verdicts = iter([parse_judgement(t) for t in self.judge_texts(prompts)])
        lengths = [len(tokenizer.encode(a)) for a in answers]
        results: list[Verification | None] = [None] * len(samples)
        for members, pairs in zip(groups.values(), group_pairs):
            judged = [next(verdicts) for _ in pairs]             # the verdicts of this group's pairs, in order
            self.count_verdicts(len(judged), sum(not v.parsed for v in judged))
            scores = mean_scores(len(members), pairs, judged, tiebreak=self.aggregation.tiebreak)
            rewards = length_adjusted(scores, [lengths[m] for m in members], self.aggregation)
            comparisons = np.zeros(len(members), np.int64)
            failures = np.zeros(len(members), np.int64)
            for (i, j), verdict in zip(pairs, judged):
                comparisons[[i, j]] += 1
                failures[[i, j]] += not verdict.parsed
            for k, m in enumerate(members):
                results[m] = Verification(float(rewards[k]), "", True, {
                    "judge_score": float(scores[k]), "judge_comparisons": int(comparisons[k]),
                    "judge_parse_failures": int(failures[k]), "answer_tokens": lengths[m]})
        return results
