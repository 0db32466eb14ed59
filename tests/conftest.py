"""Test-wide setup: 8 host CPU devices so meshes are real, float64 available on request, and one persistent XLA
compilation cache shared by every program the tests launch as a subprocess.

The launch tests start ``nemocascade.launch`` / ``launch.local`` processes that compile the same small programs
again and again (a relaunch after a kill, the same tiny model's sampler in several stages and tests): from a
warm cache a 3-step GRPO launch takes 7 s instead of 23 s. The cache lives for one pytest run (shared by its
xdist workers) in the run's temporary directory. The test process itself does not use it (its environment
was read when jax was imported, before the fixture sets it), so in-process tests compile as they always do.
"""
import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session", autouse=True)
def shared_subprocess_compile_cache(tmp_path_factory, worker_id):
    """Points the environment that launched subprocesses inherit at the run's compilation cache directory."""
    base = tmp_path_factory.getbasetemp()
    cache = (base if worker_id == "master" else base.parent) / "xla_compile_cache"
    cache.mkdir(exist_ok=True)
    settings = {"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield cache
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
