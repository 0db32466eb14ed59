"""Walking jaxprs in tests: every equation, those of nested jaxprs (jit, custom_vjp, pallas_call, ...) too."""
from typing import Iterator


def all_eqns(jaxpr) -> Iterator:
    """The equations of ``jaxpr`` (a Jaxpr or ClosedJaxpr) and of every jaxpr nested in their params."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                if hasattr(getattr(sub, "jaxpr", sub), "eqns"):
                    yield from all_eqns(sub)
