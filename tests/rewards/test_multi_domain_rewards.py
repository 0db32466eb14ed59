"""The multi-domain RL verifiers (RECIPE: MCQA 55%, tool calling 30%, structured output 15%)."""
import json

import numpy as np
import pytest

from nemocascade import rewards
from nemocascade.rewards import mcqa_reward

OPTIONS = [{"A": "Karyotyping"}, {"B": "Polymerase Chain Reaction (PCR)"}, {"C": "Southern blotting"},
           {"D": "Chromosome painting"}, {"E": "A polygenic risk score"}]


def _mcqa(response, expected="B", **extra):
    return {"domain": "mcqa", "id": "q", "messages": [], "options": OPTIONS, "expected_answer": expected,
            "response": response, **extra}


@pytest.mark.parametrize("response,extracted", [
    ("Thinking... \\boxed{C} no wait, \\boxed{B}", "B"),
    ("<think>\\boxed{B}</think>The answer is \\boxed{C}", "C"),
    ("\\boxed{\\text{B}}", "B"),
    ("\\boxed{\\text{B: Polymerase Chain Reaction (PCR)}}", "B"),
    ("Final: \\boxed{ [B] }", "B"),
    ("\\boxed{b) PCR}", "B"),
    ("\\boxed{Polymerase Chain Reaction (PCR)}", None),  # strict mode reads letters only
    ("\\boxed{Z}", None),  # not an option
    ("\\boxed{BC}", None),
    ("The answer is B.", None),
    ("\\boxed{B", None),  # an unclosed box is no answer
])
def test_mcqa_strict_boxed(response, extracted):
    values, infos = rewards.get_reward_fn("mcqa").score([_mcqa(response)])
    assert infos[0]["extracted"] == extracted
    assert values[0] == float(extracted == "B")
    assert infos[0]["format_ok"] == (extracted is not None)


def test_mcqa_lenient_modes_match_option_text_once():
    options = mcqa_reward.option_texts(OPTIONS)
    lenient = dict(grading_mode="lenient_boxed")
    assert mcqa_reward.extract_choice("\\boxed{polymerase chain  reaction (pcr)}", options, **lenient) == "B"
    assert mcqa_reward.extract_choice("\\boxed{\\text{Southern blotting}}", options, **lenient) == "C"
    assert mcqa_reward.extract_choice("\\boxed{E}", options, **lenient) == "E"
    assert mcqa_reward.extract_choice("Answer: Southern blotting", options, **lenient) is None
    twice = mcqa_reward.option_texts([{"A": "Same"}, {"B": "same"}])
    assert mcqa_reward.extract_choice("\\boxed{same}", twice, **lenient) is None
    colon = dict(grading_mode="lenient_answer_colon")
    assert mcqa_reward.extract_choice("Answer: C\nanswer: d", options, **colon) == "D"
    assert mcqa_reward.extract_choice("ANSWER: Chromosome painting", options, **colon) == "D"
    assert mcqa_reward.extract_choice("\\boxed{B}", options, **colon) is None


def test_mcqa_output_regex_comes_first_and_a_bad_one_falls_back():
    fn = rewards.get_reward_fn("mcqa")
    regex = {"output_regex": "Option Selected:\\s*([A-Za-z])"}
    samples = [_mcqa("\\boxed{C} ... option selected: b", template_metadata=regex),
               _mcqa("\\boxed{B}", template_metadata=regex),
               _mcqa("\\boxed{B}", template_metadata={"output_regex": "(unclosed"})]
    values, infos = fn.score(samples)
    np.testing.assert_array_equal(values, [1.0, 0.0, 1.0])
    assert [i["extracted"] for i in infos] == ["B", None, "B"]
    options = mcqa_reward.option_texts(OPTIONS)
    assert mcqa_reward.extract_choice("Final: B", options, output_regex="Final: [A-Z]") is None  # no group
    assert mcqa_reward.extract_choice("Final: B", options, output_regex="Final: (x)?") is None  # group unmatched


def test_mcqa_rows_are_checked():
    fn = rewards.get_reward_fn("mcqa")
    with pytest.raises(ValueError, match=r"expected_answer'\] = 'F' is not one of the option letters"):
        fn.score([_mcqa("\\boxed{B}", expected="F")])
    with pytest.raises(ValueError, match="grading_mode"):
        fn.score([_mcqa("\\boxed{B}", grading_mode="fuzzy")])
    with pytest.raises(ValueError, match="not a single letter"):
        fn.score([_mcqa("\\boxed{B}", options=[{"AB": "x"}])])
    with pytest.raises(ValueError, match="appears twice"):
        fn.score([_mcqa("\\boxed{B}", options=[{"B": "x"}, {"b": "y"}])])
    assert fn.score([_mcqa("\\boxed{b}", options={"a": "x", "b": "y"})])[0][0] == 1.0


WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                           "zip": {"type": "string"}}, "required": ["city"]}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"properties": {"tz": {"type": "string"}}}}}


def _call(name, **arguments):
    params = "".join(f"<parameter={k}>\n{v if isinstance(v, str) else json.dumps(v)}\n</parameter>\n"
                     for k, v in arguments.items())
    return f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"


def _tool(response, ground_truth, **extra):
    return {"domain": "tool_call", "id": "t", "messages": [], "tools": [WEATHER, TIME], "ground_truth": ground_truth,
            "response": response, **extra}


PARIS = {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}
UTC = {"function": {"name": "get_time", "arguments": "{\"tz\": \"UTC\"}"}}  # OpenAI shape, JSON-string arguments


def test_tool_call_reward_matches_calls_as_json_values():
    fn = rewards.get_reward_fn("tool_call")
    samples = [
        _tool(_call("get_weather", city="Paris", days=3), [PARIS]),
        _tool("<think>maybe get_time</think>" + _call("get_weather", days=3.0, city="Paris"), [PARIS]),
        _tool(_call("get_time", tz="UTC") + "\n" + _call("get_weather", city="Paris", days=3), [PARIS, UTC]),
        _tool(_call("get_weather", city="Paris", days=4), [PARIS]),
        _tool(_call("get_weather", city="Paris", days=3) + _call("get_time", tz="UTC"), [PARIS]),
        _tool("It is sunny in Paris.", [PARIS]),
        _tool("It is sunny in Paris.", []),
        _tool(_call("get_weather", city="Paris"), []),
        _tool("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</function>", [PARIS]),
        _tool(_call("get_weather", city="Paris", zip="75001"), [{"name": "get_weather",
                                                                  "arguments": {"city": "Paris", "zip": "75001"}}]),
    ]
    values, infos = fn.score(samples)
    np.testing.assert_array_equal(values, [1, 1, 1, 0, 0, 0, 1, 0, 0, 1])
    assert infos[3]["missing"] == ["get_weather"] and infos[3]["unexpected"] == ["get_weather"]
    assert infos[4]["unexpected"] == ["get_time"] and not infos[4]["missing"]
    assert not infos[5]["format_ok"] and infos[6]["format_ok"]
    assert not infos[8]["format_ok"] and infos[8]["unexpected"] == [None]


def test_tool_call_types_follow_the_declared_tools():
    fn = rewards.get_reward_fn("tool_call")
    # zip is declared a string: "75001" stays a string on both sides; a number would not match it.
    string_zip = [{"name": "get_weather", "arguments": {"city": "Paris", "zip": "75001"}}]
    assert fn.score([_tool(_call("get_weather", city="Paris", zip=75001), string_zip)])[0][0] == 1.0
    assert fn.score([_tool(_call("get_weather", city="Paris", zip="75001"), string_zip, tools=[])])[0][0] == 1.0
    wrong = [{"name": "get_weather", "arguments": {"city": "Paris", "days": "three"}}]
    assert fn.score([_tool(_call("get_weather", city="Paris", days=3), wrong)])[0][0] == 0.0


def test_tool_call_order_and_fraction_options():
    both = _call("get_time", tz="UTC") + _call("get_weather", city="Paris", days=3)
    assert rewards.get_reward_fn("tool_call", ordered=True).score([_tool(both, [PARIS, UTC])])[0][0] == 0.0
    assert rewards.get_reward_fn("tool_call", ordered=True).score([_tool(both, [UTC, PARIS])])[0][0] == 1.0
    fraction = rewards.get_reward_fn("tool_call", aggregate="fraction")
    values, _ = fraction.score([_tool(both, [PARIS]), _tool(_call("get_time", tz="UTC"), [PARIS, UTC]),
                                _tool("no call", [])])
    np.testing.assert_allclose(values, [0.5, 0.5, 1.0])
    with pytest.raises(ValueError, match="aggregate"):
        rewards.get_reward_fn("tool_call", aggregate="any")


