"""Runs a ``python -m nemocascade.bench.<name>`` benchmark on CPU in a subprocess for the bench tests."""
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_bench(name: str, *flags: str) -> list[str]:
    """The benchmark's stdout lines; fails with its stderr's tail if it exits non-zero."""
    result = subprocess.run([sys.executable, "-m", f"nemocascade.bench.{name}", *flags], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.splitlines()
