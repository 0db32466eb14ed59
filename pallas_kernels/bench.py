"""Kernel benchmarks: ours vs jax's bundled Pallas kernels vs XLA, printed as one table.

    python -m pallas_kernels.bench [--ops=gmm,routing,attention,decode,ssd] [--small] [--dtype=bfloat16]

Each op's rows come from a bench module's `run(sizes=None, dtype="bfloat16") -> list[dict]`
(keys op, size, impl, time_ms, tflops, peak_frac, note, plus per-op extras such as gbps or
rel_err_vs_xla; `sizes` are names of that module's sizes, None = its default for the running
backend). Modules are imported lazily: a missing one is skipped with a printed note. Rows of a
kernel that cannot run on this backend (e.g. every Pallas kernel on CPU) have time_ms "-" and say
why in `note`. --small runs each op's tiny CPU-sized problem (the smoke test).
"""
import argparse
import importlib
import sys

import jax

# op -> (bench module, its run function, the size names --small passes)
OPS = {
    "gmm": ("pallas_kernels.gmm.bench", "run", ("cpu_small",)),
    "routing": ("pallas_kernels.routing.bench", "run", ("cpu_small",)),
    "attention": ("pallas_kernels.attention.bench", "run", ("small",)),
    "decode": ("pallas_kernels.attention.bench", "run_decode", ("small",)),
    "ssd": ("pallas_kernels.ssd.bench", "run", ("cpu_small",)),
}
LEGEND = ("peak_frac: of the dense peak TFLOP/s for compute-bound ops (gmm, attention, ssd), of the peak "
          "HBM GB/s for memory-bound ops (routing, decode); '-' = not measured (see note)")


def load_run(op: str):
    """The run function of op's bench module, or None when that module is not there."""
    module_name, function_name, _ = OPS[op]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            return None
        raise
    return getattr(module, function_name)


def _parse_ops(parser: argparse.ArgumentParser, text: str) -> list[str]:
    ops = [op.strip() for op in text.split(",") if op.strip()]
    unknown = [op for op in ops if op not in OPS]
    if unknown or not ops:
        parser.error(f"--ops must be a comma-separated subset of {','.join(OPS)}, got {text!r}")
    return ops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pallas_kernels.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--small", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = parser.parse_args(argv)
    ops = _parse_ops(parser, args.ops)

    from pallas_kernels import device_peaks, timing  # the shared bench helpers

    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}); peak TFLOP/s "
          f"{device_peaks.peak_tflops(args.dtype)}, peak GB/s {device_peaks.peak_gbps()}; dtype {args.dtype}")
    rows = []
    for op in ops:
        run = load_run(op)
        if run is None:
            print(f"note: skipping {op}: {OPS[op][0]} is not available")
            continue
        rows.extend(run(sizes=OPS[op][2] if args.small else None, dtype=args.dtype))
    print(timing.format_rows(rows) if rows else "no rows")
    print(LEGEND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
