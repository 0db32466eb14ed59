"""launch/device_checks.sh, the prepared GPU checks, run end to end with --smoke on this CPU host.

Every step (env, kernels, gmm, attention, ssd, rollout) must finish with rc=0 and leave its log in $OUT,
so the script a lent-GPU session runs has not rotted; the numbers themselves are not checked here. In smoke
mode the kernels step only collects the gpu_kernel tests (the suite runs them in the interpreter).
"""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "launch", "device_checks.sh")
STEPS = ("env", "kernels", "gmm", "attention", "ssd", "rollout")


@pytest.mark.slow
def test_smoke_run_completes_every_step(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", SCRIPT, "--smoke"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text()
    statuses = dict(re.findall(r"^(\w+): rc=(\d+)", summary, re.M))
    assert statuses == {name: "0" for name in STEPS}, summary
    selected = re.search(r"(\d+)/\d+ tests collected", (tmp_path / "kernels.txt").read_text())
    assert selected and int(selected.group(1)) >= 19  # the gpu_kernel tests (smoke mode only collects them)
    assert re.search(r"^tiny\s+4\s+\d+", (tmp_path / "rollout.txt").read_text(), re.M)
    for name in ("gmm", "attention", "ssd"):  # a table with a timed XLA row
        table = (tmp_path / f"{name}.txt").read_text()
        assert "time_ms" in table and re.search(r"^\w+ .*\bxla\b.*\s\d+\.\d+\s", table, re.M), table


def test_unknown_argument_is_a_usage_error():
    proc = subprocess.run(["bash", SCRIPT, "--gpu"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage:" in proc.stderr
