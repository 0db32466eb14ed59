"""Multi-process start-up: decide whether and how to call ``jax.distributed.initialize``.

One process runs per host (TPU pod slice workers, GPU nodes) or per emulated host (``launch/local.py``
starts N local CPU processes). Every process must call ``jax.distributed.initialize`` before its first JAX
computation; this module decides the arguments from, in order of precedence:

1. explicit values (the ``--coordinator_address`` / ``--num_processes`` / ``--process_id`` flags of
   ``nemocascade.launch``, see :func:`define_flags`);
2. the environment: ``NEMOCASCADE_COORDINATOR`` (``host:port`` of process 0),
   ``NEMOCASCADE_NUM_PROCESSES`` and ``NEMOCASCADE_PROCESS_ID`` (what ``launch/local.py`` sets).

The three settings come together or not at all. The mode (``--distributed`` or
``NEMOCASCADE_DISTRIBUTED``) is one of

* ``auto`` (default): explicit settings -> initialise with them; otherwise on a Cloud TPU VM (jax sets
  ``jax._src.cloud_tpu_init.running_in_cloud_tpu_vm`` at import when libtpu finds TPU chips) ->
  ``jax.distributed.initialize()`` and let jax read the slice's workers and this worker's id from the
  TPU metadata server (one process per host of a pod slice); otherwise a single process, no call;
* ``on``: always initialise: explicit settings, else jax's own cluster auto-detection (TPU, Slurm,
  Open MPI, Kubernetes; jax raises if it finds nothing). ``launch/tpu_vm.py`` sets this on every worker;
* ``off``: never (explicit settings are then an error).

With explicit settings jax's cluster auto-detection is switched off (``cluster_detection_method=
"deactivate"``), so every local device stays visible to its process. On CPU the cross-process
collectives are gloo over TCP: ``jax_cpu_collectives_implementation`` defaults to ``"gloo"`` in jax 0.10
(``jax/_src/config.py``) and ``xla_bridge.make_cpu_client`` builds gloo collectives from the distributed
client, so nothing has to be configured.

Only process 0 logs at INFO: :func:`maybe_initialize` sets absl's verbosity to WARNING elsewhere.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from absl import flags, logging

ENV_COORDINATOR = "NEMOCASCADE_COORDINATOR"
ENV_NUM_PROCESSES = "NEMOCASCADE_NUM_PROCESSES"
ENV_PROCESS_ID = "NEMOCASCADE_PROCESS_ID"
ENV_MODE = "NEMOCASCADE_DISTRIBUTED"
MODES = ("auto", "on", "off")
_SETTINGS = (  # (what, flag, environment variable), in jax.distributed.initialize's order
    ("coordinator address", "coordinator_address", ENV_COORDINATOR),
    ("number of processes", "num_processes", ENV_NUM_PROCESSES),
    ("process id", "process_id", ENV_PROCESS_ID),
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`maybe_initialize` does: nothing, or ``jax.distributed.initialize(**plan.kwargs())``.

    ``coordinator_address``/``num_processes``/``process_id`` are all set (explicit settings) or all None
    (``initialize`` is False, or jax auto-detects them).
    """
    initialize: bool
    reason: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def kwargs(self) -> dict:
        """Keyword arguments for ``jax.distributed.initialize``."""
        if not self.initialize:
            raise ValueError("this plan does not initialise jax.distributed")
        if self.coordinator_address is None:
            return {}  # jax's cluster auto-detection (TPU metadata, Slurm, Open MPI, ...)
        return dict(coordinator_address=self.coordinator_address, num_processes=self.num_processes,
                    process_id=self.process_id, cluster_detection_method="deactivate")


def _pick(value, flag: str, env: Mapping[str, str], env_name: str):
    """(value, source) from the explicit value, else the environment variable; (None, None) if neither."""
    if value is not None and value != "":
        return value, f"--{flag}"
    if env.get(env_name, "") != "":
        return env[env_name], env_name
    return None, None


