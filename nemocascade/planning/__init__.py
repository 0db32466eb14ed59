"""Memory and compute planning without devices: per-device bytes and step FLOPs of a stage on a topology.

``python -m nemocascade.plan`` is the command line; ``make_plan`` the function behind it.
"""
from nemocascade.planning.estimate import HEADROOM, Plan, make_plan
from nemocascade.planning.shards import ParamLayout, param_layout, shard_shape
from nemocascade.planning.workload import Workload, stage_names, workload

__all__ = ["HEADROOM", "ParamLayout", "Plan", "Workload", "make_plan", "param_layout", "shard_shape",
           "stage_names", "workload"]
