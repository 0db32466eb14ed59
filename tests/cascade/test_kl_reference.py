"""The KL term of GRPO-family stages against the stage's frozen initial params (``rl.kl_coef > 0``).

A tiny GRPO stage from random init (the reference is then re-derived from the seed) runs 2 steps, and resumed
from its checkpoint, a third. Every step taken through ``runtime.make_train_step`` is recorded (the params it
starts from, copied to the host before the donated call, its batch and its metrics). Checked against float64
numpy: ``log_softmax(model.forward(params) / T)`` of the batch's targets under the params saved before step 1
(the reference, also after the resume) and under the params of each step, and the masked mean k3 estimator
``exp(ref - lp) - (ref - lp) - 1``. With ``kl_coef = 0`` no reference is built: the device bytes live during
the first step are one params set fewer.
"""
import math

import jax
import numpy as np
import pytest

from nemocascade import configs
from nemocascade import model as model_lib
from nemocascade.cascade import pipeline
from nemocascade.stages import grpo, mopd, runtime

SMALL_MODEL = dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, expert_hidden_size=32, max_seq_len=128)
KL_COEF, TEMPERATURE = 0.5, 1.0
SLACK_BYTES = 16 * 1024  # device bytes besides one params set that may differ between the two runs (PRNG keys, ...)


def _stage_config(*, kl_coef, steps=2, kind="grpo"):
    stage = configs.tiny_rl_stage(kind, domains=("math",), steps=steps, learning_rate=3e-2, kl_coef=kl_coef,
                                  prompts_per_step=2, num_samples=4, max_new_tokens=8, max_prompt_tokens=64,
                                  prompts_per_domain=8, filter_uniform_groups=False, temperature=TEMPERATURE)
    stage.train.update(log_every=1, checkpoint_every=1)
    config = configs.cascade_config(name="kl", model="tiny", mesh=configs.mesh_config(), order=(kind,),
                                    stages={kind: stage}, data=configs.shared_data_config(),
                                    eval_cfg=configs.eval_config(domains=("math",), num_examples=4, max_new_tokens=8))
    config.model.update(SMALL_MODEL)
    return pipeline.stage_config(config, kind)


def _device_bytes(array) -> int:
    return math.prod(array.sharding.shard_shape(array.shape)) * array.dtype.itemsize * len(array.sharding.device_set)


class Recorder:
    """Wraps every train step made through ``runtime.make_train_step``; see the module docstring."""

    def __init__(self):
        self.steps = []
        self.stage = None
        self.baseline = []       # arrays live before the stage started (kept alive so their ids stay unique)
        self.baseline_ids = set()

    def make_train_step(self, real):
        def make(*args, **kwargs):
            jitted = real(*args, **kwargs)

            def step(state, batch):
                reference = self.stage.reference
                record = {"params": jax.device_get(state.params), "batch": jax.device_get(batch),
                          "reference_bytes": None if reference is None else
                          sum(_device_bytes(a) for a in jax.tree.leaves(reference)),
                          "live_bytes": sum(_device_bytes(a) for a in jax.live_arrays()
                                            if id(a) not in self.baseline_ids)}
                del reference
                state, metrics = jitted(state, batch)
                record["metrics"] = jax.device_get(metrics)
                self.steps.append(record)
                return state, metrics
            return step
        return make

    def run(self, config, workdir):
        self.stage = None
        self.baseline = jax.live_arrays()
        self.baseline_ids = {id(a) for a in self.baseline}
        self.stage = grpo.GRPOStage(config, workdir)
        self.stage.run(initial_params=None)


@pytest.fixture
def recorder(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(runtime, "make_train_step", recorder.make_train_step(runtime.make_train_step))
    return recorder


def _logprobs64(params, cfg, batch) -> np.ndarray:
    """f64[N, L] log-probs of ``batch["targets"]``: ``model.forward`` on one device, log-softmax in numpy."""
    device = jax.devices()[0]
    params = jax.device_put(params, device)
    logits, _ = model_lib.forward(params, cfg, jax.device_put(batch["tokens"], device),
                                  positions=jax.device_put(batch["positions"], device),
                                  segment_ids=jax.device_put(batch["segment_ids"], device))
    logits = np.asarray(logits, np.float64) / TEMPERATURE
    logits -= logits.max(-1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return np.take_along_axis(log_softmax, batch["targets"][..., None].astype(np.int64), -1)[..., 0]


def _k3_mean(policy_lp, ref_lp, mask) -> float:
    diff = ref_lp - policy_lp
    k3 = np.exp(diff) - diff - 1.0
    return float((k3 * mask).sum() / mask.sum())


@pytest.mark.slow
def test_kl_to_the_frozen_initial_params(recorder, tmp_path):
    config = _stage_config(kl_coef=KL_COEF)
    cfg = runtime.model_config_from(config)
    recorder.run(config, str(tmp_path / "kl"))
    with_reference = list(recorder.steps)
    resumed = _stage_config(kl_coef=KL_COEF, steps=3)            # resumes from the step-2 checkpoint
    recorder.run(resumed, str(tmp_path / "kl"))
    steps = recorder.steps
    assert len(steps) == 3 and all(s["reference_bytes"] is not None for s in steps)

    initial = steps[0]["params"]                                 # saved before the first (donating) step
    kls = []
    for i, step in enumerate(steps):
        batch, mask = step["batch"], step["batch"]["mask"].astype(np.float64)
        assert mask.sum() > 0
        ref_lp = _logprobs64(initial, cfg, batch)
        np.testing.assert_allclose((batch["ref_logprobs"] * mask), ref_lp * mask, atol=2e-4, err_msg=f"step {i + 1}")
        expected = _k3_mean(_logprobs64(step["params"], cfg, batch), ref_lp, mask)
        kl = float(step["metrics"]["kl"])
        kls.append((kl, expected))
        if i == 0:
            assert abs(kl) < 1e-6 and abs(expected) < 1e-6, (kl, expected)   # reference == policy at step 1
        else:
            assert expected > 1e-4, expected                     # the update moved the policy measurably
            np.testing.assert_allclose(kl, expected, rtol=2e-3, err_msg=f"step {i + 1}")
    print("kl metric vs numpy per step:", kls)

    # kl_coef = 0: no reference while training, and one params set fewer live on the devices.
    recorder.steps = []
    recorder.run(_stage_config(kl_coef=0.0, steps=1), str(tmp_path / "no_kl"))
    assert len(recorder.steps) == 1 and all(s["reference_bytes"] is None for s in recorder.steps)
    assert all("kl" not in s["metrics"] and "ref_logprobs" not in s["batch"] for s in recorder.steps)
    params_bytes = with_reference[0]["reference_bytes"]
    assert params_bytes > 10 * SLACK_BYTES
    for kl_step, plain_step in zip(with_reference, recorder.steps):
        extra = kl_step["live_bytes"] - plain_step["live_bytes"]
        assert abs(extra - params_bytes) <= SLACK_BYTES, (extra, params_bytes)


def test_kl_coef_is_refused_where_there_is_no_kl_term(tmp_path):
    with pytest.raises(ValueError, match=r"rl.kl_coef=0.1: expected 0, or > 0 for a GRPO / RLHF stage "
                                         r"\(MOPDStage has no KL term\)"):
        mopd.MOPDStage(_stage_config(kl_coef=0.1, kind="mopd"), str(tmp_path / "mopd"))
    with pytest.raises(ValueError, match=r"rl.kl_coef=-0.1: expected 0"):
        grpo.GRPOStage(_stage_config(kl_coef=-0.1), str(tmp_path / "grpo"))
