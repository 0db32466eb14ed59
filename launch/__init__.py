"""XManager-style launchers for nemocascade (never imported by ``nemocascade`` itself).

An experiment is a config (``experiments/X.py[:preset]``), base overrides and a sweep; each point of the
sweep is a work unit with its own workdir ``<root_workdir>/<name>/<index>`` (``launch/experiment.py``).
The launchers run the work units on

* a local GPU/CPU, optionally as N local processes emulating N hosts: ``python -m launch.local``;
* a Cloud TPU VM pod slice, one process per host on all workers: ``python -m launch.tpu_vm``;
* XManager, when the optional ``xmanager`` package is installed: ``python -m launch.xm_launch``.

Every launcher takes ``--dry_run``: it prints the exact commands and environment it would run (as a
shell script) and runs nothing.
"""