def _as_int(value, source: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{source}={value!r} is not an integer") from None


def _check_coordinator(address: str, source: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{source}={address!r} must be host:port of process 0 (e.g. 10.0.0.2:8476), "
                         "with a port in 1..65535")
    return address


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, mode: str | None = None,
            env: Mapping[str, str] | None = None, on_cloud_tpu: bool = False) -> Plan:
    """Decides the plan from explicit values and ``env`` (default ``os.environ``); initialises nothing.

    Raises:
      ValueError: for an unknown mode, an incomplete or malformed set of settings, a process id outside
        ``[0, num_processes)``, or ``mode="off"`` together with settings.
    """
    env = os.environ if env is None else env
    mode_value, mode_source = _pick(mode, "distributed", env, ENV_MODE)
    mode_value = (mode_value or "auto").strip().lower()
    if mode_value not in MODES:
        raise ValueError(f"{mode_source}={mode_value!r}: the distributed mode must be one of {', '.join(MODES)}")

    found = {what: _pick(value, flag, env, env_name)
             for (what, flag, env_name), value in zip(_SETTINGS, (coordinator_address, num_processes, process_id))}
    given = {what: value_source for what, value_source in found.items() if value_source[0] is not None}
    if given and mode_value == "off":
        sources = ", ".join(source for _, source in given.values())
        raise ValueError(f"{mode_source}=off contradicts the multi-process settings given by {sources}")
    if given and len(given) < len(_SETTINGS):
        have = "; ".join(f"{what} {value!r} from {source}" for what, (value, source) in given.items())
        missing = "; ".join(f"{what} (--{flag} / {env_name})" for what, flag, env_name in _SETTINGS
                            if what not in given)
        raise ValueError(f"incomplete multi-process settings: got {have}; missing {missing}. "
                         "Give all three (coordinator host:port, number of processes, process id) or none.")
    if given:
        (address, address_source) = given["coordinator address"]
        (count, count_source) = given["number of processes"]
        (index, index_source) = given["process id"]
        address = _check_coordinator(str(address).strip(), address_source)
        count = _as_int(count, count_source)
        index = _as_int(index, index_source)
        if count < 1:
            raise ValueError(f"{count_source}={count}: the number of processes must be >= 1")
        if not 0 <= index < count:
            raise ValueError(f"{index_source}={index}: the process id must be in [0, {count}) "
                             f"for {count} processes ({count_source})")
        return Plan(True, f"explicit settings ({address_source}, {count_source}, {index_source})",
                    address, count, index)
    if mode_value == "on":
        return Plan(True, f"{mode_source}=on: jax cluster auto-detection")
    if mode_value == "auto" and on_cloud_tpu:
        return Plan(True, "Cloud TPU VM detected: jax reads the slice's workers from the TPU metadata")
    if mode_value == "off":
        return Plan(False, f"single process ({mode_source}=off)")
    return Plan(False, "single process (no multi-process settings, not on a Cloud TPU VM)")


def _on_cloud_tpu_vm() -> bool:
    """True on a Cloud TPU VM (set by ``import jax`` when libtpu and TPU chips are present)."""
    from jax._src import cloud_tpu_init  # pylint: disable=import-outside-toplevel
    return bool(cloud_tpu_init.running_in_cloud_tpu_vm)


def maybe_initialize(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, mode: str | None = None,
                     env: Mapping[str, str] | None = None) -> Plan:
    """Resolves the plan (see :func:`resolve`), initialises ``jax.distributed`` if it says so, and keeps
    absl logging at INFO on process 0 only (WARNING elsewhere). Call before any JAX computation."""
    import jax  # pylint: disable=import-outside-toplevel
    plan = resolve(coordinator_address, num_processes, process_id, mode, env, on_cloud_tpu=_on_cloud_tpu_vm())
    if not plan.initialize:
        logging.info("jax.distributed not initialised: %s", plan.reason)
        return plan
    if jax.distributed.is_initialized():
        raise RuntimeError("jax.distributed is already initialised; call maybe_initialize once per process")
    if plan.process_id:  # known before initialising: keep jax's start-up INFO lines quiet there too
        logging.set_verbosity(logging.WARNING)
    try:
        jax.distributed.initialize(**plan.kwargs())
    except ValueError as error:
        if plan.coordinator_address is not None:
            raise
        raise ValueError(f"{plan.reason}: jax found no cluster (Cloud TPU, Slurm, Open MPI, Kubernetes) to read "
                         f"the coordinator, process count and id from ({error}); give them with "
                         f"--coordinator_address/--num_processes/--process_id or ${ENV_COORDINATOR}/"
                         f"${ENV_NUM_PROCESSES}/${ENV_PROCESS_ID}") from error
    index, count = jax.process_index(), jax.process_count()
    if index != 0:
        logging.set_verbosity(logging.WARNING)
    logging.info("jax.distributed initialised (%s): process %d of %d, %d local / %d global devices",
                 plan.reason, index, count, jax.local_device_count(), jax.device_count())
    return plan


@dataclasses.dataclass(frozen=True)
class DistributedFlags:
    """The absl flags of :func:`define_flags`; ``maybe_initialize()`` reads them after parsing."""
    coordinator_address: flags.FlagHolder
    num_processes: flags.FlagHolder
    process_id: flags.FlagHolder
    mode: flags.FlagHolder

    def maybe_initialize(self) -> Plan:
        return maybe_initialize(self.coordinator_address.value, self.num_processes.value,
                                self.process_id.value, self.mode.value)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> DistributedFlags:
    """Defines ``--coordinator_address``, ``--num_processes``, ``--process_id`` and ``--distributed``
    (call once, at module level of an entry point)."""
    return DistributedFlags(
        coordinator_address=flags.DEFINE_string(
            "coordinator_address", None, f"host:port of process 0 (default: ${ENV_COORDINATOR}).",
            flag_values=flag_values),
        num_processes=flags.DEFINE_integer(
            "num_processes", None, f"Number of processes, one per host (default: ${ENV_NUM_PROCESSES}).",
            flag_values=flag_values),
        process_id=flags.DEFINE_integer(
            "process_id", None, f"This process's id in [0, num_processes) (default: ${ENV_PROCESS_ID}).",
            flag_values=flag_values),
        mode=flags.DEFINE_enum(
            "distributed", None, list(MODES),
            f"auto: initialise when settings are given or on a Cloud TPU VM; on: always (jax auto-detects "
            f"the cluster if no settings); off: never (default: ${ENV_MODE}, else auto).",
            flag_values=flag_values),
    )
