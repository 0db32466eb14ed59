"""A language model that judges in writing (``JudgeModel``: the model, its tokenizer and how it is sampled) and
the base of the rewards it backs (``JudgeRewardFn``): ``pairwise_judge.py`` (RLHF's comparisons of a prompt's
rollouts) and ``answer_judge.py`` (a rollout's answer against the reference answer).

The judge is the same ``forward`` as the policy with other params (a checkpoint of this project, e.g. one imported
from Hugging Face, or an earlier stage of a cascade), run by the same sampler (``rollout.generate``).
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Sequence

import jax
import numpy as np

from nemocascade import model as model_lib
from nemocascade.checkpoint import Checkpointer, restore_policy_params
from nemocascade.data.tokenizer import load_tokenizer
from nemocascade.rewards.base import RewardFn
from nemocascade.rollout import generate


@dataclasses.dataclass
class JudgeModel:
    """A judge model and its sampling.

    Attributes:
      params: the judge's params (possibly sharded on ``mesh``).
      cfg: the judge's model config.
      tokenizer: the judge's tokenizer.
      max_new_tokens: the judge's budget per verdict (tokens).
      thinking: the judge's prompts open a reasoning block (``<think>\\n`` instead of ``<think></think>``).
      temperature, top_p: the judge's sampling (0 = greedy). Sampled verdicts draw from a key derived from
        ``seed`` and the judged token ids, so the same judge prompts get the same verdicts (a resumed run too).
      batch_size: judge prompts per sampler call (the last call is padded), so it compiles once per prompt width.
      mesh: if given, the judge's rows are split over its batch axes.
    """
    params: Any
    cfg: model_lib.ModelConfig
    tokenizer: Any
    max_new_tokens: int = 64
    thinking: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 64
    mesh: Any = None

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(f"judge max_new_tokens and batch_size must be >= 1, got {self.max_new_tokens}, "
                             f"{self.batch_size}")

    @classmethod
    def from_settings(cls, judge, *, default_tokenizer: str = "", mesh=None, seed: int = 0) -> "JudgeModel":
        """The judge that ``judge`` (``configs.judge_config`` fields) names: the params and model config of the
        latest step in ``judge.checkpoint``; the tokenizer ``judge.tokenizer``, else the one saved with the
        checkpoint (``data.tokenizer`` of a stage's checkpoint, the source directory of a Hugging Face import),
        else ``default_tokenizer``. A tokenizer with more ids than the judge's vocabulary is refused."""
        checkpointer = Checkpointer(judge.checkpoint, async_save=False)
        try:
            if checkpointer.latest_step() is None:
                raise ValueError(f"rl.judge.checkpoint={judge.checkpoint!r} holds no finished checkpoint")
            saved = checkpointer.restore_config()
        finally:
            checkpointer.close()
        cfg = model_lib.ModelConfig.from_dict(saved["model"])
        tokenizer_path = (judge.tokenizer or saved.get("data", {}).get("tokenizer")
                          or saved.get("hf", {}).get("source") or default_tokenizer)
        tokenizer = load_tokenizer(tokenizer_path)
        if tokenizer.vocab_size > cfg.vocab_size:
            raise ValueError(f"rl.judge: the tokenizer {tokenizer_path or '(the toy one)'!r} has "
                             f"{tokenizer.vocab_size} ids but the judge in {judge.checkpoint!r} only "
                             f"{cfg.vocab_size}: set rl.judge.tokenizer to the judge's own tokenizer")
        return cls(restore_policy_params(judge.checkpoint, cfg, mesh), cfg, tokenizer,
                   max_new_tokens=judge.max_new_tokens, thinking=judge.thinking, temperature=judge.temperature,
                   top_p=judge.top_p, seed=seed, batch_size=judge.batch_size, mesh=mesh)

    def generate(self, prompts: Sequence[Sequence[int]]) -> list[str]:
        """The judge's output text for each prompt (token ids), ``batch_size`` at a time."""
        limit = self.cfg.max_seq_len - self.max_new_tokens
        for i, ids in enumerate(prompts):
            if len(ids) > limit:
                raise ValueError(f"judge prompt {i} has {len(ids)} tokens; the judge's max_seq_len "
                                 f"{self.cfg.max_seq_len} minus its max_new_tokens {self.max_new_tokens} allows "
                                 f"{limit} (shorten the rollouts or raise the judge's limits)")
        texts = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = [list(p) for p in prompts[start:start + self.batch_size]]
            padded = chunk + [chunk[0]] * (self.batch_size - len(chunk))
            judged_ids = np.concatenate([np.asarray(p, np.int64) for p in chunk]).tobytes()
            key = jax.random.fold_in(jax.random.PRNGKey(self.seed), zlib.crc32(judged_ids) & 0x7FFFFFFF)
            rollouts = generate(self.params, self.cfg, padded, max_new_tokens=self.max_new_tokens,
                                temperature=self.temperature, top_p=self.top_p,
                                stop_tokens=(self.tokenizer.eos_id,), rng=key, mesh=self.mesh,
                                pad_id=self.tokenizer.pad_id)
            texts += [self.tokenizer.decode(ids) for ids in rollouts.responses()[:len(chunk)]]
        return texts


class JudgeRewardFn(RewardFn):
    """A ``RewardFn`` whose verdicts a ``JudgeModel`` writes: ``judge_texts`` (a test may script it) and the count
    of verdicts, and of those that did not parse, since the last ``take_verdict_counts``."""

    def __init__(self, model: JudgeModel, **options):
        super().__init__(**options)
        self.model = model
        self._verdicts = [0, 0]

    def judge_texts(self, prompts: Sequence[Sequence[int]]) -> list[str]:
        """The judge's output text for each prompt (token ids)."""
        return self.model.generate(prompts)

    def count_verdicts(self, total: int, unparsed: int) -> None:
        self._verdicts[0] += total
        self._verdicts[1] += unparsed

    def take_verdict_counts(self) -> tuple[int, int]:
        """``(verdicts, unparsed verdicts)`` since the previous call (or since construction); resets both."""
        counts, self._verdicts = tuple(self._verdicts), [0, 0]
        return counts
