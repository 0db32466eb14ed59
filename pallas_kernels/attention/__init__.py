"""Flash attention (causal, GQA, packed segments; fwd + bwd) and decode attention over a KV cache."""
from pallas_kernels.attention.ops import IMPLS, decode_attention, flash_attention, resolve_impl

__all__ = ["IMPLS", "decode_attention", "flash_attention", "resolve_impl"]
