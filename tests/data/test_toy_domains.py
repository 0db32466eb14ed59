"""Toy domains: determinism, disjoint splits, schema, and reference answers checked independently."""
import json
import random
import re

import pytest

from nemocascade.data import schema
from nemocascade.data.chat_template import assistant_completion, render
from nemocascade.data.tokenizer import load_tokenizer
from nemocascade.data.toy import DOMAINS, chat, common, instruct, judge, toy_examples, toy_sft_examples
from nemocascade.rewards import get_reward_fn, pairwise_judge

N = 150


@pytest.fixture(scope="module")
def sft():
    return {domain: toy_sft_examples(domain, "train", N, seed=3) for domain in DOMAINS}


def _prompt(example):
    return example["messages"][0]["content"]


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_deterministic_and_seed_dependent(domain):
    a = toy_examples(domain, "train", 20, seed=5)
    assert a == toy_examples(domain, "train", 20, seed=5)
    assert [_prompt(e) for e in a] != [_prompt(e) for e in toy_examples(domain, "train", 20, seed=6)]


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_splits_never_overlap_and_prompts_are_distinct(domain):
    train = {_prompt(e) for seed in (0, 1) for e in toy_examples(domain, "train", 200, seed=seed)}
    heldout = toy_examples(domain, "heldout", 40, seed=0)
    assert len({_prompt(e) for e in heldout}) == 40 and len({e["id"] for e in heldout}) == 40
    assert not train & {_prompt(e) for e in heldout}


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_schema_and_sft_pairs(domain, sft):
    prompts = toy_examples(domain, "train", N, seed=3)
    for prompt, example in zip(prompts, sft[domain]):
        schema.validate_example(prompt, "t", prompt_only=True)
        schema.validate_example(example, "t", needs_assistant=True)
        # tool_use: the call, its result, the answer; swe: read, edit, run the tests (each with its result), answer
        reference_turns = {"tool_use": 3, "swe": 7}.get(domain, 1)
        assert example["messages"][:-reference_turns] == prompt["messages"]
        assert [m["role"] for m in example["messages"][-reference_turns:]] == (["assistant", "tool"] * 3 + [
            "assistant"])[-reference_turns:]
        assert {k: v for k, v in example.items() if k != "messages"} == {k: v for k, v in prompt.items()
                                                                          if k != "messages"}
        reply = example["messages"][-1]
        assert reply["role"] == "assistant" and (reply["content"] or reply.get("tool_calls")) and reply["reasoning"]


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_conversations_are_short(domain, sft):
    tok = load_tokenizer("")
    lengths = [len(tok.encode(render(e["messages"], tools=e.get("tools"), thinking=thinking))) for e in sft[domain]
               for thinking in (True, False)]
    # judge: two answers too; structured_output: the schema; tool_call: the tools block (the tiny model has 512)
    # long_context: a document of up to 12 records; answer_judge: the judge's template; tool_use: the tools block,
    # a call, its result and the answer (in one SFT row of 512 tokens); swe: three tools, four turns (one row of 1024)
    limit = {"judge": 200, "structured_output": 220, "tool_call": 460, "long_context": 200,
             "answer_judge": 200, "tool_use": 512, "swe": 1024}.get(domain, 160)
    assert max(lengths) <= limit, max(lengths)


# ------------------------------------------------------------------------------------------------ math
def _solve_word_problem(prompt: str) -> tuple[int, int]:
    """Independent reading of the problem text: returns (answer, number of operations)."""
    sentences = re.findall(r"[^.?]+[.?]", prompt)
    value = int(re.search(r"has (\d+) ", sentences[0]).group(1))
    assert 2 <= value <= 12
    ops = 0
    for sentence in sentences[1:-1]:
        number = int(re.search(r"(\d+)", sentence).group(1))
        if "times as many" in sentence:
            assert number == 2 and value <= 10
            value *= number
        elif "more" in sentence:
            value += number
        else:
            value -= number
        assert "times as many" in sentence or 1 <= number <= 5
        ops += 1
        assert 1 <= value <= 20
    return value, ops


def test_math_answers(sft):
    for example in sft["math"]:
        answer, ops = _solve_word_problem(_prompt(example))
        assert example["answer"] == str(answer) and ops in (2, 3)
        content = example["messages"][1]["content"]
        assert content.endswith(f"The answer is \\boxed{{{answer}}}.")
        for a, op, b, c in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)\.", content):
            assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c)


# ------------------------------------------------------------------------------------------------ code
def _run_tests(solution_code: str, tests) -> list[bool]:
    results = []
    for test in tests:
        namespace = {}
        exec(solution_code, namespace)
        try:
            exec(test, namespace)
            results.append(True)
        except AssertionError:
            results.append(False)
    return results


