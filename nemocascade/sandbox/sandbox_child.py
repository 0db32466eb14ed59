"""The child side of the code sandbox (see ``code_sandbox.py`` and ``SANDBOX.md``).

This file is never imported by the host. The host reads its source and starts it as
``python -I -S -c <source> <config json>`` in a new session, with the submission as JSON on stdin, the
submission's stdout+stderr on a capped pipe, and a second pipe (fd ``config["result_fd"]``) for results.
It uses only the standard library and runs from ``/`` with a minimal environment.

Process tree (isolation ``"namespaces"``, needs root)::

    B  bootstrap: reads the payload, unshare(mount, pid, net, ipc, uts namespaces), forks C, waits, exits
    C  pid 1 of the new pid namespace, still root: builds a read-only root (tmpfs + read-only binds of the
       system and Python stdlib directories + a size-limited tmpfs /sandbox), chroots, forks D, reaps
       orphans; when D ends C exits, and the kernel kills everything left in the namespace
    D  sets resource limits, drops to the slot's unprivileged uid (no capabilities, no_new_privs), runs
       the harness: exec the solution, then each test statement, reporting one JSON line per event

With isolation ``"uid"`` B forks D directly (no namespaces, no chroot; D still drops to the slot uid), with
``"rlimits"`` too (and D keeps the host's uid).

Events on the result pipe (one JSON object per line, each carrying the nonce): ``ready`` (isolation done,
about to run user code), ``solution_error`` (the solution raised while being executed), ``missing_entry_point``,
``test`` (index, status in passed/failed/error/timeout/memory_limit, detail), ``done``.
Exit codes: D's own, or 128 + signal when D was killed by a signal; 121 when the sandbox could not be set up.
"""
import ctypes
import json
import os
import resource
import select
import signal
import sys

SETUP_FAILED_EXIT = 121
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
WORKDIR = "/sandbox"
MAX_DETAIL_CHARS = 300

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """The sandbox could not be built (reported with exit code SETUP_FAILED_EXIT)."""


class TestTimeout(BaseException):
    """Raised by the per-test alarm; a BaseException so that ``except Exception`` in user code misses it."""


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(errno)} (errno {errno})")


def _mount(source, target, fstype, flags, data=None):
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


def _prctl(option, value):
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl {option}")


