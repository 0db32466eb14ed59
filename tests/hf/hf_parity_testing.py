"""Shared pieces of the transformers parity tests: torch/transformers imports (skipping the importing test
module with the reason when absent), the import fixture, logits of both sides, export and greedy-generation checks."""
import jax
import numpy as np
import pytest

from nemocascade.hf import load_pretrained
from nemocascade.hf.safetensors_io import CheckpointReader
from nemocascade.model import forward
from nemocascade.rollout import generate

torch = pytest.importorskip("torch", reason="HF parity needs torch (the `test` extra: torch==2.13.0 CPU build)")
transformers = pytest.importorskip("transformers", reason="HF parity needs transformers (the `test` extra)")

TOL = 1e-4       # float32 logits, our model vs transformers' eager reference


def load_hf(directory):
    """transformers' model of ``directory`` in float32 with eager attention, in eval mode."""
    return transformers.AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager",
                                                             dtype=torch.float32).eval()


def imported_fixture(make_model, name: str):
    """A module-scoped fixture: ``(model, directory, our config, our params on the ``mesh`` fixture, its
    config.json)`` for the transformers model that ``make_model(directory)`` saves there and returns."""
    @pytest.fixture(scope="module")
    def imported(tmp_path_factory, mesh):
        directory = str(tmp_path_factory.mktemp(name))
        model = make_model(directory)
        cfg, params, _, hf_config = load_pretrained(directory, mesh, dtype="float32")
        return model, directory, cfg, params, hf_config
    return imported


def our_logits(params, cfg, tokens):
    """f32[B, T, V] of our forward on int tokens [B, T]."""
    return np.asarray(jax.jit(lambda p, t: forward(p, cfg, t)[0])(params, tokens))


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


def check_export(source_dir, exported_dir, params, cfg, tokens):
    """The export holds the source's tensors bit for bit under the same names, and transformers' model of the
    export gives our logits on ``tokens``."""
    source, exported = CheckpointReader(source_dir), CheckpointReader(exported_dir)
    assert exported.names() == source.names()
    for name in source.names():
        assert exported.read(name).tobytes() == source.read(name).tobytes(), name
    np.testing.assert_allclose(hf_logits(load_hf(exported_dir), tokens), our_logits(params, cfg, tokens),
                               atol=TOL, rtol=0)


def check_greedy(model, params, cfg, new: int):
    """Three random prompts of 7 tokens: our greedy continuations (``new`` tokens) are transformers', and
    they differ from one another."""
    prompts = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(3, 7))
    ours = generate(params, cfg, prompts.tolist(), max_new_tokens=new, temperature=0.0, rng=jax.random.PRNGKey(0))
    with torch.no_grad():
        theirs = model.generate(torch.tensor(prompts), attention_mask=torch.ones(prompts.shape, dtype=torch.long),
                                max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    theirs = theirs[:, prompts.shape[1]:].numpy().tolist()
    assert ours.responses() == theirs
    assert len({tuple(r) for r in theirs}) == 3
