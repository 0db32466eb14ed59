"""Memory/compute planner: ``python -m nemocascade.plan --config=experiments/X.py[:preset] --topology=v5p-64``.

Prints, per device, the params / optimizer / gradients / activations / KV cache bytes of a stage on the
named topology with the config's mesh (``--config.mesh.fsdp=-1`` etc. refit it to the device count), the
step FLOPs and the step time at ``--mfu``; exits with status 1 and names the biggest term when the plan
does not fit the device's HBM, with status 2 and the reason when it cannot be planned (e.g. a mesh that does
not match the topology). Nothing is allocated: shapes come from ``jax.eval_shape`` and the layout
from the PartitionSpecs of ``sharding.py`` on a device-less mesh (``nemocascade/planning``).

A cascade config is planned stage by stage (all stages share one mesh): a one-line summary each, then the
table of the stage with the largest peak (or of ``--stage=NAME``); it fails if any planned stage does not
fit. ``--devices/--hbm_gib/--peak_tflops`` describe a machine that is not in ``hardware.TOPOLOGIES``
(or override one field of ``--topology``).
"""
from __future__ import annotations

import dataclasses
import sys

from absl import app, flags
from ml_collections import config_flags

from nemocascade import hardware
from nemocascade.planning import HEADROOM, Plan, make_plan, memory, stage_names

GIB = 2 ** 30
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path.py[:preset]).",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, f"One of {sorted(hardware.TOPOLOGIES)}.")
_STAGE = flags.DEFINE_string("stage", None, "Cascade stage to plan (default: every stage, detail the largest).")
_DEVICES = flags.DEFINE_integer("devices", None, "Device count (a custom machine, or overriding --topology).")
_HBM_GIB = flags.DEFINE_float("hbm_gib", None, "HBM per device in GiB (custom machine / override).")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Peak dense bf16 TFLOP/s per device (custom machine / override).")
_MFU = flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation assumed for the step time.")
flags.mark_flags_as_required(["config"])

_ROWS = (("params", "params"), ("optimizer", "optimizer moments"), ("other_models", "teacher / scorer params"),
         ("grads", "gradients"), ("activations", "activations (saved)"), ("layer_gather", "one layer gathered"))
_ROLLOUT_ROWS = (("kv_cache", "KV / SSM cache"), ("prefill", "prefill workspace"))
_JUDGE_ROWS = (("judge_kv_cache", "judge KV / SSM cache"), ("judge_prefill", "judge prefill workspace"))


def make_topology(name: str | None, devices: int | None, hbm_gib: float | None,
                  peak_tflops: float | None) -> hardware.Topology:
    """A named topology with optional overrides, or a custom one from ``devices`` and ``hbm_gib``."""
    if name is None:
        if devices is None or hbm_gib is None:
            raise ValueError(f"pass --topology (one of {sorted(hardware.TOPOLOGIES)}) or both --devices and --hbm_gib")
        topo = hardware.Topology(f"{devices} devices", "custom", devices, hbm_gib * GIB)
    else:
        topo = hardware.topology(name)
        if devices is not None:
            topo = dataclasses.replace(topo, name=f"{name} ({devices} devices)", num_devices=devices)
        if hbm_gib is not None:
            topo = dataclasses.replace(topo, hbm_bytes=hbm_gib * GIB)
    if topo.num_devices < 1 or topo.hbm_bytes <= 0:
        raise ValueError(f"--devices must be >= 1 and --hbm_gib > 0, got {topo.num_devices} and {topo.hbm_bytes / GIB}")
    if peak_tflops is not None:
        topo = dataclasses.replace(topo, peak=peak_tflops * 1e12)
    return topo


def _sequence_note(ways: int) -> str:
    return f", each row's tokens {ways} ways (sequence parallelism)" if ways > 1 else ""


def _gib(n: float) -> str:
    return f"{n / GIB:10.2f}"


def _seconds(plan: Plan, mfu: float, topology=None) -> str:
    seconds = plan.step_seconds(mfu, topology)
    return "n/a (no peak FLOP/s for this device)" if seconds is None else f"{seconds:.1f} s"