INDEPENDENT_CODE = [  # prompt pattern -> function of (argument, k)
    (r"returns (\w+) plus (\d+)\.$", lambda x, k: x + k),
    (r"returns (\w+) minus (\d+)\.$", lambda x, k: x - k),
    (r"returns (\w+) times (\d+)\.$", lambda x, k: x * k),
    (r"returns True if (\w+) is divisible by (\d+), else False\.$", lambda x, k: x % k == 0),
    (r"returns the string (\w+) repeated (\d+) times\.$", lambda x, k: x * k),
    (r"returns the string (\w+) reversed\.$()", lambda x, _: x[::-1]),
    (r"returns the sum of the list (\w+)\.$()", lambda x, _: sum(x)),
]


def test_code_reference_solutions_pass_and_tests_discriminate(sft):
    checked = 0
    for example in sft["code"]:
        solution = re.fullmatch(r"```python\n(.*)```", example["messages"][1]["content"], re.DOTALL).group(1)
        assert f"def {example['entry_point']}(" in solution
        assert len(example["tests"]) == 3 and all(t.startswith(f"assert {example['entry_point']}(")
                                                  for t in example["tests"])
        assert all(_run_tests(solution, example["tests"]))
        arg = re.search(r"def \w+\((\w+)\)", solution).group(1)
        wrong = f"def {example['entry_point']}({arg}):\n    return None\n"
        assert not any(_run_tests(wrong, example["tests"]))
        for pattern, expected in INDEPENDENT_CODE:
            match = re.search(pattern, _prompt(example))
            if match:
                k = int(match.group(2)) if match.group(2) else None
                for test in example["tests"]:
                    call, value = re.fullmatch(r"assert \w+\((.*)\) == (.*)", test).groups()
                    assert eval(value) == expected(eval(call), k)
                checked += 1
    assert checked > N // 3


# -------------------------------------------------------------------------------------------------- if
def _sentence_count(text):
    return len([s for s in re.split(r"(?<=[.!?])\"?\s+", text.strip()) if re.search(r"\w", s)])


IF_CHECKS = {  # independent implementations of the constraints the toy domain uses
    "change_case:english_lowercase": lambda r: r == r.lower() and any(c.isalpha() for c in r),
    "change_case:english_capital": lambda r: r == r.upper() and any(c.isalpha() for c in r),
    "keywords:existence": lambda r, keywords: all(k.lower() in r.lower() for k in keywords),
    "keywords:forbidden_words": lambda r, forbidden_words: not any(
        w.lower() in re.findall(r"\w+", r.lower()) for w in forbidden_words),
    "length_constraints:number_words": lambda r, num_words, relation: (
        len(re.findall(r"\w+", r)) < num_words if relation == "less than" else len(re.findall(r"\w+", r)) >= num_words),
    "length_constraints:number_sentences": lambda r, num_sentences, relation: (
        relation == "exactly" and _sentence_count(r) == num_sentences),
    "punctuation:no_comma": lambda r: "," not in r,
    "startend:end_checker": lambda r, end_phrase: r.strip().lower().endswith(end_phrase.lower()),
    "startend:quotation": lambda r: r.startswith('"') and r.endswith('"'),
    "detectable_format:title": lambda r: re.search(r"<<[^\n]+>>", r) is not None,
    "detectable_format:number_bullet_lists": lambda r, num_bullets: len(
        [line for line in r.split("\n") if line.startswith("* ")]) == num_bullets,
    "detectable_content:postscript": lambda r, postscript_marker: re.search(
        r"^p\.s\. ", r.lower(), re.MULTILINE) is not None,
}


def test_if_reference_responses_follow_every_instruction(sft):
    seen = set()
    for example in sft["if"] + toy_sft_examples("if", "train", 600, seed=9):
        response = example["messages"][1]["content"]
        assert 1 <= len(example["instruction_id_list"]) == len(example["kwargs"]) <= 2
        for instruction_id, kwargs in zip(example["instruction_id_list"], example["kwargs"]):
            assert IF_CHECKS[instruction_id](response, **kwargs), (instruction_id, kwargs, response)
            seen.add(instruction_id)
    assert seen == set(IF_CHECKS)


def test_if_word_bank_keeps_every_constraint_feasible():
    for topic, sentences in instruct.TOPICS.items():
        assert all(len(re.findall(r"\w+", s)) < instruct.MAX_WORDS_RANGE[0] for s in sentences)
        candidates = instruct.forbidden_candidates(topic)
        assert candidates
        for word in candidates:
            kept = [s for s in sentences if word not in re.findall(r"\w+", s.lower())]
            assert len(kept) == len(sentences) - 1
            assert len(re.findall(r"\w+", " ".join(kept))) >= instruct.MIN_WORDS_RANGE[1]


