"""``python -m nemocascade.hf.convert import|export``: Hugging Face checkpoints <-> our orbax params checkpoints.

  import: --hf_dir=HF_DIR --checkpoint_dir=OUT   reads config.json + safetensors, streams them onto the mesh
          (--mesh_axes, default all devices on fsdp) and saves ``OUT/0/{state,config}``: state is
          ``{"params": ...}`` (read by ``nemocascade.checkpoint.restore_params``), config is
          ``{"model": ModelConfig fields, "hf": {"family", "config": the config.json, "source"}}``.
  export: --checkpoint_dir=CKPT --hf_dir=OUT     restores the params of CKPT (latest step, or
          --checkpoint_step) and writes config.json + safetensors. The family and the base config.json come
          from the checkpoint's ``hf`` record when it was imported, else from --family / --base_config.

One process (a single host); the library functions take a mesh for multi-host use.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
from absl import app, flags

from nemocascade import sharding as sharding_lib
from nemocascade.checkpoint import Checkpointer, restore_params
from nemocascade.hf import checkpoints, mapping
from nemocascade.model.config import ModelConfig

_HF_DIR = flags.DEFINE_string("hf_dir", None, "Hugging Face checkpoint directory (import: read, export: written).")
_CHECKPOINT_DIR = flags.DEFINE_string("checkpoint_dir", None, "Our orbax checkpoint directory.")
_MESH_AXES = flags.DEFINE_list("mesh_axes", ["fsdp=-1"], "Mesh axis sizes, e.g. fsdp=-1,expert=4.")
_PARAM_DTYPE = flags.DEFINE_enum("param_dtype", "float32", ["float32", "bfloat16"], "import: params dtype.")
_COMPUTE_DTYPE = flags.DEFINE_enum("compute_dtype", "bfloat16", ["float32", "bfloat16"],
                                   "import: ModelConfig.dtype (compute dtype) recorded with the params.")
_HF_DTYPE = flags.DEFINE_enum("hf_dtype", "source", ["source", "bfloat16", "float32", "float16"],
                              "export: tensor dtype; 'source' = the imported config.json's (else bfloat16).")
_STEP = flags.DEFINE_integer("checkpoint_step", None, "export: step to read (default: the latest).")
_FAMILY = flags.DEFINE_string("family", "qwen3_moe", "export: format (qwen3_moe, nemotron_h) of a checkpoint "
                              "that was not imported.")
_BASE_CONFIG = flags.DEFINE_string("base_config", None, "export: config.json whose other keys (token ids...) "
                                   "are kept, for a checkpoint that was not imported.")
_MAX_SHARD_SIZE = flags.DEFINE_string("max_shard_size", "5GB", "export: safetensors shard size limit "
                                       "(bytes, or with a KB/MB/GB suffix, powers of 1000).")
_SIZE_UNITS = {"KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "B": 1}


def parse_mesh_axes(items) -> dict[str, int]:
    """["fsdp=-1", "expert=2"] -> {"fsdp": -1, "expert": 2}."""
    axes = {}
    for item in items:
        name, sep, size = item.partition("=")
        if not sep:
            raise ValueError(f"--mesh_axes entry {item!r} must be axis=size, e.g. fsdp=-1")
        try:
            axes[name.strip()] = int(size)
        except ValueError:
            raise ValueError(f"--mesh_axes entry {item!r}: size must be an int") from None
    return axes


def parse_size(text: str) -> int:
    """"5GB" -> 5 * 10**9; "4096" -> 4096."""
    text = text.strip().upper()
    for unit, factor in _SIZE_UNITS.items():
        if text.endswith(unit):
            text, scale = text[:-len(unit)], factor
            break
    else:
        scale = 1
    try:
        value = float(text) * scale
    except ValueError:
        raise ValueError(f"--max_shard_size={text!r}: expected bytes or a number with KB/MB/GB") from None
    if value < 1:
        raise ValueError(f"--max_shard_size must be at least 1 byte, got {text!r}")
    return int(value)


def import_checkpoint(hf_dir: str, checkpoint_dir: str, mesh, **overrides):
    """Saves the Hugging Face checkpoint in ``hf_dir`` as step 0 of ``checkpoint_dir``; returns the ModelConfig."""
    checkpointer = Checkpointer(checkpoint_dir, async_save=False)
    try:
        if checkpointer.latest_step() is not None:
            raise ValueError(f"{checkpoint_dir} already holds checkpoint step {checkpointer.latest_step()}; "
                             f"import into an empty directory")
        cfg, params, family, hf_config = checkpoints.load_pretrained(hf_dir, mesh, **overrides)
        record = {"model": dataclasses.asdict(cfg),
                  "hf": {"family": family.name, "config": hf_config, "source": os.path.abspath(hf_dir)}}
        checkpointer.save(0, {"params": params}, config=record, force=True)
        checkpointer.wait()
    finally:
        checkpointer.close()
    return cfg


def export_checkpoint(checkpoint_dir: str, hf_dir: str, mesh, *, step: int | None = None, dtype: str = "source",
                      family: str = "qwen3_moe", base_config: dict | None = None,
                      max_shard_bytes: int | None = None) -> list[str]:
    """Writes the params of ``checkpoint_dir`` as a Hugging Face checkpoint in ``hf_dir``; returns its files."""
    checkpointer = Checkpointer(checkpoint_dir, async_save=False)
    try:
        saved = checkpointer.restore_config(step)
    finally:
        checkpointer.close()
    cfg = ModelConfig.from_dict(saved["model"])
    record = saved.get("hf") or {"family": family, "config": base_config}
    if dtype == "source":
        dtype = checkpoints.source_dtype(record["config"] or {})
    shapes = mapping.param_shapes(cfg)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                            sharding_lib.param_shardings(mesh, cfg))
    params = restore_params(checkpoint_dir, abstract, step=step)
    return checkpoints.save_pretrained(hf_dir, params, cfg, family=record["family"], base_config=record["config"],
                                       dtype=dtype, max_shard_bytes=max_shard_bytes)


def main(argv) -> None:
    if len(argv) != 2 or argv[1] not in ("import", "export"):
        raise app.UsageError(f"usage: python -m nemocascade.hf.convert import|export --hf_dir=.. "
                             f"--checkpoint_dir=.. (got {argv[1:]})")
    if not _HF_DIR.value or not _CHECKPOINT_DIR.value:
        raise app.UsageError("--hf_dir and --checkpoint_dir are both required")
    mesh = sharding_lib.make_mesh(parse_mesh_axes(_MESH_AXES.value))
    if argv[1] == "import":
        cfg = import_checkpoint(_HF_DIR.value, _CHECKPOINT_DIR.value, mesh, param_dtype=_PARAM_DTYPE.value,
                                dtype=_COMPUTE_DTYPE.value)
        print(f"imported {_HF_DIR.value} -> {_CHECKPOINT_DIR.value} (step 0): {cfg}")
        return
    base = None
    if _BASE_CONFIG.value:
        with open(_BASE_CONFIG.value) as f:
            base = json.load(f)
    files = export_checkpoint(_CHECKPOINT_DIR.value, _HF_DIR.value, mesh, step=_STEP.value, dtype=_HF_DTYPE.value,
                              family=_FAMILY.value, base_config=base, max_shard_bytes=parse_size(_MAX_SHARD_SIZE.value))
    print(f"exported {_CHECKPOINT_DIR.value} -> {_HF_DIR.value}: {files}")


if __name__ == "__main__":
    app.run(main)
