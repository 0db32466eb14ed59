"""SFT on packed sequences (the first Cascade stage).

Presets (``--config=experiments/sft.py:PRESET``):
  tiny (default): the tiny MoE on the built-in toy domains, a few CPU minutes.
  nano30b: the Nemotron-3-Nano attention/MoE layout with the paper's SFT settings (RECIPE.md: packed to
    256K tokens, batch 64, lr 5e-5 -> 5e-6 cosine, 200 warmup steps, AdamW 0.9/0.98, weight decay 0.1),
    on a v5p-64-style mesh (fsdp 8 x expert 8). Needs a real tokenizer and JSONL data (``data.*``).
"""
import ml_collections

from nemocascade import configs


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.kind = "sft"
    config.name = "sft"
    config.seed = 0
    if preset == "tiny":
        config.model = configs.model_config("tiny")
        config.mesh = configs.mesh_config()
        config.update(configs.tiny_sft_stage())
        config.eval = ml_collections.ConfigDict(dict(domains=("math",), num_examples=100, max_new_tokens=48))
    elif preset == "nano30b":
        config.model = configs.model_config("nano30b")
        config.mesh = configs.mesh_config(data=1, fsdp=8, expert=8, tensor=1)
        config.data = configs.sft_data_config(tokenizer="REQUIRED: path/to/tokenizer.model",
                                      jsonl="REQUIRED: path/to/sft.jsonl", seq_len=262144, batch_size=64,
                                      thinking=True)
        config.optimizer = configs.optimizer_config(
            learning_rate=5e-5, schedule="cosine", warmup_steps=200, end_learning_rate=5e-6,
            b1=0.9, b2=0.98, weight_decay=0.1)
        config.train = configs.train_config(steps=20000, log_every=10, checkpoint_every=500)
        config.eval = ml_collections.ConfigDict(dict(domains=("math",), num_examples=500, max_new_tokens=4096))
    else:
        raise ValueError(f"unknown preset {preset!r} for experiments/sft.py; known: tiny, nano30b")
    return config
