"""ModelConfig.logits_chunk_size: the SFT loss and the RL stages' log-probs through the chunked LM head equal
the full-logits path (value and gradients, untied and tied embeddings, packed rows), and the traced loss
holds no [B, T, V] array."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpr_testing import all_eqns
from nemocascade import model as model_lib
from nemocascade.stages import policy
from nemocascade.stages.sft import make_sft_loss

CFG = model_lib.presets.tiny().replace(vocab_size=96, d_model=32, num_layers=2, expert_hidden_size=32,
                                       max_seq_len=64)
BATCH, SEQ, CHUNK = 2, 23, 5  # the chunk does not divide the row length


def _batch():
    """Packed rows: two segments in row 0, one segment and right padding in row 1; next-token targets."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, CFG.vocab_size, size=(BATCH, SEQ)).astype(np.int32)
    segment_ids = np.array([[1] * 14 + [2] * 9, [1] * 19 + [0] * 4], np.int32)
    positions = np.stack([np.concatenate([np.arange(14), np.arange(9)]), np.arange(SEQ)]).astype(np.int32)
    positions[1, 19:] = 0
    next_same = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0)
    mask = np.concatenate([next_same, np.zeros((BATCH, 1), bool)], axis=1)
    return {"tokens": tokens, "targets": np.where(mask, np.roll(tokens, -1, axis=1), -100).astype(np.int32),
            "loss_mask": mask.astype(np.float32), "segment_ids": segment_ids, "positions": positions}


def _assert_trees_close(got, want, rtol):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.max(np.abs(w)))


@pytest.mark.parametrize("tie_embeddings", [False, True])
def test_sft_loss_and_gradients_equal_the_full_logits_path(tie_embeddings):
    cfg = CFG.replace(tie_embeddings=tie_embeddings)
    params = model_lib.init_params(cfg, jax.random.PRNGKey(0))
    batch = _batch()

    def value_and_grads(config):
        loss_fn = make_sft_loss(config, z_loss=1e-3)
        return jax.jit(jax.value_and_grad(lambda p: loss_fn(p, batch, None), has_aux=True))(params)

    (loss, metrics), grads = value_and_grads(cfg.replace(logits_chunk_size=CHUNK))
    (want_loss, want_metrics), want_grads = value_and_grads(cfg)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["logsumexp_squared"], want_metrics["logsumexp_squared"], rtol=1e-6)
    _assert_trees_close(grads, want_grads, rtol=1e-5)
    head = "embed" if tie_embeddings else "lm_head"
    assert float(jnp.max(jnp.abs(grads[head]))) > 0


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_rl_logprobs_equal_the_full_logits_path(temperature):
    params = model_lib.init_params(CFG, jax.random.PRNGKey(1))
    batch = _batch()
    batch["targets"] = np.where(batch["targets"] < 0, 0, batch["targets"])  # every position scored
    got = policy.frozen_logprobs(params, batch, cfg=CFG.replace(logits_chunk_size=CHUNK), temperature=temperature)
    want = policy.frozen_logprobs(params, batch, cfg=CFG, temperature=temperature)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_stays_close():
    cfg = CFG.replace(dtype="bfloat16")
    params = model_lib.init_params(cfg, jax.random.PRNGKey(2))
    batch = _batch()
    chunked = policy.frozen_logprobs(params, batch, cfg=cfg.replace(logits_chunk_size=CHUNK), temperature=1.0)
    full = policy.frozen_logprobs(params, batch, cfg=cfg, temperature=1.0)
    valid = batch["targets"] >= 0
    # Under jit XLA folds forward()'s bf16 head matmul and its f32 upcast into one f32-output dot, as the
    # chunked head computes it (5e-7 apart on CPU; rounding the logits to bf16 would be ~1e-2 apart).
    np.testing.assert_allclose(np.asarray(chunked)[valid], np.asarray(full)[valid], atol=1e-5)


def test_the_traced_loss_holds_no_batch_by_length_by_vocab_array():
    params = model_lib.init_params(CFG, jax.random.PRNGKey(0))
    batch = _batch()

    def shapes(config):
        loss_fn = make_sft_loss(config)
        jaxpr = jax.make_jaxpr(jax.grad(lambda p: loss_fn(p, batch, None)[0]))(params)
        return {tuple(v.aval.shape) for eqn in all_eqns(jaxpr) for v in eqn.outvars if hasattr(v.aval, "shape")}

    full_logits = (BATCH, SEQ, CFG.vocab_size)
    assert full_logits in shapes(CFG)  # the measurement can see them ...
    # ... the chunked path has nothing with a vocabulary axis bigger than one chunk's logits, but the head
    # (and its gradient) itself.
    head_shapes = {(CFG.d_model, CFG.vocab_size), (CFG.vocab_size, CFG.d_model)}
    too_big = [s for s in shapes(CFG.replace(logits_chunk_size=CHUNK)) if CFG.vocab_size in s
               and s not in head_shapes and np.prod(s) > BATCH * CHUNK * CFG.vocab_size]
    assert not too_big


def test_config_rejects_a_negative_chunk():
    with pytest.raises(ValueError, match="logits_chunk_size must be >= 0"):
        CFG.replace(logits_chunk_size=-1)
