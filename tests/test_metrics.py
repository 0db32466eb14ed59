"""MetricsWriter: interval averages in float64, the files it writes, resume truncation, the progress line."""
import json

import jax.numpy as jnp
import numpy as np

from nemocascade.metrics import MetricsWriter


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_interval_averages_files_and_progress_line(tmp_path, capsys):
    writer = MetricsWriter(str(tmp_path), total_steps=4, tokens_per_step=100.0, name="sft")
    losses = np.array([3.0, 2.5, 2.25, 1.0], np.float32)
    for step, loss in enumerate(losses, start=1):
        writer.update({"loss": jnp.float32(loss), "grad_norm": jnp.float32(step), "expert_load": jnp.ones(4)})
        if step % 2 == 0:
            writer.write(step, extra={"reward": 0.5})
    writer.close()
    lines = _lines(tmp_path / "metrics.jsonl")
    assert [line["step"] for line in lines] == [2, 4]
    np.testing.assert_allclose([line["loss"] for line in lines],
                               [np.mean(losses[:2], dtype=np.float64), np.mean(losses[2:], dtype=np.float64)],
                               rtol=1e-12)
    assert [line["grad_norm"] for line in lines] == [1.5, 3.5]
    assert all("expert_load" not in line and line["reward"] == 0.5 for line in lines)
    perf = _lines(tmp_path / "perf.jsonl")
    assert [p["step"] for p in perf] == [2, 4]
    assert all(p["tokens_per_s"] > 0 and p["step_time_s"] > 0 for p in perf)
    assert perf[-1]["eta_s"] == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sft step 2/4 | loss 2.75 | reward 0.5 | grad_norm 1.5 |") and "tok/s" in out[0]
    assert "ETA" in out[0]


def test_truncate_after_drops_steps_a_resumed_run_repeats(tmp_path):
    writer = MetricsWriter(str(tmp_path), total_steps=6)
    for step in range(1, 7):
        writer.update({"loss": jnp.float32(step)})
        writer.write(step)
    writer.truncate_after(4)
    assert [line["step"] for line in _lines(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    writer.update({"loss": jnp.float32(50.0)})
    writer.write(5)
    assert _lines(tmp_path / "metrics.jsonl")[-1] == {"step": 5, "loss": 50.0}
