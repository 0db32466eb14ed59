"""Where the model's hot ops leave XLA for the Pallas kernels in ``pallas_kernels`` (``cfg.kernel_impl``).

``kernel_impl="xla"`` (the default) never touches ``pallas_kernels``. Any other value names the
kernel backend (``auto``/``tpu``/``gpu``/``interpret``) and the op is looked up here, at trace time, so a
missing kernel package is a clear error before anything is compiled.
"""
from __future__ import annotations

import importlib
from typing import Callable


def pallas_op(module: str, name: str, impl: str) -> Callable:
    """``pallas_kernels.<module>.<name>``, or a ValueError saying that ``kernel_impl=impl`` needs it."""
    try:
        return getattr(importlib.import_module(f"pallas_kernels.{module}"), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"ModelConfig.kernel_impl={impl!r} needs pallas_kernels.{module}.{name}, which is not "
                         f"available ({err}); use kernel_impl='xla'") from err
