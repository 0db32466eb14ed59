"""Chunked SSD (Mamba-2 state-space-duality) scan: Pallas GPU/TPU kernels, an XLA path, a reference."""
from pallas_kernels.ssd.ops import IMPLS, kernel_supports, resolve_impl, ssd_scan

__all__ = ["IMPLS", "kernel_supports", "resolve_impl", "ssd_scan"]
