"""The repository environment of SWE RL, the toy ``swe`` domain it plays, and the ``swe`` reward."""
import json

import pytest

from nemocascade import data as data_lib
from nemocascade import environments, rewards
from nemocascade.data import chat_template
from nemocascade.environments import repository
from nemocascade.environments.repository import RepositoryEnvironment, check_path, replay

ENV = RepositoryEnvironment()
TOOLS = data_lib.toy_examples("swe", "train", 1)[0]["tools"]
MODULE = "def total(a, b):\n    return a - b\n\n\ndef double(a):\n    return 2 * a\n"
EXAMPLE = {"id": "row-1", "domain": "swe", "tools": TOOLS, "repo": {"shop.py": MODULE, "pkg/util.py": "X = 1\n"},
           "tests": ["from shop import total; assert total(2, 3) == 5",
                     "from shop import double; assert double(4) == 8",
                     "from pkg.util import X; assert X == 1"]}


def _call(name, **arguments):
    return chat_template.render_tool_call({"name": name, "arguments": arguments})


def _results(turns):
    return [json.loads(m["content"]) for m in ENV.respond(EXAMPLE, turns)]


def test_calls_act_on_the_repository_in_order_within_a_turn():
    fix = _call("replace_in_file", path="shop.py", old="a - b", new="a + b")
    turn = "\n".join([_call("list_files"), _call("read_file", path="shop.py"), fix, _call("read_file", path="shop.py"),
                      _call("run_tests")])
    listed, before, replaced, after, tests = _results([turn])
    assert listed == {"files": ["pkg/util.py", "shop.py"]}
    assert before == {"content": MODULE} and replaced == {"replaced": "shop.py"}
    assert after == {"content": MODULE.replace("a - b", "a + b")}
    assert tests == {"passed": 3, "failed": 0}


def test_later_turns_see_the_edits_of_earlier_turns_and_failed_edits_change_nothing():
    turns = [_call("replace_in_file", path="shop.py", old="return", new="yield"),            # twice in the file
             _call("replace_in_file", path="shop.py", old="a - b", new="a + b"),
             _call("replace_in_file", path="shop.py", old="2 * a", new="3 * a") + _call("read_file", path="nope.py"),
             _call("read_file", path="shop.py") + _call("run_tests")]
    assert _results(turns[:1]) == [{"error": "replace_in_file: old occurs 2 times in 'shop.py'; it must occur "
                                             "exactly once"}]
    assert _results(turns[:3])[1] == {"error": "read_file: no file 'nope.py'; files: ['pkg/util.py', 'shop.py']"}
    content, tests = _results(turns)
    assert content == {"content": MODULE.replace("a - b", "a + b").replace("2 * a", "3 * a")}
    assert tests["passed"] == 2 and tests["failed"] == 1
    assert tests["first_failure"].startswith("test 1: failed")
    assert replay(EXAMPLE, turns).files["shop.py"] == content["content"]
    assert EXAMPLE["repo"]["shop.py"] == MODULE                                # the row is never edited


def test_bad_calls_get_errors_and_a_broken_module_fails_its_tests():
    results = _results([_call("replace_in_file", path="shop.py", old="a - b") + _call("run", x=1)
                        + _call("replace_in_file", path="shop.py", old="def total", new="def total(")
                        + _call("run_tests") + "<tool_call>\n<function=run_tests>"])
    assert results[0]["error"].startswith("replace_in_file: missing a required argument: 'new'")
    assert results[1]["error"].startswith("unknown function 'run'")
    assert results[2] == {"replaced": "shop.py"}
    assert results[3]["passed"] == 1 and results[3]["failed"] == 2     # shop.py no longer compiles
    assert "SyntaxError" in results[3]["first_failure"]
    assert results[4] == {"error": "the tool call does not parse"}


def test_a_turn_without_a_call_ends_the_episode():
    assert ENV.respond(EXAMPLE, [_call("run_tests"), "Done."]) is None


@pytest.mark.parametrize("change,message", [
    (dict(repo={"../shop.py": ""}), r"rows.jsonl:4: 'repo': a repository path must be relative and normalised"),
    (dict(repo={"/abs.py": ""}), r"must be relative and normalised .* got '/abs.py'"),
    (dict(repo={"a/./b.py": ""}), r"must be relative and normalised .* got 'a/./b.py'"),
    (dict(repo={"shop.py": 3}), r"'repo'\['shop.py'\] must be the file's text \(str\), got int"),
    (dict(repo={"pkg": "", "pkg/a.py": ""}), r"'repo' has both 'pkg/a.py' and a file at one of its directories"),
    (dict(repo={}), r"a repository row needs a non-empty 'repo'"),
    (dict(tests=[]), r"a repository row needs 'tests', a non-empty list of Python statements"),
    (dict(tools=[{"name": "bash"}]), r"tool 'bash' has no function in this environment"),
])
def test_rows_the_environment_cannot_play_are_refused_by_name(change, message):
    ENV.check_examples([EXAMPLE])
    with pytest.raises(ValueError, match=message):
        ENV.check_examples([{**EXAMPLE, "origin": "rows.jsonl:4", **change}])


