"""The reward-fn contract per domain: batch scoring, reasons, thinking removal, shaping, validation, registry."""
import numpy as np
import pytest

from nemocascade import rewards
from nemocascade.rewards import registry
from nemocascade.sandbox.code_sandbox import SandboxLimits


def _math(response, answer="3/4", **extra):
    return {"domain": "math", "id": "m", "messages": [{"role": "user", "content": "?"}], "answer": answer,
            "response": response, **extra}


def _if(response, ids, kwargs, **extra):
    return {"domain": "if", "id": "i", "messages": [], "instruction_id_list": ids, "kwargs": kwargs,
            "response": response, **extra}


def _code(response, **extra):
    return {"domain": "code", "id": "c", "messages": [], "entry_point": "add",
            "tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"], "response": response, **extra}


def test_split_thinking():
    split = rewards.split_thinking("<think>hmm \\boxed{1}</think> The answer is \\boxed{2}")
    assert (split.answer, split.thinking, split.closed) == ("The answer is \\boxed{2}", "hmm \\boxed{1}", True)
    assert rewards.split_thinking("reasoning opened by the prompt</think>final").answer == "final"
    assert not rewards.split_thinking("<think>never closed \\boxed{2}").closed
    assert rewards.split_thinking("plain answer").answer == "plain answer"
    assert not rewards.split_thinking("plain answer", require_thinking=True).closed


def test_math_reward_scores_a_batch_with_reasons():
    fn = rewards.get_reward_fn("math")
    samples = [_math("<think>maybe \\boxed{1/2}</think>So \\boxed{\\dfrac{3}{4}}."),
               _math("<think>I think \\boxed{3/4} but I ran out of"),
               _math("It is 0.75 but I forgot the box."),
               _math("\\boxed{0.75}\n\nWait, actually \\boxed{0.7}"),
               _math("\\boxed{0.75}", answer="0.75")]
    values, infos = fn.score(samples)
    assert values.dtype == np.float32 and values.shape == (5,)
    np.testing.assert_array_equal(values, [1, 0, 0, 0, 1])
    assert [i["reason"] for i in infos][0] == "" and infos[0]["extracted"] == "\\dfrac{3}{4}"
    assert infos[1]["reason"] == "reasoning block not closed"
    assert "no \\boxed{} answer" in infos[2]["reason"] and not infos[2]["format_ok"]
    assert infos[3]["reason"] == "not equivalent to the reference" and infos[3]["extracted"] == "0.7"


def test_math_answer_pattern_option():
    fn = rewards.get_reward_fn("math", answer_pattern=r"(?i)final answer:\s*(\S+)")
    values, _ = fn.score([_math("Final answer: 0.75"), _math("Final answer: 1")])
    np.testing.assert_array_equal(values, [1, 0])
    with pytest.raises(ValueError, match="capturing group"):
        rewards.get_reward_fn("math", answer_pattern="answer")


def test_if_reward_strict_loose_all_fraction():
    ids = ["startend:quotation", "punctuation:no_comma"]
    kwargs = [{}, {}]
    samples = [_if('<think>plan, then write</think>"a quote without commas"', ids, kwargs),
               _if('Here you go:\n"a quote without commas"', ids, kwargs),
               _if('"a quote, with a comma"', ids, kwargs)]
    strict, infos = rewards.get_reward_fn("if").score(samples)
    np.testing.assert_array_equal(strict, [1, 0, 0])
    assert infos[1]["strict"] == [False, True] and infos[1]["loose"] == [True, True]
    assert infos[1]["reason"] == "not followed (strict): startend:quotation"
    loose, _ = rewards.get_reward_fn("if", mode="loose").score(samples)
    np.testing.assert_array_equal(loose, [1, 1, 0])
    fraction, _ = rewards.get_reward_fn("if", aggregate="fraction").score(samples)
    np.testing.assert_allclose(fraction, [1, 0.5, 0.5])


def test_if_reward_rejects_bad_instructions_before_scoring():
    fn = rewards.get_reward_fn("if")
    with pytest.raises(ValueError, match=r"samples\[1\]: unknown instruction id"):
        fn.score([_if("x", ["punctuation:no_comma"], [{}]), _if("x", ["nope:nope"], [{}])])
    with pytest.raises(ValueError, match="mode"):
        rewards.get_reward_fn("if", mode="lenient")


def test_extract_code():
    text = "Plan:\n```\nnot this\n```\n```python\ndef f():\n    return 1\n```\nand\n```py\ndef f():\n    return 2\n```"
    assert rewards.extract_code(text) == "def f():\n    return 2\n"
    assert rewards.extract_code("```\nx = 1\n```") == "x = 1\n"
    assert rewards.extract_code("no code") is None


