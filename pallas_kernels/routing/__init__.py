"""MoE expert routing: router top-k, permute tokens by expert, weighted un-permute (combine)."""
from pallas_kernels.routing.ops import permute, router_topk, unpermute

__all__ = ["permute", "router_topk", "unpermute"]
