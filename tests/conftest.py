"""Test-wide setup: 8 host CPU devices so meshes are real, float64 available on request."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
