"""Activation, KV-cache and prefill bytes per device: closed-form estimates of this code's main tensors.

Symbols: ``D`` d_model, ``H``/``K`` query/KV heads, ``Dh`` head dim, ``E`` experts, ``k`` experts per
token, ``F`` expert width, ``Fs`` shared-expert width, ``Fm`` dense-MLP width, ``V`` vocabulary, ``L`` the
sequence length, ``c`` bytes of the compute dtype (``cfg.dtype``), f32 = 4 bytes. A ``_t`` suffix is the
size after the ``tensor`` mesh axis splits it (when it divides it, as ``sharding.py`` lays params out).

Tokens per device: ``N = (rows / grad_accum_steps) / S * L`` with ``S`` the product of the batch mesh axes
(``data``, ``fsdp``, ``expert``: ``sharding.BATCH_AXES``); when ``S`` does not divide the micro-batch's rows
the model's sharding constraint leaves the batch replicated (``S = 1``), as ``model/layers.constrain`` does;
divided again by the ``sequence`` axis ``Q_s`` when it divides ``L`` (sequence parallelism, see ``model/``).

Saved for the backward, bytes per token (``remat="none"``; a combined kind such as ``attention+moe`` adds
both parts):
  attention  ``2Dc`` (block input, normed input) ``+ (2H_t + 2K_t) Dh c`` (q, k, v, attention output)
             ``+ 4 H_t L`` (the f32 probabilities [H, L] of the XLA path, ``kernel_impl="xla"``) or
             ``+ 4 H_t`` (the flash kernels' log-sum-exp). Under sequence parallelism, the keys and values
             gathered from the other ``Q_s - 1`` shards, ``(Q_s - 1) 2 K_t Dh c``; the XLA path keeps no
             probabilities (its query chunks are recomputed in the backward, ``model/attention.py``, with a
             transient ``rows_dev * 8 H_t * chunk * L`` bytes of f32 scores and probabilities for one chunk).
  moe        ``2Dc + 8E`` (router logits and scores, f32) ``+ k (2D + (g+1) F_t) c`` (token copies sorted by
             expert, their outputs, up[/gate] projections and the activation; ``g`` = 1 for SwiGLU, 0
             for squared ReLU) ``+ (g+1) Fs_t c`` (shared expert). With expert parallelism over an ``expert``
             axis of size ``X`` that splits the tokens and divides ``E`` (``model/moe.py``), a device
             all-gathers its expert group's tokens: the router terms and the token copies are ``X`` times
             larger, plus the gathered input ``X Dc``.
  mlp        ``2Dc + (g+1) Fm_t c``.
  mamba      (``Hm`` SSM heads of width ``P``, ``G`` groups, state ``N``, ``C = Hm P + 2GN`` conv channels,
             ``Q = min(chunk, L)``) ``2Dc + 2 Hm_t P c`` (z, the gated-norm output) ``+ 3Cc`` (projections
             before / after the conv and after the SiLU) ``+ 8 Hm_t`` (dt) ``+ 4 (3 Q Hm_t + Q G)`` (the
             chunked SSD's f32 log-decay, decay and weights per head and C.B scores per group)
             ``+ 8 Hm_t P N / Q`` (chunk states) ``+ 12 Hm_t P`` (f32 y, gated and normed copies). Sequence
             parallelism's gathered shard states (``4 Q_s Hm P N`` per row) are not counted.
  LM head    ``Dc + 8 V_t`` once per token (f32 logits and their log-softmax); a scalar head ``4D``.
             With ``logits_chunk_size = C`` only ``Dc + 8`` per token (hidden state, f32 lp and lse) plus,
             once per micro-batch, one chunk's f32 logits and softmax ``rows_dev * C * 8 V_t``.
``remat="full"`` keeps only each block's input ``Dc`` per layer plus one layer's full set (recomputed in
the backward). ``remat="dots"`` (``jax.checkpoint_policies.checkpoint_dots``) keeps the input and the
``dot_general`` outputs: q, k, v, attention output and ``D`` out-projection, the XLA path's f32 scores,
the router logits, the shared/dense MLP projections, Mamba's projections and the SSD einsums (f32 C.B
scores, intra-chunk and state outputs, chunk states); ``ragged_dot`` expert matmuls are not dot_general,
so their outputs are recomputed. Elementwise temporaries, fusion buffers and XLA's scheduling slack are
not counted: treat the result as a lower bound with a margin (the planner asks for 10 % headroom).

Rollouts (RL stages): the KV cache holds ``rows_dev * (P + new) * A * 2 K Dh c`` bytes (``A`` attention
layers, ``P`` the prompt width, rows split over the batch axes like the train batch; the cache is not
split over ``tensor``), plus per Mamba layer and row the conv history ``(conv_kernel - 1) C c`` and the
f32 SSM state ``4 Hm P N``. The prefill (self-attention of the prompts into the empty cache) also
materialises the f32 logits of each row's last prompt position ``rows_dev * 4 V_t`` and, on the XLA
attention path (``kernel_impl="xla"``), one layer at a time, the f32 attention scores
``rows_dev * 4 H_t * P * P`` (flash attention keeps none).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.model import attention
from nemocascade.model.layers import ACTIVATION_RULES, dtype_of

F32 = 4


def _split(n: int, ways: int) -> int:
    return n // ways if n % ways == 0 else n


def batch_split(rows: int, axis_sizes: Mapping[str, int]) -> int:
    """How many ways ``rows`` are split: the batch axes' product when it divides ``rows``, else 1."""
    ways = math.prod(axis_sizes.get(a, 1) for a in sharding_lib.BATCH_AXES)
    return ways if rows % ways == 0 else 1


