"""Smoke tests of the kernel benchmark CLI (`python -m pallas_kernels.bench`) on CPU, tiny sizes.

No timing assertions: only that the table is printed with the expected rows and notes.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import bench

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_attention_and_decode_table(capsys):
    assert bench.main(["--ops=attention,decode", "--small"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("device: cpu")
    header = lines[1].split()
    for column in ("op", "size", "impl", "time_ms", "tflops", "peak_frac", "note"):
        assert column in header
    for op in ("attention fwd", "attention fwd+bwd", "decode"):
        rows = [line for line in lines if line.startswith(op + " ")]
        impls = {row.split()[len(op.split()) + 5] for row in rows}  # op, size name, B=, T/S=, H=, D=
        assert {"pallas", "jax-pallas", "xla", "cudnn", "pallas-xla"} <= impls, (op, impls)
        assert any("n/a on cpu" in row for row in rows)
        assert any("n/a: gpu only" in row for row in rows)
    assert bench.LEGEND in out


def test_missing_module_is_skipped_with_a_note(capsys, monkeypatch):
    monkeypatch.setitem(bench.OPS, "missing", ("pallas_kernels.not_a_module.bench", "run", ("small",)))
    assert bench.main(["--ops=missing", "--small"]) == 0
    out = capsys.readouterr().out
    assert "note: skipping missing: pallas_kernels.not_a_module.bench is not available" in out
    assert "no rows" in out


def test_unknown_op_is_an_error(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--ops=attention,nope"])
    assert "--ops must be a comma-separated subset" in capsys.readouterr().err


def test_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "pallas_kernels.bench", "--ops=decode", "--small"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr
    assert "decode" in result.stdout and "pallas-xla" in result.stdout


def test_measure_fills_a_row_prints_it_and_turns_a_failure_into_a_note(capsys):
    from pallas_kernels import timing

    x = jnp.arange(6, dtype=jnp.float32)
    row = timing.measure(dict(op="double", impl="ok", note=""), jax.jit(lambda v: 2 * v), (x,),
                         want=2.5 * x, flops=6.0, num_bytes=48.0, peak=100.0, samples=2)
    assert row["rel_err_vs_xla"] == pytest.approx(0.2)  # ||2x - 2.5x|| / ||2.5x||
    assert row["time_ms"] > 0 and row["gbps"] == pytest.approx(48.0 / (row["time_ms"] * 1e6))
    assert row["tflops"] == pytest.approx(6.0 / (row["time_ms"] * 1e9))
    assert row["peak_frac"] == pytest.approx(row["gbps"] / 100.0)  # GB/s when bytes are given

    def too_big(v):
        raise ValueError("block 512 exceeds the shape\nsecond line")

    failed = timing.measure(dict(op="double", impl="bad", time_ms=None, note=""), too_big, (x,), want=x)
    assert failed["time_ms"] is None and "rel_err_vs_xla" not in failed
    assert failed["note"] == "failed: ValueError: block 512 exceeds the shape"
    printed = capsys.readouterr().err.splitlines()
    assert printed[0].startswith("measured: op=double  impl=ok  rel_err_vs_xla=0.2  time_ms=")  # no empty note
    assert printed[1] == "measured: op=double  impl=bad  note=failed: ValueError: block 512 exceeds the shape"
