"""Test-wide setup: 8 host CPU devices so meshes are real, XLA's quick CPU compilation (``cpu_env.py``), float64
available on request, and one persistent XLA compilation cache shared by the test processes and every program
they launch as a subprocess.

The launch tests start ``nemocascade.launch`` / ``launch.local`` processes that compile the same small programs
again and again (a relaunch after a kill, the same tiny model's sampler in several stages and tests): from a
warm cache a 3-step GRPO launch takes 7 s instead of 23 s. In-process tests compile the same programs from
fresh closures too (the tiny model's forward and step in many tests): the cache spares those (measured: the
model tests 6 min 6 s instead of 6 min 36 s on 2 cores). The cache lives for one pytest run (shared by its
xdist workers) in the run's temporary directory.

A worker that dies of a fatal signal (a crash in native code) writes its faulthandler dump to a file; the
controller prints the crashed thread's part of it in the summary, where a log's tail shows it (pytest would print
every thread's stack to the worker's stderr, and the crashed one's frames scroll out of a short tail). The test
that was running runs once more on a fresh worker (xdist's ``pytest_handlecrashitem``; shown as ``R``): a rare
crash inside XLA's CPU runtime (seen once in ~20 suite runs, 2026-12-07) does not fail the run, one that comes
back does.
"""
import faulthandler
import os
import shutil
import tempfile

import pytest

from cpu_env import FAST_COMPILE, device_count_flag

os.environ.setdefault("XLA_FLAGS", device_count_flag(8))
if FAST_COMPILE not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " " + FAST_COMPILE
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session", autouse=True)
def shared_subprocess_compile_cache(tmp_path_factory, worker_id):
    """Points the environment that launched subprocesses inherit at the run's compilation cache directory."""
    base = tmp_path_factory.getbasetemp()
    cache = (base if worker_id == "master" else base.parent) / "xla_compile_cache"
    cache.mkdir(exist_ok=True)
    settings = {"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    import jax  # the test process: its cache settings were read at import, so they are set (and reset) here
    from jax.experimental.compilation_cache import compilation_cache
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    compilation_cache.reset_cache()
    yield cache
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pytest_collection_modifyitems(config, items):
    """The tests marked ``slow`` (a minute or more each on 2 cores: subprocess launches, whole cascades) run first,
    so that the xdist workers start them early and end the run on short tests, not one waiting for the other."""
    del config
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


CRASH_DIR_VARIABLE = "NEMOCASCADE_TEST_CRASH_DIR"
_crash_dump = None   # a worker's dump file (kept open: faulthandler writes to its descriptor)
_crash_dir = None    # the controller's directory of its workers' dump files (a pytest it launches inherits the
                     # variable: only the controller that made the directory reads and removes it)


@pytest.hookimpl(trylast=True)          # after pytest's faulthandler plugin, which it replaces in workers
def pytest_configure(config):
    global _crash_dump, _crash_dir
    if not hasattr(config, "workerinput"):
        if config.pluginmanager.hasplugin("xdist") and config.getoption("numprocesses", None):
            _crash_dir = os.environ[CRASH_DIR_VARIABLE] = tempfile.mkdtemp(prefix="nemocascade-test-crashes-")
    elif CRASH_DIR_VARIABLE in os.environ:
        name = f"{config.workerinput['workerid']}-{os.getpid()}.txt"
        _crash_dump = open(os.path.join(os.environ[CRASH_DIR_VARIABLE], name), "w")
        faulthandler.enable(file=_crash_dump, all_threads=True)


_crashed_tests: set[str] = set()


def pytest_handlecrashitem(crashitem, report, sched):
    """The controller: a test whose worker crashed runs once more (its second crash is a failure)."""
    if crashitem not in _crashed_tests:
        _crashed_tests.add(crashitem)
        sched.mark_test_pending(crashitem)
        report.outcome = "rerun"


def pytest_report_teststatus(report):
    if report.outcome == "rerun":
        return "rerun", "R", ("RERUN", {"yellow": True})
    return None


def pytest_terminal_summary(terminalreporter):
    """The controller: for each crashed worker, the fatal error and the stack of the thread that crashed."""
    if _crash_dir is None:
        return
    for name in sorted(os.listdir(_crash_dir)):
        dump = open(os.path.join(_crash_dir, name)).read()
        if "Fatal Python error" in dump:
            terminalreporter.write_sep("=", f"worker crash dump {name} (a test that crashes once runs again)")
            terminalreporter.write_line(crashed_thread_part(dump))
    shutil.rmtree(_crash_dir, ignore_errors=True)


HARNESS_FRAMES = ("/_pytest/", "/pluggy/", "/execnet/", "/xdist/", 'File "<string>"')


def crashed_thread_part(dump: str, max_lines: int = 40) -> str:
    """A faulthandler dump's first line and the stack of its "Current thread" (the first thread's when the crash
    was in a thread without Python frames) without pytest's and xdist's frames, at most ``max_lines`` lines."""
    lines = dump.splitlines()
    blocks, block = [], []
    for line in lines[1:]:
        if line.startswith(("Thread 0x", "Current thread 0x", "Extension modules")) and block:
            blocks.append(block)
            block = []
        block.append(line)
    blocks.append(block)
    threads = [b for b in blocks if b and b[0].startswith(("Thread 0x", "Current thread 0x"))] or [[]]
    crashed = next((b for b in threads if b[0].startswith("Current thread")), threads[0])
    frames = [line for line in crashed if line.strip() and not any(part in line for part in HARNESS_FRAMES)]
    return "\n".join(lines[:1] + frames[:max_lines])
