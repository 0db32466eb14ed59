"""Shared fixture of the cascade tests: the pipeline with stand-in stage runners."""
import types

import pytest

from nemocascade.cascade import pipeline


@pytest.fixture
def stand_in_stages(monkeypatch):
    """``install(scores)`` replaces every stage runner, the param restore and the evaluation by recorders:
    a runner records ``(stage config, initial params)`` in the returned dict under the stage's name and
    finishes at step 3 with params = the stage's name; restored params are ``"params of <stage>"``; the
    evaluation returns ``scores(stage_name)``."""
    def install(scores):
        calls = {}

        def fake_runner(stage_cfg, stage_dir, *, initial_params=None):
            calls[stage_cfg.name] = (stage_cfg, initial_params)
            ctx = types.SimpleNamespace(checkpoint_dir=f"{stage_dir}/checkpoints", evaluation=None)
            return ctx, types.SimpleNamespace(step=3, params=stage_cfg.name)

        monkeypatch.setattr(pipeline, "STAGE_RUNNERS", {k: fake_runner for k in pipeline.STAGE_RUNNERS})
        monkeypatch.setattr(pipeline, "_previous_params",
                            lambda config, workdir, previous, mesh: f"params of {previous}")
        monkeypatch.setattr(pipeline, "_evaluate", lambda config, stage_cfg, ctx, params: scores(stage_cfg.name))
        return calls

    return install
