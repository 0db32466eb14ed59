"""``RepositoryEnvironment``: a software-repair episode (SWE RL) on a small Python repository held in the row.

A row carries the repository (``repo``: relative path -> file text) and the test statements that decide the
repair (``tests``: Python statements run after the repository is written to the working directory, e.g.
``"from shop import total; assert total([1, 2]) == 3"``). The policy works on it with four tools:

  ``list_files()`` -> ``{"files": [paths]}``
  ``read_file(path)`` -> ``{"content": text}``
  ``replace_in_file(path, old, new)`` -> ``{"replaced": path}``: ``old`` must occur exactly once in the file
  ``run_tests()`` -> ``{"passed": k, "failed": m, "first_failure": detail}``, run in the code sandbox

The environment is stateless: the repository a turn sees is the row's, with every ``replace_in_file`` call of
the episode's earlier turns applied in order (``replay``), then the turn's own calls run in order. The
``swe`` reward (``rewards/swe_reward.py``) replays the whole episode the same way and runs the tests on the
result, so what the policy saw and what is scored cannot disagree.
"""
from __future__ import annotations

import json
from typing import Callable, Mapping, Sequence

from nemocascade.environments.tools import (call_function, check_declared_tools, tool_messages, turn_calls)
from nemocascade.sandbox.code_sandbox import Sandbox, Submission, SubmissionResult, shared_sandbox

EDITING_TOOLS = ("replace_in_file",)     # the calls ``replay`` applies; the others only read
MAX_FAILURE_CHARS = 300


def check_path(path: str) -> None:
    """ValueError unless ``path`` is a relative POSIX path of a file inside the repository: ``/``-separated names,
    none of them empty, ``.`` or ``..``."""
    if not isinstance(path, str) or "\\" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"a repository path must be relative and normalised (like 'pkg/module.py'), got {path!r}")


def repository_program(files: Mapping[str, str]) -> str:
    """Python source that writes ``files`` into the working directory and puts it first on ``sys.path`` (the
    sandbox runs it, then the test statements in its namespace)."""
    return ("import json, os, sys\nsys.dont_write_bytecode = True\n"
            f"for _path, _text in json.loads({json.dumps(dict(files))!r}).items():\n"
            "    os.makedirs(os.path.dirname(_path) or '.', exist_ok=True)\n"
            "    with open(_path, 'w') as _file:\n"
            "        _file.write(_text)\n"
            "sys.path.insert(0, os.getcwd())\n")


def repository_submission(files: Mapping[str, str], tests: Sequence[str]) -> Submission:
    """The sandbox submission that runs ``tests`` against the repository ``files``."""
    return Submission(repository_program(files), list(tests))


class Workspace:
    """The repository of one episode as the policy has edited it so far (``files``: path -> text)."""

    def __init__(self, files: Mapping[str, str], tests: Sequence[str], sandbox: Callable[[], Sandbox]):
        self.files = dict(files)
        self.tests = list(tests)
        self._sandbox = sandbox

    def _text(self, path) -> str:
        if path not in self.files:
            raise ValueError(f"no file {path!r}; files: {sorted(self.files)}")
        return self.files[path]

    def list_files(self) -> dict:
        return {"files": sorted(self.files)}

    def read_file(self, path) -> dict:
        return {"content": self._text(path)}

    def replace_in_file(self, path, old, new) -> dict:
        if not isinstance(old, str) or not isinstance(new, str) or not old:
            raise TypeError("old and new must be strings, old non-empty")
        count = self._text(path).count(old)
        if count != 1:
            raise ValueError(f"old occurs {count} times in {path!r}; it must occur exactly once")
        self.files[path] = self.files[path].replace(old, new)
        return {"replaced": path}

    def run_tests(self) -> dict:
        return tests_report(self._sandbox().run(repository_submission(self.files, self.tests)))


WORKSPACE_FUNCTIONS = {"list_files": Workspace.list_files, "read_file": Workspace.read_file,
                       "replace_in_file": Workspace.replace_in_file, "run_tests": Workspace.run_tests}


def tests_report(result: SubmissionResult) -> dict:
    """What ``run_tests`` tells the policy: counts and the first failing test's status and detail."""
    failures = [f"test {i}: {t.status} {t.detail}".strip() for i, t in enumerate(result.tests) if t.status != "passed"]
    report = {"passed": result.num_passed, "failed": len(result.tests) - result.num_passed}
    if failures:
        report["first_failure"] = failures[0][:MAX_FAILURE_CHARS]
    if result.status != "completed":
        report["status"] = f"{result.status} {result.detail}".strip()[:MAX_FAILURE_CHARS]
    return report


def replay(example: dict, turns: Sequence[str], sandbox: Callable[[], Sandbox] = shared_sandbox) -> Workspace:
    """The row's repository after every ``EDITING_TOOLS`` call of ``turns`` (assistant turns, in order; calls that
    fail change nothing, as when they were made)."""
    workspace = Workspace(example["repo"], example["tests"], sandbox)
    for turn in turns:
        made, _ = turn_calls(turn, example.get("tools")) or ([], 0)
        for call in made:
            if call["name"] in EDITING_TOOLS:
                call_function(WORKSPACE_FUNCTIONS, call["name"], workspace, call["arguments"])
    return workspace


def check_repository_row(example: dict, where: str) -> None:
    """ValueError naming ``where`` unless the row has a non-empty ``repo`` of path -> text and str ``tests``."""
    repo = example.get("repo")
    if not isinstance(repo, dict) or not repo:
        raise ValueError(f"{where}: a repository row needs a non-empty 'repo' (path -> file text), got {repo!r:.80}")
    for path, text in repo.items():
        try:
            check_path(path)
        except ValueError as exc:
            raise ValueError(f"{where}: 'repo': {exc}") from None
        if not isinstance(text, str):
            raise ValueError(f"{where}: 'repo'[{path!r}] must be the file's text (str), got {type(text).__name__}")
        parents = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
        if any(parent in repo for parent in parents):
            raise ValueError(f"{where}: 'repo' has both {path!r} and a file at one of its directories {parents}")
    tests = example.get("tests")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError(f"{where}: a repository row needs 'tests', a non-empty list of Python statements, got "
                         f"{tests!r:.80}")


class RepositoryEnvironment:
    """Answers each turn's repository tool calls (see the module docstring). ``sandbox``: a zero-argument
    callable giving the ``Sandbox`` that runs ``run_tests`` (default: the process-wide ``shared_sandbox()``)."""

    def __init__(self, sandbox: Callable[[], Sandbox] = shared_sandbox):
        self.sandbox = sandbox
        self.functions = WORKSPACE_FUNCTIONS

    def check_examples(self, examples) -> None:
        for example in examples:
            where = example.get("origin") or f"example {example.get('id')!r}"
            check_declared_tools(example, where, self.functions)
            check_repository_row(example, where)

    def respond(self, example: dict, turns: Sequence[str]) -> list[dict] | None:
        calls = turn_calls(turns[-1], example.get("tools"))
        if calls is None:
            return None
        workspace = replay(example, turns[:-1], self.sandbox)
        made, malformed = calls
        return tool_messages([call_function(self.functions, c["name"], workspace, c["arguments"]) for c in made],
                             malformed)