# ------------------------------------------------------------------------------------------------ chat
def test_chat_preferences(sft):
    kinds = set()
    for example in sft["chat"]:
        chosen, rejected, kind = example["chosen"], example["rejected"], example["rejected_kind"]
        kinds.add(kind)
        assert example["messages"][1]["content"] == chosen != rejected
        assert len(chosen.split()) <= 12
        if kind == "rude":
            assert rejected in chat.RUDE
        elif kind == "repetitive":
            assert rejected == " ".join([chosen] * 3)
        elif kind == "too_long":
            assert chosen in rejected and len(rejected.split()) > 4 * len(chosen.split())
        question = _prompt(example)
        if m := re.fullmatch(r"Which number is bigger, (\d+) or (\d+)\?", question):
            assert chosen.startswith(f"{max(int(m.group(1)), int(m.group(2)))} is bigger")
        if m := re.fullmatch(r"What number comes after (\d+)\?", question):
            assert chosen.endswith(f" {int(m.group(1)) + 1}.")
    assert kinds == set(chat.REJECTED_KINDS)


# ------------------------------------------------------------------------------------------------ judge
def test_judge_transcripts_show_both_answers_and_the_verdict_that_prefers_the_chosen_one(sft):
    chat_pairs = {_prompt(e): e for e in toy_sft_examples("chat", "train", 2000, seed=3)}
    positions, same_question = set(), 0
    for example in sft["judge"]:
        user, first, second, reply = example["messages"]
        assert (user["role"], first["role"], second["role"]) == ("user", "response_1", "response_2")
        position = example["chosen_position"]
        positions.add(position)
        chosen, rejected = (first, second) if position == 1 else (second, first)
        pair = chat_pairs.get(user["content"])
        if pair is not None:                 # the same question drawn by the chat domain: the same chosen answer
            assert chosen["content"] == pair["chosen"]
            same_question += 1
        assert chosen["content"] != rejected["content"]
        verdict = pairwise_judge.parse_judgement(reply["content"])   # the judge's own parser reads it
        better_first = verdict.score_1 > verdict.score_2 and verdict.ranking < pairwise_judge.NEUTRAL_RANKING
        assert verdict.parsed and better_first == (position == 1)
        assert reply["content"] == judge.verdict(position)
    assert positions == {1, 2} and same_question > 10
    heldout_questions = {_prompt(e) for e in toy_examples("chat", "heldout", 40, seed=0)}
    assert not heldout_questions & {_prompt(e) for e in toy_examples("judge", "train", 400, seed=0)}


# ------------------------------------------------------------------------------------------ bad inputs
def test_long_context_references_hold_the_asked_record(sft):
    """The document read independently: its records (each name once), the one the question asks about; the
    reference answer is that record's sentence and the expected answer its count."""
    for example in sft["long_context"]:
        prompt, reply = example["messages"][0]["content"], example["messages"][-1]
        document, question = re.fullmatch(r"<text>\n(.*)\n</text>\n\nQUESTION: (.*)", prompt, re.DOTALL).groups()
        records = [re.fullmatch(r"(\w+) has (\d+) (\w+)\.", line).groups() for line in document.split("\n")]
        assert 2 <= len(records) <= 4 and len({name for name, _, _ in records}) == len(records)
        item, name = re.fullmatch(r"How many (\w+) does (\w+) have\?", question).groups()
        (count,) = [c for n, c, i in records if n == name and i == item]
        assert example["expected_answer"] == count and 10 <= int(count) <= 99
        assert reply["content"] == f"{name} has {count} {item}."


def test_answer_judge_verdicts_follow_the_rule(sft):
    """The candidate is a count; it agrees exactly when it is the expected count, and the verdict is the label of
    that rule; both verdicts and every kind of miss are drawn, each kind what it says (a near miss is 1, 2 or 10
    off; a reordered count has the expected digits reversed)."""
    verdicts, kinds = [], set()
    for example in sft["answer_judge"]:
        prompt = example["messages"][0]["content"]
        expected, candidate = re.search(r"QUESTION: How many \w+ does \w+ have\?\nANSWER A: (\d+)\n"
                                        r"ANSWER B: (\d+)$", prompt).groups()
        agrees = candidate == expected
        assert example["agrees"] == agrees and (example["candidate_kind"] == "right") == agrees
        assert example["messages"][-1]["content"] == ("[[A=B]]" if agrees else "[[A!=B]]")
        if example["candidate_kind"] == "near_miss":
            assert abs(int(candidate) - int(expected)) in (1, 2, 10)
        if example["candidate_kind"] == "reordered":
            assert candidate == expected[::-1]
        verdicts.append(agrees)
        kinds.add(example["candidate_kind"])
    assert 0.35 < sum(verdicts) / len(verdicts) < 0.65
    assert kinds == {"right", "near_miss", "reordered", "other_record"}