def test_code_reward_runs_tests_in_the_sandbox():
    fn = rewards.get_reward_fn("code", limits={"wall_seconds": 4.0, "cpu_seconds": 2}, max_workers=2)
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    half = "```python\ndef add(a, b):\n    return a + b if a > 0 else 7\n```"
    thinking_then_right = "<think>```python\nbad(\n```</think>" + right
    samples = [_code(right), _code(half), _code("I would add them."), _code(thinking_then_right)]
    values, infos = fn.score(samples)
    np.testing.assert_array_equal(values, [1, 0, 0, 1])
    assert infos[1]["test_status"] == ["passed", "failed"] and infos[1]["pass_fraction"] == 0.5
    assert infos[1]["reason"].startswith("completed: 1/2 tests passed")
    assert infos[2]["reason"] == "no ```python code block found" and not infos[2]["format_ok"]
    fraction = rewards.CodeReward(aggregate="fraction", sandbox=fn.sandbox)
    np.testing.assert_allclose(fraction.score(samples[:2])[0], [1, 0.5])


def test_shaping_unfinished_format_and_overlong():
    fn = rewards.get_reward_fn("math", unfinished_reward=-1.0, format_bonus=0.1, format_penalty=0.2,
                               max_response_tokens=100, overlong_buffer_tokens=20, overlong_penalty=0.5)
    samples = [_math("\\boxed{3/4}", response_tokens=50),
               _math("\\boxed{3/4}", response_tokens=90),       # 10 of 20 buffer tokens over: -0.25
               _math("\\boxed{1}", response_tokens=120),        # past the maximum: the full -0.5
               _math("no box", response_tokens=10),
               _math("\\boxed{3/4}", response_tokens=100, finished=False)]
    values, infos = fn.score(samples)
    np.testing.assert_allclose(values, [1.1, 1.1 - 0.25, 0.1 - 0.5, -0.2, -1.0], rtol=1e-6)
    assert infos[1]["reason"] == "overlong response (penalty 0.250)" and infos[1]["verified_reward"] == 1.0
    assert infos[4]["reason"] == "unfinished response (no stop token)" and not infos[4]["finished"]
    with pytest.raises(ValueError, match="response_tokens"):
        fn.score([_math("\\boxed{3/4}")])


def test_sample_validation_names_the_field():
    fn = rewards.get_reward_fn("math")
    with pytest.raises(ValueError, match=r"samples\[0\] has no field 'answer'"):
        fn.score([{"response": "\\boxed{1}"}])
    with pytest.raises(TypeError, match=r"samples\[0\]\['response'\] must be str"):
        fn.score([{"response": 5, "answer": "1"}])
    with pytest.raises(TypeError, match="finished"):
        fn.score([_math("\\boxed{1}", finished="yes")])
    with pytest.raises(TypeError, match="list of dicts"):
        fn.score(_math("\\boxed{1}"))
    with pytest.raises(ValueError, match="format_penalty"):
        rewards.get_reward_fn("math", format_penalty=-1)
    with pytest.raises(ValueError, match="overlong_buffer_tokens"):
        rewards.get_reward_fn("math", max_response_tokens=10)
    with pytest.raises(TypeError):
        rewards.get_reward_fn("math", not_an_option=1)
    with pytest.raises(ValueError, match=r"samples\[0\]\['tests'\]"):
        rewards.get_reward_fn("code", limits=SandboxLimits(wall_seconds=2.0)).score([_code("x", tests=[])])


def test_registry(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    assert {"math", "if", "code"} <= set(rewards.registered_domains())
    with pytest.raises(ValueError, match="no reward fn registered for domain 'chat'"):
        rewards.get_reward_fn("chat")

    class LengthReward:  # stands in for the RLHF reward model
        def __init__(self, scale=1.0):
            self.scale = scale

        def score(self, samples):
            return (np.array([self.scale * len(s["response"]) for s in samples], np.float32),
                    [{"reason": ""} for _ in samples])

    rewards.register("chat", LengthReward)
    values, _ = rewards.get_reward_fn("chat", scale=0.5).score([{"response": "abcd"}])
    np.testing.assert_allclose(values, [2.0])
    with pytest.raises(ValueError, match="already registered"):
        rewards.register("chat", LengthReward)
    rewards.register("chat", lambda: object(), overwrite=True)
    with pytest.raises(TypeError, match="no score"):
        rewards.get_reward_fn("chat")
    with pytest.raises(TypeError, match="callable"):
        rewards.register("rlhf", "not a factory")
