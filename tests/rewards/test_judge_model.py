"""The judge model shared by the judge rewards: its texts are the sampler's outputs for each prompt (batched and
padded, sampled verdicts reproducible), its checkpoint and tokenizer load as saved, and a tokenizer larger than its
vocabulary is refused."""
import dataclasses
import shutil

import jax
import numpy as np
import pytest
from judge_testing import CFG, TOKENIZER, judge_params, save_judge

from nemocascade import configs
from nemocascade import data as data_lib
from nemocascade import model as model_lib
from nemocascade.checkpoint import Checkpointer
from nemocascade.rewards.judge_model import JudgeModel
from nemocascade.rewards.pairwise_judge import judge_prompt
from nemocascade.rollout import generate


@pytest.fixture(scope="module")
def params():
    return judge_params()


def test_the_judges_texts_are_the_samplers_greedy_outputs(params):
    judge = JudgeModel(params, CFG, TOKENIZER, max_new_tokens=12, batch_size=2)
    prompts = [TOKENIZER.encode(judge_prompt([{"role": "user", "content": q}], a, b))
               for q, a, b in [("2+2?", "4", "five"), ("hi", "hello", "hey"), ("name a colour", "red", "blue")]]
    texts = judge.generate(prompts)         # two sampler calls of 2 rows, the second padded
    for prompt, text in zip(prompts, texts):
        alone = generate(params, CFG, [prompt], max_new_tokens=12, temperature=0.0,
                         stop_tokens=(TOKENIZER.eos_id,), rng=jax.random.PRNGKey(0), pad_id=TOKENIZER.pad_id)
        assert text == TOKENIZER.decode(alone.responses()[0])
    sampled = JudgeModel(params, CFG, TOKENIZER, max_new_tokens=12, batch_size=2, temperature=1.0)
    assert sampled.generate(prompts) == sampled.generate(prompts)     # keys from the judged ids
    with pytest.raises(ValueError, match="judge prompt 0 has 300 tokens; the judge's max_seq_len 256 minus"):
        judge.generate([[5] * 300])
    with pytest.raises(ValueError, match="judge max_new_tokens and batch_size must be >= 1"):
        JudgeModel(params, CFG, TOKENIZER, batch_size=0)


def test_the_judge_loads_from_a_checkpoint(params, tmp_path):
    directory = save_judge(tmp_path / "judge", params)
    judge = JudgeModel.from_settings(configs.judge_config(checkpoint=directory, max_new_tokens=5, thinking=True,
                                                          temperature=0.5, batch_size=3), seed=7)
    assert judge.cfg == CFG and judge.max_new_tokens == 5 and judge.thinking and judge.temperature == 0.5
    assert judge.batch_size == 3 and judge.seed == 7
    for loaded, saved in zip(jax.tree.leaves(judge.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(saved))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no finished checkpoint"):
        JudgeModel.from_settings(configs.judge_config(checkpoint=str(tmp_path / "empty")))


def test_an_imported_judge_reads_the_tokenizer_of_its_source_and_a_mismatch_is_refused(params, tmp_path):
    """A checkpoint imported from Hugging Face records its source directory (``hf.convert``): the judge's tokenizer
    is read from there; a tokenizer with more ids than the judge's vocabulary is refused."""
    source = tmp_path / "hf_model"
    source.mkdir()
    shutil.copy(data_lib.tokenizer.DEFAULT_MODEL_PATH, source / "tokenizer.model")
    directory = str(tmp_path / "imported")
    checkpointer = Checkpointer(directory, async_save=False)
    checkpointer.save(0, {"params": params}, config={"model": dataclasses.asdict(CFG),
                                                     "hf": {"family": "qwen3_moe", "source": str(source)}})
    checkpointer.close()
    judge = JudgeModel.from_settings(configs.judge_config(checkpoint=directory), default_tokenizer="/nowhere")
    assert judge.tokenizer.vocab_size == TOKENIZER.vocab_size
    small = dataclasses.replace(CFG, vocab_size=TOKENIZER.vocab_size - 24)
    small_params = jax.jit(lambda r: model_lib.init_params(small, r))(jax.random.PRNGKey(0))
    directory = str(tmp_path / "small")
    checkpointer = Checkpointer(directory, async_save=False)
    checkpointer.save(0, {"params": small_params}, config={"model": dataclasses.asdict(small)})
    checkpointer.close()
    with pytest.raises(ValueError, match=r"has 1024 ids but the judge in .* only 1000: set rl.judge.tokenizer"):
        JudgeModel.from_settings(configs.judge_config(checkpoint=directory))
