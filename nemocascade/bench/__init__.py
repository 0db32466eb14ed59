"""Benchmarks (``python -m nemocascade.bench.model``, ``.rollout``, ``.lm_head``, ``.sharded_cost``): they print
what they measure; tests never assert times."""
