"""What one forward + backward costs each device on a mesh: XLA's compiled FLOPs and temporary bytes.

``python -m nemocascade.bench.sharded_cost --cpu_devices=8 --meshes="data=8;data=2,expert=4;fsdp=4,tensor=2"``
compiles (never runs) ``grad`` of a loss over a ``--rows`` x ``--seq`` batch of the ``--preset`` model
(``--num_layers`` / ``--num_experts`` / ``--expert_hidden`` override it) on ``--cpu_devices`` CPU devices, once on
one device and once per mesh (params laid out by ``sharding.param_shardings``, the batch over the batch axes),
and prints per device the compiled FLOPs (``cost_analysis``) and temporary bytes (``memory_analysis``), and the
FLOPs as a fraction of the one-device program's. Work that the mesh splits shows as ~1 / devices; work that
every device repeats (e.g. experts run on the whole batch's tokens) pushes the fraction towards 1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import app, flags

from nemocascade import model as model_lib
from nemocascade import sharding

_PRESET = flags.DEFINE_enum("preset", "tiny", list(model_lib.presets.NAMES), "Model preset.")
_NUM_LAYERS = flags.DEFINE_integer("num_layers", 2, "Layers (0: the preset's).")
_NUM_EXPERTS = flags.DEFINE_integer("num_experts", 16, "Experts (0: the preset's).")
_EXPERT_HIDDEN = flags.DEFINE_integer("expert_hidden", 256, "Expert width F (0: the preset's).")
_ROWS = flags.DEFINE_integer("rows", 32, "Sequences in the batch.")
_SEQ = flags.DEFINE_integer("seq", 128, "Tokens per sequence.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 8, "CPU devices (XLA's host platform).")
_MESHES = flags.DEFINE_string("meshes", "data=8;data=2,expert=4", "Meshes, ';'-separated, each axis=size,...")


def parse_mesh(text: str) -> dict[str, int]:
    """``"data=2,expert=4"`` -> ``{"data": 2, "expert": 4}``."""
    axes = {}
    for part in text.split(","):
        name, sep, size = part.partition("=")
        if not sep or not size.strip().lstrip("-").isdigit():
            raise app.UsageError(f"--meshes: expected axis=size, got {part!r} in {text!r}")
        axes[name.strip()] = int(size)
    return axes


def per_device_cost(cfg: model_lib.ModelConfig, rows: int, seq: int, axes: dict | None) -> tuple[float, int]:
    """(FLOPs, temporary bytes) per device of the compiled ``grad`` of a loss over int32 [rows, seq] tokens,
    on one device (``axes=None``) or on the mesh ``sharding.make_mesh(axes)``."""
    def loss(params, tokens):
        logits, aux = model_lib.forward(params, cfg, tokens, segment_ids=jnp.ones_like(tokens))
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1)) + aux["moe_aux_loss"]

    shapes = jax.eval_shape(lambda r: model_lib.init_params(cfg, r), jax.random.PRNGKey(0))
    tokens = jax.ShapeDtypeStruct((rows, seq), jnp.int32)
    grad = jax.jit(jax.grad(loss))
    if axes is None:
        compiled = grad.lower(shapes, tokens).compile()
    else:
        mesh = sharding.make_mesh(axes)
        params = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                              sharding.param_shardings(mesh, cfg))
        tokens = jax.ShapeDtypeStruct(tokens.shape, tokens.dtype, sharding=sharding.batch_sharding(mesh))
        with jax.set_mesh(mesh):
            compiled = grad.lower(params, tokens).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]), int(compiled.memory_analysis().temp_size_in_bytes)


def main(argv):
    del argv
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
    overrides = {name: flag.value for name, flag in (("num_layers", _NUM_LAYERS), ("num_experts", _NUM_EXPERTS),
                                                    ("expert_hidden_size", _EXPERT_HIDDEN)) if flag.value}
    cfg = getattr(model_lib.presets, _PRESET.value)().replace(**overrides)
    meshes = [parse_mesh(text) for text in _MESHES.value.split(";") if text.strip()]
    print(f"{_PRESET.value} {overrides}: {_ROWS.value} rows x {_SEQ.value} tokens, {len(jax.devices())} CPU devices")
    print(f"{'mesh':<28} {'GFLOP/device':>13} {'of 1 device':>12} {'temp MiB/device':>16}")
    one_flops, one_temp = per_device_cost(cfg, _ROWS.value, _SEQ.value, None)
    print(f"{'one device':<28} {one_flops / 1e9:>13.3f} {1:>12.3f} {one_temp / 2 ** 20:>16.1f}", flush=True)
    for axes in meshes:
        flops, temp = per_device_cost(cfg, _ROWS.value, _SEQ.value, axes)
        name = ",".join(f"{k}={v}" for k, v in axes.items())
        print(f"{name:<28} {flops / 1e9:>13.3f} {flops / one_flops:>12.3f} {temp / 2 ** 20:>16.1f}", flush=True)


if __name__ == "__main__":
    app.run(main)