def test_tool_call_rows_are_checked():
    fn = rewards.get_reward_fn("tool_call")
    with pytest.raises(ValueError, match=r"ground_truth\[0\].name must be a non-empty string"):
        fn.score([_tool("x", [{"arguments": {}}])])
    with pytest.raises(ValueError, match=r"samples\[0\]: ground_truth\[0\]: tool call arguments are not valid JSON"):
        fn.score([_tool("x", [{"name": "f", "arguments": "{oops"}])])
    with pytest.raises(TypeError, match=r"\['ground_truth'\] must be list"):
        fn.score([_tool("x", PARIS)])


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                                           "tags": {"type": "array", "items": {"type": "string"}}}}


def _structured(response, schema=json.dumps(SCHEMA), **extra):
    return {"domain": "structured_output", "id": "s", "messages": [], "schema": schema, "response": response, **extra}


def test_structured_output_reward_parses_then_validates_the_strict_schema():
    fn = rewards.get_reward_fn("structured_output")
    samples = [_structured('{"name": "Ada", "age": 36, "tags": []}'),
               _structured('<think>{"name": 1}</think>\n{"name": "Ada", "age": 36.0, "tags": ["x"]}'),
               _structured('{"name": "Ada", "age": 36}'),  # strict: every property is required
               _structured('{"name": "Ada", "age": -1, "tags": []}'),
               _structured('{"name": "Ada", "age": 36, "tags": [], "extra": 1}'),
               _structured('```json\n{"name": "Ada", "age": 36, "tags": []}\n```'),
               _structured('{"name": "Ada", "age": 36}', schema=SCHEMA)]
    values, infos = fn.score(samples)
    np.testing.assert_array_equal(values, [1, 1, 0, 0, 0, 0, 0])
    assert [i["error_type"] for i in infos] == [None, None, "validation_error", "validation_error",
                                                "validation_error", "parse_error", "validation_error"]
    assert "missing required property 'tags'" in infos[2]["reason"]
    assert not infos[5]["format_ok"]
    loose = rewards.get_reward_fn("structured_output", strict=False)
    assert loose.score([_structured('{"name": "Ada", "age": 36}')])[0][0] == 1.0


def test_structured_output_toml_and_csv():
    fn = rewards.get_reward_fn("structured_output")
    toml = 'name = "Ada"\nage = 36\ntags = ["x"]\n'
    table = {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}, "admin": {"type": "boolean"},
        "score": {"type": ["number", "null"]}}}}
    csv_ok = "name,age,admin,score\nAda,36,true,1.5\nBob,7,False,\n"
    csv_bad = "name,age,admin,score\nAda,thirty,true,1.5\n"
    values, infos = fn.score([_structured(toml, schema_type="toml"), _structured("name = ", schema_type="toml"),
                              _structured(csv_ok, schema=table, schema_type="csv"),
                              _structured(csv_bad, schema=table, schema_type="csv")])
    np.testing.assert_array_equal(values, [1, 0, 1, 0])
    assert infos[1]["error_type"] == "parse_error" and "age" in infos[3]["reason"]


def test_structured_output_rows_are_checked():
    fn = rewards.get_reward_fn("structured_output")
    with pytest.raises(ValueError, match="'yaml' needs PyYAML"):
        fn.score([_structured("a: 1", schema_type="yaml")])
    with pytest.raises(ValueError, match=r"\['schema'\] is not valid JSON"):
        fn.score([_structured("{}", schema="{not json")])
    with pytest.raises(ValueError, match="unknown type 'text'"):
        fn.score([_structured("{}", schema={"properties": {"a": {"type": "text"}}})])
    with pytest.raises(ValueError, match="needs 'schema'"):
        fn.score([{"response": "{}"}])


def test_check_examples_names_the_row_before_any_rollout():
    row = {"domain": "mcqa", "id": "q", "messages": [], "options": OPTIONS, "expected_answer": "F",
           "origin": "mdrl.jsonl:12"}
    with pytest.raises(ValueError, match=r"mdrl.jsonl:12 \('mcqa' reward\): the row\['expected_answer'\] = 'F'"):
        rewards.get_reward_fn("mcqa").check_examples([row])
    with pytest.raises(ValueError, match=r"example 't' \('tool_call' reward\): the row has no field 'ground_truth'"):
        rewards.get_reward_fn("tool_call").check_examples([{"domain": "tool_call", "id": "t", "messages": []}])
    rewards.get_reward_fn("mcqa").check_examples([{**row, "expected_answer": "A"}])  # no response needed
