"""Launchers (launch/) and multi-process start-up (nemocascade/distributed.py).

* every launcher's ``--dry_run`` output is checked line by line (commands, env, ``--worker=all``,
  per-work-unit workdirs and overrides, teardown), and shown to run nothing;
* the TPU VM launcher runs for real against a fake ``gcloud`` on PATH: the calls it makes are exactly
  the lines its dry run printed;
* ``distributed.resolve``: precedence and error messages, without initialising anything;
* ``launch.local`` starts 2 local processes x 4 CPU devices running ``launch.probe``: jax.distributed on
  localhost, 8 global devices in both processes, a cross-process sum, INFO logs from process 0 only.
"""
import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # `launch` is used from the checkout, it is not an installed package
    sys.path.insert(0, REPO)

# Only flag-free modules are imported here: the launchers define absl flags (--config, ...) at import, so
# they run as subprocesses, as they are used.
from launch.experiment import Experiment, parse_overrides, parse_sweep, split_top_level  # noqa: E402
from launch.runner import Command, Runner  # noqa: E402
from nemocascade import distributed  # noqa: E402

SWEEP = ["--override=train.steps=50", "--override=data.batch_size=4",
         "--sweep=optimizer.learning_rate=1e-3,3e-3", "--sweep=seed=0,1"]
# (learning rate, seed) per work unit, in order; the sweep's seed comes after the base overrides.
POINTS = [("1e-3", "0"), ("1e-3", "1"), ("3e-3", "0"), ("3e-3", "1")]


