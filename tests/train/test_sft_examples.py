"""The SFT stage's example source: ``data.toy_mix`` parsing and the mixture it produces."""
import collections

import ml_collections
import pytest

from nemocascade import configs
from nemocascade.stages.sft import parse_toy_mix, sft_examples


def test_toy_mix_counts_set_the_mixture():
    assert parse_toy_mix("math=6, if=3,code=0") == {"math": 6, "if": 3}
    data = configs.sft_data_config(toy_mix="math=6,if=3,code=2")
    examples = sft_examples(data, seed=0)
    assert collections.Counter(e["domain"] for e in examples) == {"math": 6, "if": 3, "code": 2}
    assert sft_examples(data, seed=0) == examples


@pytest.mark.parametrize("spec", ["math=6,poetry=3", "math=x", "math", "math=-1", "math=1,math=2", "math=0", ""])
def test_bad_toy_mix_is_rejected_with_the_field_name(spec):
    with pytest.raises(ValueError, match="data.toy_mix="):
        sft_examples(ml_collections.ConfigDict(dict(jsonl="", toy_mix=spec)), seed=0)
