"""`python -m nemocascade.bench.sharded_cost` at a small size: on data, expert and tensor meshes of 8 CPU devices
each device compiles ~1/8 of the one-device FLOPs. Before the MoE ran under shard_map (model/moe.py), XLA
all-gathered the routing, so every device ran the experts on the whole batch: 0.69 (data=8), 0.21
(data=2,expert=4) and 0.37 (data=4,tensor=2) of the one-device FLOPs at this size."""
import pytest
from bench_testing import run_bench


def test_each_device_compiles_an_eighth_of_the_work():
    lines = run_bench("sharded_cost", "--rows=16", "--seq=32", "--num_layers=1", "--num_experts=8",
                      "--expert_hidden=64", "--cpu_devices=8", "--meshes=data=8;data=2,expert=4;data=4,tensor=2")
    assert "16 rows x 32 tokens, 8 CPU devices" in lines[0]
    rows = {line.split()[0]: [float(x) for x in line.split()[-3:]] for line in lines[2:]}
    assert list(rows) == ["one", "data=8", "data=2,expert=4", "data=4,tensor=2"]
    for mesh in ("data=8", "data=2,expert=4", "data=4,tensor=2"):
        flops, fraction, temp_mib = rows[mesh]
        assert 1 / 8 - 1e-3 <= fraction <= 0.16, (mesh, fraction)
        assert temp_mib < rows["one"][2] / 2, (mesh, temp_mib)


def test_a_bad_mesh_flag_is_a_usage_error_naming_it():
    with pytest.raises(AssertionError, match=r"--meshes: expected axis=size, got 'data:2' in 'data:2'"):
        run_bench("sharded_cost", "--meshes=data:2")
