"""Smoke tests of the kernel benchmark CLI (`python -m pallas_kernels.bench`) on CPU, tiny sizes.

No timing assertions: only that the table is printed with the expected rows and notes.
"""
import os
import subprocess
import sys

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
