"""The answer judge (long-context RL's reward): verdict parsing (first label wins, labels that contain each other),
the template and regex checks, what the judge is shown (question and answer extraction), rewards with a scripted
judge (a rule that reads the judge prompt back) including the swapped second check, and the model-backed path."""
import re

import numpy as np
import pytest
from judge_testing import CFG, TOKENIZER, save_judge

from nemocascade import configs
from nemocascade import data as data_lib
from nemocascade.data.judge_prompts import ANSWER_JUDGE_TEMPLATE
from nemocascade.data.toy import lookup
from nemocascade.rewards import answer_judge as aj
from nemocascade.rewards import get_reward_fn
from nemocascade.rewards.judge_model import JudgeModel


# ------------------------------------------------------------------------------------------ verdicts
@pytest.mark.parametrize("text,verdict", [
    ("[[A=B]]", "equal"),
    ("They agree. [[A=B]]", "equal"),
    ("[[A!=B]]", "not_equal"),
    ("First [[A!=B]], then [[A=B]]", "not_equal"),                  # the first label counts
    ("<think>[[A=B]] surely</think>No: [[A!=B]]", "not_equal"),     # not inside the reasoning
    ("<think>[[A=B]]", "unparsed"),                                 # reasoning never closed: no answer
    ("I cannot tell.", "unparsed"),
    ("[[A = B]]", "unparsed"),
])
def test_parse_verdict(text, verdict):
    assert aj.parse_verdict(text, "[[A=B]]", "[[A!=B]]") == verdict


def test_labels_that_contain_each_other():
    """NeMo Gym's long-context judge labels: ``CORRECT`` is inside ``INCORRECT``."""
    assert aj.parse_verdict("INCORRECT", "CORRECT", "INCORRECT") == "not_equal"
    assert aj.parse_verdict("CORRECT", "CORRECT", "INCORRECT") == "equal"
    assert aj.parse_verdict("It is CORRECT, not INCORRECT.", "CORRECT", "INCORRECT") == "equal"
    assert aj.parse_verdict("EQUAL", "EQUAL", "EQUALITY FAILS") == "equal"
    assert aj.parse_verdict("EQUALITY FAILS", "EQUAL", "EQUALITY FAILS") == "not_equal"   # the longer, same place


# ------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("template,message", [
    ("{question} {expected_answer}", r"lacks \{generated_answer\}"),
    ("{expected_answer} {generated_answer} {answer}", r"has the field \{answer\}; allowed"),
    ("{expected_answer:>9} {generated_answer}", r"has the field \{expected_answer:>9\}"),
    ("{expected_answer!r} {generated_answer}", r"has the field \{expected_answer!r\}"),
    ("{expected_answer} {generated_answer} {", "is not a valid format string"),
])
def test_a_bad_template_is_refused(template, message):
    with pytest.raises(ValueError, match=message):
        aj.check_template(template)


def test_settings_are_checked():
    model = JudgeModel(None, CFG, TOKENIZER)
    aj.check_template("{{literal}} {expected_answer} vs {generated_answer}")        # no question is fine
    with pytest.raises(ValueError, match="two different non-empty strings"):
        aj.AnswerJudgeFn(model, equal_label="SAME", not_equal_label="SAME")
    with pytest.raises(ValueError, match=r"rl.judge.question_regex='\(' is not a valid regular expression"):
        aj.AnswerJudgeFn(model, question_regex="(")
    with pytest.raises(ValueError, match="is scored by an LLM judge against the reference answer"):
        get_reward_fn("long_context")


def test_last_match():
    question = aj.compile_regex(lookup.QUESTION_REGEX, "q")
    document = "<text>\nKai has 3 pens.\n</text>\n\nQUESTION: How many pens does Kai have?"
    assert aj.last_match(document, question) == "How many pens does Kai have?"
    # MULTILINE and DOTALL, as NeMo Gym compiles these regexes: ``.*`` runs on over line ends
    assert aj.last_match("QUESTION: one\nmore", question) == "one\nmore"
    # NeMo Gym's lc_judge regex: the second alternative's group when the first is empty
    lc = aj.compile_regex(r"^QUESTION:\s*(.*)$|</text>\n\n(.*)$", "q")
    assert aj.last_match("<text>\nfacts\n</text>\n\nWho wins?", lc) == "Who wins?"
    assert aj.last_match("  no question marker  ", lc) == "no question marker"        # no match: all of it
    assert aj.last_match("Answer: 12 ... Answer: 13", aj.compile_regex(r"Answer: \d+", "a")) == "Answer: 13"
    assert aj.last_match(" text ", None) == "text"


# ------------------------------------------------------------------------------------------ scripted judge
def _shown(prompt_text: str) -> tuple[str, str, str]:
    """(question, answer A, answer B) read back from a judge prompt of the default template."""
    found = re.search(r"QUESTION: (.*)\nANSWER A: (.*)\nANSWER B: (.*?)<\|im_end\|>", prompt_text, re.DOTALL)
    return found.group(1), found.group(2), found.group(3)


