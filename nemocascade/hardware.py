"""Peak dense bf16 FLOP/s and HBM bandwidth per accelerator kind, for MFU and roofline fractions.

Vendor figures (dense, no sparsity): H100 SXM 989 TFLOP/s and 3.35 TB/s; H200 989 TFLOP/s and
4.8 TB/s; TPU v5p 459 TFLOP/s and 2.76 TB/s; TPU v6e 918 TFLOP/s and 1.64 TB/s; TPU v5e 197 TFLOP/s
and 0.82 TB/s; TPU v4 275 TFLOP/s and 1.2 TB/s. CPUs have no entry (MFU is not reported there).
"""
from __future__ import annotations

import jax

_PEAKS = (  # (substring of device_kind, lowercase) -> (bf16 FLOP/s, HBM bytes/s)
    ("h200", (989e12, 4.8e12)),
    ("h100", (989e12, 3.35e12)),
    ("v5p", (459e12, 2.76e12)),
    ("v6", (918e12, 1.64e12)),
    ("v5 lite", (197e12, 0.82e12)),
    ("v5e", (197e12, 0.82e12)),
    ("v4", (275e12, 1.2e12)),
)


def _lookup(device) -> tuple[float, float] | None:
    kind = getattr(device, "device_kind", "").lower()
    for key, value in _PEAKS:
        if key in kind:
            return value
    return None


def peak_flops(device=None) -> float | None:
    """Peak dense bf16 FLOP/s of one device (default: the first device), None if unknown (e.g. CPU)."""
    found = _lookup(device or jax.devices()[0])
    return found[0] if found else None


def peak_bandwidth(device=None) -> float | None:
    """HBM bytes/s of one device, None if unknown."""
    found = _lookup(device or jax.devices()[0])
    return found[1] if found else None


def mesh_peak_flops(mesh) -> float | None:
    """Aggregate peak FLOP/s of all devices of ``mesh``."""
    per_device = peak_flops(mesh.devices.flat[0])
    return per_device * mesh.devices.size if per_device else None