def sampler_split(rows: int, axis_sizes: Mapping[str, int]) -> int:
    """How many ways the sampler's ``rows`` are split: the batch axes' and ``sequence``'s product when it divides
    ``rows``, else :func:`batch_split` (``sharding.sampler_rows_sharding``)."""
    ways = math.prod(axis_sizes.get(a, 1) for a in ACTIVATION_RULES["rows"])
    return ways if rows % ways == 0 else batch_split(rows, axis_sizes)


def sequence_split(seq_len: int, axis_sizes: Mapping[str, int]) -> int:
    """How many ways a training row's ``seq_len`` tokens are split: the ``sequence`` axis size when it divides
    ``seq_len``, else 1 (``model/layers.mesh_axes``)."""
    ways = axis_sizes.get("sequence", 1)
    return ways if seq_len % ways == 0 else 1


def expert_gather(cfg: model_lib.ModelConfig, rows: int, axis_sizes: Mapping[str, int]) -> int:
    """How many devices' tokens an MoE layer gathers (``model/moe.py``): the ``expert`` axis size when it splits
    ``rows`` (see :func:`batch_split`) and the experts, else 1."""
    ways = axis_sizes.get("expert", 1)
    if ways > 1 and batch_split(rows, axis_sizes) > 1 and cfg.num_experts % ways == 0:
        return ways
    return 1


def _parts(cfg: model_lib.ModelConfig, kind: str, tensor: int, seq_len: int, gather: int,
           sequence: int) -> tuple[int, int]:
    """(bytes kept per token under ``remat="none"``, under ``remat="dots"`` without the block input);
    ``gather``: see :func:`expert_gather`; ``sequence``: see :func:`sequence_split`."""
    c = np.dtype(dtype_of(cfg.dtype)).itemsize
    d, dh = cfg.d_model, cfg.resolved_head_dim
    gated = lambda act: 1 if act == "swiglu" else 0  # noqa: E731
    full = dots = 0
    if "attention" in kind:
        h, kv = _split(cfg.num_heads, tensor), _split(cfg.num_kv_heads, tensor)
        qkvo = (2 * h + 2 * kv) * dh * c + (sequence - 1) * 2 * kv * dh * c
        xla_scores = F32 * h * seq_len if cfg.kernel_impl == "xla" and sequence == 1 else 0
        kernel_lse = 0 if cfg.kernel_impl == "xla" else F32 * h
        full += 2 * d * c + qkvo + xla_scores + kernel_lse
        dots += qkvo + d * c + xla_scores
    if "moe" in kind:
        g = gated(cfg.moe_activation)
        f, fs = _split(cfg.expert_hidden_size, tensor), _split(cfg.resolved_shared_hidden, tensor)
        shared = (g + 1) * fs * c
        routed = 2 * F32 * cfg.num_experts + cfg.num_experts_per_tok * (2 * d + (g + 1) * f) * c
        full += 2 * d * c + gather * routed + (gather * d * c if gather > 1 else 0) + shared
        dots += gather * F32 * cfg.num_experts + (shared + d * c if fs else 0)
    elif "mlp" in kind:
        g = gated(cfg.mlp_activation)
        fm = _split(cfg.mlp_hidden_size, tensor)
        full += 2 * d * c + (g + 1) * fm * c
        dots += (g + 1) * fm * c + d * c
    if kind == "mamba":
        hm, p, groups, n = (_split(cfg.mamba_num_heads, tensor), cfg.mamba_head_dim, cfg.mamba_n_groups,
                            cfg.mamba_state_size)
        q = min(cfg.mamba_chunk_size, seq_len)
        conv = cfg.mamba_num_heads * p + 2 * groups * n
        ssd_scores = F32 * q * groups
        states = 2 * F32 * hm * p * n // q
        full += (2 * d * c + 2 * hm * p * c + 3 * conv * c + 2 * F32 * hm + F32 * 3 * q * hm + ssd_scores + states
                 + 3 * F32 * hm * p)
        dots += (hm * p + conv + hm) * c + d * c + ssd_scores + 2 * F32 * hm * p + states
    return full, dots


