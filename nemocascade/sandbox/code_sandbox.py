"""Runs untrusted Python submissions against unit-test statements, one sandboxed process tree each.

Isolation levels (``Sandbox(isolation="auto")`` probes them strongest first; full account in ``SANDBOX.md``):

``"namespaces"`` (root on Linux with namespace support):
  - new mount, pid, network, IPC and UTS namespaces per submission;
  - a chroot into a read-only tmpfs root holding only read-only, nosuid binds of /usr (/bin, /lib, ...)
    and the Python standard library (its site-packages masked), four device nodes (null, zero, random,
    urandom) and a private size-limited tmpfs working directory ``/sandbox`` (noexec). The project tree,
    /root, /home, /tmp, /etc, /proc, /sys and every other host path do not exist inside;
  - no network: the namespace has only a loopback device that is down;
  - user code runs as a per-slot unprivileged uid (``base_uid + slot``) with no capabilities and
    ``no_new_privs``: it cannot signal host processes, other submissions, or its own supervisor;
  - resource limits on the user process: CPU seconds, address space, process count (per uid, so per
    slot), file size, open files, no core dumps, no locked memory;
  - wall clock enforced by the host: the whole process group is SIGKILLed at the deadline; killing
    the namespace's pid 1 kills every process in it, including ones that left the process group, and
    the host then waits until no process of the slot uid is left (the kernel tears a killed namespace
    down asynchronously: the next submission on the slot must not count its leftovers);
  - output capped: the host reads at most ``max_output_bytes`` of stdout+stderr and kills the
    submission when it writes more;
  - the working directory disappears with the mount namespace; the host-side mount point is removed.
``"uid"`` (root without namespaces, e.g. a container without CAP_SYS_ADMIN): the same resource limits,
  uid drop and output cap, in a private temporary working directory owned by the slot uid (removed
  afterwards); the slot uid's leftover processes are killed after each run. Files readable by everyone
  stay readable (the project tree included) and the network is not isolated.
``"rlimits"`` (not root): resource limits except the process count, a private temporary working directory
  (removed afterwards), process-group kill at the deadline and capped output only. Submissions can then
  read any file the host user can, use the network, and signal the host user's processes.

Not isolated in any mode: CPU and memory bandwidth, the kernel itself (no seccomp filter), and the
harness: tests run in the submission's own interpreter, so code written to subvert the harness can
forge results; a per-submission nonce stops only naive forgery (printing result lines).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import queue
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

CHILD_SOURCE = (Path(__file__).with_name("sandbox_child.py")).read_text()
SETUP_FAILED_EXIT = 121
ISOLATION_LEVELS = ("auto", "namespaces", "uid", "rlimits")
PRIVILEGED_LEVELS = ("namespaces", "uid")  # need root; "auto" tries them in this order
MAX_RESULT_CHANNEL_BYTES = 1 << 20
MAX_SUBMISSION_BYTES = 1 << 20
KEPT_OUTPUT_CHARS = 2000
UID_CLEANUP_SECONDS = 10.0
POLL_SECONDS = 0.05
FIRST_SANDBOX_UID, LAST_SANDBOX_UID = 61000, 64999  # unprivileged uids with no passwd entry, below nobody
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# Per-test statuses written by the harness; the host adds the submission-level ones below.
PASSED = "passed"
NOT_RUN = "not_run"


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the submission): it could not be set up or was asked for the impossible."""


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-submission limits. Times in seconds, sizes in bytes.

    ``wall_seconds`` covers the whole run (interpreter start included); ``cpu_seconds`` is RLIMIT_CPU of
    the user process (SIGXCPU, then SIGKILL one second later); ``memory_bytes`` is RLIMIT_AS per process;
    ``max_processes`` is RLIMIT_NPROC (tasks, i.e. processes and threads, of the slot uid; namespaces
    and uid modes); ``max_file_bytes`` bounds each written file (and, in namespaces mode, the whole
    working directory);
    ``per_test_seconds`` (optional) is a wall-clock alarm per test statement.
    """
    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_bytes: int = 1 << 30
    max_processes: int = 8
    max_output_bytes: int = 1 << 16
    max_file_bytes: int = 16 << 20
    max_open_files: int = 64
    per_test_seconds: float | None = None

    def __post_init__(self):
        for name in ("wall_seconds", "cpu_seconds", "memory_bytes", "max_processes", "max_output_bytes",
                     "max_file_bytes", "max_open_files"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"SandboxLimits.{name} must be a positive number, got {value!r}")
        for name in ("cpu_seconds", "memory_bytes", "max_processes", "max_output_bytes", "max_file_bytes",
                     "max_open_files"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"SandboxLimits.{name} must be an int, got {getattr(self, name)!r}")
        if self.per_test_seconds is not None and not self.per_test_seconds > 0:
            raise ValueError(f"SandboxLimits.per_test_seconds must be None or > 0, got {self.per_test_seconds!r}")


@dataclasses.dataclass(frozen=True)
class Submission:
    """Python source ``code``; ``tests``: self-contained statements run after it in its namespace;
    ``entry_point``: a name the code must define ("" to skip the check)."""
    code: str
    tests: Sequence[str]
    entry_point: str = ""

    def __post_init__(self):
        if not isinstance(self.code, str):
            raise TypeError(f"Submission.code must be str, got {type(self.code).__name__}")
        if isinstance(self.tests, str) or not all(isinstance(t, str) for t in self.tests):
            raise TypeError("Submission.tests must be a sequence of str statements")
        if not isinstance(self.entry_point, str):
            raise TypeError(f"Submission.entry_point must be str, got {type(self.entry_point).__name__}")


@dataclasses.dataclass(frozen=True)
class TestOutcome:
    """One test statement: status in passed/failed/error/timeout/memory_limit (from the harness), a
    submission status (solution_error, wall_timeout, cpu_limit, ...) when the submission ended before or
    during it, or not_run after that; ``detail`` is the exception text, if any."""
    status: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class SubmissionResult:
    """``status``: completed | solution_error | memory_limit | missing_entry_point | wall_timeout |
    cpu_limit | output_limit | file_size_limit | crashed | exited (ended early without a signal).
    ``output``: the first characters of stdout+stderr; ``exit_code``: the bootstrap's exit code
    (128 + signal for a killed user process; negative when the host killed it)."""
    status: str
    tests: tuple[TestOutcome, ...]
    output: str
    exit_code: int | None
    wall_seconds: float
    detail: str = ""

    @property
    def num_passed(self) -> int:
        return sum(t.status == PASSED for t in self.tests)

    @property
    def pass_fraction(self) -> float:
        return self.num_passed / len(self.tests) if self.tests else 0.0


def filesystem_plan() -> dict:
    """What the namespaces mode makes visible: system dirs and the stdlib (read-only), site-packages masked."""
    binds, symlinks = [], []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            symlinks.append([path, os.readlink(path)])
        elif os.path.isdir(path):
            binds.append(path)
    stdlib_dirs = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
    stdlib_dirs |= {os.path.realpath(p) for p in sys.path if p.endswith("lib-dynload") and os.path.isdir(p)}
    for path in sorted(stdlib_dirs):
        if not any(path == b or path.startswith(b + "/") for b in binds):
            binds.append(path)
    site_dirs = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    masks = sorted(p for p in site_dirs if os.path.isdir(p) and any(p.startswith(b + "/") for b in binds))
    return {"binds": binds, "symlinks": symlinks, "masks": masks}


def _uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                pids.append(int(entry.name))
        except FileNotFoundError:
            continue
    return pids


def _kill_uid_processes(uid: int) -> None:
    """SIGKILLs every process of ``uid`` and waits (up to UID_CLEANUP_SECONDS) until they have been reaped,
    so that they no longer count against the next submission's RLIMIT_NPROC (both privileged modes).
    Orphans are reaped by the system's init (uid mode) or the dying namespace's pid 1 (namespaces mode),
    which can take a second or two in a loaded container."""
    deadline = time.monotonic() + UID_CLEANUP_SECONDS
    while (pids := _uid_processes(uid)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _send(proc: subprocess.Popen, payload: bytes) -> None:
    """Writes the payload to the child's stdin and closes it (a child that already died is not an error)."""
    try:
        proc.stdin.write(payload)
    except BrokenPipeError:
        pass
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _Collector:
    """Reads the output and result pipes until EOF, the deadline, or a cap; returns why it stopped."""

    def __init__(self, out_fd: int, result_fd: int, max_output_bytes: int):
        self.output = bytearray()
        self.results = bytearray()
        self.max_output_bytes = max_output_bytes
        self._fds = {out_fd: self.output, result_fd: self.results}

    def collect(self, deadline: float, exited: Callable[[], bool]) -> str:
        """Reads until both pipes close, or nothing is left to read after ``exited()`` (a process that
        left the process group may keep the pipes open), the deadline ("wall_timeout") or a cap
        ("output_limit"); returns "" or the reason."""
        with selectors.DefaultSelector() as selector:
            for fd in self._fds:
                selector.register(fd, selectors.EVENT_READ)
            open_fds = set(self._fds)
            while open_fds:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "wall_timeout"
                events = selector.select(min(remaining, POLL_SECONDS))
                if not events and exited():
                    return ""
                for key, _ in events:
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        selector.unregister(key.fd)
                        open_fds.discard(key.fd)
                        continue
                    buffer = self._fds[key.fd]
                    buffer += chunk
                    if buffer is self.output and len(buffer) > self.max_output_bytes:
                        return "output_limit"
                    if buffer is self.results and len(buffer) > MAX_RESULT_CHANNEL_BYTES:
                        return "output_limit"
        return ""


