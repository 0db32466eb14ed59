"""``workdir/ledger.json``: per-stage evaluation scores, the record MOPD picks its teachers from.

Format: ``{"entries": [{"stage", "kind", "checkpoint_dir", "step", "scores": {domain: {"pass_at_1",
"mean_reward", "num_examples"}}, "teachers"?: {domain: {"stage", "checkpoint_dir"}}}, ...]}`` in stage order.
Writes go to a temporary file renamed into place, so a kill never leaves a half-written ledger. In a
multi-process run every process keeps the entries and only one (``writer=True``) writes the file.
"""
from __future__ import annotations

import json
import os
from typing import Sequence


class Ledger:
    def __init__(self, path: str, *, writer: bool = True):
        self.path = path
        self.writer = writer
        self.entries: list[dict] = []
        if os.path.exists(path):
            with open(path) as f:
                self.entries = json.load(f)["entries"]

    def entry(self, stage: str) -> dict | None:
        for entry in self.entries:
            if entry["stage"] == stage:
                return entry
        return None

    def append(self, entry: dict) -> None:
        if self.entry(entry["stage"]) is not None:
            raise ValueError(f"stage {entry['stage']!r} is already in the ledger {self.path}")
        self.entries.append(entry)
        if not self.writer:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"entries": self.entries}, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)

    def best_for(self, domain: str, *, among: Sequence[str]) -> dict:
        """The entry (of stages ``among``) with the best score on ``domain``: pass@1, then mean reward;
        the earlier stage wins ties."""
        candidates = [e for e in self.entries if e["stage"] in among and domain in e["scores"]]
        if not candidates:
            raise ValueError(f"no evaluated stage among {list(among)} has a score for domain {domain!r}")
        def key(item):
            index, entry = item
            score = entry["scores"][domain]
            return (score["pass_at_1"], score["mean_reward"], -index)
        return max(enumerate(candidates), key=key)[1]