class DigitsJudge(aj.AnswerJudgeFn):
    """A scripted judge: the answers agree when they hold the same numbers. With ``strict_order`` it only says so
    when answer A is a bare number (so the swapped check of a sentence answer fails)."""

    def __init__(self, strict_order=False, **options):
        super().__init__(JudgeModel(None, CFG, TOKENIZER), **options)
        self.strict_order, self.shown = strict_order, []

    def judge_texts(self, prompts):
        texts = []
        for ids in prompts:
            question, a, b = _shown(TOKENIZER.decode(ids))
            self.shown.append((question, a, b))
            agree = re.findall(r"\d+", a) == re.findall(r"\d+", b) and (not self.strict_order or a.isdigit())
            texts.append("<think>compare</think>" + ("[[A=B]]" if agree else "[[A!=B]]"))
        return texts


def _sample(response, expected="482", question="How many pens does Kai have?", metadata=None):
    user = f"<text>\nKai has 482 pens.\nMia has 37 cards.\n</text>\n\nQUESTION: {question}"
    row = {"messages": [{"role": "user", "content": user}], "expected_answer": expected, "response": response}
    return row if metadata is None else {**row, "template_metadata": metadata}


def test_rewards_from_a_scripted_judge():
    judge = DigitsJudge(question_regex=lookup.QUESTION_REGEX)
    samples = [_sample("Kai has 482 pens."), _sample("<think>look it up</think>482"), _sample("Kai has 483 pens."),
               _sample("<think>never closed"), _sample("<think>x</think>   "), _sample("37", expected=37)]
    rewards, infos = judge.score(samples)
    np.testing.assert_array_equal(rewards, [1, 1, 0, 0, 0, 1])
    # the judge saw the question without the document, the expected answer, and the final answer only
    assert judge.shown == [("How many pens does Kai have?", "482", "Kai has 482 pens."),
                           ("How many pens does Kai have?", "482", "482"),
                           ("How many pens does Kai have?", "482", "Kai has 483 pens."),
                           ("How many pens does Kai have?", "37", "37")]
    assert [info.get("judge_verdict") for info in infos] == ["equal", "equal", "not_equal", None, None, "equal"]
    assert infos[3]["reason"] == "reasoning block not closed" and infos[4]["reason"] == "empty answer"
    assert infos[2]["reason"] == "judge verdict: not_equal"
    assert judge.take_verdict_counts() == (4, 0) and judge.take_verdict_counts() == (0, 0)
    whole = DigitsJudge()                                           # no question_regex: the whole user turn
    whole.score([_sample("482")])
    assert whole.shown[0][0].startswith("<text>\nKai has 482 pens.")


def test_the_swapped_check_of_an_equal_verdict():
    judge = DigitsJudge(strict_order=True, check_twice_swap=True, reward_if_swap_fails=-1.0,
                        question_regex=lookup.QUESTION_REGEX)
    rewards, infos = judge.score([_sample("482"), _sample("Kai has 482 pens."), _sample("481")])
    # "482": equal both ways; the sentence: equal, then not equal swapped (A is not a bare number); "481": not
    # equal, so no second check
    np.testing.assert_array_equal(rewards, [1.0, -1.0, 0.0])
    assert judge.shown[3:] == [("How many pens does Kai have?", "482", "482"),
                               ("How many pens does Kai have?", "Kai has 482 pens.", "482")]
    assert [info.get("judge_swap_verdict") for info in infos] == ["equal", "not_equal", None]
    assert judge.take_verdict_counts() == (5, 0)


def test_unparsed_verdicts_are_not_equal_and_counted():
    class MumblingJudge(DigitsJudge):
        def judge_texts(self, prompts):
            return ["Hard to say."] * len(prompts)

    judge = MumblingJudge()
    rewards, infos = judge.score([_sample("482"), _sample("1")])
    np.testing.assert_array_equal(rewards, [0.0, 0.0])
    assert [info["judge_verdict"] for info in infos] == ["unparsed", "unparsed"]
    assert judge.take_verdict_counts() == (2, 2)


def test_answer_regex_picks_what_the_judge_sees():
    judge = DigitsJudge(answer_regex=r"Final answer: (.*)$")
    judge.score([_sample("Kai had 100 once.\nFinal answer: 482"), _sample("no marker 482")])
    assert [shown[2] for shown in judge.shown] == ["482", "no marker 482"]


