"""XLA settings of the suite on CPU, for the test processes (``conftest.py``) and the programs they launch.

``--xla_backend_optimization_level=0`` skips LLVM's optimisations of the compiled CPU code: the suite's programs
are small and compiled far more often than they run long (measured on 2 cores, 2026-12-07: the model tests
that compile the Pallas interpreter 35-45% faster, a tiny SFT -> GRPO launch 20%). It changes no result a
test checks beyond float rounding, which every numerical test's tolerance covers.
"""
import os

FAST_COMPILE = "--xla_backend_optimization_level=0"


def device_count_flag(devices: int) -> str:
    return f"--xla_force_host_platform_device_count={devices}"


def cpu_env(devices: int | None = None) -> dict[str, str]:
    """This process's environment for a CPU subprocess: ``devices`` host devices (None: one), the suite's flags."""
    flags = [FAST_COMPILE] + ([device_count_flag(devices)] if devices else [])
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(flags)}
