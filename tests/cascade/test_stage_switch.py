"""Stage switches are lean: a 3-stage tiny cascade (sft -> grpo -> mopd, 2 steps each) run in process.

Checked through public seams only (``runtime.make_train_step``, the pipeline's stage runners, the MOPD
teacher restore and the final report), with the pipeline's own cleanup untouched:

* every stage trains through the one ``make_train_step``: one step built per stage, every optimizer step taken
  through it, and its jitted step is compiled exactly once per stage (counted from jax's backend-compile
  monitoring events fired while the step runs, and from the jitted function's cache size), so nothing
  (shapes, weak types, shardings) makes it recompile between steps;
* at each switch point (the next runner is called, after ``run_cascade``'s ``del state, ctx; gc.collect()``)
  the finished stage's final params and optimizer state are gone, no live array other than the next stage's
  initial params has the shape/dtype/sharding of one of the finished stage's moments, and the bytes held by
  arrays created since the test started are one params set plus a small slack; after MOPD (the report hook)
  its teacher params are gone too and only the slack remains.
"""
import math
import weakref

import jax
import pytest

from nemocascade import configs
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.cascade import pipeline
from nemocascade.stages import mopd, runtime

ORDER = ("sft", "grpo", "mopd")
STEPS = 2
SMALL_MODEL = dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, expert_hidden_size=32, max_seq_len=128)
# Bytes (summed over devices) that may stay live besides one params set: PRNG keys and scalars kept by caches.
SLACK_BYTES = 16 * 1024
# jax's monitoring event for one XLA compilation (``jax._src.dispatch.BACKEND_COMPILE_EVENT``), with ``fun_name``.
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _config():
    sft = configs.stage("sft", **configs.tiny_sft_stage())
    sft.data.update(toy_mix="math=32,if=32", seq_len=128, batch_size=4)
    sft.optimizer.update(warmup_steps=0)                 # the cosine's length is train.steps = 2
    rl = dict(steps=STEPS, prompts_per_step=2, num_samples=2, max_new_tokens=8, max_prompt_tokens=64,
              prompts_per_domain=8)
    stages = {"sft": sft, "grpo": configs.tiny_rl_stage("grpo", domains=("math",), **rl),
              "mopd": configs.tiny_rl_stage("mopd", domains=("math",), aggregation="seq_mean_token_mean", **rl)}
    for stage in stages.values():
        stage.train.update(steps=STEPS, log_every=1, checkpoint_every=STEPS)
    # 8 devices: fsdp 4 splits the 4-row batches and the params' embed dim, tensor 2 their heads/vocab.
    config = configs.cascade_config(name="switch", model="tiny", mesh=configs.mesh_config(data=1, fsdp=4, tensor=2),
                                    order=ORDER, stages=stages, data=configs.shared_data_config(),
                                    eval_cfg=configs.eval_config(domains=("math",), num_examples=4, max_new_tokens=8))
    config.model.update(SMALL_MODEL)
    return config


def _device_bytes(array) -> int:
    """Bytes ``array`` occupies summed over its devices (a replicated array counts once per device)."""
    shard = math.prod(array.sharding.shard_shape(array.shape))
    return shard * array.dtype.itemsize * len(array.sharding.device_set)


def _signature(array):
    return array.shape, array.dtype, array.sharding


def _arrays(tree) -> list:
    return [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]


def _one_params_set_bytes(config) -> int:
    """Device bytes of one params set of ``config``'s model laid out by ``param_shardings`` (no allocation)."""
    cfg = model_lib.ModelConfig.from_dict(config.model.to_dict())
    shapes = jax.eval_shape(lambda r: model_lib.init_params(cfg, r), jax.random.PRNGKey(0))
    shardings = sharding_lib.param_shardings(sharding_lib.make_mesh(config.mesh.to_dict()), cfg)
    return sum(math.prod(sh.shard_shape(s.shape)) * s.dtype.itemsize * len(sh.device_set)
               for s, sh in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)))


