"""Every experiment file: its presets build, unknown presets are refused, nano30b presets are real-scale.

Covers each ``experiments/*.py`` (found by glob, so a new file is tested without being listed here). For
cascades, every stage's merged config is built as the pipeline builds it and checked for consistency
(one tokenizer, rows that fit the model, a reward model before each RLHF stage).
"""
import glob
import math
import os

import pytest
from experiment_testing import REPO, load_experiment

from nemocascade import configs, environments, hardware, plan
from nemocascade.cascade import pipeline

FILES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "experiments", "*.py")))
RL_KINDS = ("grpo", "mopd", "rlhf")


def stage_configs(config):
    """(name, merged stage config) of every stage a config defines (a single stage is its own only stage)."""
    if config.kind != "cascade":
        return [(config.name, config)]
    return [(name, pipeline.stage_config(config, name)) for name in config.stages]


def test_every_experiment_file_is_covered():
    assert {"sft", "grpo", "if_rl", "mopd", "reward_model", "rlhf", "cascade"} <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_presets_build_and_unknown_presets_are_refused(name):
    module = load_experiment(name)
    assert module.get_config().to_dict() == module.get_config("tiny").to_dict()
    for preset in ("tiny", "nano30b"):
        config = module.get_config(preset)
        if config.kind == "cascade":
            assert set(config.order) <= set(config.stages)
            for stage in config.order:
                assert config.stages[stage].kind in pipeline.STAGE_RUNNERS
        else:
            assert config.kind in pipeline.STAGE_RUNNERS
        for stage, cfg in stage_configs(config):
            assert cfg.data.tokenizer == config.data.tokenizer, (stage, "one tokenizer for every stage")
            if cfg.kind in RL_KINDS:
                width = cfg.rl.max_prompt_tokens + cfg.rl.max_new_tokens
                assert width <= config.model.max_seq_len, (stage, width)
            if cfg.kind == "reward_model":
                assert cfg.data.seq_len <= config.model.max_seq_len, stage
    with pytest.raises(ValueError, match=rf"unknown preset 'nope' for experiments/{name}.py; known: tiny, nano30b"):
        module.get_config("nope")


@pytest.mark.parametrize("name", FILES)
def test_nano30b_presets_name_the_real_model_and_a_tpu_mesh(name):
    config = load_experiment(name).get_config("nano30b")
    nano = configs.model_config("nano30b")
    run_settings = dict(remat="full", kernel_impl="auto", logits_chunk_size=2048)
    assert config.model.to_dict() == {**nano.to_dict(), **run_settings}
    assert (nano.d_model, nano.vocab_size, nano.num_experts, nano.num_experts_per_tok) == (2688, 131072, 128, 6)
    sizes = config.mesh.to_dict()
    assert min(sizes.values()) >= 1 and math.prod(sizes.values()) == 32 and sizes["sequence"] > 1, sizes
    assert config.data.tokenizer.startswith("REQUIRED")                  # the toy tokenizer is never the default
    assert config.init_checkpoint.startswith("REQUIRED")                 # nor a random init of the base model
    for stage, cfg in stage_configs(config):
        if cfg.kind in RL_KINDS:      # RECIPE.md: 128 prompts per step; the agentic stage 16 (x 64 rollouts)
            agentic = bool(environments.multi_turn_domains(cfg.rl.domains))
            assert cfg.train.freeze_router and cfg.rl.prompts_per_step == (16 if agentic else 128), stage


