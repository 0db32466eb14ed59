"""The sympy worker process: ``python -m nemocascade.rewards.sympy_server`` (started by ``sympy_worker``).

It reads one JSON request per line on stdin and answers one JSON line on stdout:

- ``{"op": "equal", "a": str, "b": str}`` -> ``{"ok": bool | null, "error": str}``: are two expressions (or
  two equations ``lhs = rhs``, equal up to a nonzero constant factor) equivalent; null with an error when
  sympy cannot handle them;
- ``{"op": "evaluate", "a": str}`` -> ``{"value": float | null, "error": str}``: the numeric value of a
  closed-form real expression.

Inputs are strings produced by ``latex_expr.latex_to_sympy`` (whitelisted names only), which is what makes
``parse_expr`` (an ``eval``) safe here. The process limits its own address space so that a blow-up ends in
MemoryError, and the host kills it when it is too slow.
"""
import cmath
import json
import random
import resource
import sys

import sympy
from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                        standard_transformations)

from nemocascade.rewards import latex_expr

WORKER_MEMORY_BYTES = 2 << 30
RELATIVE_TOLERANCE = 1e-9
NUM_PROBES = 5


TRANSFORMATIONS = standard_transformations + (implicit_multiplication_application, convert_xor)
LOCAL_NAMES = {c: sympy.Symbol(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
LOCAL_NAMES.update({g: sympy.Symbol(g) for g in latex_expr.GREEK})
LOCAL_NAMES.update({latex_expr.EULER: sympy.E, latex_expr.IMAGINARY: sympy.I})


def parse(text: str) -> sympy.Expr:
    return parse_expr(text, local_dict=dict(LOCAL_NAMES), transformations=TRANSFORMATIONS)


def close(x: complex, y: complex) -> bool:
    if not (cmath.isfinite(x) and cmath.isfinite(y)):
        return x == y
    return abs(x - y) <= RELATIVE_TOLERANCE * max(1.0, abs(x), abs(y))


def same_value(a: sympy.Expr, b: sympy.Expr) -> bool:
    """a - b is zero: symbolically, numerically, or at random rational points for its free symbols."""
    diff = a - b
    if diff == 0 or sympy.simplify(diff) == 0:
        return True
    symbols = sorted(diff.free_symbols, key=str)
    if not symbols:
        return close(complex(sympy.N(a)), complex(sympy.N(b)))
    rng = random.Random(0)
    for _ in range(NUM_PROBES):
        point = {s: sympy.Rational(rng.randint(1, 97), rng.randint(1, 13)) for s in symbols}
        if not close(complex(sympy.N(a.subs(point))), complex(sympy.N(b.subs(point)))):
            return False
    return True


def equal(a: str, b: str) -> bool:
    if a.count("=") != b.count("="):
        return False
    if "=" in a:  # equations: lhs - rhs must agree up to a nonzero constant factor
        (la, ra), (lb, rb) = a.split("=", 1), b.split("=", 1)
        da, db = parse(la) - parse(ra), parse(lb) - parse(rb)
        if db == 0:
            return da == 0
        ratio = sympy.simplify(da / db)
        return not ratio.free_symbols and ratio.is_finite is True and ratio != 0
    ea, eb = parse(a), parse(b)
    return ea == eb or same_value(ea, eb)


def evaluate(a: str) -> float | None:
    value = complex(sympy.N(parse(a)))
    return value.real if value.imag == 0 else None


def serve() -> None:
    """Answers requests from stdin until EOF."""
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "equal":
                answer = {"ok": bool(equal(request["a"], request["b"])), "error": ""}
            else:
                answer = {"value": evaluate(request["a"]), "error": ""}
        except Exception as exc:  # sympy raises many types on odd input; report, never crash
            answer = {"ok": None, "value": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    serve()