def _parse_events(raw: bytes, nonce: str) -> list[dict]:
    events = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("nonce") == nonce:
            events.append(event)
    return events


def _status_from_exit(exit_code: int | None) -> str:
    if exit_code == 128 + signal.SIGXCPU:
        return "cpu_limit"
    if exit_code == 128 + signal.SIGXFSZ:
        return "file_size_limit"
    if exit_code is not None and exit_code > 128:
        return "crashed"
    return "exited"


def _outcomes(events: list[dict], num_tests: int, status: str, detail: str) -> tuple[TestOutcome, ...]:
    """Per-test outcomes: the harness's, then ``status`` for the test that was running, then not_run."""
    by_index = {}
    for e in events:
        if e.get("event") == "test" and isinstance(e.get("index"), int) and e["index"] not in by_index:
            by_index[e["index"]] = TestOutcome(str(e.get("status", "error")), str(e.get("detail", "")))
    if status in ("solution_error", "memory_limit", "missing_entry_point") and not by_index:
        return tuple(TestOutcome(status, detail) for _ in range(num_tests))
    outcomes, interrupted = [], False
    for index in range(num_tests):
        if index in by_index and not interrupted:
            outcomes.append(by_index[index])
        elif not interrupted:
            outcomes.append(TestOutcome(status, detail))
            interrupted = True
        else:
            outcomes.append(TestOutcome(NOT_RUN))
    return tuple(outcomes)


