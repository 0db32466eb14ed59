"""Hugging Face checkpoints in and out: safetensors streaming, family mapping tables, config translation.

``load_pretrained(dir, mesh)`` / ``save_pretrained(dir, params, cfg)``; the CLI is
``python -m nemocascade.hf.convert import|export``. Families: ``qwen3_moe`` (``Qwen3MoeForCausalLM``),
``nemotron_h`` (``NemotronHForCausalLM``).
"""
from nemocascade.hf.checkpoints import FAMILIES, load_pretrained, read_hf_config, save_pretrained

__all__ = ["FAMILIES", "load_pretrained", "read_hf_config", "save_pretrained"]
