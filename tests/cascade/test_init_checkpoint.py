"""``init_checkpoint``: a run's first policy stage starts from a base model's checkpoint (as ``python -m
nemocascade.hf.convert import`` writes it: step 0 holding ``{"params": ...}``) instead of a random init.

The stage runners are stand-ins that record the params they are given; the restore is the real one.
"""
import types

import jax
import numpy as np
import pytest

from nemocascade import configs
from nemocascade import model as model_lib
from nemocascade.cascade import pipeline
from nemocascade.checkpoint import Checkpointer

TINY = configs.model_config("tiny")


def _save_base(directory, model: dict, seed: int):
    """Random params of ``model`` saved as step 0 of ``directory`` (the layout of an HF import); returns them."""
    params = model_lib.init_params(model_lib.ModelConfig.from_dict(model), jax.random.PRNGKey(seed))
    checkpointer = Checkpointer(str(directory), async_save=False)
    checkpointer.save(0, {"params": params}, config={"model": model}, force=True)
    checkpointer.wait()
    checkpointer.close()
    return params


@pytest.fixture
def recorded(monkeypatch):
    """Stage runners that record ``initial_params`` by stage name (no training, no evaluation)."""
    calls = {}

    def fake_runner(stage_cfg, stage_dir, *, initial_params=None):
        calls[stage_cfg.name] = initial_params
        ctx = types.SimpleNamespace(checkpoint_dir=f"{stage_dir}/checkpoints", evaluation=None)
        return ctx, types.SimpleNamespace(step=1, params=None)

    monkeypatch.setattr(pipeline, "STAGE_RUNNERS", {k: fake_runner for k in pipeline.STAGE_RUNNERS})
    monkeypatch.setattr(pipeline, "_previous_params", lambda config, workdir, previous, mesh: f"params of {previous}")
    monkeypatch.setattr(pipeline, "_evaluate", lambda config, stage_cfg, ctx, params: {})
    return calls


def _workdir(path):
    path.mkdir()
    return str(path)


def _assert_same_params(got, want):
    leaves = jax.tree_util.tree_leaves_with_path(want)
    assert len(jax.tree.leaves(got)) == len(leaves)
    for (path, a), b in zip(leaves, jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=jax.tree_util.keystr(path))


def _cascade(init_checkpoint: str):
    stages = {"sft": configs.stage("sft", **configs.tiny_sft_stage()),
              "rl": configs.tiny_rl_stage("grpo", domains=("if",))}
    return configs.cascade_config(name="base", model="tiny", mesh=configs.mesh_config(data=2, fsdp=4),
                                  order=("sft", "rl"), stages=stages, eval_cfg=configs.eval_config(),
                                  data=configs.shared_data_config(), init_checkpoint=init_checkpoint)


def test_first_stage_of_a_cascade_starts_from_the_base_checkpoint(recorded, tmp_path):
    base = _save_base(tmp_path / "base", TINY.to_dict(), seed=7)
    pipeline.run(_cascade(str(tmp_path / "base")), _workdir(tmp_path / "run"))
    _assert_same_params(recorded["sft"], base)                 # restored onto the run's mesh, bit for bit
    assert recorded["rl"] == "params of sft"                   # later stages start from the stage before

    pipeline.run(_cascade(""), _workdir(tmp_path / "random"))       # no base: random init from the seed
    assert recorded["sft"] is None


def test_a_single_stage_starts_from_the_base_checkpoint(recorded, tmp_path):
    base = _save_base(tmp_path / "base", TINY.to_dict(), seed=8)
    stage = pipeline.stage_config(_cascade(""), "sft")       # a single-stage config, as experiments/sft.py's
    stage.init_checkpoint = str(tmp_path / "base")
    pipeline.run(stage, _workdir(tmp_path / "run"))
    _assert_same_params(recorded["sft"], base)


def test_a_base_checkpoint_that_does_not_fit_the_model_is_a_clear_error(recorded, tmp_path):
    _save_base(tmp_path / "other", {**TINY.to_dict(), "d_model": TINY.d_model * 2}, seed=0)
    with pytest.raises(ValueError, match=r"init_checkpoint='.*other': cannot restore params of config.model from "
                                         r"it \(ValueError: checkpoint .*other \(step 0\) does not hold these "
                                         r"params: \['embed'\] is stored as \(1024, 256\), expected \(1024, 128\)"):
        pipeline.run(_cascade(str(tmp_path / "other")), _workdir(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"init_checkpoint='.*missing': cannot restore .*no finished checkpoint"):
        pipeline.run(_cascade(str(tmp_path / "missing")), _workdir(tmp_path / "run2"))
