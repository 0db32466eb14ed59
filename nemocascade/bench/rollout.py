"""Sampler throughput: prefill and decode tokens/s per batch size, against a no-cache baseline.

``python -m nemocascade.bench.rollout --config=tiny --batches=1,16,256 --prompt=64 --new=64``.
The baseline re-runs a full forward over the whole prefix for every new token (what a sampler without
a KV cache does). On an accelerator with a known HBM bandwidth, ``bw%`` is decode's fraction of the
memory-bandwidth bound: bytes of active weights + KV cache read per decode step / bandwidth.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from nemocascade import hardware
from nemocascade import model as model_lib
from nemocascade.bench.timing import median_seconds
from nemocascade.rollout import generate

_CONFIGS = flags.DEFINE_list("config", ["tiny", "small_100m"], "Model presets.")
_BATCHES = flags.DEFINE_list("batches", ["1", "4", "16", "64", "256"], "Batch sizes.")
_PROMPT = flags.DEFINE_integer("prompt", 64, "Prompt tokens.")
_NEW = flags.DEFINE_integer("new", 64, "Generated tokens.")
_BASELINE_MAX_BATCH = flags.DEFINE_integer("baseline_max_batch", 16, "Largest batch for the slow baseline.")


def _no_cache_decode(params, cfg, prompts, new_tokens):
    """Greedy decoding by full forwards over a fixed-width buffer (one compile, T forwards of length L)."""
    b, p = prompts.shape
    width = p + new_tokens
    buf = jnp.zeros((b, width), jnp.int32).at[:, :p].set(prompts)

    def body(i, buf):
        logits, _ = model_lib.forward(params, cfg, buf)
        nxt = jnp.argmax(logits[:, p + i - 1], axis=-1).astype(jnp.int32)
        return buf.at[:, p + i].set(nxt)
    return jax.lax.fori_loop(0, new_tokens, body, buf)


def _decode_bytes(cfg, batch, context):
    counts = model_lib.param_count(cfg)
    bytes_per = 2 if cfg.dtype == "bfloat16" else 4
    attn_layers = sum("attention" in k for k in cfg.layer_kinds)
    kv = 2 * attn_layers * batch * context * cfg.num_kv_heads * cfg.resolved_head_dim * bytes_per
    return counts["active"] * bytes_per + kv


def main(argv):
    del argv
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); prompt {_PROMPT.value}, "
          f"new {_NEW.value} tokens, greedy")
    bandwidth = hardware.peak_bandwidth()
    print(f"{'config':<11} {'batch':>5} {'prefill tok/s':>14} {'decode tok/s':>13} {'no-cache tok/s':>15} {'bw%':>6}")
    for preset in _CONFIGS.value:
        cfg = getattr(model_lib.presets, preset)()
        params = model_lib.init_params(cfg, jax.random.PRNGKey(0))
        for batch in map(int, _BATCHES.value):
            prompts = np.random.default_rng(0).integers(1, cfg.vocab_size, size=(batch, _PROMPT.value))
            prompt_lists = prompts.tolist()
            prefill_only = median_seconds(lambda: generate(params, cfg, prompt_lists, max_new_tokens=1,
                                                           temperature=0.0, rng=jax.random.PRNGKey(0)).tokens,
                                          repeats=3)
            full = median_seconds(lambda: generate(params, cfg, prompt_lists, max_new_tokens=_NEW.value,
                                                   temperature=0.0, rng=jax.random.PRNGKey(0)).tokens, repeats=3)
            decode_time = max(full - prefill_only, 1e-9)
            decode_tok_s = batch * (_NEW.value - 1) / decode_time
            baseline = "-"
            if batch <= _BASELINE_MAX_BATCH.value:
                fn = jax.jit(lambda p, x: _no_cache_decode(p, cfg, x, _NEW.value))
                t = median_seconds(lambda: fn(params, jnp.asarray(prompts, jnp.int32)), repeats=2)
                baseline = f"{batch * _NEW.value / t:.0f}"
            bw = "n/a"
            if bandwidth:
                step_time = decode_time / (_NEW.value - 1)
                bw = f"{100 * _decode_bytes(cfg, batch, _PROMPT.value + _NEW.value) / step_time / bandwidth:.1f}"
            print(f"{preset:<11} {batch:>5} {batch * _PROMPT.value / prefill_only:>14.0f} {decode_tok_s:>13.0f} "
                  f"{baseline:>15} {bw:>6}", flush=True)


if __name__ == "__main__":
    app.run(main)
