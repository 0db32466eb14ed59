"""SFT on packed sequences (the first Cascade stage).

Presets (``--config=experiments/sft.py:PRESET``):
  tiny (default): the tiny MoE on the built-in toy domains, a few CPU minutes.
  nano30b: the Nemotron-3-Nano attention/MoE layout with the paper's SFT settings (RECIPE.md: packed to
    256K tokens, batch 64, lr 5e-5 -> 5e-6 cosine, 200 warmup steps, AdamW 0.9/0.98, weight decay 0.1),
    on a v5p-64 (``configs.nano30b_mesh``: fsdp 2 x sequence 16, one 262,144-token row per device per
    micro-batch; ``python -m nemocascade.plan`` plans it at 31 GiB per device). Needs a real tokenizer and JSONL
    data (``data.*``).
"""
import ml_collections

from nemocascade import configs


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.kind = "sft"
    config.name = "sft"
    config.seed = 0
    config.init_checkpoint = ""   # the base model's checkpoint (python -m nemocascade.hf.convert import); "" = random
    if preset == "tiny":
        config.model = configs.model_config("tiny")
        config.mesh = configs.mesh_config()
        config.update(configs.tiny_sft_stage())
        config.eval = configs.eval_config(domains=("math",), num_examples=100, max_new_tokens=48)
    elif preset == "nano30b":
        config.model = configs.nano30b_model()
        config.init_checkpoint = configs.NANO30B_BASE_CHECKPOINT
        config.mesh = configs.nano30b_mesh()
        config.update(configs.nano30b_sft_fields())
        config.eval = configs.eval_config(domains=("math",), num_examples=500, max_new_tokens=4096)
    else:
        raise ValueError(f"unknown preset {preset!r} for experiments/sft.py; known: tiny, nano30b")
    return config
