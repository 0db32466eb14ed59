"""Peak dense bf16 FLOP/s and HBM bandwidth per device, for MFU and roofline fractions.

The vendor figures live in one table, `pallas_kernels.device_peaks` (shared with the kernel
benches); CPUs have no entry, so MFU is not reported there.

``TOPOLOGIES``: named slices / nodes (device count and HBM per device) for the memory planner
(``python -m nemocascade.plan``).
"""
from __future__ import annotations

import dataclasses

from pallas_kernels import device_peaks


def peak_flops(device=None) -> float | None:
    """Peak dense bf16 FLOP/s of one device (default: the first device), None if unknown (e.g. CPU)."""
    tflops = device_peaks.peak_tflops("bfloat16", device)
    return None if tflops is None else tflops * 1e12


def peak_bandwidth(device=None) -> float | None:
    """HBM bytes/s of one device, None if unknown."""
    gbps = device_peaks.peak_gbps(device)
    return None if gbps is None else gbps * 1e9


def mesh_peak_flops(mesh) -> float | None:
    """Aggregate peak FLOP/s of all devices of ``mesh``."""
    per_device = peak_flops(mesh.devices.flat[0])
    return per_device * mesh.devices.size if per_device else None


@dataclasses.dataclass(frozen=True)
class Topology:
    """A named slice or node: how many JAX devices it has and what one device offers.

    Attributes:
      name: e.g. ``"v5p-64"``.
      device_kind: the ``jax.Device.device_kind`` style name (picks the peak from `device_peaks`).
      num_devices: JAX devices (TPU v4/v5p: one device per chip, a megacore of 2 TensorCores).
      hbm_bytes: HBM per device in bytes (vendor figure, decimal GB).
      peak: dense bf16 FLOP/s per device; None = from `device_peaks` by device_kind.
    """

    name: str
    device_kind: str
    num_devices: int
    hbm_bytes: float
    peak: float | None = None

    @property
    def peak_flops(self) -> float | None:
        """Dense bf16 FLOP/s of one device, None if unknown."""
        if self.peak is not None:
            return self.peak
        tflops = device_peaks.kind_peak_tflops(self.device_kind, "bfloat16")
        return None if tflops is None else tflops * 1e12


# HBM per device and the slice sizes. Sources: cloud.google.com/tpu/docs/v5p (95 GB HBM2e per chip; the
# ``v5p-N`` suffix counts TensorCores, 2 per chip, so v5p-64 is a 2x4x4 slice of 32 chips),
# cloud.google.com/tpu/docs/v6e (32 GB per chip, one TensorCore per chip, so v6e-64 is 64 chips),
# cloud.google.com/tpu/docs/v5e (16 GB per chip, one TensorCore per chip), NVIDIA's H100 SXM5 datasheet
# (80 GB HBM3) and H200 SXM (141 GB HBM3e).
TOPOLOGIES = {t.name: t for t in (
    Topology("v5p-8", "TPU v5p", 4, 95e9),
    Topology("v5p-64", "TPU v5p", 32, 95e9),
    Topology("v5p-128", "TPU v5p", 64, 95e9),
    Topology("v5p-256", "TPU v5p", 128, 95e9),
    Topology("v6e-8", "TPU v6 lite", 8, 32e9),
    Topology("v6e-64", "TPU v6 lite", 64, 32e9),
    Topology("v6e-256", "TPU v6 lite", 256, 32e9),
    Topology("v5e-8", "TPU v5 lite", 8, 16e9),
    Topology("8xH100", "NVIDIA H100 80GB HBM3", 8, 80e9),
    Topology("64xH100", "NVIDIA H100 80GB HBM3", 64, 80e9),
    Topology("8xH200", "NVIDIA H200", 8, 141e9),
)}


def topology(name: str) -> Topology:
    """The named topology; ValueError listing the known names otherwise."""
    if name not in TOPOLOGIES:
        raise ValueError(f"unknown topology {name!r}; known: {sorted(TOPOLOGIES)}")
    return TOPOLOGIES[name]
