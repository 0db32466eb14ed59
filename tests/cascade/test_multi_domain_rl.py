"""A GRPO stage on released-format multi-domain RL rows (MCQA, tool calling, structured output).

The rows come as NeMo Gym writes them (``responses_create_params`` with the prompt and the tools,
``agent_ref``); the stage lists each row's tools in its prompt, scores each rollout with its domain's
verifier, and refuses a bad row (naming ``path:line``) before drawing any rollout.
"""
import json
import os

import jax
import numpy as np
import pytest

from nemocascade import configs
from nemocascade import data as data_lib
from nemocascade.cascade import pipeline
from nemocascade.data.sources import example_from_row
from nemocascade.stages import grpo, rl_common
from nemocascade.stages.prompts import encode_prompts
from nemocascade.stages.sft import parse_toy_mix

SMALL_MODEL = dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, expert_hidden_size=32, max_seq_len=256)
TOOL = {"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
ROWS = [
    {"responses_create_params": {"input": [{"role": "user", "content": "Pick one.\nA: x\nB: y"}]},
     "options": [{"A": "x"}, {"B": "y"}], "expected_answer": "B", "agent_ref": {"name": "mcqa_simple_agent"}},
    {"responses_create_params": {"input": "Weather in Oslo?", "tools": [TOOL]}, "domain": "tool_call",
     "ground_truth": [{"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}]},
    {"responses_create_params": {"input": "Reply with JSON {\"a\": integer}."},
     "schema": "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}}}", "schema_type": "json",
     "agent_ref": {"name": "structured_outputs_simple_agent"}},
]
DOMAINS = ("mcqa", "structured_output", "tool_call")


def _stage_config(jsonl):
    stage = configs.tiny_rl_stage("grpo", domains=DOMAINS, steps=1, prompts_per_step=4, num_samples=2,
                                  max_new_tokens=8, max_prompt_tokens=224, filter_uniform_groups=False,
                                  unfinished_reward_zero=False)
    stage.rl.jsonl = jsonl
    config = configs.cascade_config(name="mdrl", model="tiny", mesh=configs.mesh_config(), order=("grpo",),
                                    stages={"grpo": stage}, data=configs.shared_data_config(),
                                    eval_cfg=configs.eval_config(domains=("math",), num_examples=4, max_new_tokens=8))
    config.model.update(SMALL_MODEL)
    return pipeline.stage_config(config, "grpo")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_prompts_list_the_rows_tools():
    tokenizer = data_lib.load_tokenizer(configs.shared_data_config().tokenizer)
    examples = [example_from_row(r, path="rows.jsonl", line=i + 1) for i, r in enumerate(ROWS)]
    with_tools, without = (tokenizer.decode(p) for p in encode_prompts(examples[1:], tokenizer, thinking=False))
    assert "<tools>" in with_tools and "<name>get_weather</name>" in with_tools
    assert with_tools.index("<tools>") < with_tools.index("Weather in Oslo?")
    assert "<tools>" not in without


def test_grpo_scores_each_domain_with_its_verifier(tmp_path, monkeypatch):
    scored = {}
    real_score = rl_common.score_rewards

    def score_rewards(samples, reward_fns):
        rewards, infos = real_score(samples, reward_fns)
        for sample, info, reward in zip(samples, infos, rewards):
            scored.setdefault(sample["domain"], []).append((type(reward_fns[sample["domain"]]).__name__, info,
                                                            float(reward)))
        return rewards, infos

    monkeypatch.setattr(rl_common, "score_rewards", score_rewards)
    config = _stage_config(_write(tmp_path / "mdrl.jsonl", ROWS + [{**ROWS[0], "expected_answer": "A"}]))
    ctx, state = grpo.GRPOStage(config, str(tmp_path / "run")).run()
    assert int(jax.device_get(state.step)) == 1
    assert {d: sorted({name for name, _, _ in v}) for d, v in scored.items()} == {
        "mcqa": ["MultipleChoiceReward"], "structured_output": ["StructuredOutputReward"],
        "tool_call": ["ToolCallReward"]}
    assert [len(scored[d]) for d in DOMAINS] == [4, 2, 2]  # two MCQA prompts, num_samples rollouts each
    assert all("extracted" in info for _, info, _ in scored["mcqa"])
    assert all("calls" in info for _, info, _ in scored["tool_call"])
    with open(os.path.join(ctx.workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f][-1]
    for domain in DOMAINS:     # each domain's mean reward, logged beside the batch's
        rewards = [reward for _, _, reward in scored[domain]]
        assert logged[f"reward_{domain}"] == pytest.approx(sum(rewards) / len(rewards))


def test_domain_rewards_are_per_domain_means_for_a_multi_domain_stage():
    samples = [{"domain": d} for d in ("mcqa", "tool_call", "mcqa", "mcqa", "structured_output", "tool_call")]
    rewards = np.array([1.0, 0.0, 0.0, 0.5, 1.0, 1.0], np.float32)
    assert rl_common.domain_rewards(samples, rewards, 3) == {"reward_mcqa": 0.5, "reward_structured_output": 1.0,
                                                             "reward_tool_call": 0.5}
    assert rl_common.domain_rewards(samples[:1], rewards[:1], 1) == {}


def test_a_batch_the_mesh_cannot_split_is_refused(tmp_path):
    config = _stage_config(_write(tmp_path / "mdrl.jsonl", ROWS))
    config.rl.prompts_per_step = 3
    with pytest.raises(ValueError, match=r"rl.prompts_per_step \* rl.num_samples = 6 rows is not a multiple of the "
                                         r"8 devices of the mesh's batch axes"):
        grpo.GRPOStage(config, str(tmp_path / "run"))


@pytest.mark.parametrize("bad_row,message", [
    ({**ROWS[0], "expected_answer": "C"}, r"mdrl.jsonl:2 \('mcqa' reward\): the row\['expected_answer'\] = 'C'"),
    ({**ROWS[0], "agent_ref": {"name": "workplace_assistant_simple_agent"}},
     r"mdrl.jsonl:2: 1 prompt\(s\) of domain 'general', which has no reward fn.*GYM_AGENT_DOMAINS"),
    ({**ROWS[2], "schema_type": "xml"}, r"mdrl.jsonl:2 \('structured_output' reward\): .*'xml' needs xmltodict"),
])
def test_a_bad_row_is_refused_before_any_rollout(tmp_path, monkeypatch, bad_row, message):
    def no_rollouts(*args, **kwargs):
        raise AssertionError("a rollout was drawn before the rows were checked")

    monkeypatch.setattr(rl_common, "sample_rollouts", no_rollouts)
    config = _stage_config(_write(tmp_path / "mdrl.jsonl", [ROWS[1], bad_row]))
    with pytest.raises(ValueError, match=message):
        grpo.GRPOStage(config, str(tmp_path / "run")).run()


def test_tiny_recipe_mix_preset_fits_its_toy_prompts_and_conversations():
    from experiment_testing import load_experiment

    config = load_experiment("grpo").get_config("tiny_recipe_mix")
    sft, rl = (pipeline.stage_config(config, name) for name in ("sft", "multi_domain_rl"))
    assert sorted(rl.rl.domains) == sorted(config.eval.domains) == list(DOMAINS)
    tokenizer = data_lib.load_tokenizer(config.data.tokenizer)
    for domain in DOMAINS:
        for split in ("train", "heldout"):
            prompts = encode_prompts(data_lib.toy_examples(domain, split, 64), tokenizer, thinking=True)
            assert max(map(len, prompts)) <= rl.rl.max_prompt_tokens, (domain, split)
        conversations = data_lib.toy_sft_examples(domain, "train", 64)
        longest = max(len(tokenizer.encode(data_lib.render(e["messages"], tools=e.get("tools"), thinking=True)))
                      for e in conversations)
        assert longest <= sft.data.seq_len, domain
    # The toy domains hold as many distinct train prompts as the preset draws (else a ValueError says so).
    for domain, count in parse_toy_mix(sft.data.toy_mix).items():
        data_lib.toy_examples(domain, "train", max(count, rl.rl.prompts_per_domain))
