"""Benchmarks (``python -m nemocascade.bench.model``, ``python -m nemocascade.bench.rollout``): they print
what they measure; tests never assert times."""
