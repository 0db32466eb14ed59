"""The tool environment of multi-turn domains, the toy ``tool_use`` domain it plays, and its reward."""
import json

import pytest

from nemocascade import data as data_lib
from nemocascade import environments, rewards
from nemocascade.data import chat_template
from nemocascade.data.toy import tool_use
from nemocascade.environments import ToolEnvironment

TOOL = {"type": "function", "name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}


def _call(name, **arguments):
    return chat_template.render_tool_call({"name": name, "arguments": arguments})


def _add(example, a, b):
    if a < 0:
        raise ValueError("a must be >= 0")
    return {"sum": a + b + example["offset"]}


ENV = ToolEnvironment({"add": _add}, example_fields={"offset": int})
EXAMPLE = {"id": "row-1", "domain": "tool_use", "tools": [TOOL], "offset": 100}


def test_each_call_gets_its_result_or_an_error_in_order():
    turn = "Let me add.\n" + _call("add", a=1, b=2) + "\n" + _call("mul", a=1) + "\n" + _call("add", a=1)
    turn += "\n" + _call("add", a=-1, b=0) + "\n<tool_call>\n<function=add>"
    messages = ENV.respond(EXAMPLE, [turn])
    assert [m["role"] for m in messages] == ["tool"] * 5
    results = [json.loads(m["content"]) for m in messages]
    assert results[0] == {"sum": 103}
    assert results[1] == {"error": "unknown function 'mul'; known: ['add']"}
    assert results[2]["error"].startswith("add: missing a required argument: 'b'")
    assert results[3] == {"error": "add: a must be >= 0"}
    assert results[4] == {"error": "the tool call does not parse"}


def test_a_turn_without_a_call_ends_the_episode():
    assert ENV.respond(EXAMPLE, [_call("add", a=1, b=2), "The sum is 103."]) is None
    assert ENV.respond(EXAMPLE, [""]) is None


def test_rows_the_environment_cannot_play_are_refused_by_name():
    ENV.check_examples([EXAMPLE])
    with pytest.raises(ValueError, match=r"rows.jsonl:3: tool 'get_weather' has no function in this environment "
                                         r"\(functions: \['add'\]\)"):
        ENV.check_examples([{**EXAMPLE, "origin": "rows.jsonl:3", "tools": [{"name": "get_weather"}]}])
    with pytest.raises(ValueError, match=r"example 'row-1': the environment's functions read the row's 'offset' "
                                         r"\(int\), got None"):
        ENV.check_examples([{**EXAMPLE, "offset": None}])
    with pytest.raises(ValueError, match=r"example 'row-1': a tool-use row needs a non-empty 'tools' list"):
        ENV.check_examples([{**EXAMPLE, "tools": []}])


def test_turn_settings_must_suit_the_domains():
    environments.check_turns(["tool_use", "math"], 3, "rl.max_turns")
    environments.check_turns(["math"], 1, "rl.max_turns")
    with pytest.raises(ValueError, match=r"rl.max_turns=1: domains \['tool_use'\] are multi-turn .* set "
                                         r"rl.max_turns >= 2"):
        environments.check_turns(["tool_use"], 1, "rl.max_turns")
    with pytest.raises(ValueError, match=r"eval.max_turns=2: none of the domains \['math'\] has an environment"):
        environments.check_turns(["math"], 2, "eval.max_turns")
    with pytest.raises(ValueError, match="already registered for 'tool_use'"):
        environments.register("tool_use", ENV)
    with pytest.raises(TypeError, match=r"must have respond\(example, turns\) and check_examples"):
        environments.register("other", object())


def test_the_toy_episode_renders_as_the_sft_conversation_and_scores_1():
    """The reference conversation (call, result, answer) is what an episode writes: the prompt, the call turn, the
    environment's answer to it rendered as an observation, the answer turn."""
    examples = data_lib.toy_sft_examples("tool_use", "train", 50, seed=3)
    reward_fn = rewards.get_reward_fn("tool_use")
    environment = environments.get_environment("tool_use")
    environment.check_examples(examples)
    for example in examples:
        prompt, call, result, answer = example["messages"]
        answer_value = int(example["answer"])
        assert 10 <= answer_value <= 99 and answer_value != call["tool_calls"][0]["arguments"]["amount"]
        for thinking in (False, True):
            turn = chat_template.assistant_completion(call, thinking=thinking)
            observation = environment.respond(example, [turn])
            assert observation == [result]
            episode = (chat_template.render_prompt([prompt], tools=example["tools"], thinking=thinking) + turn
                       + chat_template.IM_END + chat_template.render_observation(observation, thinking=thinking)
                       + chat_template.assistant_completion(answer, thinking=thinking) + chat_template.IM_END + "\n")
            assert episode == chat_template.render(example["messages"], tools=example["tools"], thinking=thinking)
        scores, _ = reward_fn.score([{**example, "response": answer["content"]}])
        assert scores.tolist() == [1.0]


def test_the_toy_tool_computes_from_the_rows_hidden_rates():
    rates = {"USD": 1.0, "EUR": 0.5}
    assert tool_use.convert_amount(rates, 10, "USD", "EUR") == 20
    assert tool_use.convert_amount(rates, 7, "EUR", "USD") == 4            # 3.5 rounds to the even 4
    example = {"id": "x", "domain": "tool_use", "rates": rates, "tools": tool_use.TOOLS}
    [message] = environments.get_environment("tool_use").respond(example, [_call("convert", amount=3, source="EUR",
                                                                                  target="GBP")])
    assert json.loads(message["content"]) == {"error": "convert: unknown currency 'GBP'; known: ['EUR', 'USD']"}


def test_the_reward_reads_the_final_turns_last_integer():
    reward_fn = rewards.get_reward_fn("tool_use")
    row = {"id": "x", "domain": "tool_use", "answer": "43"}
    samples = [{**row, "response": r} for r in ("43 EUR", "About 12, no: 43.", "12 EUR", "no idea",
                                                _call("convert", amount=43, source="USD", target="EUR"))]
    scores, infos = reward_fn.score(samples)
    assert scores.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert [i["found"] for i in infos] == [43, 43, 12, None, None]
    assert infos[4]["reason"] == "the final turn calls a tool (no answer)" and not infos[3]["format_ok"]
    with pytest.raises(ValueError, match=r"\['answer'\] must be an integer written as a string, got 'forty'"):
        reward_fn.score([{**row, "answer": "forty", "response": "40"}])