def test_paths_are_checked():
    check_path("pkg/mod.py")
    for bad in ("", ".", "..", "../x", "a/../b", "/x", "a//b", "a\\b", "a/", "./a", 3):
        with pytest.raises(ValueError, match="must be relative and normalised"):
            check_path(bad)


def test_the_toy_episode_renders_as_the_sft_conversation_and_scores_1():
    """Each reference turn, answered by the environment, gives the reference tool result; the episode renders as
    the SFT conversation; its edits make the tests pass, and without them they fail."""
    examples = data_lib.toy_sft_examples("swe", "train", 12, seed=5)
    environment = environments.get_environment("swe")
    environment.check_examples(examples)
    reward_fn = rewards.get_reward_fn("swe")
    samples = []
    for i, example in enumerate(examples):
        prompt, *conversation = example["messages"]
        thinking = i % 2 == 0
        turns, episode = [], chat_template.render_prompt([prompt], tools=example["tools"], thinking=thinking)
        for turn, result in zip(conversation[::2], conversation[1::2]):
            turns.append(chat_template.assistant_completion(turn, thinking=thinking))
            observation = environment.respond(example, turns)
            assert observation == [result]
            episode += turns[-1] + chat_template.IM_END + chat_template.render_observation(observation,
                                                                                          thinking=thinking)
        turns.append(chat_template.assistant_completion(conversation[-1], thinking=thinking))
        assert environment.respond(example, turns) is None
        episode += turns[-1] + chat_template.IM_END + "\n"
        assert episode == chat_template.render(example["messages"], tools=example["tools"], thinking=thinking)
        samples += [{**example, "response": conversation[-1]["content"], "assistant_turns": turns},
                    {**example, "response": conversation[-1]["content"], "assistant_turns": turns[-1:]}]
    scores, infos = reward_fn.score(samples)
    assert scores.tolist() == [1.0, 0.0] * len(examples)
    path = next(iter(examples[0]["repo"]))
    assert infos[0]["files_changed"] == [path] and infos[1]["files_changed"] == []
    assert infos[1]["reason"].startswith("completed: 1/3 tests passed")


def test_the_reward_scores_the_replayed_repository_not_the_answer():
    fix = _call("replace_in_file", path="shop.py", old="a - b", new="a + b")
    samples = [{**EXAMPLE, "response": "Fixed.", "assistant_turns": [fix, "Fixed."]},
               {**EXAMPLE, "response": "Fixed.", "assistant_turns": ["Fixed."]},
               {**EXAMPLE, "response": "", "assistant_turns": [fix + _call("replace_in_file", path="pkg/util.py",
                                                                             old="1", new="2")]}]
    scores, infos = rewards.get_reward_fn("swe").score(samples)
    assert scores.tolist() == [1.0, 0.0, 0.0]
    assert infos[2]["files_changed"] == ["pkg/util.py", "shop.py"] and infos[2]["test_status"][2] == "failed"
    fractions, _ = rewards.get_reward_fn("swe", aggregate="fraction").score(samples)
    assert fractions.tolist() == pytest.approx([1.0, 2 / 3, 2 / 3])


def test_the_reward_needs_the_episode_turns():
    with pytest.raises(ValueError, match=r"samples\[0\] has no field 'assistant_turns' \(list\), required by the "
                                         r"'swe' reward"):
        rewards.get_reward_fn("swe").score([{**EXAMPLE, "response": "x"}])
    with pytest.raises(ValueError, match=r"samples\[0\]\['assistant_turns'\] must be a list of str"):
        rewards.get_reward_fn("swe").score([{**EXAMPLE, "response": "x", "assistant_turns": [1]}])
    rewards.get_reward_fn("swe").check_examples([EXAMPLE])          # a task row has no turns yet


def test_the_program_writes_the_repository_as_given():
    files = {"a.py": "S = 'quote \" and \\\\ and \\n'\n", "deep/er/b.py": "T = 2\n"}
    result = rewards.shared_sandbox().run(repository.repository_submission(
        files, ["from a import S; assert S == 'quote \" and \\\\ and \\n'", "from deep.er.b import T; assert T == 2"]))
    assert result.status == "completed" and result.num_passed == 2, result