def _launcher(module, *args, env=None, check=True):
    """Runs ``python -m <module> <args>`` from the repository root; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _entry_args(config, workdir, overrides):
    return [f"--config={config}", f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides)]


def _sweep_overrides(lr, seed):
    return [("train.steps", "50"), ("data.batch_size", "4"), ("optimizer.learning_rate", lr), ("seed", seed)]


# ----------------------------------------------------------------------------------------- experiment


def test_work_units_expand_the_sweep_with_their_own_workdirs():
    experiment = Experiment(config="experiments/sft.py:tiny", root_workdir="/runs",
                            overrides=parse_overrides(["train.steps=50", "seed=7"]),
                            sweep=parse_sweep(["optimizer.learning_rate=1e-3,3e-3", "seed=0,1"]))
    units = experiment.work_units()
    assert experiment.experiment_name == "sft-tiny"
    assert [u.workdir for u in units] == [f"/runs/sft-tiny/{i}" for i in range(4)]
    assert units[3].argv("python3") == [
        "python3", "-m", "nemocascade.launch", "--config=experiments/sft.py:tiny", "--workdir=/runs/sft-tiny/3",
        "--config.train.steps=50", "--config.seed=1", "--config.optimizer.learning_rate=3e-3"]
    assert len(Experiment(config="experiments/sft.py", root_workdir="r").work_units()) == 1


def test_sweep_and_override_parsing():
    assert split_top_level("1,(2,3),'a,b',[4,5]") == ["1", "(2,3)", "'a,b'", "[4,5]"]
    assert parse_sweep(["eval.domains=('math','code'),('math',)"]) == (
        {"eval.domains": "('math','code')"}, {"eval.domains": "('math',)"})
    assert parse_sweep([]) == ({},)
    with pytest.raises(ValueError, match="without the leading 'config.'"):
        parse_overrides(["config.train.steps=1"])
    with pytest.raises(ValueError, match="override given twice: seed"):
        parse_overrides(["seed=1", "seed=2"])
    with pytest.raises(ValueError, match="must look like field.sub_field=value"):
        parse_sweep(["learning rate=1"])
    with pytest.raises(ValueError, match="unbalanced"):
        parse_sweep(["a=(1,2"])
    with pytest.raises(ValueError, match="must be a .py file"):
        Experiment(config="experiments/sft", root_workdir="r")


# ------------------------------------------------------------------------------------ local launcher


def test_local_dry_run_one_process_per_work_unit(tmp_path):
    root = tmp_path / "runs"
    out = _launcher("launch.local", "--config=experiments/sft.py", f"--root_workdir={root}", "--python=python3",
                    "--cpu_devices=2", "--platform=cpu", "--env=FOO=a b", *SWEEP, "--dry_run",
                    env={"XLA_FLAGS": "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=8"})
    expected = [f"cd {REPO}"]
    for i, point in enumerate(POINTS):
        workdir = f"{root}/sft/{i}"
        expected += [f"# work unit {i}: {workdir}",
                     "JAX_PLATFORMS=cpu XLA_FLAGS='--xla_cpu_enable_fast_math=false "
                     "--xla_force_host_platform_device_count=2' FOO='a b' python3 -m nemocascade.launch "
                     + shlex.join(_entry_args("experiments/sft.py", workdir, _sweep_overrides(*point)))]
    assert out.stdout.splitlines() == expected
    assert not root.exists()  # nothing ran


def test_local_dry_run_emulates_hosts_with_coordinator_env(tmp_path):
    out = _launcher("launch.local", "--config=experiments/mopd.py:tiny", f"--root_workdir={tmp_path}",
                    "--python=python3", "--processes=3", "--cpu_devices=4", "--platform=cpu", "--port=9999",
                    "--entry=launch.probe", "--dry_run", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    args = shlex.join(_entry_args("experiments/mopd.py:tiny", f"{tmp_path}/mopd-tiny/0", []))
    assert out.stdout.splitlines() == [
        f"cd {REPO}", f"# work unit 0: {tmp_path}/mopd-tiny/0",
        *(f"NEMOCASCADE_COORDINATOR=localhost:9999 NEMOCASCADE_NUM_PROCESSES=3 NEMOCASCADE_PROCESS_ID={i} "
          f"JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=4 "
          f"python3 -m launch.probe {args} &" for i in range(3)),
        "wait"]


def test_local_dry_run_splits_gpus_between_processes(tmp_path):
    out = _launcher("launch.local", "--config=experiments/sft.py", f"--root_workdir={tmp_path}",
                    "--python=python3", "--processes=2", "--gpus_per_process=4", "--platform=gpu", "--dry_run")
    lines = out.stdout.splitlines()
    assert lines[2].startswith("NEMOCASCADE_COORDINATOR=localhost:8476 NEMOCASCADE_NUM_PROCESSES=2 "
                               "NEMOCASCADE_PROCESS_ID=0 JAX_PLATFORMS=cuda CUDA_VISIBLE_DEVICES=0,1,2,3 python3")
    assert "NEMOCASCADE_PROCESS_ID=1 JAX_PLATFORMS=cuda CUDA_VISIBLE_DEVICES=4,5,6,7 python3" in lines[3]


def test_launchers_reject_bad_settings_in_one_line():
    bad = _launcher("launch.local", "--config=experiments/nope.py", "--dry_run", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("launch.local: config file 'experiments/nope.py' not found")
    bad = _launcher("launch.local", "--config=experiments/sft.py", "--override=steps", "--dry_run", check=False)
    assert bad.returncode == 1 and "override 'steps' must look like field.sub_field=value" in bad.stderr


# ---------------------------------------------------------------------------------- TPU VM launcher

TPU_ARGS = ["--tpu=nc-test-v5p", "--zone=us-east5-a", "--project=proj", "--accelerator_type=v5p-64",
            "--config=experiments/sft.py:nano30b", "--root_workdir=/data/runs", "--env=LIBTPU_INIT_ARGS=--x=1 --y",
            *SWEEP, "--teardown"]


def _tpu_expected():
    gcloud = "gcloud compute tpus tpu-vm"
    where = "--zone=us-east5-a --project=proj"
    archive = "/tmp/nemocascade-code-nc-test-v5p.tar.gz"
    lines = [
        f"cd {REPO}",
        "# reuse the slice, or create it",
        f"{gcloud} describe nc-test-v5p {where} '--format=value(state)' || "
        f"{gcloud} create nc-test-v5p {where} --accelerator-type=v5p-64 --version=v2-alpha-tpuv5",
        "# copy the local checkout to every worker",
        f"git -C {REPO} ls-files -z --cached --others --exclude-standard | "
        f"tar -C {REPO} --null --ignore-failed-read -T - -czf {archive}",
        f"{gcloud} scp {archive} nc-test-v5p:{archive} --worker=all {where}",
        f"{gcloud} ssh nc-test-v5p {where} --worker=all --command "
        + shlex.quote(f"mkdir -p nemocascade && tar -xzf {archive} -C nemocascade"),
        "# install on every worker",
        f"{gcloud} ssh nc-test-v5p {where} --worker=all --command "
        + shlex.quote("cd nemocascade && python3 -m pip install -q -r requirements.txt -e '.[tpu]'"),
    ]
    for i, point in enumerate(POINTS):
        workdir = f"/data/runs/sft-nano30b/{i}"
        remote = ("cd nemocascade && NEMOCASCADE_DISTRIBUTED=on LIBTPU_INIT_ARGS='--x=1 --y' python3 -m "
                  "nemocascade.launch " + shlex.join(_entry_args("experiments/sft.py:nano30b", workdir,
                                                                 _sweep_overrides(*point))))
        lines += [f"# work unit {i}: {workdir} (all workers)",
                  f"{gcloud} ssh nc-test-v5p {where} --worker=all --command {shlex.quote(remote)}"]
    return lines + ["# tear down", f"{gcloud} delete nc-test-v5p {where} --quiet"]


def _fake_gcloud(tmp_path, fail_on="describe"):
    """A ``gcloud`` on PATH that records its arguments and fails when an argument contains ``fail_on``
    (by default ``describe``: the slice does not exist yet, so it gets created)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "gcloud_calls.jsonl"
    script = bin_dir / "gcloud"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        with open({str(log)!r}, "a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\\n")
        fail_on = {fail_on!r}
        sys.exit(1 if any(fail_on in arg for arg in sys.argv[1:]) else 0)
        """))
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, log


def test_tpu_vm_dry_run_prints_every_step_and_runs_nothing(tmp_path):
    env, log = _fake_gcloud(tmp_path)
    out = _launcher("launch.tpu_vm", *TPU_ARGS, "--dry_run", env=env)
    assert out.stdout.splitlines() == _tpu_expected()
    assert not log.exists()


def test_tpu_vm_runs_exactly_what_its_dry_run_prints(tmp_path):
    env, log = _fake_gcloud(tmp_path)
    archive = "/tmp/nemocascade-code-nc-test-v5p.tar.gz"
    try:
        out = _launcher("launch.tpu_vm", *TPU_ARGS, env=env)
        listing = subprocess.run(["tar", "-tzf", archive], capture_output=True, text=True, check=True).stdout
    finally:
        if os.path.exists(archive):
            os.remove(archive)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    dry = _tpu_expected()
    # Executing prints the same lines, each shown as "+ line" (and "# in DIR" instead of "cd DIR").
    assert out.stdout.splitlines() == [f"# in {REPO}", *(line if line.startswith("#") else f"+ {line}"
                                                         for line in dry[1:])]
    # describe || create: both ran (the fake describe fails); every other gcloud line ran as printed.
    first, fallback = dry[2].split(" || ")
    gcloud_lines = [first, fallback, *(line for line in dry[3:] if line.startswith("gcloud"))]
    assert calls == [shlex.split(line)[1:] for line in gcloud_lines]
    assert all("--worker=all" in call for call in calls if call[3] in ("ssh", "scp"))
    names = set(listing.split())
    assert {"launch/tpu_vm.py", "nemocascade/launch.py", "experiments/sft.py", "requirements.txt"} <= names
    assert not any(name.startswith(".git/") for name in names)


def test_tpu_vm_tears_down_after_a_failed_run(tmp_path):
    env, log = _fake_gcloud(tmp_path, fail_on="nemocascade.launch")
    out = _launcher("launch.tpu_vm", "--tpu=t", "--nocreate", "--code=none", "--noinstall",
                    "--config=experiments/sft.py", "--sweep=seed=0,1", "--teardown", env=env, check=False)
    assert out.returncode == 1 and "launch.tpu_vm: exit status 1: gcloud compute tpus tpu-vm ssh t" in out.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [call[3] for call in calls] == ["describe", "ssh", "delete"]  # work unit 1 never started


def test_tpu_vm_git_code_reuse_only_and_teardown_alone():
    out = _launcher("launch.tpu_vm", "--tpu=v4", "--config=experiments/sft.py", "--nocreate", "--code=git",
                    "--git_url=https://example.com/nc.git", "--git_ref=v1.0", "--noinstall", "--remote_python=python3.11",
                    "--dry_run")
    remote_git = ("git init -q nemocascade && git -C nemocascade fetch -q --depth=1 https://example.com/nc.git v1.0"
                  " && git -C nemocascade checkout -q --force FETCH_HEAD")
    remote_run = ("cd nemocascade && NEMOCASCADE_DISTRIBUTED=on python3.11 -m nemocascade.launch "
                  "--config=experiments/sft.py --workdir=/tmp/nemocascade_runs/sft/0")
    assert out.stdout.splitlines() == [
        f"cd {REPO}", "# reuse the slice",
        "gcloud compute tpus tpu-vm describe v4 '--format=value(state)'",
        "# fetch v1.0 on every worker",
        f"gcloud compute tpus tpu-vm ssh v4 --worker=all --command {shlex.quote(remote_git)}",
        "# work unit 0: /tmp/nemocascade_runs/sft/0 (all workers)",
        f"gcloud compute tpus tpu-vm ssh v4 --worker=all --command {shlex.quote(remote_run)}"]
    out = _launcher("launch.tpu_vm", "--tpu=v4", "--zone=z", "--teardown", "--dry_run")
    assert out.stdout.splitlines() == [f"cd {REPO}", "# tear down",
                                       "gcloud compute tpus tpu-vm delete v4 --zone=z --quiet"]
    bad = _launcher("launch.tpu_vm", "--tpu=v4", "--config=experiments/sft.py", "--dry_run", check=False)
    assert bad.returncode == 1 and "needs --accelerator_type" in bad.stderr and not bad.stdout


# -------------------------------------------------------------------------------- XManager launcher


def test_xm_dry_run_prints_job_specs_without_xmanager(tmp_path):
    out = _launcher("launch.xm_launch", "--config=experiments/sft.py", *SWEEP, "--xm_executor=vertex",
                    "--xm_requirement=a100=8", "--xm_extras=gpu", "--env=NCCL_DEBUG=INFO", "--dry_run")
    expected = [
        "# xmanager experiment 'sft': 4 work unit(s)",
        f"# image: xm.PythonContainer(path={REPO!r}, base_image='python:3.11-slim')",
        "#   RUN mkdir -p /workdir", "#   WORKDIR /workdir", f"#   COPY {os.path.basename(REPO)}/ /workdir",
        "#   RUN python3 -m pip install -r requirements.txt -e '.[gpu]'"]
    for i, point in enumerate(POINTS):
        args = _entry_args("experiments/sft.py", f"/tmp/nemocascade_runs/sft/{i}", _sweep_overrides(*point))
        expected += [f"# work unit {i}: xm_local.Vertex(requirements=xm.JobRequirements(a100=8))",
                     f"NCCL_DEBUG=INFO python3 -m nemocascade.launch {shlex.join(args)}"]
    assert out.stdout.splitlines() == expected


def test_xm_without_xmanager_fails_clearly():
    if subprocess.run([sys.executable, "-c", "import xmanager"], capture_output=True).returncode == 0:
        pytest.skip("xmanager is installed here")
    bad = _launcher("launch.xm_launch", "--config=experiments/sft.py", check=False)
    assert bad.returncode == 1 and not bad.stdout
    assert "launch.xm_launch: xmanager is not installed: pip install -e '.[xm]'" in bad.stderr


_XM_CHECK = """
import contextlib, json
from xmanager import xm, xm_local
from launch import xm_launch
from launch.experiment import Experiment, parse_sweep
recorded = []
class FakeExperiment:  # stands in for a real experiment: packaging would need a Docker daemon
    def package(self, packageables):
        recorded.append(packageables[0])
        return [xm.Container(image_path="packaged")]
    def add(self, job):
        recorded.append(job)
