"""An LLM judge of a rollout's answer against the reference answer, as a reward (long-context RL's reward).

RECIPE.md: Nemotron-Cascade 2's long-context RL is rewarded by an LLM judge. This module follows NeMo Gym's
``equivalence_llm_judge`` (its ``lc_judge`` configuration is the long-context one): the judge reads the question,
the reference answer and the rollout's final answer in one user turn made from ``template`` (placeholders
``{question}``, ``{expected_answer}``, ``{generated_answer}``; default ``data.judge_prompts``), and writes a
verdict that contains ``equal_label`` (the answers agree) or ``not_equal_label``. The judge is a ``JudgeModel``
(``judge_model.py``); its prompt is the ChatML user turn and the assistant header (``<think></think>``, or
``<think>\\n`` with the model's ``thinking``).

- **question**: the text of the prompt's last user turn; with ``question_regex`` (NeMo Gym's
  ``question_extract_regex``, e.g. ``^QUESTION:\\s*(.*)$`` for a long document followed by its question) the last
  match in it, as its first non-empty group (or the whole match); no match keeps the whole turn. A long-context
  judge then sees the question without the document.
- **generated answer**: the rollout's final answer (reasoning stripped by ``RewardFn``); with ``answer_regex``
  the last match in it, the same way. An empty answer gets reward 0 without a verdict.
- **verdict** (``parse_verdict``): in the judge's answer (after its reasoning), the label that occurs first
  counts; when both start at the same place, the longer one (``CORRECT`` / ``INCORRECT`` work as labels). A
  verdict with neither label is counted unparsed and means not equal.
- **reward**: 1 for an equal verdict, else 0. With ``check_twice_swap``, an equal verdict is checked a second
  time with the reference and the generated answer swapped in the template; if that verdict is not equal too,
  the reward is ``reward_if_swap_fails`` (default 0).
- **a row's own answer regex** (NeMo Gym's OpenQA settings, defaults as there): with ``use_per_record_regex``, a
  row's ``template_metadata.output_regex`` replaces ``answer_regex`` for that row. Such a row whose reference
  answer is longer than ``extraction_length_threshold`` characters (0 = no threshold) is judged on its whole
  final answer, and gets neither a swap check nor a rescue. Otherwise, with ``check_full_generation_on_fail``, a
  row with its own regex whose first verdict is not equal is judged again on its whole final answer (rescuing
  answers that the regex cut wrongly): ``reward_if_full_generation_succeeds`` (default 0.5) if that verdict is
  equal, else 0.

Examples carry ``messages`` and ``expected_answer``, optionally ``template_metadata`` (an object; its
``output_regex`` a valid regular expression, checked before any rollout).
"""
from __future__ import annotations

import re
import string
from typing import Sequence

from nemocascade.data.chat_template import render_prompt
from nemocascade.data.judge_prompts import ANSWER_JUDGE_TEMPLATE, EQUAL_LABEL, NOT_EQUAL_LABEL
from nemocascade.rewards.base import Verification
from nemocascade.rewards.judge_model import JudgeModel, JudgeRewardFn
from nemocascade.rewards.thinking import split_thinking

PLACEHOLDERS = ("question", "expected_answer", "generated_answer")
VERDICTS = ("equal", "not_equal", "unparsed")


