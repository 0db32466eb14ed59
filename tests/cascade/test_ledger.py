"""The ledger: append-only per-stage scores, teacher choice by best score, atomic writes."""
import json

import pytest

from nemocascade.cascade.ledger import Ledger


def _entry(stage, math, ifs):
    return {"stage": stage, "kind": "x", "checkpoint_dir": f"/w/{stage}", "step": 1,
            "scores": {"math": {"pass_at_1": math[0], "mean_reward": math[1], "num_examples": 10},
                       "if": {"pass_at_1": ifs[0], "mean_reward": ifs[1], "num_examples": 10}}}


def test_best_per_domain_and_tie_breaks(tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.json"))
    ledger.append(_entry("sft", (0.5, 0.5), (0.2, 0.3)))
    ledger.append(_entry("if_rl", (0.4, 0.4), (0.6, 0.7)))
    ledger.append(_entry("math_rl", (0.5, 0.6), (0.6, 0.7)))
    among = ["sft", "if_rl", "math_rl"]
    assert ledger.best_for("math", among=among)["stage"] == "math_rl"   # equal pass@1, higher mean reward
    assert ledger.best_for("if", among=among)["stage"] == "if_rl"       # full tie: the earlier stage
    assert ledger.best_for("math", among=["sft", "if_rl"])["stage"] == "sft"
    with pytest.raises(ValueError, match="no evaluated stage"):
        ledger.best_for("code", among=among)


def test_reload_and_duplicate_refused(tmp_path):
    path = str(tmp_path / "ledger.json")
    Ledger(path).append(_entry("sft", (0.1, 0.1), (0.1, 0.1)))
    again = Ledger(path)
    assert again.entry("sft")["checkpoint_dir"] == "/w/sft"
    with pytest.raises(ValueError, match="already in the ledger"):
        again.append(_entry("sft", (0.1, 0.1), (0.1, 0.1)))
    assert json.load(open(path))["entries"][0]["stage"] == "sft"
    assert not (tmp_path / "ledger.json.tmp").exists()


def test_a_reader_process_keeps_entries_without_writing(tmp_path):
    """Multi-process runs: every process appends (same entries in memory), only the writer touches the file."""
    path = str(tmp_path / "ledger.json")
    Ledger(path).append(_entry("sft", (0.1, 0.1), (0.1, 0.1)))
    reader = Ledger(path, writer=False)
    reader.append(_entry("if_rl", (0.2, 0.2), (0.3, 0.3)))
    assert [e["stage"] for e in reader.entries] == ["sft", "if_rl"]
    assert [e["stage"] for e in Ledger(path).entries] == ["sft"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"]
