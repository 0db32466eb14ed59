"""The memory/compute planner: shard arithmetic against real shardings, hand-computed nano30b numbers,
refusals, and the command line."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from experiment_testing import load_config
from jax.sharding import NamedSharding, PartitionSpec

from nemocascade import hardware, plan
from nemocascade import model as m
from nemocascade import sharding
from nemocascade.planning import make_plan, memory, param_layout, shard_shape
from nemocascade.train import create_train_state, make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2 ** 30
# Every sharded dimension divisible by its axes (no padding), a frozen router and bf16 params.
TINY = m.presets.tiny().replace(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                num_experts=4, num_experts_per_tok=2, expert_hidden_size=16, max_seq_len=64)
AXES = dict(data=1, fsdp=2, expert=2, tensor=2)


def _device0_bytes(tree) -> int:
    """Bytes of ``tree``'s arrays on the first device (read from the real shards)."""
    device = jax.devices()[0]
    total = 0
    for leaf in jax.tree.leaves(tree):
        if np.ndim(leaf) == 0:
            continue
        total += sum(s.data.nbytes for s in leaf.addressable_shards if s.device == device)
    return total


def test_shard_shapes_param_and_optimizer_bytes_equal_a_real_sharded_train_state():
    cfg = TINY.replace(router_score="sigmoid", router_bias_update_rate=1e-3)
    mesh = sharding.make_mesh(AXES)
    shapes = jax.eval_shape(lambda r: m.init_params(cfg, r), jax.random.PRNGKey(0))
    trainable = m.trainable_mask(shapes, cfg, freeze_router=True)
    optimizer = make_optimizer(dict(name="adamw", learning_rate=1e-3, schedule="constant", warmup_steps=0,
                                    init_learning_rate=0.0, end_learning_rate=0.0, total_steps=10, b1=0.9,
                                    b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip_norm=1.0),
                               trainable_mask=trainable)
    state, _ = create_train_state(lambda r: m.init_params(cfg, r), optimizer, jax.random.PRNGKey(0),
                                  param_shardings=sharding.param_shardings(mesh, cfg))
    split = 0
    for leaf in jax.tree.leaves(state.params):
        for shard in leaf.addressable_shards:
            assert shard.data.shape == shard_shape(leaf.shape, leaf.sharding.spec, AXES)
        split += any(leaf.sharding.spec)
    assert split >= 5   # embed, lm_head, attention and expert weights are really split
    layout = param_layout(cfg, AXES, trainable)
    assert layout.device_bytes == _device0_bytes(state.params)
    assert 2 * layout.trainable_device_bytes == _device0_bytes(state.opt_state)
    assert layout.trainable_device_bytes < layout.device_bytes     # router and its bias carry no moments


def test_shard_shape_of_multi_axis_and_uneven_dimensions():
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, expert=2))
    spec = PartitionSpec(("data", "fsdp", "expert"))
    array = jax.device_put(np.zeros((16, 3), np.float32), NamedSharding(mesh, spec))
    assert array.addressable_shards[0].data.shape == shard_shape((16, 3), spec, dict(mesh.shape)) == (2, 3)
    assert shard_shape((10, 4), PartitionSpec("fsdp"), dict(fsdp=4)) == (3, 4)   # uneven: XLA pads to ceil
    with pytest.raises(ValueError, match="absent"):
        shard_shape((8,), PartitionSpec("model"), AXES)


def test_param_total_is_param_count_times_dtype_bytes():
    cfg = TINY.replace(param_dtype="bfloat16", router_score="sigmoid")
    layout = param_layout(cfg, dict(data=1, fsdp=1, expert=1, tensor=1))
    moe_layers = sum("moe" in k for k in cfg.layer_kinds)
    # param_count leaves out the router biases, which are kept in float32 whatever param_dtype is.
    assert layout.total_bytes == m.param_count(cfg)["total"] * 2 + moe_layers * cfg.num_experts * 4
    assert layout.device_bytes == layout.total_bytes


@pytest.fixture(scope="module")
def nano_sft():
    """nano30b SFT rows of 2048 tokens, params FSDP-split 8 ways, remat full + flash attention, the LM head in
    one piece, no gradient accumulation."""
    config = load_config("experiments/sft.py:nano30b")
    config.mesh.update(fsdp=8, sequence=1, expert=1)
    config.data.seq_len, config.data.batch_size = 2048, 8
    assert (config.model.remat, config.model.kernel_impl) == ("full", "auto")
    config.model.logits_chunk_size, config.train.grad_accum_steps = 0, 1
    return config


