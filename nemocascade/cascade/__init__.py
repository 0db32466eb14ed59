"""The Cascade pipeline entry: ``run(config, workdir)`` for a single stage or a list of stages."""
from nemocascade.cascade.pipeline import run

__all__ = ["run"]
