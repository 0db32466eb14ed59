"""The cascade report: ``report.md`` holds a synthetic ledger's numbers, ``scores.png`` is a valid PNG whose
pixels show the known polylines (decoded here with struct + zlib, independently of the writer)."""
import json
import os
import struct
import zlib

import numpy as np
import pytest

from nemocascade import configs
from nemocascade.cascade import pipeline, raster, report
from nemocascade.cascade.ledger import Ledger

LAYOUT = report.ChartLayout()


def _score(pass_at_1, mean_reward):
    return {"pass_at_1": pass_at_1, "mean_reward": mean_reward, "num_examples": 64}


ENTRIES = [
    {"stage": "sft", "kind": "sft", "checkpoint_dir": "/w/sft", "step": 180,
     "scores": {"math": _score(0.25, 0.3125), "if": _score(0.75, 0.8)}},
    {"stage": "mopd", "kind": "mopd", "checkpoint_dir": "/w/mopd", "step": 20,
     "scores": {"math": _score(0.25, 0.375), "if": _score(0.5, 0.6)},
     "teachers": {d: {"stage": "sft", "checkpoint_dir": "/w/sft"} for d in ("math", "if")}},
    {"stage": "reward_model", "kind": "reward_model", "checkpoint_dir": "/w/rm", "step": 80, "scores": {},
     "evaluation": {"pairwise_accuracy": 0.915, "num_pairs": 500, "margin_mean": 2.25}},
    {"stage": "rlhf", "kind": "rlhf", "checkpoint_dir": "/w/rlhf", "step": 20,
     "scores": {"math": _score(1.0, 1.0), "if": _score(0.0, 0.125)},
     "evaluation": {"reward_model_score": {"chat": {"before": -0.5, "after": 1.25, "num_examples": 64}}},
     "reward_model": {"stage": "reward_model", "checkpoint_dir": "/w/rm"}},
]
MATH, IF = report.PALETTE[0], report.PALETTE[1]


def _config(order=("sft", "mopd", "reward_model", "rlhf")):
    stages = {"sft": configs.stage("sft", **configs.tiny_sft_stage()),
              "mopd": configs.tiny_rl_stage("mopd", domains=("math", "if")),
              "reward_model": configs.stage("reward_model", **configs.tiny_reward_model_stage()),
              "rlhf": configs.tiny_rlhf_stage()}
    return configs.cascade_config(name="synthetic", model="tiny", mesh=configs.mesh_config(), order=order,
                                  stages=stages, eval_cfg=configs.eval_config(domains=("math", "if"), num_examples=64,
                                                                              max_new_tokens=48),
                                  data=configs.shared_data_config(), seed=7)


def _write_ledger(workdir):
    with open(os.path.join(workdir, "ledger.json"), "w") as f:
        json.dump({"entries": ENTRIES}, f)
    return Ledger(os.path.join(workdir, "ledger.json"))


def decode_png(data: bytes) -> np.ndarray:
    """uint8[H, W, 3] of an 8-bit RGB, non-interlaced PNG whose rows all use filter 0; checks every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, color_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color_type, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any()                                        # filter type 0 (None) on every row
    return rows[:, 1:].reshape(height, width, 3)


def _pixel(stage_number, value, num_stages=len(ENTRIES)):
    """Where the chart puts a score: the centre of the stage's slot, linear in the value (the documented layout)."""
    slot = (LAYOUT.right - LAYOUT.left) / num_stages
    x = LAYOUT.left + slot * (stage_number - 0.5)
    y = LAYOUT.bottom - value * (LAYOUT.bottom - LAYOUT.top)
    return x, y


