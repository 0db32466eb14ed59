"""Tile sizes for the grouped-matmul kernels: per-backend defaults and validation.

A tiling is (tm, tk, tn): rows of lhs per tile, contraction step, output columns per tile. The same
triple is used by gmm ([M,K]x[E,K,N]) and tgmm ([M,K],[M,N] -> [E,K,N]); the backward pass of gmm
swaps tk and tn for its d_lhs product, which contracts over N.
"""
Tiling = tuple[int, int, int]

# Neither default is tuned on hardware yet (no accelerator was available when they were chosen);
# `python -m pallas_kernels.gmm.bench --tune` sweeps the GPU tiles. GPU: 64-row tiles keep the
# waste of tiles straddling two experts small (~190 rows per expert at nano30b scale).
GPU_DEFAULT: Tiling = (64, 64, 128)
# TPU: the common 128-row / 512-wide Mosaic choice.
TPU_DEFAULT: Tiling = (128, 512, 512)


def _fit_tpu(tile: int, dim: int) -> int:
    """A TPU block must be a multiple of the hardware tile or the full dimension."""
    return dim if dim <= tile else tile


def default_tiling(kernel: str, m: int, k: int, n: int) -> Tiling:
    """The default tiling of kernel "gpu" or "tpu" for an [M,K]x[K,N] grouped product."""
    if kernel == "gpu":
        return GPU_DEFAULT
    tm, tk, tn = TPU_DEFAULT
    return _fit_tpu(tm, m), _fit_tpu(tk, k), _fit_tpu(tn, n)


def validate_tiling(kernel: str, tiling, m: int, k: int, n: int) -> Tiling:
    """Checks a user tiling for kernel "gpu" or "tpu"; returns it as a tuple of ints.

    GPU (Triton): every tile a power of two >= 16. TPU (Mosaic): tm a multiple of 8 or equal to M,
    tk and tn multiples of 128 or equal to K and N.
    Raises: TypeError/ValueError naming `tiling` and what was expected.
    """
    if (not isinstance(tiling, (tuple, list)) or len(tiling) != 3
            or not all(isinstance(t, int) and not isinstance(t, bool) for t in tiling)):
        raise TypeError(f"tiling must be a tuple of three ints (tm, tk, tn), got {tiling!r}")
    tm, tk, tn = tiling
    if min(tiling) <= 0:
        raise ValueError(f"tiling must be positive, got {tiling}")
    if kernel == "gpu":
        for name, t in (("tm", tm), ("tk", tk), ("tn", tn)):
            if t < 16 or t & (t - 1):
                raise ValueError(f"GPU tiling {name}={t} must be a power of two >= 16")
    else:
        if tm % 8 and tm != m:
            raise ValueError(f"TPU tiling tm={tm} must be a multiple of 8 or equal M={m}")
        for name, t, dim in (("tk", tk, k), ("tn", tn, n)):
            if t % 128 and t != dim:
                raise ValueError(
                    f"TPU tiling {name}={t} must be a multiple of 128 or equal the dimension {dim}")
    return tm, tk, tn
