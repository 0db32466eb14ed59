"""Loads ``experiments/<name>.py`` as a module (the experiment files are configs, not an importable package)."""
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_experiment(name: str):
    """The module of ``experiments/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", os.path.join(REPO, "experiments", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(spec: str):
    """``experiments/NAME.py[:PRESET]`` (as ``--config=`` takes it) -> its ``get_config(PRESET)``."""
    path, _, preset = spec.partition(":")
    module = load_experiment(os.path.splitext(os.path.basename(path))[0])
    return module.get_config(preset) if preset else module.get_config()
