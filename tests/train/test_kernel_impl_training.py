"""20 SFT steps with the Pallas kernels (kernel_impl="interpret") give the XLA path's loss curve.

The model is a small hybrid (Mamba-2, attention, MoE layers) so that every kernel the model calls runs,
forward and backward: flash attention (its own backward kernel), the grouped matmul (gmm / tgmm) and
the SSD scan (forward kernel, XLA-path VJP). Sizes are the GPU kernels' legal ones (head dims, SSD chunk
and state 16), which the interpreter runs on CPU. Same init, same batches, same optimizer: the losses
must agree to 1e-4 at every step and the final params to 1e-3 (relative, whole tree).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxpr_testing import all_eqns
from nemocascade import model as model_lib
from nemocascade.stages.sft import make_sft_loss
from nemocascade.train import create_train_state, make_train_step

CFG = model_lib.presets.tiny_hybrid().replace(
    vocab_size=128, d_model=64, num_layers=3, block_pattern=("mamba", "attention", "moe"), num_heads=4,
    num_kv_heads=2, expert_hidden_size=32, max_seq_len=64, mamba_num_heads=4, mamba_head_dim=16,
    mamba_state_size=16, mamba_n_groups=2, mamba_chunk_size=16)
STEPS, BATCH, SEQ = 20, 2, 32


def _batches():
    """Packed rows: two segments in row 0, one segment and right padding in row 1; next-token targets."""
    rng = np.random.default_rng(0)
    segment_ids = np.array([[1] * 20 + [2] * 12, [1] * 27 + [0] * 5], np.int32)
    positions = np.concatenate([np.arange(20), np.arange(12)])[None].repeat(BATCH, 0).astype(np.int32)
    positions[1] = np.where(segment_ids[1] > 0, np.arange(SEQ), 0)
    for _ in range(STEPS):
        tokens = rng.integers(1, CFG.vocab_size, size=(BATCH, SEQ)).astype(np.int32)
        same_segment_next = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0)
        mask = np.concatenate([same_segment_next, np.zeros((BATCH, 1), bool)], axis=1)
        yield {"tokens": tokens, "targets": np.concatenate([tokens[:, 1:], tokens[:, :1]], axis=1),
               "loss_mask": mask.astype(np.float32), "segment_ids": segment_ids, "positions": positions}


def _train(kernel_impl: str):
    cfg = CFG.replace(kernel_impl=kernel_impl)
    tx = optax.adamw(3e-3)
    state, shardings = create_train_state(lambda rng: model_lib.init_params(cfg, rng), tx, jax.random.PRNGKey(0))
    step = make_train_step(make_sft_loss(cfg), tx, state_shardings=shardings)
    losses = []
    for batch in _batches():
        state, metrics = step(state, jax.tree.map(jnp.asarray, batch))
        losses.append(float(metrics["loss"]))
    return np.array(losses), jax.tree.map(np.asarray, state.params)


def test_the_kernel_path_runs_every_kernel():
    """Guards the comparison below against a silent fallback to XLA."""
    cfg = CFG.replace(kernel_impl="interpret")
    params = model_lib.init_params(cfg, jax.random.PRNGKey(0))
    batch = jax.tree.map(jnp.asarray, next(_batches()))
    grad_jaxpr = jax.make_jaxpr(jax.grad(lambda p: make_sft_loss(cfg)(p, batch, None)[0]))(params)
    names = {str(eqn.params["name"]) for eqn in all_eqns(grad_jaxpr) if eqn.primitive.name == "pallas_call"}
    assert names == {
        "flash_attention_fwd", "flash_attention_dq", "flash_attention_dkdv", "gmm_gpu", "tgmm_gpu", "ssd_scan"}


def test_interpreted_kernels_train_like_xla():
    xla_losses, xla_params = _train("xla")
    pallas_losses, pallas_params = _train("interpret")
    assert xla_losses[-5:].mean() < xla_losses[:5].mean() - 0.1, xla_losses  # it learns: not a flat curve
    np.testing.assert_allclose(pallas_losses, xla_losses, rtol=0, atol=1e-4)
    diff = sum(float(np.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(pallas_params), jax.tree.leaves(xla_params)))
    norm = sum(float(np.sum(b ** 2)) for b in jax.tree.leaves(xla_params))
    assert np.sqrt(diff / norm) < 1e-3, np.sqrt(diff / norm)
