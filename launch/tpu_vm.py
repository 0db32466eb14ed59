"""Cloud TPU VM launcher: one process per host on every worker of a pod slice, through ``gcloud``.

Steps (each printed as a shell line; ``--dry_run`` prints them all and runs none):

1. reuse the slice, or create it if ``describe`` fails (``--create``, needs ``--accelerator_type``);
2. put the code on every worker: ``--code=copy`` packs the local checkout (tracked and untracked,
   non-ignored files: ``git ls-files | tar``), copies it with ``tpu-vm scp --worker=all`` and unpacks it
   into ``--remote_dir``; ``--code=git`` fetches ``--git_ref`` of ``--git_url`` there instead;
   ``--code=none`` uses what is already there;
3. ``pip install -r requirements.txt -e .[tpu]`` on every worker (``--install``);
4. per work unit: ``tpu-vm ssh --worker=all --command='cd <remote_dir> && NEMOCASCADE_DISTRIBUTED=on
   python3 -m nemocascade.launch --config=... --workdir=...'``: the same command on all hosts, each
   process gets its id and the coordinator from the TPU metadata via ``jax.distributed.initialize()``
   (``nemocascade/distributed.py``). gcloud streams every worker's output here; only process 0 logs INFO;
5. ``--teardown``: delete the slice at the end, also after a failure (alone, without ``--config``: only
   delete it).

Relative ``--remote_dir`` / ``--root_workdir`` are relative to the remote home / ``--remote_dir``.

  python -m launch.tpu_vm --tpu=my-v5p --zone=us-east5-a --accelerator_type=v5p-64 \
      --config=experiments/sft.py:nano30b --override=data.jsonl=/data/sft.jsonl --dry_run
"""
from __future__ import annotations

import dataclasses
import shlex
import sys

from absl import flags

from launch import common_flags
from launch.experiment import Experiment, WorkUnit, shell_line
from launch.runner import Command, CommandError, Runner
from nemocascade import distributed

TPU = flags.DEFINE_string("tpu", None, "TPU VM (pod slice) name.")
ZONE = flags.DEFINE_string("zone", None, "GCP zone (default: gcloud's configured zone).")
PROJECT = flags.DEFINE_string("project", None, "GCP project (default: gcloud's configured project).")
ACCELERATOR_TYPE = flags.DEFINE_string("accelerator_type", None, "e.g. v5p-64, v5litepod-16, v4-32 "
                                       "(needed to create the slice).")
RUNTIME_VERSION = flags.DEFINE_string("runtime_version", None, "TPU software version (default: from the "
                                      "accelerator type).")
SPOT = flags.DEFINE_bool("spot", False, "Create a Spot slice.")
CREATE = flags.DEFINE_bool("create", True, "Create the slice if it does not exist (else only reuse).")
CODE = flags.DEFINE_enum("code", "copy", ["copy", "git", "none"], "How the code gets onto the workers.")
GIT_URL = flags.DEFINE_string("git_url", None, "Repository URL for --code=git.")
GIT_REF = flags.DEFINE_string("git_ref", "main", "Branch, tag or commit for --code=git.")
REMOTE_DIR = flags.DEFINE_string("remote_dir", "nemocascade", "Code directory on the workers.")
INSTALL = flags.DEFINE_bool("install", True, "pip install the requirements and the package on all workers.")
EXTRAS = flags.DEFINE_string("extras", "tpu", "setup.cfg extras to install (comma separated; empty: none).")
REMOTE_PYTHON = flags.DEFINE_string("remote_python", "python3", "Python interpreter on the workers.")
TEARDOWN = flags.DEFINE_bool("teardown", False, "Delete the slice at the end (without --config: only that).")

# Cloud TPU software versions per accelerator generation (cloud.google.com/tpu/docs/runtimes).
RUNTIME_VERSIONS = (("v4-", "tpu-ubuntu2204-base"), ("v5litepod-", "v2-alpha-tpuv5-lite"),
                    ("v5p-", "v2-alpha-tpuv5"), ("v6e-", "v2-alpha-tpuv6e"))


def default_runtime_version(accelerator_type: str) -> str:
    for prefix, version in RUNTIME_VERSIONS:
        if accelerator_type.startswith(prefix):
            return version
    raise ValueError(f"no default TPU software version for {accelerator_type!r}; pass --runtime_version")


@dataclasses.dataclass(frozen=True)
class TpuVm:
    """``gcloud compute tpus tpu-vm`` commands for one slice."""
    name: str
    zone: str | None = None
    project: str | None = None

    def _location(self) -> list[str]:
        return [*([f"--zone={self.zone}"] if self.zone else []),
                *([f"--project={self.project}"] if self.project else [])]

    def _gcloud(self, verb: str, *args: str) -> Command:
        return Command(["gcloud", "compute", "tpus", "tpu-vm", verb, self.name, *self._location(), *args])

    def describe(self) -> Command:
        return self._gcloud("describe", "--format=value(state)")

    def create(self, accelerator_type: str, runtime_version: str, spot: bool = False) -> Command:
        return self._gcloud("create", f"--accelerator-type={accelerator_type}", f"--version={runtime_version}",
                            *(["--spot"] if spot else []))

    def scp_to_all(self, local_path: str, remote_path: str) -> Command:
        return Command(["gcloud", "compute", "tpus", "tpu-vm", "scp", local_path, f"{self.name}:{remote_path}",
                        "--worker=all", *self._location()])

    def ssh_all(self, remote_command: str) -> Command:
        """Runs the shell text ``remote_command`` on every worker at once."""
        return self._gcloud("ssh", "--worker=all", "--command", remote_command)

    def delete(self) -> Command:
        return self._gcloud("delete", "--quiet")


