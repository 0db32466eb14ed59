"""The code sandbox against hostile submissions, its per-test statuses, and its throughput."""
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nemocascade.sandbox.code_sandbox import Sandbox, SandboxError, SandboxLimits, Submission, shared_sandbox

LIMITS = SandboxLimits(wall_seconds=4.0, cpu_seconds=2, memory_bytes=512 << 20, max_processes=8,
                       max_output_bytes=1 << 16)
README = Path(__file__).resolve().parents[2] / "README.md"
BENIGN = Submission("def add(a, b):\n    return a + b\n", ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"], "add")


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(LIMITS, max_workers=2)
    yield box
    box.close()


def _needs_namespaces(box):
    if box.isolation != "namespaces":
        pytest.skip("this isolation property needs the namespaces sandbox (root on Linux); "
                    f"this machine gives {box.isolation!r}")


def _sandbox_uid_processes(box) -> list[str]:
    uids = {str(box.base_uid + slot) for slot in range(box.max_workers)}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            if uid_line.split()[1] in uids:
                found.append(entry.name)
    return found


def _sandbox_temp_dirs(box) -> set[str]:
    """The working directories of ``box``'s slots in the temporary directory (named after the slot uid, so another
    test process's sandboxes do not count)."""
    tmp = Path(tempfile.gettempdir())
    return {p.name for slot in range(box.max_workers) for p in tmp.glob(f"nemocascade-sandbox-{box.base_uid + slot}-*")}


def test_passing_failing_and_erroring_tests_get_their_statuses(sandbox):
    code = "def sq(x):\n    return x * x\nprint('visible output')\n"
    tests = ["assert sq(3) == 9", "assert sq(3) == 10", "sq(undefined_name)", "assert sq(", "raise SystemExit(3)",
             "assert sq(-2) == 4"]
    result = sandbox.run(Submission(code, tests, "sq"))
    assert result.status == "completed"
    assert [t.status for t in result.tests] == ["passed", "failed", "error", "error", "error", "passed"]
    assert "NameError" in result.tests[2].detail and "SyntaxError" in result.tests[3].detail
    assert result.num_passed == 2 and result.pass_fraction == pytest.approx(2 / 6)
    assert "visible output" in result.output


def test_solution_errors_and_missing_entry_point_fail_every_test(sandbox):
    broken, missing = sandbox.run_many([Submission("def f(:\n", ["assert f() == 1"] * 2, "f"),
                                        Submission("def g():\n    return 1\n", ["assert g() == 1"], "f")])
    assert broken.status == "solution_error" and "SyntaxError" in broken.detail
    assert [t.status for t in broken.tests] == ["solution_error"] * 2
    assert missing.status == "missing_entry_point" and missing.pass_fraction == 0.0


def test_early_exit_and_forged_results_do_not_pass_unrun_tests(sandbox):
    forged = ('import json\nprint(json.dumps({"nonce": "guess", "event": "done"}))\n'
              'print(json.dumps({"nonce": "guess", "event": "test", "index": 1, "status": "passed"}))\n')
    exits = "import os\ndef f():\n    return 1\n"
    results = sandbox.run_many([Submission(forged, ["assert False", "assert False"]),
                                Submission(exits, ["assert f() == 1", "os._exit(0)", "assert f() == 1"], "f")])
    assert [t.status for t in results[0].tests] == ["failed", "failed"]
    assert results[1].status == "exited"
    assert [t.status for t in results[1].tests] == ["passed", "exited", "not_run"]


def test_per_test_time_limit_marks_only_the_slow_test():
    box = Sandbox(SandboxLimits(wall_seconds=4.0, cpu_seconds=3, per_test_seconds=0.3), max_workers=1)
    result = box.run(Submission("import time\n", ["time.sleep(5)", "assert 1 + 1 == 2"]))
    assert result.status == "completed"
    assert [t.status for t in result.tests] == ["timeout", "passed"]


# Hostile submissions contained by every privileged mode, with the statuses they may end in.
CONTAINED_BY_UID_MODE = {
    "fork_bomb": ("import os\nwhile True:\n    os.fork()\n", {"solution_error", "crashed"}),
    "allocate_10gb": ("x = bytearray(10 * 1024 ** 3)\n", {"memory_limit"}),
    "loop_forever": ("while True:\n    pass\n", {"cpu_limit", "wall_timeout"}),
    "sleep_forever": ("import time\ntime.sleep(60)\n", {"wall_timeout"}),
    "print_100mb": ("import sys\nfor _ in range(1000):\n    sys.stdout.write('x' * 100_000)\n", {"output_limit"}),
    "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", {"solution_error"}),
    "kill_host": (f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\n", {"solution_error"}),
}
ESCAPE_SESSION = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
KILL_EVERYTHING = "import os, signal\nos.kill(-1, signal.SIGKILL)\n"  # every process it may signal


def _run_with_benign_neighbours(box, codes: dict) -> tuple[dict, float]:
    """Runs each code with a benign submission after it on the same pool; checks the benign ones passed,
    that no process of the slot uids is left and that every temporary directory was removed."""
    submissions = []
    for code in codes.values():
        submissions += [Submission(code, ["assert 'WRITTEN' not in globals() or WRITTEN == []"]), BENIGN]
    before_dirs = _sandbox_temp_dirs(box)
    start = time.monotonic()
    results = box.run_many(submissions)
    elapsed = time.monotonic() - start
    for benign in results[1::2]:
        assert benign.status == "completed" and benign.pass_fraction == 1.0, benign
    assert _sandbox_uid_processes(box) == []       # fork bombs, orphans and sleepers are all gone
    assert _sandbox_temp_dirs(box) <= before_dirs      # every working directory / mount point was removed
    return dict(zip(codes, results[0::2])), elapsed


def _check_contained(by_name: dict) -> None:
    for name, (_, statuses) in CONTAINED_BY_UID_MODE.items():
        result = by_name[name]
        assert result.status in statuses, (name, result)
        assert result.pass_fraction == 0.0, (name, result)
        assert result.wall_seconds <= LIMITS.wall_seconds + 1.0, (name, result.wall_seconds)
    assert by_name["kill_parent"].detail.startswith("PermissionError")
    assert by_name["escape_session"].status == "completed"


def test_hostile_submissions_are_contained_and_do_not_disturb_others(sandbox):
    _needs_namespaces(sandbox)
    host_dir = tempfile.mkdtemp(prefix="sandbox-host-target-")
    host_target = os.path.join(host_dir, "written_by_submission.txt")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    outside_paths = [host_target, "/evil.txt", "/usr/evil.txt", "/tmp/evil.txt", "/dev/evil.txt",
                     os.path.join(os.path.dirname(os.__file__), "evil.py")]
    codes = {name: code for name, (code, _) in CONTAINED_BY_UID_MODE.items()}
    codes.update({
        "escape_session": ESCAPE_SESSION,
        "kill_everything": KILL_EVERYTHING,
        "socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n",
        "read_readme": f"open({str(README)!r}).read()\n",
        "write_outside": (f"WRITTEN = []\nfor path in {outside_paths!r}:\n    try:\n"
                          "        open(path, 'w').write('x')\n        WRITTEN.append(path)\n"
                          "    except OSError:\n        pass\n"),
    })
    by_name, elapsed = _run_with_benign_neighbours(sandbox, codes)
    _check_contained(by_name)
    assert by_name["kill_host"].detail.startswith("ProcessLookupError")  # the host is not in its pid namespace
    assert by_name["kill_everything"].detail.startswith("ProcessLookupError")  # nothing else in its namespace
    assert by_name["socket"].status == "solution_error"
    assert "unreachable" in by_name["socket"].detail or "refused" in by_name["socket"].detail
    assert by_name["read_readme"].status == "solution_error" and README.is_file()
    assert "FileNotFoundError" in by_name["read_readme"].detail
    assert by_name["write_outside"].status == "completed" and by_name["write_outside"].pass_fraction == 1.0
    assert not os.path.exists(host_target) and os.listdir(host_dir) == []
    for path in outside_paths[1:]:
        assert not os.path.exists(path), path
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()
    os.rmdir(host_dir)
    print(f"\n{2 * len(codes)} hostile+benign submissions in {elapsed:.1f}s")


def test_uid_mode_contains_processes_time_memory_and_output():
    if os.geteuid() != 0:
        pytest.skip("the uid mode needs root")
    box = Sandbox(LIMITS, isolation="uid", max_workers=2)
    codes = {name: code for name, (code, _) in CONTAINED_BY_UID_MODE.items()}
    codes.update({"escape_session": ESCAPE_SESSION, "kill_everything": KILL_EVERYTHING})
    by_name, _ = _run_with_benign_neighbours(box, codes)
    _check_contained(by_name)
    assert by_name["kill_host"].detail.startswith("PermissionError")  # visible, but owned by root
    # kill(-1) succeeds without reaching anything (every other process is EPERM); the benign neighbours
    # and this test process survived it.
    assert by_name["kill_everything"].status == "completed"


def test_rlimits_fallback_still_enforces_limits_and_cleans_up():
    box = Sandbox(SandboxLimits(wall_seconds=3.0, cpu_seconds=1), isolation="rlimits", max_workers=2)
    before_dirs = _sandbox_temp_dirs(box)
    ok, spin, alloc = box.run_many([BENIGN, Submission("while True:\n    pass\n", ["assert True"]),
                                    Submission("x = bytearray(10 * 1024 ** 3)\n", ["assert True"])])
    assert box.isolation == "rlimits"
    assert ok.status == "completed" and ok.pass_fraction == 1.0
    assert spin.status in ("cpu_limit", "wall_timeout") and spin.tests[0].status == spin.status
    assert alloc.status == "memory_limit"
    assert _sandbox_temp_dirs(box) <= before_dirs


def test_a_failing_isolation_setup_raises_or_falls_back():
    if os.geteuid() != 0:
        pytest.skip("the privileged modes need root")
    broken_plan = {"binds": ["/nonexistent-dir-for-the-sandbox-test"], "symlinks": [], "masks": []}
    strict = Sandbox(LIMITS, isolation="namespaces", max_workers=1)
    strict._plan = broken_plan
    with pytest.raises(SandboxError, match="nonexistent-dir"):
        strict.isolation
    auto = Sandbox(LIMITS, max_workers=1)
    auto._plan = broken_plan
    with pytest.warns(UserWarning, match="'namespaces' probe failed"):
        assert auto.isolation == "uid"
    assert auto.run(BENIGN).pass_fraction == 1.0


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="wall_seconds"):
        SandboxLimits(wall_seconds=0)
    with pytest.raises(ValueError, match="cpu_seconds"):
        SandboxLimits(cpu_seconds=1.5)
    with pytest.raises(ValueError, match="isolation"):
        Sandbox(isolation="docker")
    with pytest.raises(TypeError, match="limits"):
        Sandbox({"wall_seconds": 1.0})
    with pytest.raises(TypeError, match="tests"):
        Submission("x = 1", "assert x == 1")
    with pytest.raises(TypeError, match=r"submissions\[1\]"):
        Sandbox(max_workers=1).run_many([BENIGN, "print(1)"])
    if os.geteuid() != 0:
        with pytest.raises(SandboxError, match="root"):
            Sandbox(isolation="namespaces").isolation


