"""Vendor peak numbers per accelerator kind: dense matrix TFLOP/s by input dtype, and HBM GB/s.

Data sheets, dense (no sparsity): H100 SXM and H200 SXM 989 bf16 TFLOP/s and 67 float32 TFLOP/s
(the non-tensor-core FP32 rate), 3350 / 4800 GB/s; TPU v5p 459 TFLOP/s, 2765 GB/s; TPU v6e 918
TFLOP/s, 1640 GB/s; TPU v5e 197 TFLOP/s, 819 GB/s; TPU v4 275 TFLOP/s, 1200 GB/s. CPUs have no
entry. The one table behind the kernel benches' peak fractions and the trainer's MFU
(`nemocascade.hardware`).
"""
import jax
import jax.numpy as jnp

_PEAKS = (  # (lowercase substring of jax.Device.device_kind, {dtype: dense TFLOP/s}, HBM GB/s)
    ("h200", {"bfloat16": 989.0, "float32": 67.0}, 4800.0),
    ("h100", {"bfloat16": 989.0, "float32": 67.0}, 3350.0),
    ("v5p", {"bfloat16": 459.0}, 2765.0),
    ("v6", {"bfloat16": 918.0}, 1640.0),
    ("v5 lite", {"bfloat16": 197.0}, 819.0),
    ("v5e", {"bfloat16": 197.0}, 819.0),
    ("v4", {"bfloat16": 275.0}, 1200.0),
)


def _entry(device_kind: str) -> tuple[dict, float] | None:
    kind = device_kind.lower()
    for key, tflops, gbps in _PEAKS:
        if key in kind:
            return tflops, gbps
    return None


def kind_peak_tflops(device_kind: str, dtype="bfloat16") -> float | None:
    """Dense peak TFLOP/s of a device of `device_kind` for `dtype` inputs, None when unknown."""
    entry = _entry(device_kind)
    return None if entry is None else entry[0].get(jnp.dtype(dtype).name)


def peak_tflops(dtype="bfloat16", device=None) -> float | None:
    """Dense peak TFLOP/s of `device` (default: the first) for `dtype` inputs, None when unknown."""
    return kind_peak_tflops((device or jax.devices()[0]).device_kind, dtype)


def peak_gbps(device=None) -> float | None:
    """Peak HBM bandwidth of `device` (default: the first) in GB/s, None when unknown."""
    entry = _entry((device or jax.devices()[0]).device_kind)
    return None if entry is None else entry[1]