def _exit_code(wait_status):
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _wait_for(child_pid):
    """Waits (reaping any other children, as pid 1 must) until ``child_pid`` ends; returns its exit code."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return SETUP_FAILED_EXIT
        if pid == child_pid:
            return _exit_code(status)


def build_root(config):
    """In C (root, new mount namespace): a read-only root at config['root'] with a writable /sandbox."""
    root = config["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    for link, target in config["symlinks"]:
        os.makedirs(os.path.dirname(root + link), mode=0o755, exist_ok=True)
        os.symlink(target, root + link)
    for path in config["binds"]:
        os.makedirs(root + path, mode=0o755, exist_ok=True)
        _mount(path, root + path, None, MS_BIND | MS_REC)
        _mount(None, root + path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path in config["masks"]:
        _mount("tmpfs", root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
    os.makedirs(root + "/dev", mode=0o755)
    for device in DEVICES:
        open(root + device, "w").close()
        _mount(device, root + device, None, MS_BIND)
        _mount(None, root + device, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC)
    uid = config["uid"]
    os.makedirs(root + WORKDIR, mode=0o700)
    _mount("tmpfs", root + WORKDIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
           f"size={config['max_file_bytes']},nr_inodes=1024,mode=0700,uid={uid},gid={uid}")
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    os.chroot(root)
    os.chdir("/")


def limit_process(config):
    """In D: resource limits, then (namespaces, uid) drop to the slot uid with no privileges left."""
    limits = config["limits"]
    cpu = limits["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["max_file_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["max_open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
    if config["isolation"] in ("namespaces", "uid"):
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"],) * 2)
        uid = config["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid: a credential change clears it
    os.chdir(WORKDIR if config["isolation"] == "namespaces" else config["workdir"])
    os.umask(0o077)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": os.getcwd(), "TMPDIR": os.getcwd(), "LANG": "C.UTF-8"})


def _describe(exc):
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:  # a user exception whose __str__ fails
        text = type(exc).__name__
    return text[:MAX_DETAIL_CHARS]


def _status_of(exc):
    if isinstance(exc, TestTimeout):
        return "timeout"
    if isinstance(exc, MemoryError):
        return "memory_limit"
    if isinstance(exc, AssertionError):
        return "failed"
    return "error"


def _on_alarm(signum, frame):
    raise TestTimeout("per-test time limit")


def run_harness(payload, emit):
    """In D: executes the solution, then each test statement in the solution's namespace."""
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(payload["code"], "solution.py", "exec"), namespace)
    except BaseException as exc:
        emit("solution_error", status=_status_of(exc), detail=_describe(exc))
        return
    entry_point = payload["entry_point"]
    if entry_point and entry_point not in namespace:
        emit("missing_entry_point", detail=f"the solution does not define {entry_point!r}")
        return
    per_test = payload["per_test_seconds"]
    for index, test in enumerate(payload["tests"]):
        status, detail = "passed", ""
        try:
            if per_test:
                signal.signal(signal.SIGALRM, _on_alarm)
                signal.setitimer(signal.ITIMER_REAL, per_test)
            exec(compile(test, f"test_{index}", "exec"), namespace)
        except BaseException as exc:
            status, detail = _status_of(exc), _describe(exc)
        finally:
            if per_test:
                signal.setitimer(signal.ITIMER_REAL, 0)
        emit("test", index=index, status=status, detail=detail)
    emit("done")


def make_emitter(result_fd, nonce):
    """Event writer for D only: forked copies of D (user code calling fork) stay silent."""
    owner = os.getpid()

    def emit(event, **fields):
        if os.getpid() == owner:
            os.write(result_fd, (json.dumps({"nonce": nonce, "event": event, **fields}) + "\n").encode())
    return emit


def run_user_side(config, payload):
    """D: limits, harness, exit without running user-registered atexit handlers."""
    try:
        limit_process(config)
    except (SetupError, OSError) as exc:
        os.write(2, f"sandbox setup failed: {exc}\n".encode())
        os._exit(SETUP_FAILED_EXIT)
    emit = make_emitter(config["result_fd"], payload["nonce"])
    emit("ready")
    try:
        run_harness(payload, emit)
    finally:  # an error here (the result pipe closed by user code) shows as a run without "done"
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)


def run_namespace_init(config, payload, parent_alive_fd):
    """C: pid 1 of the new namespaces; builds the root, forks D, exits when D ends."""
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([parent_alive_fd], [], [], 0)[0]:  # B already gone (EOF): do not run unsupervised
            os._exit(SETUP_FAILED_EXIT)
        build_root(config)
    except (SetupError, OSError) as exc:
        os.write(2, f"sandbox setup failed: {exc}\n".encode())
        os._exit(SETUP_FAILED_EXIT)
    os.close(parent_alive_fd)
    child = os.fork()
    if child == 0:
        run_user_side(config, payload)
    os._exit(_wait_for(child))


def main():
    config = json.loads(sys.argv[1])
    payload = json.loads(sys.stdin.buffer.read())
    if config["isolation"] == "namespaces":
        try:
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS),
                   "unshare")
        except SetupError as exc:
            os.write(2, f"sandbox setup failed: {exc}\n".encode())
            os._exit(SETUP_FAILED_EXIT)
        alive_r, alive_w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(alive_w)
            run_namespace_init(config, payload, alive_r)
        os.close(alive_r)
    else:
        child = os.fork()
        if child == 0:
            run_user_side(config, payload)
    os._exit(_wait_for(child))


if __name__ == "__main__":
    main()