def test_bad_requests():
    with pytest.raises(ValueError, match="unknown toy domain 'poetry'"):
        toy_examples("poetry", "train", 3)
    with pytest.raises(ValueError, match="split must be one of"):
        toy_examples("math", "test", 3)
    with pytest.raises(ValueError, match="non-negative int"):
        toy_examples("math", "train", -1)


def test_exhausted_domain_says_so():
    def draw(rng: random.Random):
        return common.ToyTask(prompt=f"q{rng.randint(0, 9)}", fields={}, reference={})
    with pytest.raises(ValueError, match=r"produced only \d+ distinct train prompts"):
        common.generate_tasks("tiny", draw, "train", 50, seed=0)


# ------------------------------------------------------------------------- the multi-domain RL mix
def test_mcqa_references_pick_the_option_holding_the_sum(sft):
    for example in sft["mcqa"]:
        a, b = map(int, re.match(r"What is (\d+) \+ (\d+)\?", _prompt(example)).groups())
        shown = dict(re.findall(r"^([A-D]): (\d+)$", _prompt(example), re.MULTILINE))
        assert len(shown) == 4 and sorted(shown.values()) == sorted({v for o in example["options"] for v in o.values()})
        assert [k for k, v in shown.items() if int(v) == a + b] == [example["expected_answer"]]
        assert example["messages"][-1]["content"] == f"\\boxed{{{example['expected_answer']}}}"


def test_tool_call_references_call_convert_with_the_asked_arguments(sft):
    for example in sft["tool_call"]:
        amount, source, target = re.search(r"(\d+) ([A-Z]{3}) (?:to|in) ([A-Z]{3})", _prompt(example)).groups()
        call = {"name": "convert", "arguments": {"amount": int(amount), "source": source, "target": target}}
        assert example["messages"][-1]["tool_calls"] == [call] == example["ground_truth"]
        assert [t["name"] for t in example["tools"]] == ["convert"] and source != target


def test_swe_prompts_state_what_the_module_computes_and_the_reference_edit_fixes_it(sft):
    """Read independently: the module, run, returns what the prompt says it does; after the reference edit it
    returns what the prompt asks for, and the other function is unchanged."""
    for example in sft["swe"]:
        module, name, a, b, wrong, right, path = re.fullmatch(
            r"(\w+)\.(\w+)\((\d+), (\d+)\) returns (-?\d+), but it should return (-?\d+)\. Fix (\S+)\.",
            _prompt(example)).groups()
        [source] = example["repo"].values()
        assert list(example["repo"]) == [path] == [f"{module}.py"] and source.count("def ") == 2
        edit = example["messages"][3]["tool_calls"][0]
        assert edit["name"] == "replace_in_file" and edit["arguments"]["path"] == path
        fixed = source.replace(edit["arguments"]["old"], edit["arguments"]["new"])
        before, after = {}, {}
        exec(source, before)
        exec(fixed, after)
        assert before[name](int(a), int(b)) == int(wrong) != int(right) == after[name](int(a), int(b))
        other = next(n for n in after if n not in ("__builtins__", name))
        assert before[other](3, 5) == after[other](3, 5)


def test_structured_output_references_hold_the_schema_keys_and_the_stated_values(sft):
    for example in sft["structured_output"]:
        name, age, city = re.match(r"(\w+) is (\d+) and lives in (\w+)\.", _prompt(example)).groups()
        keys = list(json.loads(example["schema"])["properties"])
        answer = json.loads(example["messages"][-1]["content"])
        assert list(answer) == keys and 2 <= len(keys) <= 3
        assert answer == {k: v for k, v in {"name": name, "age": int(age), "city": city}.items() if k in keys}


@pytest.mark.parametrize("domain", ["mcqa", "tool_call", "structured_output"])
def test_references_earn_the_full_reward_and_near_misses_do_not(domain, sft):
    fn = get_reward_fn(domain)
    reference = [{**e, "response": assistant_completion(e["messages"][-1], thinking=True)} for e in sft[domain]]
    values, infos = fn.score(reference)
    assert values.min() == 1.0, [i["reason"] for i in infos if i["reason"]][:3]
    shuffled = [{**r, "response": reference[(i + 1) % len(reference)]["response"]} for i, r in enumerate(reference)]
    assert fn.score(shuffled)[0].mean() < 0.5   # another row's answer is mostly wrong here