def test_rl_stages_are_preceded_as_the_recipe_orders_them():
    rlhf = load_experiment("rlhf").get_config("nano30b")
    assert rlhf.order == ("sft", "reward_model", "rlhf")
    stage = rlhf.stages.rlhf
    assert (stage.kind, stage.rl.max_new_tokens, stage.train.steps) == ("rlhf", 16384, 30)     # RECIPE.md: 16K, 25-30
    assert stage.rl.reward_model == "" and stage.optimizer.learning_rate == 3e-6 and stage.rl.num_samples == 16
    for preset in ("tiny", "nano30b"):
        order = load_experiment("cascade").get_config(preset).order
        assert order == ("sft", "if_rl", "multi_domain_rl", "mopd", "reward_model", "rlhf", "code_rl")
        long_context = load_experiment("cascade").get_config(f"{preset}_long_context")
        judge = ("lc_judge",) if preset == "tiny" else ()         # the tiny answer judge; nano30b names a checkpoint
        assert long_context.order == order[:6] + judge + ("long_context_rl",) + order[6:]
        stage = long_context.stages.long_context_rl
        assert stage.kind == "grpo" and stage.rl.domains == ("long_context",)
    nano_long_context = load_experiment("cascade").get_config("nano30b_long_context").stages.long_context_rl
    assert (nano_long_context.train.steps, nano_long_context.rl.max_new_tokens) == (30, 49152)      # RECIPE.md
    assert nano_long_context.rl.max_prompt_tokens == 32768 and nano_long_context.rl.judge.checkpoint.startswith("REQ")
    code = load_experiment("cascade").get_config("nano30b").stages.code_rl
    assert (code.rl.domains, code.rl.top_p, code.train.steps) == (("code",), 0.95, 22)
    assert load_experiment("if_rl").get_config("nano30b").stages.if_rl.train.steps == 180
    assert load_experiment("grpo").get_config("nano30b").stages.multi_domain_rl.train.steps == 70
    agentic = load_experiment("tool_use_rl").get_config("nano30b").stages.tool_use_rl
    assert (agentic.rl.prompts_per_step, agentic.rl.num_samples, agentic.rl.temperature) == (16, 64, 0.8)  # RECIPE.md
    assert (agentic.train.steps, agentic.rl.max_new_tokens, agentic.rl.max_turns) == (45, 98304, 16)


def test_the_nano30b_judge_preset_scores_rlhf_with_a_genrm_on_every_pair():
    config = load_experiment("rlhf").get_config("nano30b_judge")
    assert config.order == ("sft", "rlhf") and "reward_model" not in config.stages
    judge = config.stages.rlhf.rl.judge
    assert judge.checkpoint.startswith("REQUIRED") and judge.strategy == "all_pairs" and not judge.swap_positions
    assert load_experiment("rlhf").get_config("nano30b").stages.rlhf.rl.judge.checkpoint == ""
    text, failing = plan.plan_report(config, hardware.topology("v5p-64"))
    assert not failing and "judge phase" in text, text


@pytest.mark.parametrize("name", FILES)
def test_nano30b_presets_plan_to_fit_a_v5p_64(name):
    """``python -m nemocascade.plan`` plans every stage of every nano30b preset within 90% of a v5p-64 device's
    HBM (the largest: code RL's rollouts, 64 GiB, 2048 rows x 137,216 slots of KV cache split over all 32)."""
    config = load_experiment(name).get_config("nano30b")
    text, failing = plan.plan_report(config, hardware.topology("v5p-64"))
    assert not failing, text


@pytest.mark.parametrize("name", [n for n in FILES if n not in ("sft", "reward_model")])
def test_one_override_sets_the_tokenizer_of_every_nano30b_stage(name):
    """The nano30b cascade stages inherit the cascade's ``data.tokenizer`` ("" in a stage), so one
    ``--config.data.tokenizer=DIR`` reaches all of them; a stage naming another one is refused."""
    config = load_experiment(name).get_config("nano30b")
    config.data.tokenizer = "/models/nano"
    assert {cfg.data.tokenizer for _, cfg in stage_configs(config)} == {"/models/nano"}
    first = config.order[0]
    config.stages[first].data = {"tokenizer": "/models/other"}
    with pytest.raises(ValueError, match=rf"stage '{first}': data.tokenizer='/models/other' differs from the "
                                         rf"cascade's data.tokenizer='/models/nano'"):
        pipeline.stage_config(config, first)


@pytest.mark.parametrize("preset", ["tiny", "nano30b"])
def test_every_stage_renders_in_the_cascades_thinking_mode(preset):
    """An SFT stage in one mode and RL stages in the other would train the policy on answers to prompts it is
    never given (the assistant prefix differs): a stage's own ``data.thinking`` must equal the cascade's."""
    for name in [n for n in FILES if n not in ("sft", "reward_model")]:
        config = load_experiment(name).get_config(preset)
        assert {cfg.data.thinking for _, cfg in stage_configs(config)} == {config.data.thinking}, name
    config = load_experiment("grpo").get_config(preset)
    config.stages.sft.data.thinking = not config.data.thinking
    with pytest.raises(ValueError, match=rf"stage 'sft': data.thinking={not config.data.thinking} differs from "
                                         rf"the cascade's data.thinking={config.data.thinking}"):
        pipeline.stage_config(config, "sft")
