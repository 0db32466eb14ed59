"""Run commands, or with ``dry_run`` print them as the shell script that does the same thing.

Commands are argument lists (``subprocess`` without a shell); only their printed form and the remote
``--command`` strings of ``gcloud ... ssh`` are shell text, and those are built with ``shlex``.
Environment variables shown are the ones the launcher adds to the inherited environment.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TextIO

from launch.experiment import shell_line


@dataclasses.dataclass(frozen=True)
class Command:
    """An argument list plus the environment variables added for it."""
    argv: tuple[str, ...]
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", dict(self.env))

    def line(self) -> str:
        return shell_line(self.argv, self.env)


class CommandError(RuntimeError):
    """A command exited with a non-zero status."""


class Runner:
    """Executes (or, with ``dry_run``, prints) commands from the working directory ``cwd``."""

    def __init__(self, dry_run: bool, cwd: str, out: TextIO | None = None):
        self.dry_run = dry_run
        self.cwd = cwd
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self._say(f"cd {shlex.quote(cwd)}" if dry_run else f"# in {cwd}")

    def _say(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def comment(self, text: str) -> None:
        self._say(f"# {text}")

    def _popen(self, command: Command, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(list(command.argv), cwd=self.cwd, env={**os.environ, **command.env}, **kwargs)

    def _show(self, line: str) -> bool:
        """Prints the shell line (``+ line`` when executing); True if it is to be executed."""
        self._say(line if self.dry_run else f"+ {line}")
        return not self.dry_run

    def _wait(self, command: Command, check: bool, **kwargs) -> int:
        code = self._popen(command, **kwargs).wait()
        if check and code:
            raise CommandError(f"exit status {code}: {command.line()}")
        return code

    def run(self, command: Command, check: bool = True) -> int:
        """Runs one command in the foreground (its output goes straight to ours)."""
        return self._wait(command, check) if self._show(command.line()) else 0

    def run_or(self, first: Command, fallback: Command) -> None:
        """``first || fallback``: runs ``fallback`` only if ``first`` fails (``first``'s output hidden)."""
        if self._show(f"{first.line()} || {fallback.line()}"):
            if self._wait(first, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
                self._wait(fallback, check=True)

    def pipe(self, producer: Command, consumer: Command) -> None:
        """``producer | consumer``."""
        if not self._show(f"{producer.line()} | {consumer.line()}"):
            return
        first = self._popen(producer, stdout=subprocess.PIPE)
        second = self._popen(consumer, stdin=first.stdout)
        first.stdout.close()
        codes = second.wait(), first.wait()
        if any(codes):
            raise CommandError(f"exit statuses {codes[1]}, {codes[0]}: {producer.line()} | {consumer.line()}")

    def run_parallel(self, commands: Sequence[Command], prefixes: Sequence[str]) -> int:
        """Starts all commands at once (``cmd &`` ... ``wait``), prefixes every output line, and waits.

        If one exits with an error the others are terminated (a multi-process JAX job cannot go on
        without it). Returns the first non-zero exit status, else 0.
        """
        for command in commands:
            self._show(f"{command.line()} &")
        if not self._show("wait"):
            return 0
        procs = [self._popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
                 for command in commands]
        readers = [threading.Thread(target=self._relay, args=(proc, prefix), daemon=True)
                   for proc, prefix in zip(procs, prefixes)]
        for reader in readers:
            reader.start()
        status = _wait_all(procs)
        for reader in readers:
            reader.join()
        return status

    def _relay(self, proc: subprocess.Popen, prefix: str) -> None:
        for line in proc.stdout:
            self._say(f"{prefix}{line.rstrip()}")


def _wait_all(procs: Sequence[subprocess.Popen], poll_s: float = 0.2, grace_s: float = 10.0) -> int:
    """Waits for every process; on the first failure terminates (then kills) the rest."""
    pending = list(procs)
    while pending:
        for proc in list(pending):
            try:
                code = proc.wait(timeout=poll_s)
            except subprocess.TimeoutExpired:
                continue
            pending.remove(proc)
            if code:
                for other in pending:
                    other.terminate()
                for other in pending:
                    try:
                        other.wait(timeout=grace_s)
                    except subprocess.TimeoutExpired:
                        other.kill()
                        other.wait()
                return code
    return 0

