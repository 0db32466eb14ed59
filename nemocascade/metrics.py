"""Metrics: clu averaging, ``metrics.jsonl`` in the workdir, TensorBoard when TF exists, a progress line.

``metrics.jsonl`` holds only quantities computed by the model (loss, grad norm, rewards, ...): with the
same config and seed it is byte-identical across runs. Wall-clock figures (tokens/s, MFU, ETA) are
printed on the console and appended to ``perf.jsonl`` instead. Only process 0 writes.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging
from clu import metrics as clu_metrics


def _tensorboard_writer(logdir: str):
    """clu's summary writer if TensorFlow is importable, else None (clu.metric_writers imports TF)."""
    try:
        import tensorflow  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
        from clu import metric_writers  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return metric_writers.SummaryWriter(logdir)


class MetricsWriter:
    """Averages per-step scalars over each logging interval and writes them out.

    Args:
      workdir: directory for ``metrics.jsonl``, ``perf.jsonl`` and TensorBoard events.
      total_steps: for the ETA.
      tokens_per_step: tokens processed per step (for tokens/s), optional.
      flops_per_step: model FLOPs per step (for MFU), optional.
      peak_flops: the mesh's aggregate peak FLOP/s (for MFU), optional.
      name: prefix shown on the console line (e.g. the stage name).
    """

    def __init__(self, workdir: str, *, total_steps: int, tokens_per_step: float | None = None,
                 flops_per_step: float | None = None, peak_flops: float | None = None, name: str = ""):
        self._enabled = jax.process_index() == 0
        self._workdir = workdir
        self._total_steps = total_steps
        self._tokens_per_step = tokens_per_step
        self._flops_per_step = flops_per_step
        self._peak_flops = peak_flops
        self._name = name
        self._pending: list[dict[str, Any]] = []
        self._interval_start = time.perf_counter()
        self._interval_steps = 0
        self._tb = None
        if self._enabled:
            os.makedirs(workdir, exist_ok=True)
            self._tb = _tensorboard_writer(workdir)

    @property
    def metrics_path(self) -> str:
        return os.path.join(self._workdir, "metrics.jsonl")

    def truncate_after(self, step: int) -> None:
        """Drops lines past ``step`` (a resumed run rewrites the steps it repeats)."""
        if not self._enabled or not os.path.exists(self.metrics_path):
            return
        with open(self.metrics_path) as f:
            lines = [line for line in f if json.loads(line)["step"] <= step]
        with open(self.metrics_path, "w") as f:
            f.writelines(lines)

    def update(self, metrics: Mapping[str, jax.Array]) -> None:
        """Adds one step's scalar metrics (non-scalars are ignored here) to the interval.

        Values stay on device until ``write``: reading them here would block the host on every step, so
        the next batch could not be prepared while the device computes.
        """
        self._pending.append({k: v for k, v in metrics.items() if np.ndim(v) == 0})
        self._interval_steps += 1

    def _averages(self) -> dict[str, float]:
        """Float64 mean over the interval's steps of every scalar metric (one device->host transfer)."""
        averages: dict[str, clu_metrics.Average] = {}
        for step_metrics in jax.device_get(self._pending):
            for key, value in step_metrics.items():
                average = clu_metrics.Average.from_model_output(np.asarray(value, np.float64))
                averages[key] = averages[key].merge(average) if key in averages else average
        return {k: float(v.compute()) for k, v in sorted(averages.items())}

    def write(self, step: int, extra: Mapping[str, float] | None = None) -> dict[str, float]:
        """Writes the interval's averages (plus ``extra`` scalars) for ``step``; returns what it wrote."""
        scalars = self._averages()
        scalars.update({k: float(v) for k, v in (extra or {}).items()})
        elapsed = time.perf_counter() - self._interval_start
        perf = self._perf(step, elapsed)
        if self._enabled:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps({"step": int(step), **scalars}, sort_keys=True) + "\n")
            with open(os.path.join(self._workdir, "perf.jsonl"), "a") as f:
                f.write(json.dumps({"step": int(step), **perf}, sort_keys=True) + "\n")
            if self._tb is not None:
                self._tb.write_scalars(int(step), {**scalars, **perf})
                self._tb.flush()
            logging.info("%s", self._progress_line(step, scalars, perf))
            print(self._progress_line(step, scalars, perf), flush=True)
        self._pending = []
        self._interval_steps = 0
        self._interval_start = time.perf_counter()
        return scalars

    def _perf(self, step: int, elapsed: float) -> dict[str, float]:
        perf: dict[str, float] = {}
        if self._interval_steps and elapsed > 0:
            step_time = elapsed / self._interval_steps
            perf["step_time_s"] = step_time
            perf["eta_s"] = max(self._total_steps - step, 0) * step_time
            if self._tokens_per_step:
                perf["tokens_per_s"] = self._tokens_per_step / step_time
            if self._flops_per_step and self._peak_flops:
                perf["mfu"] = self._flops_per_step / step_time / self._peak_flops
        return perf

    def _progress_line(self, step: int, scalars: Mapping[str, float], perf: Mapping[str, float]) -> str:
        parts = [f"{self._name} step {step}/{self._total_steps}".strip()]
        for key in ("loss", "reward", "grad_norm", "learning_rate"):
            if key in scalars:
                parts.append(f"{key} {scalars[key]:.4g}")
        if "tokens_per_s" in perf:
            parts.append(f"{perf['tokens_per_s']:.0f} tok/s")
        if "mfu" in perf:
            parts.append(f"MFU {100 * perf['mfu']:.1f}%")
        if "eta_s" in perf:
            parts.append(f"ETA {_format_seconds(perf['eta_s'])}")
        return " | ".join(parts)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
