"""Fixtures shared by the Hugging Face checkpoint tests."""
import pytest

from nemocascade import sharding


@pytest.fixture(scope="module")
def mesh():
    """8 host CPU devices as expert 2 x tensor 2 x fsdp 2: every tensor is read/written sharded."""
    return sharding.make_mesh({"expert": 2, "tensor": 2, "fsdp": 2})
