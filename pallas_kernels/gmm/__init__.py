"""Grouped matmul for MoE experts: `gmm` (forward, differentiable) and `tgmm` (weight gradient)."""
from pallas_kernels.gmm.ops import IMPLS, gmm, resolve_impl, tgmm

__all__ = ["IMPLS", "gmm", "resolve_impl", "tgmm"]