class Probe:
    """Instruments one cascade run; see the module docstring for what it records."""

    def __init__(self, baseline):
        self.baseline_ids = {id(a) for a in baseline}   # the caller keeps ``baseline`` alive
        self.steps = []          # per make_train_step call: {"calls", "compiles", "cache_size"}
        self.running = None      # the record of the step being executed
        self.final = None        # weakrefs / moment signatures of the latest state a step returned
        self.teachers = []       # weakrefs to restored teacher params
        self.switches = []       # what was live at each switch point

    def make_train_step(self, real):
        def make(*args, **kwargs):
            jitted = real(*args, **kwargs)
            record = {"calls": 0, "compiles": [], "cache_size": 0}
            self.steps.append(record)

            def step(state, batch):
                self.running = record
                try:
                    state, metrics = jitted(state, batch)
                finally:
                    self.running = None
                record["calls"] += 1
                record["cache_size"] = jitted._cache_size()
                self._remember(state)
                return state, metrics
            return step
        return make

    def on_duration_event(self, event, duration, **kwargs):
        del duration
        if event == BACKEND_COMPILE_EVENT and self.running is not None:
            self.running["compiles"].append(kwargs.get("fun_name"))

    def _remember(self, state):
        self.final = {"params": [weakref.ref(a) for a in _arrays(state.params)],
                      "opt_state": [weakref.ref(a) for a in _arrays(state.opt_state)],
                      "moments": {_signature(a) for a in _arrays(state.opt_state) if a.ndim > 0}}

    def restore_teacher(self, real):
        def restore(*args, **kwargs):
            params = real(*args, **kwargs)
            self.teachers.extend(weakref.ref(a) for a in _arrays(params))
            return params
        return restore

    def switch(self, label, expected_params=None):
        """Records the live arrays created since the baseline, apart from ``expected_params``' leaves."""
        expected = {id(a) for a in _arrays(expected_params)}
        live = [a for a in jax.live_arrays() if id(a) not in self.baseline_ids]
        others = [a for a in live if id(a) not in expected]
        final = self.final or {"params": [], "opt_state": [], "moments": set()}
        self.switches.append({
            "label": label,
            "live_bytes": sum(_device_bytes(a) for a in live),
            "params_bytes": sum(_device_bytes(a) for a in _arrays(expected_params)),
            "other_bytes": sum(_device_bytes(a) for a in others),
            "others": sorted(str((a.shape, a.dtype)) for a in others),
            "moment_like": [_signature(a) for a in others if _signature(a) in final["moments"]],
            "finished_params_alive": sum(r() is not None for r in final["params"]),
            "finished_opt_state_alive": sum(r() is not None for r in final["opt_state"]),
            "teachers_alive": sum(r() is not None for r in self.teachers),
            "teachers_loaded": len(self.teachers),
        })


@pytest.fixture
def probe(monkeypatch):
    baseline = jax.live_arrays()
    probe = Probe(baseline)
    monkeypatch.setattr(runtime, "make_train_step", probe.make_train_step(runtime.make_train_step))
    monkeypatch.setattr(mopd, "restore_policy_params", probe.restore_teacher(mopd.restore_policy_params))

    def switching(name, runner):
        def run(stage_cfg, stage_dir, *, initial_params=None):
            probe.switch(f"before {name}", initial_params)
            return runner(stage_cfg, stage_dir, initial_params=initial_params)
        return run

    monkeypatch.setattr(pipeline, "STAGE_RUNNERS", {k: switching(k, r) for k, r in pipeline.STAGE_RUNNERS.items()})
    # The report is written after the last stage's cleanup: record there instead (the report is not tested here).
    monkeypatch.setattr(pipeline.report, "write_report", lambda *args, **kwargs: probe.switch("after mopd"))
    jax.monitoring.register_event_duration_secs_listener(probe.on_duration_event)
    yield probe
    jax.monitoring.unregister_event_duration_listener(probe.on_duration_event)
    del baseline


@pytest.mark.slow
def test_stage_switches_compile_one_step_and_release_finished_stages(probe, tmp_path):
    config = _config()
    ledger = pipeline.run_cascade(config, str(tmp_path))

    for record in probe.steps:
        print(f"train step: {record['calls']} calls, compiles {record['compiles']}, cache {record['cache_size']}")
    for s in probe.switches:
        print(f"{s['label']}: live {s['live_bytes']} B (next stage's params {s['params_bytes']} B, other "
              f"{s['other_bytes']} B: {s['others']}); finished stage's params/opt-state leaves alive "
              f"{s['finished_params_alive']}/{s['finished_opt_state_alive']}; teachers alive "
              f"{s['teachers_alive']}/{s['teachers_loaded']}")

    # One make_train_step per stage, every optimizer step through it, compiled once per stage.
    assert [ledger.entry(name)["step"] for name in ORDER] == [STEPS] * len(ORDER)
    assert [r["calls"] for r in probe.steps] == [STEPS] * len(ORDER)
    assert [r["compiles"] for r in probe.steps] == [["jit(step)"]] * len(ORDER)
    assert [r["cache_size"] for r in probe.steps] == [1] * len(ORDER)

    # Release at every switch point.
    assert [s["label"] for s in probe.switches] == ["before sft", "before grpo", "before mopd", "after mopd"]
    first, *later = probe.switches
    assert first["live_bytes"] == 0, first
    params_bytes = _one_params_set_bytes(config)
    assert params_bytes > 10 * SLACK_BYTES                      # the bound can tell one params set from two
    for s in later:
        assert s["finished_params_alive"] == 0 and s["finished_opt_state_alive"] == 0, s
        assert s["moment_like"] == [], s
        assert s["other_bytes"] <= SLACK_BYTES, s
        assert s["live_bytes"] <= s["params_bytes"] + SLACK_BYTES, s
    assert [s["params_bytes"] for s in later] == [params_bytes, params_bytes, 0]
    assert later[-1]["teachers_loaded"] > 0 and later[-1]["teachers_alive"] == 0, later[-1]