def test_nano30b_on_8xh100_matches_hand_computed_numbers(nano_sft):
    p = make_plan(nano_sft, hardware.topology("8xH100"))
    cfg, counts = p.cfg, p.param_count
    assert p.axis_sizes == dict(data=1, fsdp=8, expert=1, sequence=1, tensor=1)
    # Params: float32, every matrix split 8 ways on its d_model dimension; norms / per-head scalars replicated.
    assert p.bytes["params"] == pytest.approx(counts["total"] * 4 / 8, rel=0.01)
    assert 14 * GIB < p.bytes["params"] < 15 * GIB
    assert p.bytes["optimizer"] == pytest.approx(2 * p.bytes["params"], rel=0.01)
    assert p.bytes["grads"] == p.bytes["params"]
    # Activations: 8 rows / 8 devices -> 2048 tokens each. remat=full keeps per token and layer the block
    # input D*c, plus one layer's full set (the Mamba layer is the largest) and the LM head's D*c + 8V.
    assert p.tokens_per_device == 2048 and cfg.dtype == "bfloat16"
    d, c, q = cfg.d_model, 2, min(cfg.mamba_chunk_size, 2048)
    hm, g, n = cfg.mamba_num_heads, cfg.mamba_n_groups, cfg.mamba_state_size
    hp = hm * cfg.mamba_head_dim
    conv = hp + 2 * g * n
    mamba_layer = (2 * d * c + 2 * hp * c + 3 * conv * c + 8 * hm + 4 * (3 * q * hm + q * g)
                   + 8 * hp * n // q + 12 * hp)
    moe_layer = 2 * d * c + 8 * cfg.num_experts + cfg.num_experts_per_tok * (2 * d + cfg.expert_hidden_size) * c \
        + cfg.resolved_shared_hidden * c
    assert mamba_layer > moe_layer
    per_token = cfg.num_layers * d * c + mamba_layer + d * c + 8 * cfg.vocab_size
    assert p.bytes["activations"] == 2048 * per_token
    # About 3 GiB, most of it the float32 logits (2048 x 131072 x 4 bytes x 2 = 2 GiB).
    assert 2.8 * GIB < p.bytes["activations"] < 3.3 * GIB
    # One MoE layer gathered in bf16 (128 experts' w_up/w_down + the shared MLP): ~2.4 GiB.
    moe_matrices = cfg.num_experts * 2 * d * cfg.expert_hidden_size + 2 * d * cfg.resolved_shared_hidden
    assert p.bytes["layer_gather"] == pytest.approx(moe_matrices * c, rel=0.01)
    # Params + grads + 2 moments = 16 bytes/param / 8 devices ~ 58.8 GiB: fits 80 GB with ~3 GiB to spare.
    assert p.fits and 64 * GIB < p.peak < 0.9 * 80e9
    # FLOPs: ~6 x active params per token (+ attention/SSD, - embedding), 8 x 2048 tokens.
    assert 0.9 < p.train_flops / (6 * counts["active"] * 8 * 2048) < 1.15
    assert p.step_seconds(0.4) == pytest.approx(p.train_flops / (8 * 989e12 * 0.4))


def test_chunked_lm_head_replaces_the_per_token_logits_by_one_chunk(nano_sft):
    full = make_plan(nano_sft, hardware.topology("8xH100"))
    config = nano_sft.copy_and_resolve_references()
    config.model.logits_chunk_size = 512
    chunked = make_plan(config, hardware.topology("8xH100"))
    vocab = chunked.cfg.vocab_size
    # Per token the head keeps D*c + 8 bytes (hidden, lp, lse) instead of D*c + 8V; then one chunk of
    # 512 positions of the device's one row holds f32 logits and softmax: 512 x 8V.
    saved = 2048 * (8 * vocab - 8)
    assert chunked.bytes["activations"] == full.bytes["activations"] - saved + 1 * 512 * 8 * vocab
    assert chunked.bytes["activations"] < 0.6 * full.bytes["activations"]  # 1.5 of 3.0 GiB


def test_nano30b_on_16gib_devices_is_refused_naming_the_biggest_term(nano_sft):
    # The same mesh as above (its layout is cached) on 8 devices of 16 GiB: the states alone need ~59 GiB.
    topology = plan.make_topology(None, 8, 16.0, None)
    text, failing = plan.plan_report(nano_sft, topology)
    assert "DOES NOT FIT" in text and len(failing) == 1
    message = plan.refusal(failing[0])
    assert "the biggest term is optimizer (29.4 GiB)" in message and "--config.mesh.fsdp" in message
    assert "90% of 16.0" in message


def test_mesh_that_does_not_match_the_topology_is_explained():
    config = load_config("experiments/sft.py:nano30b")    # fsdp 2 x sequence 16 = 32 devices
    with pytest.raises(ValueError, match=r"8xH100 \(8 devices\).*--config.mesh"):
        make_plan(config, hardware.topology("8xH100"))
    with pytest.raises(ValueError, match="unknown topology 'v9-1'"):
        hardware.topology("v9-1")


def test_cascade_stages_teachers_and_kv_cache():
    config = load_config("experiments/mopd.py")   # tiny, float32, mesh data=-1
    text, failing = plan.plan_report(config, hardware.topology("v5p-8"))
    assert not failing and "4 stages" in text
    with pytest.raises(ValueError, match="its stages"):
        plan.plan_report(config, hardware.topology("v5p-8"), stage="nope")
    p = make_plan(config, hardware.topology("v5p-8"), "mopd")
    assert p.axis_sizes["data"] == 4
    assert p.bytes["other_models"] == 2 * p.bytes["params"]       # one teacher per domain (math, if)
    rl, cfg = config.stages.mopd.rl, p.cfg
    rows_per_device = rl.prompts_per_step * rl.num_samples // 4
    slots = -(-rl.max_prompt_tokens // 16) * 16 + rl.max_new_tokens
    attention_layers = sum("attention" in k for k in cfg.layer_kinds)
    assert p.bytes["kv_cache"] == rows_per_device * slots * attention_layers * 2 * cfg.num_kv_heads \
        * cfg.resolved_head_dim * 4
    # The last prompt position's f32 logits and one layer's f32 attention scores over the 96-wide prompts.
    assert cfg.kernel_impl == "xla"
    assert p.bytes["prefill"] == rows_per_device * (4 * cfg.vocab_size + 96 * 4 * cfg.num_heads * 96)
    # Flash attention (any Pallas kernel_impl) keeps no scores: only the logits remain.
    assert memory.prefill_bytes(cfg.replace(kernel_impl="auto"), rows_per_device, 96, 1) == \
        rows_per_device * 4 * cfg.vocab_size
    # Rollout + teacher scoring: two forward passes, a third of the train FLOPs each.
    assert p.rollout_flops == pytest.approx(2 * p.train_flops / 3)
    # On data=2 x sequence=2 the sampler's rows are split 4 ways too (sharding.sampler_rows_sharding).
    config.mesh.update(data=2, sequence=2)
    assert make_plan(config, hardware.topology("v5p-8"), "mopd").bytes["kv_cache"] == p.bytes["kv_cache"]


def test_rlhf_with_a_pairwise_judge_plans_the_judges_sampling():
    """The judge phase: its KV cache for one sampler call of ``rl.judge.batch_size`` rows of the prompt budget, two
    whole responses and the template allowance, plus its verdict budget; its forwards in the step FLOPs instead of
    the reward model's scoring pass; the peak and the suggestion follow it when it is the largest phase."""
    config = load_config("experiments/rlhf.py:tiny_judge")    # tiny, float32, mesh data=-1
    rl = config.stages.rlhf.rl
    assert rl.judge.stage == "judge" and rl.judge.strategy == "circular"
    p = make_plan(config, hardware.topology("v5p-8"), "rlhf")
    wl, cfg = p.workload, p.cfg
    prompt = rl.max_prompt_tokens + 2 * rl.max_new_tokens + 32
    assert (wl.judge.rows, wl.judge.prompt_len, wl.judge.new_tokens) == (64, prompt, 40)
    assert wl.judge_calls == 1                                   # 8 prompts x 8 circular comparisons = 64
    slots = -(-prompt // 16) * 16 + 40
    attention_layers = sum("attention" in k for k in cfg.layer_kinds)
    assert p.bytes["judge_kv_cache"] == 64 // 4 * slots * attention_layers * 2 * cfg.num_kv_heads \
        * cfg.resolved_head_dim * 4
    assert p.judge_peak == sum(p.bytes[t] for t in ("params", "optimizer", "other_models", "judge_kv_cache",
                                                     "judge_prefill"))
    # The policy's sampling forward (a third of the train FLOPs) plus the judge's 64 rows x slots.
    fpt = m.flops_per_token(cfg, wl.seq_len)
    assert p.rollout_flops == pytest.approx(p.train_flops / 3 + 64 * slots * fpt / 3)
    # every pair in both orders: 8 prompts x 56 comparisons in calls of 64 rows
    rl.judge.update(strategy="all_pairs", swap_positions=True, batch_size=512, max_new_tokens=3000)
    config.model.max_seq_len = 4096
    big = make_plan(config, hardware.topology("v5p-8"), "rlhf")
    assert big.workload.judge_calls == 1 and big.workload.judge.rows == 512
    assert big.judge_peak > max(big.train_peak, big.rollout_peak) and big.peak == big.judge_peak
    assert big.biggest() == "judge_kv_cache" and "rl.judge.batch_size, now 512" in big.suggestion()
    rl.judge.update(batch_size=100)
    assert make_plan(config, hardware.topology("v5p-8"), "rlhf").workload.judge_calls == 5     # 448 / 100
    text, _ = plan.plan_report(config, hardware.topology("v5p-8"), stage="rlhf")
    assert "judge phase" in text and "5 sampler calls of 100 rows" in text
    rl.judge.update(batch_size=0)
    with pytest.raises(ValueError, match=r"stage 'rlhf': rl.judge.batch_size=0; expected >= 1"):
        make_plan(config, hardware.topology("v5p-8"), "rlhf")
    # Without a judge there is no judge phase.
    rl.judge.update(stage="")
    assert make_plan(config, hardware.topology("v5p-8"), "rlhf").workload.judge is None


def test_multi_turn_episodes_keep_one_cache_and_plan_the_observations_feeding_calls():
    """A 3-turn episode's rows keep one cache over the whole row (the KV slots and FLOPs of one single-turn call);
    the sampling workspace is the larger of the prompts' prefill and a call feeding FEED_CHUNK observation tokens
    per row, which on the XLA path holds one layer's f32 scores (heads x 16 x 608) and f32 copies of the cached
    keys and values (2 x 608 x K x Dh), and nothing with the Pallas decode kernel."""
    config = load_config("experiments/tool_use_rl.py")      # tiny: 352-token prompts, 3 turns of 96, 256 in all
    p = make_plan(config, hardware.topology("v5p-8"), "tool_use_rl")
    wl, cfg = p.workload, p.cfg
    assert (wl.rollout.prompt_len, wl.rollout.new_tokens, wl.rollout.turns, wl.seq_len) == (352, 256, 3, 608)
    assert p.rollout_flops == pytest.approx(p.train_flops / 3)          # each token passes the sampler once
    rows, tensor = wl.rollout.rows // memory.sampler_split(wl.rollout.rows, p.axis_sizes), p.axis_sizes["tensor"]
    heads, kv_width = cfg.num_heads // tensor, cfg.num_kv_heads // tensor * cfg.resolved_head_dim
    feed = rows * 4 * (heads * 16 * 608 + 2 * 608 * kv_width)
    assert memory.cached_feed_bytes(cfg, rows, 16, 608, tensor) == feed
    assert memory.cached_feed_bytes(cfg.replace(kernel_impl="interpret"), rows, 16, 608, tensor) == 0
    assert p.bytes["prefill"] == max(memory.prefill_bytes(cfg, rows, 352, tensor), feed)
    config.model.max_seq_len, config.stages.tool_use_rl.rl.max_prompt_tokens = 4096, 16   # feeding calls dominate
    config.stages.tool_use_rl.rl.max_new_tokens = 4080
    long = make_plan(config, hardware.topology("v5p-8"), "tool_use_rl")
    assert long.bytes["prefill"] == memory.cached_feed_bytes(cfg, rows, 16, 4096, tensor)
    config.stages.tool_use_rl.rl.update(max_turns=1, max_turn_tokens=0)
    config.eval.domains = ()
    single = make_plan(config, hardware.topology("v5p-8"), "tool_use_rl")
    assert single.bytes["kv_cache"] == long.bytes["kv_cache"] and single.rollout_flops == long.rollout_flops
    assert single.bytes["prefill"] == memory.prefill_bytes(cfg, rows, 16, tensor) < long.bytes["prefill"]


def test_sampler_rows_take_the_sequence_devices_where_they_divide():
    assert memory.sampler_split(16, dict(data=2, fsdp=2, sequence=4)) == 16
    assert memory.sampler_split(8, dict(data=2, fsdp=2, sequence=4)) == 4   # the batch axes alone
    assert memory.sampler_split(6, dict(data=2, sequence=4)) == 2
    assert memory.sampler_split(5, dict(data=2, sequence=4)) == 1


def test_batch_not_divisible_by_the_batch_axes_is_replicated():
    assert memory.batch_split(8, dict(data=2, fsdp=2, expert=2)) == 8
    assert memory.batch_split(6, dict(data=2, fsdp=2, expert=2)) == 1


def test_expert_parallel_moe_gathers_its_groups_tokens():
    """model/moe.py all-gathers the tokens of a device's expert group: router terms and token copies x expert."""
    assert memory.expert_gather(TINY, 8, dict(data=2, expert=4)) == 4
    assert memory.expert_gather(TINY, 6, dict(data=2, expert=4)) == 1   # rows replicated: nothing to gather
    assert memory.expert_gather(TINY.replace(num_experts=6), 8, dict(data=2, expert=4)) == 1  # experts replicated
    assert memory.expert_gather(TINY, 8, dict(data=8)) == 1
    c, d, e, k, f = 4, TINY.d_model, TINY.num_experts, TINY.num_experts_per_tok, TINY.expert_hidden_size
    routed = 2 * 4 * e + k * (2 * d + 2 * f) * c    # f32 router logits and scores; SwiGLU copies
    gathered, local = (memory.activation_bytes_per_token(TINY, 1, 64, gather=ways) for ways in (4, 1))
    assert TINY.remat == "none" and gathered - local == TINY.num_layers * (3 * routed + 4 * d * c)


def test_sequence_parallelism_splits_a_rows_tokens_and_adds_the_gathered_keys_and_values(nano_sft):
    """model/attention.py all-gathers K and V over ``sequence`` ((sequence - 1) x 2 K Dh c more per local token
    and attention layer) and recomputes its query chunks in the backward (no f32 [H, L] probabilities kept, one
    chunk's scores transient); a row's tokens are split over ``sequence`` when it divides them."""
    assert memory.sequence_split(2048, dict(sequence=4)) == 4
    assert memory.sequence_split(2050, dict(sequence=4)) == 1
    cfg = m.presets.nano30b().replace(remat="none")
    assert cfg.kernel_impl == "xla"
    split, whole = (memory.activation_bytes_per_token(cfg, 1, 2048, sequence=ways) for ways in (4, 1))
    attention_layers = sum("attention" in kind for kind in cfg.layer_kinds)
    gathered_kv = 3 * 2 * cfg.num_kv_heads * cfg.resolved_head_dim * 2
    assert split - whole == attention_layers * (gathered_kv - 4 * cfg.num_heads * 2048)
    # One chunk of 512 queries (2048 / 4 tokens per shard; 2**22 / 2048 pairs allows more) x 2048 keys, f32 x 2.
    assert memory.sequence_attention_workspace_bytes(cfg, 3, 2048, 1, 4) == 3 * 8 * cfg.num_heads * 512 * 2048
    assert memory.sequence_attention_workspace_bytes(cfg, 3, 262144, 1, 4) == 3 * 8 * cfg.num_heads * 16 * 262144
    assert memory.sequence_attention_workspace_bytes(cfg, 3, 2048, 1, 1) == 0
    # The kernels keep the flash calls' lse per token and layer (one call per query, as on one device) and no
    # chunk of scores.
    flash = cfg.replace(kernel_impl="auto")
    split, whole = (memory.activation_bytes_per_token(flash, 1, 2048, sequence=ways) for ways in (4, 1))
    assert split - whole == attention_layers * gathered_kv
    assert memory.sequence_attention_workspace_bytes(flash, 3, 2048, 1, 4) == 0
    config = nano_sft.copy_and_resolve_references()
    config.mesh.fsdp, config.mesh.sequence, config.data.batch_size = -1, 4, 2
    p = make_plan(config, hardware.topology("8xH100"))
    assert (p.axis_sizes["fsdp"], p.batch_split, p.tokens_per_device) == (2, 2, 2048 // 4)


def _cli(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "nemocascade.plan", "--config=experiments/sft.py", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_prints_the_table_and_exits_1_when_it_does_not_fit():
    refused = _cli("--devices=1", "--hbm_gib=0.01", "--config.train.grad_accum_steps=2")
    assert refused.returncode == 1, refused.stderr
    assert "activations (saved)" in refused.stdout and "step time at 40% MFU" in refused.stdout
    assert "DOES NOT FIT" in refused.stdout
    assert "refused: stage 'sft'" in refused.stderr and "the biggest term is activations" in refused.stderr
    assert "grad_accum_steps (now 2" in refused.stderr


def test_cli_explains_a_mesh_that_does_not_fit_the_topology_without_a_traceback():
    result = _cli("--topology=8xH100", "--config.mesh.data=4", "--config.mesh.fsdp=4")
    assert result.returncode == 2, result.stderr
    assert "error: config.mesh" in result.stderr and "8xH100 (8 devices)" in result.stderr
    assert "Traceback" not in result.stderr