def _summarise(events: list[dict], stop_reason: str, exit_code: int | None) -> tuple[str, str]:
    """The submission status and its detail text."""
    kinds = {e.get("event"): e for e in events}
    if stop_reason:
        return stop_reason, ""
    if "done" in kinds:
        return "completed", ""
    if "solution_error" in kinds:
        error = kinds["solution_error"]
        status = "memory_limit" if error.get("status") == "memory_limit" else "solution_error"
        return status, str(error.get("detail", ""))
    if "missing_entry_point" in kinds:
        return "missing_entry_point", str(kinds["missing_entry_point"].get("detail", ""))
    return _status_from_exit(exit_code), f"exit code {exit_code}"


_UID_LOCK = threading.Lock()
# uid -> the socket that holds it for this process (None off Linux, where the privileged modes never run).
_held_uids: dict[int, socket.socket | None] = {}


def _hold_uid(uid: int) -> bool:
    """Claims ``uid`` for this process for its whole life; False if a Sandbox of this or another process holds it.

    On Linux a uid is held by binding the abstract Unix socket ``nemocascade-sandbox-uid-<uid>``: the kernel gives
    a name to one socket of the network namespace and frees it when the process (and every child that inherited
    the socket) has exited, so trainers or test workers on one host never share a slot uid (they would count
    against each other's ``RLIMIT_NPROC`` and kill each other's submissions in the after-run cleanup)."""
    if uid in _held_uids:
        return False
    holder = None
    if sys.platform.startswith("linux"):
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            holder.bind(f"\0nemocascade-sandbox-uid-{uid}")
        except OSError:                # EADDRINUSE: another process holds it
            holder.close()
            return False
    _held_uids[uid] = holder
    return True


def _release_uid(uid: int) -> None:
    holder = _held_uids.pop(uid)
    if holder is not None:
        holder.close()


