"""Hugging Face checkpoint directories <-> our (config, params) on a mesh.

``load_pretrained(dir, mesh)`` reads ``config.json`` (its ``architectures`` pick the family), builds our
``ModelConfig`` and streams the safetensors tensors onto the mesh one parameter at a time (placed per
``sharding.param_shardings``). ``save_pretrained(dir, params, cfg)`` writes ``config.json`` and the
tensors (sharded files + index past ``max_shard_bytes``), fetching one tensor at a time from the devices.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nemocascade import sharding as sharding_lib
from nemocascade.hf import mapping, nemotron_h, qwen3_moe
from nemocascade.hf.safetensors_io import CheckpointReader, write_checkpoint
from nemocascade.model.config import ModelConfig

FAMILIES: dict[str, mapping.Family] = {f.name: f for f in (qwen3_moe.FAMILY, nemotron_h.FAMILY)}
CONFIG_FILE = "config.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10 ** 9


def read_hf_config(directory: str) -> dict:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE} (a Hugging Face checkpoint directory has one)")
    with open(path) as f:
        return json.load(f)


def family_of(hf_config: Mapping[str, Any], where: str = "config.json") -> mapping.Family:
    """The family whose architecture ``config.json`` names."""
    architectures = list(hf_config.get("architectures") or [])
    for family in FAMILIES.values():
        if set(architectures) & set(family.architectures):
            return family
    known = [a for f in FAMILIES.values() for a in f.architectures]
    raise ValueError(f"{where}: architectures={architectures} is not supported; supported: {known}")


def source_dtype(hf_config: Mapping[str, Any]) -> str:
    """The tensors' dtype name that config.json declares ("bfloat16" when it declares none)."""
    return str(hf_config.get("dtype") or hf_config.get("torch_dtype") or "bfloat16")


def load_pretrained(directory: str, mesh: jax.sharding.Mesh, **overrides):
    """Returns ``(ModelConfig, params, family, config.json dict)`` from a Hugging Face checkpoint directory.

    ``overrides``: ModelConfig fields that do not change the architecture (``mapping.RUNTIME_FIELDS``,
    e.g. ``param_dtype="float32"``, ``dtype="bfloat16"``). Params are ``cfg.param_dtype``, sharded on ``mesh``.
    """
    hf_config = read_hf_config(directory)
    family = family_of(hf_config, os.path.join(directory, CONFIG_FILE))
    cfg = family.config_from_hf(hf_config, **overrides)
    reader = CheckpointReader(directory)
    params = mapping.load_params(reader, family, cfg, sharding_lib.param_shardings(mesh, cfg))
    return cfg, params, family, hf_config


def save_pretrained(directory: str, params, cfg: ModelConfig, *, family: str = "qwen3_moe",
                    base_config: Mapping[str, Any] | None = None, dtype: str = "bfloat16",
                    max_shard_bytes: int | None = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
    """Writes ``config.json`` and the safetensors of ``params`` (cast to ``dtype``) into ``directory``.

    ``base_config``: the config.json the model came from (keeps token ids and other keys we do not model).
    Every process must call this (multi-host arrays are gathered collectively); process 0 writes.
    Returns the files written.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {sorted(FAMILIES)}")
    fam = FAMILIES[family]
    hf_config = fam.config_to_hf(cfg, base_config, dtype)
    specs = mapping.export_specs(params, fam, cfg, np.dtype(jnp.dtype(dtype)))
    if jax.process_index() != 0:
        for spec in specs:       # the gathers are collective: take part, write nothing
            spec.produce()
        return []
    files = write_checkpoint(directory, specs, max_shard_bytes=max_shard_bytes, metadata={"format": "pt"})
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
    return files + [CONFIG_FILE]
