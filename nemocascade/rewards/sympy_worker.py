"""Symbolic equivalence with a time limit: the host's handle on the sympy worker process.

``SympyWorker`` starts ``python -m nemocascade.rewards.sympy_server`` (see there for the protocol) on first
use, sends one request at a time and kills the process when an answer takes longer than the time limit;
the next request starts a fresh one. The host never imports sympy.
"""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

STARTUP_SECONDS = 120.0


class SympyTimeout(Exception):
    """The worker did not answer within the time limit (it has been killed)."""


class SympyWorker:
    """A lazily started worker process; ``request`` is thread-safe and enforces a per-call time limit."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    def _start(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                          os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen([sys.executable, "-m", "nemocascade.rewards.sympy_server"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=package_root)
        self._buffer = b""
        ready = self._read_line(time.monotonic() + STARTUP_SECONDS)
        if json.loads(ready) != {"ready": True}:
            raise RuntimeError(f"sympy worker failed to start: {ready!r}")

    def _read_line(self, deadline: float) -> bytes:
        fd = self._proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise SympyTimeout()
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"sympy worker exited (code {self._proc.wait()})")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc.stdin.close()
            self._proc.stdout.close()
            self._proc = None

    def request(self, request: dict, timeout: float) -> dict:
        """Sends one request; raises ``SympyTimeout`` (and restarts the worker next time) when slow."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                self._proc.stdin.write((json.dumps(request) + "\n").encode())
                self._proc.stdin.flush()
                return json.loads(self._read_line(time.monotonic() + timeout))
            except (SympyTimeout, RuntimeError, BrokenPipeError):
                self._kill()
                raise

    def close(self) -> None:
        with self._lock:
            self._kill()


_SHARED: SympyWorker | None = None
_SHARED_LOCK = threading.Lock()


def shared_worker() -> SympyWorker:
    """The process-wide worker (started on first request)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = SympyWorker()
        return _SHARED