def check_template(template: str) -> None:
    """ValueError unless ``template`` is a ``str.format`` template whose fields are ``PLACEHOLDERS`` (plain names),
    with ``{expected_answer}`` and ``{generated_answer}`` among them."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as error:
        raise ValueError(f"rl.judge.template is not a valid format string ({error}); write a literal brace as "
                         f"{{{{ or }}}}") from None
    for name, spec, conversion in fields:
        if name not in PLACEHOLDERS or spec or conversion:
            allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"rl.judge.template has the field {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}}; allowed: {allowed}")
    missing = [p for p in PLACEHOLDERS[1:] if p not in {name for name, _, _ in fields}]
    if missing:
        raise ValueError(f"rl.judge.template lacks {', '.join('{' + p + '}' for p in missing)}")


def compile_regex(pattern: str, field: str) -> re.Pattern | None:
    """``pattern`` compiled with MULTILINE and DOTALL (None for ""); a ValueError naming ``field`` if invalid."""
    if not pattern:
        return None
    try:
        return re.compile(pattern, re.MULTILINE | re.DOTALL)
    except re.error as error:
        raise ValueError(f"{field}={pattern!r} is not a valid regular expression: {error}") from None


def last_match(text: str, pattern: re.Pattern | None) -> str:
    """The last match of ``pattern`` in ``text`` as its first non-empty group (else the whole match), stripped;
    ``text`` stripped when ``pattern`` is None or does not match."""
    matches = list(pattern.finditer(text)) if pattern is not None else []
    if not matches:
        return text.strip()
    match = matches[-1]
    groups = [g for g in match.groups() if g and g.strip()]
    return (groups[0] if groups else match.group(0)).strip()


def parse_verdict(text: str, equal_label: str, not_equal_label: str) -> str:
    """``"equal"``, ``"not_equal"`` or ``"unparsed"``: the label that occurs first in the judge's answer (after
    its reasoning block; an unclosed block has no answer); at the same position the longer label."""
    answer = split_thinking(text).answer
    positions = [(answer.find(label), -len(label), verdict)
                 for label, verdict in ((equal_label, "equal"), (not_equal_label, "not_equal"))]
    found = sorted(p for p in positions if p[0] >= 0)
    return found[0][2] if found else "unparsed"


def last_user_text(messages: Sequence[dict]) -> str:
    """The content of the last ``user`` turn of ``messages`` ("" when there is none)."""
    texts = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return texts[-1] if texts and isinstance(texts[-1], str) else ""


class AnswerJudgeFn(JudgeRewardFn):
    """The reward-fn contract backed by a reference-answer judge (module docstring).

    Info per sample: ``judge_verdict`` (one of ``VERDICTS``; absent for an empty answer), ``judge_swap_verdict``
    (with ``check_twice_swap``, for an equal first verdict), ``judge_rescue_verdict`` (the verdict on the whole
    answer of a rescued row), ``judged_answer`` (the text the judge saw first); ``take_verdict_counts`` counts
    the verdicts across calls.

    Args:
      model: the ``JudgeModel``.
      template, equal_label, not_equal_label: the judge's user turn and verdict labels (module docstring).
      question_regex, answer_regex: what of the last user turn / the final answer the judge sees ("" = all).
      check_twice_swap, reward_if_swap_fails: the second, swapped check of an equal verdict.
      use_per_record_regex, extraction_length_threshold, check_full_generation_on_fail,
        reward_if_full_generation_succeeds: a row's own answer regex and the rescue pass (module docstring).
      options: ``RewardFn`` options (``require_thinking``, shaping).
    """
    domain = "long_context"
    required_fields = {"messages": list, "expected_answer": (str, int, float)}

    def __init__(self, model: JudgeModel, *, template: str = ANSWER_JUDGE_TEMPLATE,
                 equal_label: str = EQUAL_LABEL, not_equal_label: str = NOT_EQUAL_LABEL,
                 question_regex: str = "", answer_regex: str = "", check_twice_swap: bool = False,
                 reward_if_swap_fails: float = 0.0, use_per_record_regex: bool = True,
                 extraction_length_threshold: int = 120, check_full_generation_on_fail: bool = True,
                 reward_if_full_generation_succeeds: float = 0.5, **options):
        super().__init__(model, **options)
        check_template(template)
        if not equal_label or not not_equal_label or equal_label == not_equal_label:
            raise ValueError(f"rl.judge.equal_label and rl.judge.not_equal_label must be two different non-empty "
                             f"strings, got {equal_label!r} and {not_equal_label!r}")
        self.template = template
        self.equal_label, self.not_equal_label = equal_label, not_equal_label
        self.question_regex = compile_regex(question_regex, "rl.judge.question_regex")
        self.answer_regex = compile_regex(answer_regex, "rl.judge.answer_regex")
        self.check_twice_swap, self.reward_if_swap_fails = check_twice_swap, float(reward_if_swap_fails)
        if extraction_length_threshold < 0:
            raise ValueError(f"rl.judge.extraction_length_threshold must be >= 0 (0 = none), got "
                             f"{extraction_length_threshold}")
        self.use_per_record_regex = use_per_record_regex
        self.extraction_length_threshold = int(extraction_length_threshold)
        self.check_full_generation_on_fail = check_full_generation_on_fail
        self.reward_if_full_generation_succeeds = float(reward_if_full_generation_succeeds)

    @classmethod
    def from_settings(cls, judge, *, default_tokenizer: str = "", mesh=None, seed: int = 0) -> "AnswerJudgeFn":
        """The judge that ``judge`` (``configs.judge_config`` fields) names (``JudgeModel.from_settings``), with
        its template, labels, regexes and swap check."""
        return cls(JudgeModel.from_settings(judge, default_tokenizer=default_tokenizer, mesh=mesh, seed=seed),
                   template=judge.template or ANSWER_JUDGE_TEMPLATE, equal_label=judge.equal_label,
                   not_equal_label=judge.not_equal_label, question_regex=judge.question_regex,
                   answer_regex=judge.answer_regex, check_twice_swap=judge.check_twice_swap,
                   reward_if_swap_fails=judge.reward_if_swap_fails, use_per_record_regex=judge.use_per_record_regex,
                   extraction_length_threshold=judge.extraction_length_threshold,
                   check_full_generation_on_fail=judge.check_full_generation_on_fail,
                   reward_if_full_generation_succeeds=judge.reward_if_full_generation_succeeds)

    def judge_prompt(self, question: str, expected_answer: str, generated_answer: str) -> str:
        """The judge's generation prompt: the template's user turn, the assistant header and the mode's prefix."""
        content = self.template.format(question=question, expected_answer=expected_answer,
                                       generated_answer=generated_answer)
        return render_prompt([{"role": "user", "content": content}], thinking=self.model.thinking)

    def _verdicts_of(self, triples: Sequence[tuple[str, str, str]]) -> list[str]:
        """One verdict per ``(question, expected, generated)``, counted in ``take_verdict_counts``."""
        if not triples:
            return []
        prompts = [self.model.tokenizer.encode(self.judge_prompt(*triple)) for triple in triples]
        verdicts = [parse_verdict(t, self.equal_label, self.not_equal_label) for t in self.judge_texts(prompts)]
        self.count_verdicts(len(verdicts), verdicts.count("unparsed"))
        return verdicts

    def validate_example(self, where: str, sample: dict) -> None:
        metadata = sample.get("template_metadata")
        if metadata is None:
            return
        if not isinstance(metadata, dict):
            raise ValueError(f"{where}['template_metadata'] must be an object, got {metadata!r:.60}")
        regex = metadata.get("output_regex")
        if regex is not None and not isinstance(regex, str):
            raise ValueError(f"{where}['template_metadata']['output_regex'] must be a string, got {regex!r:.60}")
        compile_regex(regex or "", f"{where}['template_metadata']['output_regex']")

    def _own_regex(self, sample: dict) -> re.Pattern | None:
        """The row's ``template_metadata.output_regex`` (with ``use_per_record_regex``), else None."""
        if not self.use_per_record_regex:
            return None
        return compile_regex((sample.get("template_metadata") or {}).get("output_regex") or "", "output_regex")

    def verify_batch(self, samples: Sequence[dict], answers: Sequence[str]) -> list[Verification]:
        questions = [last_match(last_user_text(s["messages"]), self.question_regex) for s in samples]
        expected = [str(s["expected_answer"]) for s in samples]
        own = [self._own_regex(s) for s in samples]
        # A row with its own regex and a long reference answer: judged on the whole answer, once.
        whole_only = [regex is not None and 0 < self.extraction_length_threshold < len(reference)
                      for regex, reference in zip(own, expected)]
        judged = [last_match(a, None if whole else regex if regex is not None else self.answer_regex)
                  for a, regex, whole in zip(answers, own, whole_only)]
        asked = [i for i, answer in enumerate(judged) if answer]
        first = dict(zip(asked, self._verdicts_of([(questions[i], expected[i], judged[i]) for i in asked])))
        swapped, rescued = {}, {}
        if self.check_twice_swap:
            again = [i for i in asked if first[i] == "equal" and not whole_only[i]]
            swapped = dict(zip(again, self._verdicts_of([(questions[i], judged[i], expected[i]) for i in again])))
        if self.check_full_generation_on_fail:
            again = [i for i in asked if first[i] != "equal" and own[i] is not None and not whole_only[i]]
            rescued = dict(zip(again, self._verdicts_of([(questions[i], expected[i], answers[i].strip())
                                                          for i in again])))
        results = []
        for i, answer in enumerate(judged):
            if i not in first:
                results.append(Verification(0.0, "empty answer", False, {"judged_answer": answer}))
                continue
            info = {"judge_verdict": first[i], "judged_answer": answer}
            if i in rescued:
                info["judge_rescue_verdict"] = rescued[i]
                reward = self.reward_if_full_generation_succeeds if rescued[i] == "equal" else 0.0
                results.append(Verification(reward, f"judge verdict: {first[i]}; on the whole answer: {rescued[i]}",
                                            True, info))
            elif first[i] != "equal":
                results.append(Verification(0.0, f"judge verdict: {first[i]}", True, info))
            elif i in swapped and swapped[i] != "equal":
                info["judge_swap_verdict"] = swapped[i]
                results.append(Verification(self.reward_if_swap_fails, f"swapped judge verdict: {swapped[i]}",
                                            True, info))
            else:
                info.update({"judge_swap_verdict": swapped[i]} if i in swapped else {})
                results.append(Verification(1.0, "", True, info))
        return results
