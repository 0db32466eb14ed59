"""Which impl the GPU-kernel tests run.

By default "interpret": the Pallas GPU (Triton) kernels run in the Pallas interpreter, on any host
(this is what CI runs). With NEMOCASCADE_KERNEL_TESTS=gpu on a GPU host the same cases run through the
compiled kernels instead: `launch/device_checks.sh` selects them with `-m gpu_kernel`.
"""
import os

import pytest

GPU_KERNEL_IMPL = os.environ.get("NEMOCASCADE_KERNEL_TESTS", "interpret")
if GPU_KERNEL_IMPL not in ("interpret", "gpu"):
    raise ValueError(f"NEMOCASCADE_KERNEL_TESTS must be 'interpret' or 'gpu', got {GPU_KERNEL_IMPL!r}")

gpu_kernel = pytest.mark.gpu_kernel


def impl_params(impls):
    """pytest params for `impls`, the GPU-kernel impl among them marked `gpu_kernel`."""
    return [pytest.param(impl, marks=gpu_kernel) if impl == GPU_KERNEL_IMPL else impl for impl in impls]
