"""The experiment description shared by every launcher, and the one place command lines are built.

An :class:`Experiment` is a config file (``experiments/X.py[:preset]``), base overrides of config fields,
and a sweep: a list of points, each a dict of overrides. Every point becomes a :class:`WorkUnit` with the
workdir ``<root_workdir>/<name>/<index>`` and the entry-point arguments
``--config=<config> --workdir=<workdir> --config.<key>=<value> ...`` (base overrides first, then the
point's, so a point wins over a base override of the same key).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence

DEFAULT_ENTRY = "nemocascade.launch"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_OPEN, _CLOSE = "([{", ")]}"


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Splits ``text`` on ``sep`` outside brackets and quotes: ``"1,(2,3),'a,b'"`` -> 3 items."""
    parts, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise ValueError(f"unbalanced brackets or quotes in {text!r}")
    parts.append(text[start:])
    return parts


def _key_value(item: str, what: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise ValueError(f"{what} {item!r} must look like field.sub_field=value (a config field, "
                         "without the leading 'config.')")
    if key == "config" or key.startswith("config."):
        raise ValueError(f"{what} {item!r}: name the config field without the leading 'config.'")
    return key, value


def parse_overrides(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``["train.steps=10", ...]`` -> ``(("train.steps", "10"), ...)``; a repeated key is an error."""
    pairs = [_key_value(item, "override") for item in items]
    keys = [key for key, _ in pairs]
    if dups := sorted({key for key in keys if keys.count(key) > 1}):
        raise ValueError(f"override given twice: {', '.join(dups)}")
    return tuple(pairs)


def parse_sweep(items: Sequence[str]) -> tuple[dict[str, str], ...]:
    """Cartesian product of ``key=v1,v2,...`` items, in order; ``()`` (no sweep) -> one empty point.

    Commas inside brackets or quotes do not split: ``eval.domains=('math','code'),('math',)`` is 2 values.
    """
    axes = []
    for item in items:
        key, values = _key_value(item, "sweep")
        if key in (axis_key for axis_key, _ in axes):
            raise ValueError(f"sweep over {key} given twice")
        options = [value.strip() for value in split_top_level(values)]
        if any(not value for value in options):
            raise ValueError(f"sweep {item!r} has an empty value")
        axes.append((key, options))
    return tuple(dict(zip([key for key, _ in axes], point))
                 for point in itertools.product(*[options for _, options in axes]))


@dataclasses.dataclass(frozen=True)
class WorkUnit:
    """One run: the entry module with its own workdir and overrides."""
    index: int
    config: str
    workdir: str
    overrides: tuple[tuple[str, str], ...]
    entry: str = DEFAULT_ENTRY

    def args(self) -> list[str]:
        """The entry point's arguments (one argv element per flag, nothing to quote)."""
        return [f"--config={self.config}", f"--workdir={self.workdir}",
                *(f"--config.{key}={value}" for key, value in self.overrides)]

    def argv(self, python: str) -> list[str]:
        """``[python, "-m", entry, *args]``."""
        return [python, "-m", self.entry, *self.args()]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A config + base overrides + a sweep; :meth:`work_units` expands it.

    Attributes:
      config: ``experiments/X.py`` or ``experiments/X.py:preset``, relative to the repository root (the
        working directory of every process) or absolute.
      root_workdir: work unit ``i`` writes to ``<root_workdir>/<name>/<i>`` (POSIX paths: the same
        string is used on remote hosts).
      name: defaults to the config file's stem plus ``-<preset>`` if a preset is given.
      overrides: base ``(key, value)`` overrides for every work unit.
      sweep: the points; each is a dict of overrides. ``({},)`` is a single work unit.
      entry: the Python module every process runs (``python -m <entry>``).
    """
    config: str
    root_workdir: str
    name: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()
    sweep: tuple[Mapping[str, str], ...] = ({},)
    entry: str = DEFAULT_ENTRY

    def __post_init__(self):
        if not self.config_path.endswith(".py"):
            raise ValueError(f"config {self.config!r} must be a .py file, optionally followed by :preset")
        if not self.sweep:
            raise ValueError("the sweep has no points (use ({},) for a single work unit)")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.experiment_name):
            raise ValueError(f"experiment name {self.experiment_name!r} may only contain letters, digits, "
                             "'_', '-' and '.'")

    @property
    def config_path(self) -> str:
        return self.config.partition(":")[0]

    @property
    def experiment_name(self) -> str:
        if self.name:
            return self.name
        path, _, preset = self.config.partition(":")
        stem = os.path.splitext(os.path.basename(path))[0]
        return f"{stem}-{preset}" if preset else stem

    def check_config_exists(self, repo_root: str) -> None:
        """Raises FileNotFoundError if the config file is missing under ``repo_root``."""
        path = os.path.join(repo_root, self.config_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {self.config_path!r} not found (looked for {path})")

    def work_units(self) -> list[WorkUnit]:
        units = []
        for index, point in enumerate(self.sweep):
            merged = dict(self.overrides)
            merged.update(point)
            units.append(WorkUnit(index=index, config=self.config, entry=self.entry,
                                  workdir=posixpath.join(self.root_workdir, self.experiment_name, str(index)),
                                  overrides=tuple(merged.items())))
        return units


def shell_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """``KEY=value ... argv`` quoted for a POSIX shell (what dry runs print and remote hosts execute)."""
    assignments = [f"{key}={shlex.quote(value)}" for key, value in (env or {}).items()]
    return " ".join([*assignments, shlex.join(argv)])
