"""The functions behind the toy domains' tools (``data/toy``), for ``ToolEnvironment``."""
from __future__ import annotations

from nemocascade.data.toy.tool_use import convert_amount


def convert(example: dict, amount, source, target) -> dict:
    """The toy ``convert`` tool at the example's hidden ``rates`` (``data/toy/tool_use.py``)."""
    return {"amount": convert_amount(example["rates"], amount, source, target)}


TOY_TOOL_FUNCTIONS = {"convert": convert}
