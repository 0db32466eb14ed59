"""JSONL reading: accepted row shapes, normalisation, and line-numbered errors / logged skips."""
import json
import logging

import pytest

from nemocascade.data.sources import BadRow, JsonlError, read_jsonl

SFT_ROW = {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello"}]}
RL_ROW = {"domain": "math", "id": "p1", "prompt": "What is 1 + 1?", "answer": "2"}


def _write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return str(path)


def test_reads_sft_and_rl_shapes(tmp_path):
    released = {"responses_create_params": {"input": [{"role": "user", "content": "Say hi."}]},
                "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "domain": "if", "id": 7}
    path = _write(tmp_path, [json.dumps(SFT_ROW), "", json.dumps(RL_ROW), "   ", json.dumps(released)])
    rows = read_jsonl(path)
    assert len(rows) == 3 and rows.bad_rows == []
    assert rows[0] == {"domain": "general", "id": "data.jsonl:1", "origin": f"{path}:1",
                       "messages": SFT_ROW["messages"]}
    assert rows[1] == {"domain": "math", "id": "p1", "answer": "2", "origin": f"{path}:3",
                       "messages": [{"role": "user", "content": "What is 1 + 1?"}]}
    assert rows[2] == {"domain": "if", "id": "7", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}],
                       "origin": f"{path}:5", "messages": [{"role": "user", "content": "Say hi."}]}
    assert [r["id"] for r in rows] == ["data.jsonl:1", "p1", "7"]


def test_normalises_reasoning_and_openai_tool_calls(tmp_path):
    row = {"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "content": "rain"},
        {"role": "assistant", "content": "<think>\nIt rains.\n</think>\nTake an umbrella."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "reasoning_content": "Polite.", "content": "You are welcome."}]}
    messages = read_jsonl(_write(tmp_path, [json.dumps(row)]))[0]["messages"]
    assert messages[1] == {"role": "assistant", "content": "",
                           "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}
    assert messages[3] == {"role": "assistant", "reasoning": "It rains.", "content": "Take an umbrella."}
    assert messages[5] == {"role": "assistant", "reasoning": "Polite.", "content": "You are welcome."}


def test_released_rows_keep_their_tools_and_take_the_domain_of_their_gym_agent(tmp_path):
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object",
                                                                       "properties": {"city": {"type": "string"}}}}
    gym = {"responses_create_params": {"input": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [tool]},
           "ground_truth": [{"name": "get_weather", "arguments": '{"city": "Oslo"}'}]}
    mcqa = {"responses_create_params": {"input": "Pick one.\nA: x\nB: y"}, "options": [{"A": "x"}, {"B": "y"}],
            "expected_answer": "B", "agent_ref": {"type": "responses_api_agents", "name": "mcqa_simple_agent"}}
    structured = {**mcqa, "agent_ref": {"name": "structured_outputs_simple_agent"}}
    unknown = {**mcqa, "agent_ref": {"name": "workplace_assistant_simple_agent"}}
    rows = read_jsonl(_write(tmp_path, [json.dumps(r) for r in (
        {**gym, "domain": "tool_call"}, mcqa, structured, unknown, {**gym, "tools": [], "domain": "tool_call"})]))
    assert rows[0]["tools"] == [tool] and "responses_create_params" not in rows[0]
    assert [r["domain"] for r in rows] == ["tool_call", "mcqa", "structured_output", "general", "tool_call"]
    assert "tools" not in rows[1] and rows[4]["tools"] == []  # a row's own 'tools' comes first


BAD_LINES = [
    ('{"messages": [', "invalid JSON"),
    ('["a", "list"]', "a row must be a JSON object, got list"),
    ('{"text": "no messages"}', "missing 'messages'"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', r"messages\[0\]\.role is 'robot'"),
    ('{"messages": [{"role": "user"}]}', r"messages\[0\]\.content must be a string"),
    ('{"messages": []}', "non-empty list"),
    ('{"prompt": "x", "domain": 5}', "'domain' must be a string"),
    (b'{"prompt": "\xff\xfe"}', "not valid UTF-8"),
    ('{"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", '
     '"arguments": "{oops"}}]}]}', "tool call arguments are not valid JSON"),
    ('{"responses_create_params": {"input": "x", "tools": [{"type": "function"}]}}', r"tools\[0\] must be an object "
     "with a non-empty 'name'"),
    ('{"prompt": "x", "tools": {"name": "f"}}', "'tools' must be a list"),
]


@pytest.mark.parametrize("bad,reason", BAD_LINES)
def test_bad_row_raises_with_path_and_line(tmp_path, bad, reason):
    path = _write(tmp_path, [json.dumps(RL_ROW), "", bad, json.dumps(RL_ROW)])
    with pytest.raises(JsonlError, match=reason) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert (info.value.path, info.value.line) == (path, 3)


def test_skip_mode_logs_and_records_every_bad_row(tmp_path, caplog):
    lines = [json.dumps(RL_ROW)] + [bad for bad, _ in BAD_LINES] + [json.dumps(SFT_ROW)]
    path = _write(tmp_path, lines)
    with caplog.at_level(logging.WARNING):
        rows = read_jsonl(path, on_error="skip")
    assert len(rows) == 2
    assert [b.line for b in rows.bad_rows] == list(range(2, 2 + len(BAD_LINES)))
    assert all(isinstance(b, BadRow) and b.reason for b in rows.bad_rows)
    for bad_row in rows.bad_rows:
        assert f"{path}:{bad_row.line}" in caplog.text
    assert f"skipped {len(BAD_LINES)} bad row(s) of {len(BAD_LINES) + 2}" in caplog.text


def test_missing_file_and_all_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="JSONL file not found: .*missing.jsonl"):
        read_jsonl(str(tmp_path / "missing.jsonl"))
    path = _write(tmp_path, ["{nope", "[]"])
    with pytest.raises(ValueError, match="no usable rows"):
        read_jsonl(path, on_error="skip")
    with pytest.raises(ValueError, match="on_error must be one of"):
        read_jsonl(path, on_error="ignore")