def test_png_shows_each_domains_polyline(tmp_path):
    report.write_report(_config(), _write_ledger(str(tmp_path)), str(tmp_path))
    image = decode_png((tmp_path / "scores.png").read_bytes())
    assert image.shape == (LAYOUT.height, LAYOUT.width, 3)

    def color(x, y):
        return tuple(int(c) for c in image[int(round(y)), int(round(x))])

    # Markers at every scored stage (the reward model, stage 3, has none).
    for number, math, if_ in ((1, 0.25, 0.75), (2, 0.25, 0.5), (4, 1.0, 0.0)):
        assert color(*_pixel(number, math)) == MATH
        assert color(*_pixel(number, if_)) == IF
    # math is flat at 0.25 from stage 1 to 2: every pixel between the markers on that row is the line.
    (x0, y), (x1, _) = _pixel(1, 0.25), _pixel(2, 0.25)
    row = image[int(round(y)), int(round(x0)):int(round(x1)) + 1]
    assert (row == MATH).all()
    # math rises from 0.25 (stage 2) to 1.0 (stage 4) across the reward model's slot: the line passes within a
    # pixel of each point in between; if falls from 0.5 to 0.0 likewise.
    for domain_color, start, end in ((MATH, 0.25, 1.0), (IF, 0.5, 0.0)):
        (ax, ay), (bx, by) = _pixel(2, start), _pixel(4, end)
        for t in (0.25, 0.5, 0.75):
            x, y = ax + t * (bx - ax), ay + t * (by - ay)
            patch = image[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2]
            assert (patch == domain_color).all(axis=-1).any(), (domain_color, t)
    # Background, grid and axis where no line passes; one legend swatch per domain in palette order.
    assert color(*_pixel(3, 0.9)) == report.WHITE
    assert color(_pixel(3, 0.0)[0] + 8, _pixel(3, 0.5)[1]) == report.GRID
    assert color(LAYOUT.left, _pixel(1, 0.6)[1]) == report.INK
    for index, domain_color in enumerate((MATH, IF)):
        sx, sy = LAYOUT.legend_row(index)
        assert color(sx + LAYOUT.swatch // 2, sy + LAYOUT.swatch // 2) == domain_color
    assert not (image == report.PALETTE[2]).all(axis=-1).any()          # exactly two domains drawn


def test_report_markdown_has_the_ledgers_numbers(tmp_path):
    report.write_report(_config(), _write_ledger(str(tmp_path)), str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert "# Cascade report: synthetic" in text and "Seed 7 for every stage" in text
    assert "| # | stage | kind | step | math pass@1 | math mean reward | if pass@1 | if mean reward |" in text
    assert "| 1 | sft | sft | 180 | 0.250 | 0.312 | 0.750 | 0.800 |" in text
    assert "| 2 | mopd | mopd | 20 | 0.250 | 0.375 | 0.500 | 0.600 |" in text
    assert "| 3 | reward_model | reward_model | 80 | – | – | – | – |" in text
    assert "| 4 | rlhf | rlhf | 20 | 1.000 | 1.000 | 0.000 | 0.125 |" in text
    assert "| mopd | if | sft |" in text and "| mopd | math | sft |" in text
    assert "| reward_model | 0.915 | 500 | 2.250 |" in text
    assert "| rlhf | chat | -0.500 | 1.250 | 64 | reward_model |" in text
    assert "![pass@1 after each stage](scores.png)" in text


def _report_with(tmp_path, entries, last: dict) -> str:
    """report.md of a ledger of ``entries`` and then a stage ``last`` (math / if scores filled in)."""
    last = {"checkpoint_dir": f"/w/{last['stage']}", "step": 20,
            "scores": {"math": _score(1.0, 1.0), "if": _score(0.0, 0.125)}, **last}
    with open(tmp_path / "ledger.json", "w") as f:
        json.dump({"entries": entries + [last]}, f)
    report.write_report(_config(), Ledger(str(tmp_path / "ledger.json")), str(tmp_path))
    return (tmp_path / "report.md").read_text()


def test_report_has_the_judges_win_rates(tmp_path):
    text = _report_with(tmp_path, ENTRIES[:3], {
        "stage": "rlhf", "kind": "rlhf", "judge": {"checkpoint_dir": "/w/genrm"},
        "evaluation": {"judge_win_rate": {"chat": {"win_rate": 0.625, "num_examples": 64,
                                                   "parse_failure_fraction": 0.125}}}})
    assert "## RLHF (pairwise judge)" in text and "| rlhf | chat | 0.625 | 64 | 0.125 | /w/genrm |" in text
    assert "The reward model's mean score" not in text


def test_report_has_the_answer_judges_scores(tmp_path):
    text = _report_with(tmp_path, ENTRIES[:2], {
        "stage": "long_context_rl", "kind": "grpo", "judge": {"stage": "judge", "checkpoint_dir": "/w/judge"},
        "evaluation": {"judge_score": {"long_context": {"before": 0.25, "after": 0.75, "num_examples": 64}}}})
    assert "## Judged domains" in text and "| long_context_rl | long_context | 0.250 | 0.750 | 64 | judge |" in text
    assert "## RLHF" not in text


def test_report_is_written_when_every_stage_is_skipped(tmp_path, monkeypatch):
    _write_ledger(str(tmp_path))
    monkeypatch.setattr(pipeline, "STAGE_RUNNERS", {})                 # any stage that ran would fail
    pipeline.run_cascade(_config(), str(tmp_path))
    assert "| 4 | rlhf | rlhf | 20 |" in (tmp_path / "report.md").read_text()
    assert decode_png((tmp_path / "scores.png").read_bytes()).shape == (LAYOUT.height, LAYOUT.width, 3)


def test_raster_text_and_bad_pixels():
    canvas = raster.Canvas(12, 7)
    end = canvas.text(1, 1, "1.", (0, 0, 0), scale=1)
    assert end == 1 + 2 * (raster.GLYPH_WIDTH + 1)
    ink = (canvas.pixels == 0).all(axis=-1).astype(int)
    np.testing.assert_array_equal(ink[1:6, 1:4], [[0, 1, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(ink[1:6, 5:8], [[0, 0, 0]] * 4 + [[0, 1, 0]])
    with pytest.raises(ValueError, match=r"pixels must be uint8\[H, W, 3\]"):
        raster.encode_png(np.zeros((4, 4), np.uint8))