def activation_bytes_per_token(cfg: model_lib.ModelConfig, tensor: int, seq_len: int, *,
                               lm_head_loss: bool = True, gather: int = 1, sequence: int = 1) -> int:
    """Bytes kept for the backward per (device-local) token of the whole model under ``cfg.remat`` (module
    docstring); ``gather``: see :func:`expert_gather`; ``sequence``: see :func:`sequence_split`."""
    c = np.dtype(dtype_of(cfg.dtype)).itemsize
    d = cfg.d_model
    parts = [_parts(cfg, kind, tensor, seq_len, gather, sequence) for kind in cfg.layer_kinds]
    if not lm_head_loss:
        head = F32 * d
    elif cfg.logits_chunk_size:
        head = d * c + 2 * F32  # the chunked head keeps the hidden state, lp and lse (lm_head_workspace_bytes)
    else:
        head = d * c + 2 * F32 * _split(cfg.vocab_size, tensor)
    if cfg.remat == "none":
        return sum(full for full, _ in parts) + head
    one_layer = max(full for full, _ in parts)
    if cfg.remat == "full":
        return len(parts) * d * c + one_layer + head
    return sum(d * c + dots for _, dots in parts) + one_layer + head


def lm_head_workspace_bytes(cfg: model_lib.ModelConfig, rows_per_device: int, seq_len: int, tensor: int) -> int:
    """The chunked LM head's f32 logits and softmax of one chunk (``cfg.logits_chunk_size > 0``), else 0."""
    if not cfg.logits_chunk_size:
        return 0
    return rows_per_device * min(cfg.logits_chunk_size, seq_len) * 2 * F32 * _split(cfg.vocab_size, tensor)


def sequence_attention_workspace_bytes(cfg: model_lib.ModelConfig, rows_per_device: int, seq_len: int,
                                       tensor: int, sequence: int) -> int:
    """One query chunk's f32 scores and probabilities of a sequence-parallel attention layer on the XLA path
    (``sequence`` > 1, see :func:`sequence_split`), else 0."""
    if sequence == 1 or cfg.kernel_impl != "xla" or not any("attention" in kind for kind in cfg.layer_kinds):
        return 0
    chunk = min(attention.sequence_query_chunk(seq_len), seq_len // sequence)
    return rows_per_device * 2 * F32 * _split(cfg.num_heads, tensor) * chunk * seq_len


def kv_cache_bytes(cfg: model_lib.ModelConfig, rows_per_device: int, slots: int) -> int:
    """K and V of every attention layer (``rows * slots * A * 2 K Dh c`` bytes) + the Mamba layers' conv
    histories and f32 SSM states."""
    c = np.dtype(dtype_of(cfg.dtype)).itemsize
    attention_layers = sum("attention" in kind for kind in cfg.layer_kinds)
    kv = slots * attention_layers * 2 * cfg.num_kv_heads * cfg.resolved_head_dim * c
    conv = cfg.mamba_num_heads * cfg.mamba_head_dim + 2 * cfg.mamba_n_groups * cfg.mamba_state_size
    ssm = (cfg.mamba_conv_kernel - 1) * conv * c + F32 * cfg.mamba_num_heads * cfg.mamba_head_dim * cfg.mamba_state_size
    return rows_per_device * (kv + cfg.layer_kinds.count("mamba") * ssm)


def cached_feed_bytes(cfg: model_lib.ModelConfig, rows_per_device: int, tokens: int, slots: int, tensor: int) -> int:
    """A call feeding ``tokens`` per row into a cache of ``slots``, on the XLA attention path: one layer's f32
    [H, tokens, slots] scores and its f32 copies of the cached keys and values; 0 with the Pallas decode kernel
    (``model/attention.py``) or without attention layers."""
    if cfg.kernel_impl != "xla" or not any("attention" in kind for kind in cfg.layer_kinds):
        return 0
    scores = _split(cfg.num_heads, tensor) * tokens * slots
    keys_and_values = 2 * slots * _split(cfg.num_kv_heads, tensor) * cfg.resolved_head_dim
    return rows_per_device * F32 * (scores + keys_and_values)


def prefill_bytes(cfg: model_lib.ModelConfig, rows_per_device: int, prompt_len: int, tensor: int) -> int:
    """The prefill's transient f32 logits of each row's last prompt position, plus, on the XLA attention
    path, one layer's f32 [H, P, P] attention scores (flash attention keeps none)."""
    logits = rows_per_device * F32 * _split(cfg.vocab_size, tensor)
    if cfg.kernel_impl != "xla":
        return logits
    return logits + rows_per_device * F32 * _split(cfg.num_heads, tensor) * prompt_len * prompt_len