def _reserve_uids(count: int) -> int:
    """The first of ``count`` consecutive sandbox uids, all claimed with ``_hold_uid`` (lowest free block first)."""
    with _UID_LOCK:
        base = FIRST_SANDBOX_UID
        while base + count - 1 <= LAST_SANDBOX_UID:
            held = []
            for uid in range(base, base + count):
                if not _hold_uid(uid):
                    break
                held.append(uid)
            if len(held) == count:
                return base
            for uid in held:
                _release_uid(uid)
            base += len(held) + 1      # the block cannot start at or before the uid that is taken
        raise SandboxError(f"out of sandbox uids ({FIRST_SANDBOX_UID}..{LAST_SANDBOX_UID}) for {count} slots: other "
                           "Sandboxes on this host hold them; reuse Sandbox objects (shared_sandbox) instead of "
                           "creating new ones")


class Sandbox:
    """A pool of sandbox slots; ``run_many`` runs submissions in parallel, one slot (and uid) each.

    ``max_workers`` defaults to the number of CPUs. Slot ``i`` runs user code as uid ``base_uid + i``
    (namespaces and uid modes), so RLIMIT_NPROC is counted per slot and slots cannot signal each other;
    by default each Sandbox gets its own uid range, disjoint from every other Sandbox's on the host
    (``_reserve_uids``). Thread-safe.
    """

    def __init__(self, limits: SandboxLimits | None = None, *, isolation: str = "auto",
                 max_workers: int | None = None, base_uid: int | None = None):
        if isolation not in ISOLATION_LEVELS:
            raise ValueError(f"isolation must be one of {ISOLATION_LEVELS}, got {isolation!r}")
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError(f"max_workers must be a positive int or None, got {max_workers!r}")
        if base_uid is not None and (not isinstance(base_uid, int) or base_uid < 1000):
            raise ValueError(f"base_uid must be None or an int >= 1000 (an unprivileged uid), got {base_uid!r}")
        if limits is not None and not isinstance(limits, SandboxLimits):
            raise TypeError(f"limits must be a SandboxLimits, got {type(limits).__name__}")
        self.limits = limits or SandboxLimits()
        self.max_workers = max_workers or os.cpu_count() or 1
        self.base_uid = base_uid if base_uid is not None else _reserve_uids(self.max_workers)
        self._requested_isolation = isolation
        self._isolation: str | None = None
        self._plan = filesystem_plan()
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.max_workers):
            self._slots.put(slot)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def isolation(self) -> str:
        """"namespaces", "uid" or "rlimits" (resolving "auto" with probe runs on first use)."""
        with self._lock:
            if self._isolation is None:
                self._isolation = self._resolve_isolation()
            return self._isolation

    def _resolve_isolation(self) -> str:
        requested = self._requested_isolation
        if requested == "rlimits":
            return "rlimits"
        if not sys.platform.startswith("linux") or os.geteuid() != 0:
            if requested != "auto":
                raise SandboxError(f"isolation={requested!r} needs root on Linux")
            warnings.warn("code sandbox: not root, falling back to isolation='rlimits' (no namespaces, no uid "
                          "change, no filesystem or network isolation); see nemocascade/sandbox/SANDBOX.md")
            return "rlimits"
        for level in (PRIVILEGED_LEVELS if requested == "auto" else (requested,)):
            failure = self._probe(level)
            if not failure:
                return level
            if requested != "auto":
                raise SandboxError(f"isolation={level!r} probe failed: {failure}")
            warnings.warn(f"code sandbox: the {level!r} probe failed ({failure}); trying a weaker isolation")
        return "rlimits"

    def _probe(self, level: str) -> str:
        """Runs a trivial submission with ``level``; returns "" when it passed, else what went wrong."""
        try:
            result = self._run_in_slot(Submission("x = 1", ["assert x == 1"]), 0, level)
        except SandboxError as exc:
            return str(exc)
        return "" if result.status == "completed" and result.num_passed == 1 else f"{result.status}: {result.output}"

    def run(self, submission: Submission) -> SubmissionResult:
        """Runs one submission (blocks for a free slot)."""
        if not isinstance(submission, Submission):
            raise TypeError(f"expected a Submission, got {type(submission).__name__}")
        isolation = self.isolation
        slot = self._slots.get()
        try:
            return self._run_in_slot(submission, slot, isolation)
        finally:
            self._slots.put(slot)

    def run_many(self, submissions: Sequence[Submission]) -> list[SubmissionResult]:
        """Runs submissions in parallel on ``max_workers`` slots; results in input order."""
        for i, s in enumerate(submissions):
            if not isinstance(s, Submission):
                raise TypeError(f"submissions[{i}]: expected a Submission, got {type(s).__name__}")
        self.isolation  # resolve (and probe) once, before fanning out
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(self.max_workers,
                                                                       thread_name_prefix="sandbox")
            executor = self._executor
        return list(executor.map(self.run, submissions))

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def _config(self, uid: int, isolation: str, root: str) -> dict:
        limits = self.limits
        return {
            "isolation": isolation, "uid": uid, "root": root, "workdir": root,
            "max_file_bytes": limits.max_file_bytes,
            "limits": {"cpu_seconds": limits.cpu_seconds, "memory_bytes": limits.memory_bytes,
                       "max_processes": limits.max_processes, "max_file_bytes": limits.max_file_bytes,
                       "max_open_files": limits.max_open_files},
            **self._plan,
        }

    def _run_in_slot(self, submission: Submission, slot: int, isolation: str) -> SubmissionResult:
        start = time.monotonic()
        nonce = secrets.token_hex(16)
        payload = json.dumps({"code": submission.code, "tests": list(submission.tests),
                              "entry_point": submission.entry_point, "nonce": nonce,
                              "per_test_seconds": self.limits.per_test_seconds}).encode()
        if len(payload) > MAX_SUBMISSION_BYTES:
            return SubmissionResult("solution_error", tuple(TestOutcome("solution_error", "submission too large")
                                                            for _ in submission.tests), "", None, 0.0,
                                    f"submission larger than {MAX_SUBMISSION_BYTES} bytes")
        uid = self.base_uid + slot
        root = tempfile.mkdtemp(prefix=f"nemocascade-sandbox-{uid}-")
        if isolation == "uid":
            os.chown(root, uid, uid)
        out_r, out_w = os.pipe()
        res_r, res_w = os.pipe()
        config = self._config(uid, isolation, root)
        config["result_fd"] = res_w
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", CHILD_SOURCE, json.dumps(config)],
                                    stdin=subprocess.PIPE, stdout=out_w, stderr=out_w, pass_fds=(res_w,),
                                    start_new_session=True, cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        except BaseException:
            for fd in (out_r, out_w, res_r, res_w):
                os.close(fd)
            shutil.rmtree(root, ignore_errors=True)
            raise
        os.close(out_w)
        os.close(res_w)
        try:
            _send(proc, payload)
            collector = _Collector(out_r, res_r, self.limits.max_output_bytes)
            stop_reason = collector.collect(start + self.limits.wall_seconds, lambda: proc.poll() is not None)
            if stop_reason:
                _kill_group(proc)
            exit_code = proc.wait()
            wall_seconds = time.monotonic() - start
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
            os.close(out_r)
            os.close(res_r)
            if isolation in PRIVILEGED_LEVELS:
                _kill_uid_processes(uid)
            shutil.rmtree(root, ignore_errors=True)
        events = _parse_events(bytes(collector.results), nonce)
        output = bytes(collector.output[:KEPT_OUTPUT_CHARS]).decode("utf-8", "replace")
        if exit_code == SETUP_FAILED_EXIT and not any(e.get("event") == "ready" for e in events):
            raise SandboxError(f"sandbox setup failed (isolation={isolation}): {output.strip()}")
        status, detail = _summarise(events, stop_reason, exit_code)
        return SubmissionResult(status, _outcomes(events, len(submission.tests), status, detail), output,
                                exit_code, wall_seconds, detail)


_SHARED: dict[tuple, Sandbox] = {}
_SHARED_LOCK = threading.Lock()


def shared_sandbox(limits: SandboxLimits | None = None, *, isolation: str = "auto",
                   max_workers: int | None = None) -> Sandbox:
    """One Sandbox per (limits, isolation, max_workers) for the whole process, so that reward fns created
    again and again (e.g. at every evaluation) reuse its worker threads, uids and isolation probe."""
    key = (limits or SandboxLimits(), isolation, max_workers)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = Sandbox(key[0], isolation=isolation, max_workers=max_workers)
        return _SHARED[key]
