"""The LM head's log-probs + gradient, full logits vs chunked: XLA's temporary memory and the step time.

``python -m nemocascade.bench.lm_head --rows=1 --seq=8192 --d_model=1024 --vocab=32768 --chunks=0,512,2048``
times ``value_and_grad`` of ``sum(lp) + sum(lse^2)`` w.r.t. hidden states and head, with the logits either
materialised (chunk 0: ``hidden @ head`` then ``losses.token_logprobs_and_logsumexp``) or never held
(``losses.head_logprobs_and_logsumexp``), and reads the compiled program's temporary bytes from
``memory_analysis()`` (excluding inputs and outputs). ``--dtype`` is the hidden/head dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import app, flags

from nemocascade import losses
from nemocascade.bench.timing import median_seconds

_ROWS = flags.DEFINE_integer("rows", 1, "Sequences.")
_SEQ = flags.DEFINE_integer("seq", 8192, "Tokens per sequence.")
_D_MODEL = flags.DEFINE_integer("d_model", 1024, "Hidden width D.")
_VOCAB = flags.DEFINE_integer("vocab", 32768, "Vocabulary V.")
_CHUNKS = flags.DEFINE_list("chunks", ["0", "512", "2048"], "Chunk sizes; 0 = the full-logits path.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Dtype of hidden states and head.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (median reported).")


def loss_and_grads(chunk: int):
    """jitted (hidden [R, T, D], head [D, V], targets [R, T]) -> (loss, (d hidden, d head))."""
    def objective(hidden, head, targets):
        if chunk:
            lp, lse = losses.head_logprobs_and_logsumexp(hidden, head, targets, chunk_size=chunk)
        else:
            logits = jnp.einsum("rtd,dv->rtv", hidden, head, preferred_element_type=jnp.float32)
            lp, lse = losses.token_logprobs_and_logsumexp(logits, targets)
        return jnp.sum(lp) + jnp.sum(jnp.square(lse))
    return jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))


def main(argv):
    del argv
    keys = jax.random.split(jax.random.key(0), 3)
    dtype = jnp.dtype(_DTYPE.value)
    rows, seq, width, vocab = _ROWS.value, _SEQ.value, _D_MODEL.value, _VOCAB.value
    hidden = jax.random.normal(keys[0], (rows, seq, width)).astype(dtype)
    head = (jax.random.normal(keys[1], (width, vocab)) * width ** -0.5).astype(dtype)
    targets = jax.random.randint(keys[2], (rows, seq), 0, vocab)
    full_logits_mib = rows * seq * vocab * 4 / 2 ** 20
    print(f"device: {jax.devices()[0].device_kind}; rows {rows} x seq {seq}, D {width}, V {vocab}, {dtype.name}; "
          f"f32 logits would be {full_logits_mib:.1f} MiB")
    print(f"{'chunk':>6} {'temp MiB':>10} {'ms / fwd+bwd':>13} {'loss':>14}")
    for chunk in map(int, _CHUNKS.value):
        fn = loss_and_grads(chunk)
        temp = fn.lower(hidden, head, targets).compile().memory_analysis().temp_size_in_bytes / 2 ** 20
        seconds = median_seconds(lambda: fn(hidden, head, targets), repeats=_REPEATS.value)
        loss = float(fn(hidden, head, targets)[0])
        print(f"{chunk or 'full':>6} {temp:>10.1f} {seconds * 1e3:>13.1f} {loss:>14.8g}", flush=True)


if __name__ == "__main__":
    app.run(main)