def _slot_uids(base_uid: int, max_workers: int) -> set[int]:
    return set(range(base_uid, base_uid + max_workers))


def test_sandboxes_get_disjoint_uids_and_reward_fns_share_one():
    """Also across processes: a Sandbox made by another process while this one holds its uids gets other uids."""
    first, second = Sandbox(max_workers=3), Sandbox(max_workers=2)
    assert _slot_uids(first.base_uid, 3).isdisjoint(_slot_uids(second.base_uid, 2))
    probe = ("import sys\nfrom nemocascade.sandbox.code_sandbox import Sandbox, _hold_uid\n"
             "print(Sandbox(max_workers=4).base_uid, *(_hold_uid(int(uid)) for uid in sys.argv[1:]))\n")
    ours = sorted(_slot_uids(first.base_uid, 3) | _slot_uids(second.base_uid, 2))
    printed = subprocess.run([sys.executable, "-c", probe, *map(str, ours)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert _slot_uids(int(printed[0]), 4).isdisjoint(ours)
    assert printed[1:] == ["False"] * len(ours)        # held by this process
    limits = SandboxLimits(wall_seconds=3.0)
    assert shared_sandbox(limits, max_workers=2) is shared_sandbox(limits, max_workers=2)
    assert shared_sandbox(limits, max_workers=2) is not shared_sandbox(limits, max_workers=1)


def test_throughput_of_trivial_submissions(sandbox):
    submissions = [Submission(f"def f():\n    return {i}\n", [f"assert f() == {i}"], "f") for i in range(100)]
    start = time.monotonic()
    results = sandbox.run_many(submissions)
    per_minute = len(submissions) / (time.monotonic() - start) * 60
    assert all(r.pass_fraction == 1.0 for r in results)
    print(f"\nsandbox throughput: {per_minute:.0f} trivial submissions/min "
          f"({sandbox.max_workers} workers, isolation={sandbox.isolation})")
    assert per_minute >= 60