@contextlib.contextmanager
def create_experiment(experiment_title):
    yield FakeExperiment()
xm_local.create_experiment = create_experiment
experiment = Experiment(config="experiments/sft.py", root_workdir="/r", sweep=parse_sweep(["seed=0,1"]))
specs = xm_launch.job_specs(experiment, "local", {"a100": "8"}, {"A": "1"})
xm_launch.launch("sft", xm_launch.image_spec("/src/repo", "python:3.11", "gpu"), specs)
package, *jobs = recorded
print(json.dumps(dict(
    entry=package.executable_spec.entrypoint.module_name, path=package.executable_spec.path,
    instructions=package.executable_spec.docker_instructions, spec=type(package.executor_spec).__name__,
    jobs=[dict(args=list(job.args.to_list(str)), env=job.env_vars, executor=type(job.executor).__name__,
               a100=job.executor.requirements.task_requirements[xm.ResourceType.A100]) for job in jobs])))
"""


def test_xm_launch_builds_xmanager_jobs_when_installed():
    if subprocess.run([sys.executable, "-c", "import xmanager"], capture_output=True).returncode:
        pytest.skip("xmanager (optional extra `xm`) is not installed")
    out = subprocess.run([sys.executable, "-c", _XM_CHECK], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    built = json.loads(out.stdout.splitlines()[-1])
    assert built["entry"] == "nemocascade.launch" and built["path"] == "/src/repo" and built["spec"] == "LocalSpec"
    assert built["instructions"][-2:] == ["COPY repo/ /workdir",
                                          "RUN python3 -m pip install -r requirements.txt -e '.[gpu]'"]
    assert built["jobs"] == [dict(args=["--config=experiments/sft.py", f"--workdir=/r/sft/{i}", f"--config.seed={i}"],
                                  env={"A": "1"}, executor="Local", a100=8) for i in range(2)]


# ------------------------------------------------------------------------------- distributed.resolve

ENV3 = {distributed.ENV_COORDINATOR: "10.0.0.2:8476", distributed.ENV_NUM_PROCESSES: "4",
        distributed.ENV_PROCESS_ID: "3"}


def test_resolve_single_process_by_default():
    plan = distributed.resolve(env={})
    assert not plan.initialize and "single process" in plan.reason
    assert not distributed.resolve(env={distributed.ENV_MODE: "off"}, on_cloud_tpu=True).initialize


def test_resolve_explicit_settings_flags_over_env():
    plan = distributed.resolve(env=ENV3)
    assert plan.kwargs() == dict(coordinator_address="10.0.0.2:8476", num_processes=4, process_id=3,
                                 cluster_detection_method="deactivate")
    plan = distributed.resolve("localhost:1234", None, 1, env=ENV3)
    assert (plan.coordinator_address, plan.num_processes, plan.process_id) == ("localhost:1234", 4, 1)
    assert "--coordinator_address" in plan.reason and distributed.ENV_NUM_PROCESSES in plan.reason


def test_resolve_auto_detection_on_cloud_tpu_and_mode_on():
    assert distributed.resolve(env={}, on_cloud_tpu=True).kwargs() == {}
    plan = distributed.resolve(mode="on", env={})
    assert plan.initialize and plan.kwargs() == {}
    assert distributed.resolve(env={distributed.ENV_MODE: "ON"}).initialize


@pytest.mark.parametrize("kwargs, env, message", [
    (dict(num_processes=2, process_id=0), {},
     r"incomplete multi-process settings: got number of processes 2 from --num_processes; process id 0 from "
     r"--process_id; missing coordinator address \(--coordinator_address / NEMOCASCADE_COORDINATOR\)"),
    ({}, {distributed.ENV_COORDINATOR: "h:1"}, r"missing number of processes .*; process id"),
    (dict(process_id=4), ENV3, r"--process_id=4: the process id must be in \[0, 4\) for 4 processes "
                               r"\(NEMOCASCADE_NUM_PROCESSES\)"),
    (dict(process_id=-1), ENV3, r"must be in \[0, 4\)"),
    (dict(num_processes=0), ENV3, r"--num_processes=0: the number of processes must be >= 1"),
    ({}, {**ENV3, distributed.ENV_NUM_PROCESSES: "four"}, r"NEMOCASCADE_NUM_PROCESSES='four' is not an integer"),
    (dict(coordinator_address="10.0.0.2"), ENV3, r"--coordinator_address='10.0.0.2' must be host:port"),
    ({}, {**ENV3, distributed.ENV_COORDINATOR: "h:99999"}, r"must be host:port"),
    (dict(mode="off"), ENV3, r"--distributed=off contradicts the multi-process settings given by "
                             r"NEMOCASCADE_COORDINATOR, NEMOCASCADE_NUM_PROCESSES, NEMOCASCADE_PROCESS_ID"),
    ({}, {distributed.ENV_MODE: "maybe"}, r"NEMOCASCADE_DISTRIBUTED='maybe': the distributed mode must be one of"),
])
def test_resolve_errors(kwargs, env, message):
    with pytest.raises(ValueError, match=message):
        distributed.resolve(env=env, **kwargs)


def test_launch_entry_point_checks_distributed_flags_first(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "nemocascade.launch", "--config=experiments/sft.py",
                          f"--workdir={tmp_path}", "--num_processes=2", "--process_id=0"],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert bad.returncode != 0
    assert "incomplete multi-process settings" in bad.stderr and "missing coordinator address" in bad.stderr


# ------------------------------------------------------------------- real multi-process run (2 x 4 CPU)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_local_two_processes_start_jax_distributed(tmp_path):
    proc = _launcher("launch.local", "--config=experiments/sft.py", f"--root_workdir={tmp_path}",
                     "--entry=launch.probe", "--processes=2", "--cpu_devices=4", "--platform=cpu",
                     f"--port={_free_port()}", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = [json.loads((tmp_path / "sft" / "0" / "probe" / f"process_{i}.json").read_text()) for i in range(2)]
    for index, result in enumerate(results):
        assert result["process_index"] == index and result["process_count"] == 2
        assert (result["local_devices"], result["global_devices"], result["platform"]) == (4, 8, "cpu")
        assert result["sum_of_device_ids"] == result["expected_sum"]  # a collective across both processes
        assert result["gathered_process_ids"] == [0, 1]
        assert result["config_name"] == "sft"
    lines = proc.stdout.splitlines()
    assert any(line.startswith("[p0] I") and "jax.distributed initialised" in line for line in lines)
    assert not [line for line in lines if line.startswith("[p1] I")]  # INFO logs from process 0 only
    assert sum(line.startswith(f"[p{i}] probe: ") for line in lines for i in range(2)) == 2


def test_runner_dry_run_prints_cwd_first(tmp_path):
    printed = []

    class Out:
        def write(self, text):
            printed.append(text)

        def flush(self):
            pass

    runner = Runner(dry_run=True, cwd=str(tmp_path / "a b"), out=Out())
    runner.run(Command(["echo", "it's"], {"A": "1 2"}))
    runner.run_or(Command(["false"]), Command(["true"]))
    assert "".join(printed).splitlines() == [f"cd '{tmp_path}/a b'", "A='1 2' echo 'it'\"'\"'s'", "false || true"]
    assert not (tmp_path / "a b").exists()