def render(plan: Plan, mfu: float) -> str:
    """The table for one stage's plan."""
    wl, cfg, topo = plan.workload, plan.cfg, plan.topology
    counts = plan.param_count
    mesh = " ".join(f"{k}={v}" for k, v in plan.axis_sizes.items())
    lines = [
        f"stage {wl.stage!r} ({wl.kind}) on {topo.name}: {topo.num_devices} x {topo.device_kind}, "
        f"{topo.hbm_bytes / GIB:.1f} GiB HBM each",
        f"mesh: {mesh}",
        f"model: {counts['total'] / 1e9:.2f}B params, {counts['active'] / 1e9:.2f}B active; param_dtype "
        f"{cfg.param_dtype}, dtype {cfg.dtype}, remat {cfg.remat}, kernel_impl {cfg.kernel_impl}",
        f"step: {wl.rows} rows x {wl.seq_len} tokens = {wl.tokens:,} tokens; grad_accum_steps "
        f"{wl.grad_accum_steps}; micro-batch rows split {plan.batch_split} ways"
        f"{_sequence_note(memory.sequence_split(wl.seq_len, plan.axis_sizes))} = {plan.tokens_per_device:,} tokens "
        f"per device",
        "",
        f"{'per device':<30}{'GiB':>10}",
    ]
    lines += [f"  {label:<28}{_gib(plan.bytes[key])}" for key, label in _ROWS]
    lines.append(f"  {'train phase':<28}{_gib(plan.train_peak)}")
    if wl.rollout is not None:
        lines += [f"  {label:<28}{_gib(plan.bytes[key])}" for key, label in _ROLLOUT_ROWS]
        lines.append(f"  {'rollout phase':<28}{_gib(plan.rollout_peak)}  (params + optimizer + other models + "
                     f"the two above; {wl.rollout.rows} rows x {wl.rollout.prompt_len}+{wl.rollout.new_tokens} slots)")
    if wl.judge is not None:
        lines += [f"  {label:<28}{_gib(plan.bytes[key])}" for key, label in _JUDGE_ROWS]
        lines.append(f"  {'judge phase':<28}{_gib(plan.judge_peak)}  (params + optimizer + other models + the two "
                     f"above; {wl.judge_calls} sampler calls of {wl.judge.rows} rows x "
                     f"{wl.judge.prompt_len}+{wl.judge.new_tokens} slots)")
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    lines.append(f"  {'peak':<28}{_gib(plan.peak)}  of {topo.hbm_bytes / GIB:.1f} GiB HBM "
                 f"({HEADROOM:.0%} usable = {plan.budget / GIB:.1f}): {verdict}")
    lines += [
        "",
        f"step FLOPs: {plan.step_flops / 1e12:,.1f} TFLOP (train {plan.train_flops / 1e12:,.1f}"
        + (f" + rollout/scoring forwards {plan.rollout_flops / 1e12:,.1f}" if plan.rollout_flops else "") + ")",
        f"step time at {mfu:.0%} MFU: {_seconds(plan, mfu)} on {topo.name}; "
        f"{wl.tokens / topo.num_devices:,.0f} tokens per device per step",
        f"same step at {mfu:.0%} MFU elsewhere: "
        + ", ".join(f"{name} {_seconds(plan, mfu, t)}" for name, t in hardware.TOPOLOGIES.items()
                    if t.peak_flops is not None),
    ]
    return "\n".join(lines)


def refusal(plan: Plan) -> str:
    """One message: what does not fit, the biggest term and what to change."""
    term = plan.biggest()
    return (f"refused: stage {plan.workload.stage!r} needs {plan.peak / GIB:.1f} GiB per device on "
            f"{plan.topology.name} but {plan.budget / GIB:.1f} GiB are usable ({HEADROOM:.0%} of "
            f"{plan.topology.hbm_bytes / GIB:.1f}); the biggest term is {term} ({plan.bytes[term] / GIB:.1f} GiB). "
            f"Suggestion: {plan.suggestion()}")


def plan_report(config, topology: hardware.Topology, *, stage: str | None = None,
                mfu: float = 0.4) -> tuple[str, list[Plan]]:
    """(the text to print, the plans that do not fit); see the module docstring for which stages."""
    names = (stage,) if stage is not None or config.kind != "cascade" else stage_names(config)
    plans = [make_plan(config, topology, name if config.kind == "cascade" else stage) for name in names]
    lines = []
    if len(plans) > 1:
        lines.append(f"cascade {config.get('name', '')!r}: {len(plans)} stages on one mesh (peak GiB per device; "
                     f"--stage=NAME details one)")
        lines += [f"  {p.workload.stage:<16}{p.workload.kind:<14}{_gib(p.peak)}  "
                  f"{'fits' if p.fits else 'DOES NOT FIT'}" for p in plans]
        lines.append("details of the stage with the largest peak:")
        lines.append("")
    lines.append(render(max(plans, key=lambda p: p.peak), mfu))
    return "\n".join(lines), [p for p in plans if not p.fits]


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    try:
        topology = make_topology(_TOPOLOGY.value, _DEVICES.value, _HBM_GIB.value, _PEAK.value)
        text, failing = plan_report(_CONFIG.value, topology, stage=_STAGE.value, mfu=_MFU.value)
    except ValueError as err:   # a config or topology that cannot be planned: the reason, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    for plan in failing:
        print(refusal(plan), file=sys.stderr)
    return 1 if failing else 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
