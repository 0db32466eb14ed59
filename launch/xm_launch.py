"""XManager launcher: the experiment as an XManager experiment, one ``xm.Job`` per work unit.

The repository is packaged once as an ``xm.PythonContainer`` (``--xm_base_image``, then
``pip install -r requirements.txt -e .[--xm_extras]``); every work unit is added as a job running
``python3 -m <entry> --config=... --workdir=... --config.<k>=<v>`` on ``--xm_executor`` (``local``,
``vertex`` or ``kubernetes`` from ``xmanager.xm_local``) with ``xm.JobRequirements(**--xm_requirement)``.

``xmanager`` is an optional extra (``pip install -e '.[xm]'``; it pins protobuf<7, so it stays out of the
core requirements). ``--dry_run`` needs no xmanager: it prints the image instructions and, per work unit,
the executor, requirements and the exact command with its environment.

  python -m launch.xm_launch --config=experiments/sft.py --sweep=optimizer.learning_rate=1e-3,3e-3 \
      --xm_executor=vertex --xm_requirement=a100=8 --xm_extras=gpu --dry_run
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import shlex

from absl import flags

from launch import common_flags
from launch.experiment import Experiment, shell_line

EXECUTORS = {"local": "Local", "vertex": "Vertex", "kubernetes": "Kubernetes"}  # names in xmanager.xm_local
CONTAINER_PYTHON = "python3"  # what xm.PythonContainer runs: python3 -m <module> <args>
CONTAINER_WORKDIR = "/workdir"

EXECUTOR = flags.DEFINE_enum("xm_executor", "local", list(EXECUTORS), "xmanager.xm_local executor.")
REQUIREMENT = flags.DEFINE_multi_string("xm_requirement", [], "resource=amount, repeatable, passed to "
                                        "xm.JobRequirements (e.g. a100=8, tpu_v3=8, cpu=16).")
BASE_IMAGE = flags.DEFINE_string("xm_base_image", "python:3.11-slim", "Base Docker image.")
EXTRAS = flags.DEFINE_string("xm_extras", "", "setup.cfg extras installed in the image (e.g. gpu, tpu).")


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """One work unit as an XManager job, independent of xmanager itself."""
    index: int
    module: str
    args: tuple[str, ...]
    env_vars: dict[str, str]
    executor: str
    requirements: dict[str, str]

    def command(self) -> str:
        return shell_line([CONTAINER_PYTHON, "-m", self.module, *self.args], self.env_vars)


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """The ``xm.PythonContainer`` that packages the repository."""
    path: str
    base_image: str
    docker_instructions: tuple[str, ...]


def image_spec(repo_root: str, base_image: str, extras: str) -> ImageSpec:
    """Copies the repository to /workdir and installs it (the build context is the repository's parent)."""
    target = f".[{extras}]" if extras else "."
    return ImageSpec(path=repo_root, base_image=base_image, docker_instructions=(
        f"RUN mkdir -p {CONTAINER_WORKDIR}",
        f"WORKDIR {CONTAINER_WORKDIR}",
        f"COPY {os.path.basename(repo_root.rstrip(os.sep))}/ {CONTAINER_WORKDIR}",
        f"RUN {shlex.join([CONTAINER_PYTHON, '-m', 'pip', 'install', '-r', 'requirements.txt', '-e', target])}",
    ))


def parse_requirements(items: list[str]) -> dict[str, str]:
    requirements = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier() or not value:
            raise ValueError(f"--xm_requirement {item!r} must be resource=amount, e.g. a100=8")
        requirements[key] = value
    return requirements


def job_specs(experiment: Experiment, executor: str, requirements: dict[str, str],
              env: dict[str, str]) -> list[JobSpec]:
    return [JobSpec(index=unit.index, module=unit.entry, args=tuple(unit.args()), env_vars=dict(env),
                    executor=executor, requirements=dict(requirements))
            for unit in experiment.work_units()]


def describe(name: str, image: ImageSpec, specs: list[JobSpec]) -> str:
    """The dry-run text: the image, then per work unit its executor, requirements and command."""
    lines = [f"# xmanager experiment {name!r}: {len(specs)} work unit(s)",
             f"# image: xm.PythonContainer(path={image.path!r}, base_image={image.base_image!r})",
             *(f"#   {instruction}" for instruction in image.docker_instructions)]
    for spec in specs:
        requirements = ", ".join(f"{k}={v}" for k, v in spec.requirements.items())
        lines += [f"# work unit {spec.index}: xm_local.{EXECUTORS[spec.executor]}"
                  f"(requirements=xm.JobRequirements({requirements}))",
                  spec.command()]
    return "\n".join(lines)


def _amount(value: str):
    """Numbers as numbers; topologies such as '2x2' stay strings (xm parses them)."""
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


NOT_INSTALLED = ("xmanager is not installed: pip install -e '.[xm]' (an optional extra: it pins protobuf<7), "
                 "or pass --dry_run to print the job specs without it")


def launch(name: str, image: ImageSpec, specs: list[JobSpec]) -> None:
    """Creates the XManager experiment: one package, one job per work unit (needs ``xmanager``)."""
    from xmanager import xm, xm_local  # pylint: disable=import-outside-toplevel

    executor_cls = getattr(xm_local, EXECUTORS[specs[0].executor])
    with xm_local.create_experiment(experiment_title=name) as experiment:
        [executable] = experiment.package([xm.Packageable(
            executable_spec=xm.PythonContainer(
                path=image.path, base_image=image.base_image, entrypoint=xm.ModuleName(specs[0].module),
                docker_instructions=list(image.docker_instructions), use_deep_module=True),
            executor_spec=executor_cls.Spec())])
        for spec in specs:
            requirements = xm.JobRequirements(**{k: _amount(v) for k, v in spec.requirements.items()})
            experiment.add(xm.Job(executable=executable, executor=executor_cls(requirements=requirements),
                                  args=list(spec.args), env_vars=spec.env_vars))


def main(argv) -> None:
    del argv
    if not common_flags.DRY_RUN.value and importlib.util.find_spec("xmanager") is None:
        raise ValueError(NOT_INSTALLED)
    experiment = common_flags.experiment()
    experiment.check_config_exists(common_flags.REPO_ROOT)
    image = image_spec(common_flags.REPO_ROOT, BASE_IMAGE.value, EXTRAS.value)
    specs = job_specs(experiment, EXECUTOR.value, parse_requirements(REQUIREMENT.value), common_flags.extra_env())
    print(describe(experiment.experiment_name, image, specs), flush=True)
    if not common_flags.DRY_RUN.value:
        launch(experiment.experiment_name, image, specs)


if __name__ == "__main__":
    common_flags.run_launcher(main)