def test_a_rows_own_regex_long_references_and_the_rescue_pass():
    """NeMo Gym's per-row settings: a row's ``template_metadata.output_regex`` replaces ``answer_regex``; such a
    row judged not equal is judged again on its whole answer for 0.5; with a reference over 120 characters it is
    judged on its whole answer once (no swap check, no rescue)."""
    own = {"output_regex": r"ANSWER: (\w+)"}
    long_reference = "482, " + "as the document says " * 6
    assert len(long_reference) > 120
    judge = DigitsJudge(answer_regex=r"Final answer: (.*)$", check_twice_swap=True,
                        question_regex=lookup.QUESTION_REGEX)
    rows = [_sample("ANSWER: 482", metadata=own),                   # its regex: "482", equal both ways
            _sample("ANSWER: about 482", metadata=own),             # "about": not equal; whole answer: equal
            _sample("ANSWER: about 481", metadata=own),             # not equal twice
            _sample("Final answer: 481", metadata={}),               # no own regex: no rescue
            _sample("ANSWER: about 482", expected=long_reference, metadata=own),   # whole answer, once
            _sample("ANSWER: 481", expected=long_reference, metadata=own)]
    rewards, infos = judge.score(rows)
    np.testing.assert_array_equal(rewards, [1.0, 0.5, 0.0, 0.0, 1.0, 0.0])
    assert [info["judged_answer"] for info in infos] == ["482", "about", "about", "481", "ANSWER: about 482",
                                                         "ANSWER: 481"]
    assert [info.get("judge_rescue_verdict") for info in infos] == [None, "equal", "not_equal", None, None, None]
    assert [info.get("judge_swap_verdict") for info in infos] == ["equal", None, None, None, None, None]
    question = "How many pens does Kai have?"
    assert judge.shown[6:] == [(question, "482", "482"),                         # the swap check of row 0
                               (question, "482", "ANSWER: about 482"), (question, "482", "ANSWER: about 481")]
    assert judge.take_verdict_counts() == (9, 0)
    # Off: the row's regex is ignored (the global answer_regex does not match: the whole answer is judged).
    plain = DigitsJudge(answer_regex=r"Final answer: (.*)$", use_per_record_regex=False)
    rewards, infos = plain.score(rows[:2])
    np.testing.assert_array_equal(rewards, [1.0, 1.0])
    assert [info["judged_answer"] for info in infos] == ["ANSWER: 482", "ANSWER: about 482"]
    no_rescue = DigitsJudge(check_full_generation_on_fail=False)
    assert no_rescue.score(rows[1:2])[0].tolist() == [0.0] and len(no_rescue.shown) == 1


def test_a_rows_bad_template_metadata_is_refused_before_any_rollout():
    judge = DigitsJudge()
    row = {"id": "x", "messages": [], "expected_answer": "1"}
    judge.check_examples([{**row, "template_metadata": {"output_regex": r"(\d+)"}}])
    with pytest.raises(ValueError, match=r"example 'x' \('long_context' reward\): the row\['template_metadata'\]"
                                         r"\['output_regex'\]='\(' is not a valid regular expression"):
        judge.check_examples([{**row, "template_metadata": {"output_regex": "("}}])
    with pytest.raises(ValueError, match=r"\['template_metadata'\] must be an object"):
        judge.check_examples([{**row, "template_metadata": "ANSWER"}])
    with pytest.raises(ValueError, match="must be >= 0"):
        DigitsJudge(extraction_length_threshold=-1)


def test_a_row_without_an_expected_answer_is_refused_before_any_rollout():
    judge = DigitsJudge()
    rows = data_lib.toy_examples("long_context", "train", 3)
    judge.check_examples(rows)
    with pytest.raises(ValueError, match=r"example 'x' \('long_context' reward\): the row has no field "
                                         r"'expected_answer'"):
        judge.check_examples([{"id": "x", "messages": []}])


# ------------------------------------------------------------------------------------------ model-backed
def test_the_model_backed_judge(tmp_path):
    """From a checkpoint with its settings; the judge prompt is the template's user turn (the toy judge
    transcripts render the same ids); its texts are the model's (here a random one: its verdicts do not parse)."""
    directory = save_judge(tmp_path / "judge")
    settings = configs.judge_config(checkpoint=directory, max_new_tokens=6, question_regex=lookup.QUESTION_REGEX,
                                    check_twice_swap=True, reward_if_swap_fails=0.25, equal_label="SAME",
                                    not_equal_label="DIFFERENT", extraction_length_threshold=0,
                                    reward_if_full_generation_succeeds=1.0)
    judge = aj.AnswerJudgeFn.from_settings(settings)
    assert judge.template == ANSWER_JUDGE_TEMPLATE and judge.check_twice_swap and judge.reward_if_swap_fails == 0.25
    assert judge.use_per_record_regex and judge.check_full_generation_on_fail
    assert (judge.extraction_length_threshold, judge.reward_if_full_generation_succeeds) == (0, 1.0)
    assert (judge.equal_label, judge.not_equal_label) == ("SAME", "DIFFERENT")
    example = data_lib.toy_sft_examples("answer_judge", "train", 1)[0]
    user, verdict = example["messages"]
    ids, mask = data_lib.render_tokens(example["messages"], TOKENIZER, thinking=False)
    question, a, b = re.search(r"QUESTION: (.*)\nANSWER A: (.*)\nANSWER B: (.*)", user["content"]).groups()
    prompt = TOKENIZER.encode(judge.judge_prompt(question, a, b))
    assert ids[:len(prompt)] == prompt and not any(mask[:len(prompt)]) and all(mask[len(prompt):-1])
    rewards, infos = judge.score([_sample("482"), _sample("7")])
    texts = judge.model.generate([TOKENIZER.encode(judge.judge_prompt("How many pens does Kai have?", "482", r))
                                  for r in ("482", "7")])
    assert [info["judge_verdict"] for info in infos] == [aj.parse_verdict(t, "SAME", "DIFFERENT") for t in texts]
