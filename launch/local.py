"""Local launcher (GPU or CPU, the debugging fallback): the work units one after another on this machine.

Each work unit runs as one process, or with ``--processes=N`` as N processes that emulate N hosts: they
get ``NEMOCASCADE_COORDINATOR=localhost:<port>``, ``NEMOCASCADE_NUM_PROCESSES=N`` and
``NEMOCASCADE_PROCESS_ID=i``, so the entry point starts ``jax.distributed`` on localhost
(``nemocascade/distributed.py``). With ``--cpu_devices=D`` each process gets D host CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=D``), e.g. 2 processes x 4 devices = 8 global devices;
with ``--gpus_per_process=K`` process i sees GPUs ``K*i .. K*i+K-1`` (``CUDA_VISIBLE_DEVICES``).
Output lines of process i are prefixed ``[p<i>] ``; if one process fails the others are stopped.

  python -m launch.local --config=experiments/sft.py --override=train.steps=20 --dry_run
  python -m launch.local --config=experiments/sft.py --entry=launch.probe --processes=2 --cpu_devices=4 \
      --platform=cpu
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from absl import flags

from launch import common_flags
from launch.experiment import WorkUnit
from launch.runner import Command, CommandError, Runner
from nemocascade import distributed

PROCESSES = flags.DEFINE_integer("processes", 1, "Processes per work unit (N > 1 emulates N hosts).",
                                 lower_bound=1)
PLATFORM = flags.DEFINE_enum("platform", "auto", ["auto", "cpu", "gpu"],
                             "cpu / gpu: set JAX_PLATFORMS=cpu / cuda; auto: leave it to jax.")
CPU_DEVICES = flags.DEFINE_integer("cpu_devices", None, "Host CPU devices per process (replaces "
                                   "--xla_force_host_platform_device_count in XLA_FLAGS).", lower_bound=1)
GPUS_PER_PROCESS = flags.DEFINE_integer("gpus_per_process", None, "GPUs per process: process i gets "
                                        "CUDA_VISIBLE_DEVICES=K*i..K*i+K-1.", lower_bound=1)
PORT = flags.DEFINE_integer("port", 8476, "Coordinator port on localhost (multi-process only).",
                            lower_bound=1, upper_bound=65535)
PYTHON = flags.DEFINE_string("python", sys.executable, "Python interpreter of the processes.")

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_JAX_PLATFORM = {"cpu": "cpu", "gpu": "cuda"}


def xla_flags_with_device_count(inherited: str, devices: int) -> str:
    """``inherited`` XLA_FLAGS with the host device count replaced by ``devices``."""
    kept = [token for token in inherited.split() if not token.startswith(_DEVICE_COUNT_FLAG)]
    return " ".join([*kept, f"{_DEVICE_COUNT_FLAG}={devices}"])


def process_env(index: int, processes: int, port: int, platform: str = "auto", cpu_devices: int | None = None,
                gpus_per_process: int | None = None, inherited_xla_flags: str = "",
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables added for process ``index`` of ``processes``."""
    env = {}
    if processes > 1:
        env[distributed.ENV_COORDINATOR] = f"localhost:{port}"
        env[distributed.ENV_NUM_PROCESSES] = str(processes)
        env[distributed.ENV_PROCESS_ID] = str(index)
    if platform in _JAX_PLATFORM:
        env["JAX_PLATFORMS"] = _JAX_PLATFORM[platform]
    if cpu_devices is not None:
        env["XLA_FLAGS"] = xla_flags_with_device_count(inherited_xla_flags, cpu_devices)
    if gpus_per_process is not None:
        first = index * gpus_per_process
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(first, first + gpus_per_process))
    env.update(extra or {})
    return env


def work_unit_commands(unit: WorkUnit, python: str, processes: int, **env_kwargs) -> list[Command]:
    """One command per process of ``unit`` (``env_kwargs`` go to :func:`process_env`)."""
    return [Command(unit.argv(python), process_env(index, processes, **env_kwargs)) for index in range(processes)]


def main(argv) -> None:
    del argv
    experiment = common_flags.experiment(root_workdir=os.path.abspath(common_flags.ROOT_WORKDIR.value))
    experiment.check_config_exists(common_flags.REPO_ROOT)
    runner = Runner(common_flags.DRY_RUN.value, common_flags.REPO_ROOT)
    processes = PROCESSES.value
    for unit in experiment.work_units():
        runner.comment(f"work unit {unit.index}: {unit.workdir}")
        commands = work_unit_commands(
            unit, PYTHON.value, processes, port=PORT.value, platform=PLATFORM.value, cpu_devices=CPU_DEVICES.value,
            gpus_per_process=GPUS_PER_PROCESS.value, inherited_xla_flags=os.environ.get("XLA_FLAGS", ""),
            extra=common_flags.extra_env())
        if processes == 1:
            runner.run(commands[0])
        elif status := runner.run_parallel(commands, [f"[p{i}] " for i in range(processes)]):
            raise CommandError(f"work unit {unit.index}: a process exited with status {status}")


if __name__ == "__main__":
    common_flags.run_launcher(main)