def archive_path(tpu: str) -> str:
    """Where the code archive goes, locally and on the workers."""
    return f"/tmp/nemocascade-code-{tpu}.tar.gz"


def pack_commands(repo_root: str, archive: str) -> tuple[Command, Command]:
    """``git ls-files | tar``: the checkout without ignored files (deleted tracked files are skipped)."""
    return (Command(["git", "-C", repo_root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]),
            Command(["tar", "-C", repo_root, "--null", "--ignore-failed-read", "-T", "-", "-czf", archive]))


def _and(*argvs: list[str]) -> str:
    return " && ".join(shlex.join(argv) for argv in argvs)


def unpack_remote(archive: str, remote_dir: str) -> str:
    return _and(["mkdir", "-p", remote_dir], ["tar", "-xzf", archive, "-C", remote_dir])


def git_checkout_remote(url: str, ref: str, remote_dir: str) -> str:
    """Works for a fresh or an existing directory, and for a branch, tag or commit."""
    return _and(["git", "init", "-q", remote_dir], ["git", "-C", remote_dir, "fetch", "-q", "--depth=1", url, ref],
                ["git", "-C", remote_dir, "checkout", "-q", "--force", "FETCH_HEAD"])


def install_remote(remote_dir: str, python: str, extras: str) -> str:
    target = f".[{extras}]" if extras else "."
    return _and(["cd", remote_dir], [python, "-m", "pip", "install", "-q", "-r", "requirements.txt", "-e", target])


def run_remote(unit: WorkUnit, remote_dir: str, python: str, extra_env: dict[str, str]) -> str:
    """The work unit's command on every worker: jax.distributed from the TPU metadata (mode ``on``)."""
    env = {distributed.ENV_MODE: "on", **extra_env}
    return f"{shlex.join(['cd', remote_dir])} && {shell_line(unit.argv(python), env)}"


def _checked_plan() -> tuple[Experiment, str | None]:
    """The experiment and the software version for creating the slice (None: only reuse); checks flags."""
    experiment = common_flags.experiment()
    if CODE.value == "copy":
        experiment.check_config_exists(common_flags.REPO_ROOT)
    if CODE.value == "git" and not GIT_URL.value:
        raise ValueError("--code=git needs --git_url")
    if not CREATE.value:
        return experiment, None
    if not ACCELERATOR_TYPE.value:
        raise ValueError("creating a missing slice needs --accelerator_type (or --nocreate to only reuse)")
    return experiment, RUNTIME_VERSION.value or default_runtime_version(ACCELERATOR_TYPE.value)


def _deploy(runner: Runner, vm: TpuVm) -> None:
    remote_dir = REMOTE_DIR.value
    if CODE.value == "copy":
        archive = archive_path(vm.name)
        runner.comment("copy the local checkout to every worker")
        runner.pipe(*pack_commands(common_flags.REPO_ROOT, archive))
        runner.run(vm.scp_to_all(archive, archive))
        runner.run(vm.ssh_all(unpack_remote(archive, remote_dir)))
    elif CODE.value == "git":
        runner.comment(f"fetch {GIT_REF.value} on every worker")
        runner.run(vm.ssh_all(git_checkout_remote(GIT_URL.value, GIT_REF.value, remote_dir)))
    if INSTALL.value:
        runner.comment("install on every worker")
        runner.run(vm.ssh_all(install_remote(remote_dir, REMOTE_PYTHON.value, EXTRAS.value)))


def _run(runner: Runner, vm: TpuVm, experiment: Experiment, runtime_version: str | None) -> None:
    if runtime_version:
        runner.comment("reuse the slice, or create it")
        runner.run_or(vm.describe(), vm.create(ACCELERATOR_TYPE.value, runtime_version, SPOT.value))
    else:
        runner.comment("reuse the slice")
        runner.run(vm.describe())
    _deploy(runner, vm)
    for unit in experiment.work_units():
        runner.comment(f"work unit {unit.index}: {unit.workdir} (all workers)")
        runner.run(vm.ssh_all(run_remote(unit, REMOTE_DIR.value, REMOTE_PYTHON.value, common_flags.extra_env())))


def main(argv) -> None:
    del argv
    if not TPU.value:
        raise ValueError("--tpu=NAME is required")
    if not common_flags.CONFIG.value and not TEARDOWN.value:
        raise ValueError("nothing to do: give --config (and a sweep) to run, and/or --teardown")
    plan = _checked_plan() if common_flags.CONFIG.value else None
    vm = TpuVm(TPU.value, ZONE.value, PROJECT.value)
    runner = Runner(common_flags.DRY_RUN.value, common_flags.REPO_ROOT)
    try:
        if plan:
            _run(runner, vm, *plan)
    except BaseException:
        if TEARDOWN.value:
            _teardown(runner, vm, after_failure=True)
        raise
    if TEARDOWN.value:
        _teardown(runner, vm, after_failure=False)


def _teardown(runner: Runner, vm: TpuVm, after_failure: bool) -> None:
    """Deletes the slice; if that fails, says so (and raises unless another error is already on its way)."""
    runner.comment("tear down")
    if runner.run(vm.delete(), check=False):
        message = f"deleting the slice failed; delete it by hand: {vm.delete().line()}"
        if not after_failure:
            raise CommandError(message)
        print(f"launch.tpu_vm: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    common_flags.run_launcher(main)
