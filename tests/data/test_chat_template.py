"""ChatML rendering (thinking / non-thinking, tools), parsing round trips, and the token-level loss mask."""
import itertools
import json

import pytest

from nemocascade.data import chat_template as ct
from nemocascade.data.tokenizer import load_tokenizer
from nemocascade.data.toy import DOMAINS, toy_sft_examples

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "reasoning": "2 + 3 = 5.", "content": "The answer is 5."},
]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name."},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("")


def test_render_thinking_mode_exact():
    assert ct.render(CONVERSATION, thinking=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n2 + 3 = 5.\n</think>\nThe answer is 5.<|im_end|>\n")


def test_render_non_thinking_mode_drops_reasoning():
    assert ct.render(CONVERSATION, thinking=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n<think></think>The answer is 5.<|im_end|>\n")


def test_thinking_mode_without_reasoning_has_an_empty_block():
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert ct.render(messages).endswith("<|im_start|>assistant\n<think>\n</think>\nHello.<|im_end|>\n")


@pytest.mark.parametrize("thinking,suffix", [(True, "<|im_start|>assistant\n<think>\n"),
                                             (False, "<|im_start|>assistant\n<think></think>")])
def test_render_prompt_ends_with_the_mode_prefix(thinking, suffix):
    prompt = ct.render_prompt(CONVERSATION[:2], thinking=thinking)
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n" + suffix
    assert prompt == ct.render(CONVERSATION[:2], thinking=thinking, add_generation_prompt=True)
    # The full conversation's text continues the prompt: the model writes exactly the rest.
    assert ct.render(CONVERSATION, thinking=thinking).startswith(prompt)


def test_tools_are_listed_in_the_system_turn():
    rendered = ct.render_prompt([{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER_TOOL])
    system = rendered.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\n# Tools\n\n<tools>\n<function>\n<name>get_weather</name>\n"
                             "<description>Weather in a city.</description>\n<parameters>\n<parameter>\n"
                             "<name>city</name>\n<type>string</type>\n<description>City name.</description>\n"
                             "</parameter>\n<parameter>\n<name>days</name>\n<type>integer</type>\n</parameter>\n"
                             '<required>["city"]</required>\n</parameters>\n</function>\n</tools>')
    with_system = ct.render_prompt(CONVERSATION[:2], tools=[WEATHER_TOOL])
    assert with_system.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n\n<tools>\n")
    assert with_system.count("<|im_start|>system") == 1


def test_tool_call_and_tool_response_rendering():
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": "",
                 "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}]},
                {"role": "tool", "content": "rain"}]
    rendered = ct.render(messages, thinking=False)
    assert ("<|im_start|>assistant\n<think></think><tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n"
            "</parameter>\n<parameter=days>\n2\n</parameter>\n</function>\n</tool_call><|im_end|>\n"
            "<|im_start|>user\n<tool_response>\nrain\n</tool_response><|im_end|>\n") in rendered


ASSISTANT_MESSAGES = [
    {"content": "Plain answer.", "reasoning": None, "tool_calls": []},
    {"content": "Answer with\nnewlines.", "reasoning": "Step 1.\nStep 2.", "tool_calls": []},
    {"content": "", "reasoning": "Need a tool.",
     "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}}]},
    {"content": "Two calls.", "reasoning": None,
     "tool_calls": [{"name": "f", "arguments": {"xs": [1, 2], "flag": True, "cfg": {"a": None}, "text": "a b"}},
                    {"name": "g", "arguments": {}}]},
]


@pytest.mark.parametrize("message,thinking", list(itertools.product(ASSISTANT_MESSAGES, (True, False))))
def test_parse_assistant_round_trip(message, thinking):
    full = {"role": "assistant", **message}
    completion = ct.assistant_completion(full, thinking=thinking)
    expected = dict(message, reasoning=message["reasoning"] if thinking else None)
    # As generated after a prompt (prefix in the prompt), and as the whole assistant body.
    assert ct.parse_assistant(completion + "<|im_end|>") == expected
    assert ct.parse_assistant(ct.assistant_prefix(thinking) + completion) == expected
    assert ct.parse_assistant(ct.render([{"role": "user", "content": "q"}, full], thinking=thinking)
                              .split("<|im_start|>assistant\n")[1]) == expected


def test_parse_uses_declared_string_types():
    call = {"name": "get_weather", "arguments": {"city": "42", "days": 7}}
    text = ct.render_tool_call(call)
    assert ct.parse_assistant(text, tools=[WEATHER_TOOL])["tool_calls"] == [call]
    assert ct.parse_assistant(text)["tool_calls"] == [{"name": "get_weather", "arguments": {"city": 42, "days": 7}}]


def test_parse_unclosed_reasoning_and_malformed_calls():
    assert ct.parse_assistant("<think>\nstill thinking") == {"reasoning": "still thinking", "content": "",
                                                             "tool_calls": []}
    broken = "Sure.\n<tool_call>\nno function here\n</tool_call>"
    assert ct.parse_assistant(broken) == {"reasoning": None, "content": broken, "tool_calls": []}


def _all_examples():
    return [ex for domain in sorted(DOMAINS) for ex in toy_sft_examples(domain, "train", 5, seed=11)]


@pytest.mark.parametrize("thinking", [True, False])
def test_render_tokens_matches_whole_encoding_and_prompt(tok, thinking):
    tool_example = [{"role": "user", "content": "Weather in Oslo?"},
                    {"role": "assistant", "content": "Let me check.", "reasoning": "Use the tool.",
                     "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
                    {"role": "tool", "content": "sunny"},
                    {"role": "assistant", "content": "It is sunny."}]
    conversations = [(ex["messages"], None) for ex in _all_examples()] + [(tool_example, [WEATHER_TOOL])]
    for messages, tools in conversations:
        ids, mask = ct.render_tokens(messages, tok, tools=tools, thinking=thinking)
        assert ids == tok.encode(ct.render(messages, tools=tools, thinking=thinking))
        assert len(mask) == len(ids) and set(mask) <= {0, 1}
        first_reply = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt_ids = tok.encode(ct.render_prompt(messages[:first_reply], tools=tools, thinking=thinking))
        assert ids[:len(prompt_ids)] == prompt_ids and not any(mask[:len(prompt_ids)])


def _masked_runs(tok, ids, mask):
    runs, current = [], []
    for token, m in zip(ids, mask):
        if m:
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    return runs + ([tok.decode(current)] if current else [])


def _answer_text(reply) -> str:
    """The reply's content and tool calls in the documented format (written out here, not by the template)."""
    calls = ["<tool_call>\n<function=%s>\n%s</function>\n</tool_call>" % (call["name"], "".join(
        f"<parameter={k}>\n{v if isinstance(v, str) else json.dumps(v)}\n</parameter>\n"
        for k, v in call["arguments"].items())) for call in reply.get("tool_calls", [])]
    return "\n".join(([reply["content"]] if reply["content"] else []) + calls)


def test_loss_mask_covers_exactly_the_assistant_completions(tok):
    for example in _all_examples():
        # one reply (tool_use: the call, then the answer after the tool's result)
        replies = [m for m in example["messages"] if m["role"] == "assistant"]
        thinking_ids, thinking_mask = ct.render_tokens(example["messages"], tok, thinking=True)
        assert _masked_runs(tok, thinking_ids, thinking_mask) == [
            f"{reply['reasoning']}\n</think>\n{_answer_text(reply)}<|im_end|>" for reply in replies]
        plain_ids, plain_mask = ct.render_tokens(example["messages"], tok, thinking=False)
        assert _masked_runs(tok, plain_ids, plain_mask) == [f"{_answer_text(reply)}<|im_end|>" for reply in replies]
        unmasked = tok.decode([t for t, m in zip(plain_ids, plain_mask) if not m])
        headers = {"assistant": "<|im_start|>assistant\n<think></think>\n",     # + the newline after its <|im_end|>
                   "tool": "<|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n"}
        assert unmasked == "".join(headers.get(m["role"], "<|im_start|>{role}\n{content}<|im_end|>\n").format(**m)
                                   for m in example["messages"])


def test_multi_turn_masks_every_assistant_turn_and_no_tool_turn(tok):
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "tool", "content": "c"}, {"role": "assistant", "content": "d"}]
    ids, mask = ct.render_tokens(messages, tok, thinking=False)
    assert _masked_runs(tok, ids, mask) == ["b<|im_end|>", "d<|im_end|>"]


@pytest.mark.parametrize("messages,match", [
    ([{"role": "bot", "content": "x"}], r"messages\[0\]\.role is 'bot'; expected one of system, user"),
    ([{"role": "user", "content": 3}], r"messages\[0\]\.content must be a string, got int"),
    ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], r"only messages\[0\] may be"),
    ([{"role": "user", "content": "x", "reasoning": "r"}], r"only assistant messages may have"),
    ([{"role": "assistant", "content": "x", "tool_calls": [{"arguments": {}}]}], r"tool_calls\[0\]\.name"),
    ([], "non-empty list"),
])
def test_bad_messages_are_named(messages, match):
    with pytest.raises(ValueError, match=match):
        ct.render(messages)


def test_render_prompt_rejects_a_final_assistant_turn():
    with pytest.raises(ValueError, match="last message is an assistant turn"):
        ct.render_prompt(CONVERSATION)


def test_bad_tool_definition_is_named():
    with pytest.raises(ValueError, match=r"tools\[1\] must be an object with a non-empty 'name'"):
        ct.render_tools([WEATHER_TOOL, {"description": "nameless"}])
