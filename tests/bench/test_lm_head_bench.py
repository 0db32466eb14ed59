"""`python -m nemocascade.bench.lm_head` on CPU at a small size: every chunk size prints a row, the loss is
the same on every path, and the chunked programs need less temporary memory than the full logits."""
from bench_testing import run_bench


def test_prints_one_row_per_chunk_with_the_same_loss():
    lines = run_bench("lm_head", "--rows=2", "--seq=512", "--d_model=32", "--vocab=1024", "--chunks=0,64,100",
                      "--dtype=float32", "--repeats=1")
    assert "f32 logits would be 4.0 MiB" in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["full", "64", "100"]
    temp_mib = [float(row[1]) for row in rows]
    losses = [float(row[3]) for row in rows]
    assert max(losses) - min(losses) <= 1e-5 * abs(losses[0])
    assert temp_mib[0] >= 4.0 and temp_mib[1] < temp_mib[0] / 4 and temp_mib[2] < temp_mib[0] / 4
