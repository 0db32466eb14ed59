"""Forward / forward+backward throughput and MFU of a model preset on the current device(s).

``python -m nemocascade.bench.model --config=tiny,small_100m --batch=8 --seq=256 [--dtype=bfloat16]``.
MFU uses ``flops_per_token`` (training: 6x active matmul params + causal attention; forward-only: a third
of it) against the device's dense bf16 peak (``nemocascade.hardware.peak_flops``); CPUs have no peak, so
MFU prints as n/a there. ``--dtype`` overrides the preset's compute dtype (params stay float32).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import app, flags

from nemocascade import hardware
from nemocascade import model as model_lib
from nemocascade.bench.timing import median_seconds

_CONFIGS = flags.DEFINE_list("config", ["tiny", "small_100m"], "Model presets to run.")
_BATCH = flags.DEFINE_integer("batch", 8, "Sequences per step.")
_SEQ = flags.DEFINE_integer("seq", 256, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype (default: the preset's).")


def measure(preset: str, batch: int, seq: int, repeats: int, dtype: str | None = None) -> dict:
    if preset not in model_lib.presets.NAMES:
        raise ValueError(f"unknown --config {preset!r}; known presets: {model_lib.presets.NAMES}")
    cfg = getattr(model_lib.presets, preset)()
    if dtype is not None:
        cfg = cfg.replace(dtype=dtype)
    if seq > cfg.max_seq_len:
        raise ValueError(f"--seq={seq} exceeds the {preset} preset's max_seq_len={cfg.max_seq_len}")
    params = model_lib.init_params(cfg, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (batch, seq), 0, cfg.vocab_size)

    def loss(p):
        logits, aux = model_lib.forward(p, cfg, tokens)
        return jnp.mean(jax.nn.logsumexp(logits, -1)) + aux["moe_aux_loss"]

    fwd = jax.jit(lambda p: model_lib.forward(p, cfg, tokens)[0])
    fwd_bwd = jax.jit(jax.grad(loss))
    t_fwd = median_seconds(lambda: fwd(params), repeats=repeats)
    t_train = median_seconds(lambda: fwd_bwd(params), repeats=repeats)
    n_tokens = batch * seq
    train_flops = model_lib.flops_per_token(cfg, seq) * n_tokens
    peak = hardware.peak_flops()
    return {
        "config": preset, "dtype": cfg.dtype, "params": model_lib.param_count(cfg), "tokens": n_tokens,
        "fwd_tok_s": n_tokens / t_fwd, "train_tok_s": n_tokens / t_train,
        "fwd_mfu": (train_flops / 3 / t_fwd / peak) if peak else None,
        "train_mfu": (train_flops / t_train / peak) if peak else None,
    }


def _fmt_mfu(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def main(argv):
    del argv
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), one device; batch {_BATCH.value} x seq "
          f"{_SEQ.value}; MFU against the dense bf16 peak")
    print(f"{'config':<12} {'dtype':>9} {'total':>10} {'active':>10} {'fwd tok/s':>12} {'fwd MFU':>8} "
          f"{'fwd+bwd tok/s':>14} {'MFU':>7}")
    for preset in _CONFIGS.value:
        r = measure(preset, _BATCH.value, _SEQ.value, _REPEATS.value, _DTYPE.value)
        print(f"{r['config']:<12} {r['dtype']:>9} {r['params']['total']/1e6:>9.1f}M {r['params']['active']/1e6:>9.1f}M "
              f"{r['fwd_tok_s']:>12.0f} {_fmt_mfu(r['fwd_mfu']):>8} {r['train_tok_s']:>14.0f} "
              f"{_fmt_mfu(r['train_mfu']):>7}")


if __name__ == "__main__":
    app.run(main)
