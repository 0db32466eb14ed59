"""LaTeX math (a final answer) -> a whitelisted sympy-syntax string, without sympy.

The output only ever contains numbers, single-letter variables (optionally with a ``_sub`` subscript),
the names in ``SAFE_NAMES``, operators ``+ - * / ** ( ) , !`` and spaces, so handing it to sympy's
``parse_expr`` (which uses ``eval``) cannot run arbitrary code. Anything else raises ``LatexError``.
Tokens are separated by spaces so that sympy's implicit multiplication reads ``2 x y`` as ``2*x*y``.
"""
from __future__ import annotations

import re

MAX_INPUT_CHARS = 400
MAX_NUMBER_DIGITS = 60

FUNCTIONS = {  # LaTeX command -> sympy function name
    "sqrt": "sqrt", "sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
    "ln": "log", "log": "log", "exp": "exp",
}
GREEK = ("alpha", "beta", "gamma", "delta", "epsilon", "theta", "kappa", "mu", "nu", "xi", "rho", "sigma",
         "tau", "phi", "chi", "psi", "omega")
CONSTANTS = {"pi": "pi", "infty": "oo", "infinity": "oo"}
OPERATORS = {"cdot": "*", "times": "*", "ast": "*", "div": "/"}
EULER, IMAGINARY = "EULER", "IMAG"  # the names the sympy worker binds to E and I
SAFE_NAMES = frozenset(set(FUNCTIONS.values()) | set(GREEK) | {"pi", "oo", "binomial", EULER, IMAGINARY})

_TOKEN = re.compile(r"\\[a-zA-Z]+|\\.|\d+\.?\d*|\.\d+|[a-zA-Z]|[-+*/^_=(){}\[\],!]|\s+|.", re.S)


class LatexError(ValueError):
    """The answer is not in the supported LaTeX subset."""


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text) if not t.isspace()]


class _Converter:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise LatexError("unexpected end of expression")
        self.pos += 1
        return token

    def sequence(self, closer: str | None) -> list[str]:
        """Converts tokens up to ``closer`` (consumed) or the end; returns output pieces."""
        out: list[str] = []
        while True:
            token = self.peek()
            if token is None:
                if closer is not None:
                    raise LatexError(f"missing {closer!r}")
                return out
            if token == closer:
                self.pos += 1
                return out
            if token in ("}", ")", "]"):
                raise LatexError(f"unbalanced {token!r}")
            out.extend(self.atom())

    def argument(self) -> str:
        """A LaTeX macro argument: a braced group, or a single token (one digit of a number)."""
        token = self.take()
        if token == "{":
            return "(" + " ".join(self.sequence("}")) + ")"
        if token[0].isdigit() and len(token) > 1:  # \frac12: the argument is the first digit only
            self.tokens[self.pos - 1:self.pos] = [token[0], token[1:]]
            return token[0]
        self.pos -= 1
        return "(" + " ".join(self.atom()) + ")"

    def atom(self) -> list[str]:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            if len(token) > MAX_NUMBER_DIGITS:
                raise LatexError("number too long")
            return [token if token[0] != "." else "0" + token]
        if re.fullmatch(r"[a-zA-Z]", token):
            name = {"e": EULER, "i": IMAGINARY}.get(token, token)
            if self.peek() == "_":
                self.pos += 1
                subscript = self.take() if self.peek() != "{" else "".join(self.sequence_raw())
                if not re.fullmatch(r"[a-zA-Z0-9]{1,8}", subscript):
                    raise LatexError(f"unsupported subscript {subscript!r}")
                name = f"{token}_{subscript}"
            return [name]
        if token in ("+", "-", "*", "/", "=", ",", "!"):
            return [token]
        if token == "^":
            return ["**", self.argument()]
        if token == "{":
            return ["(", *self.sequence("}"), ")"]
        if token == "(":
            return ["(", *self.sequence(")"), ")"]
        if token == "[":
            return ["(", *self.sequence("]"), ")"]
        if token.startswith("\\"):
            return self.command(token[1:])
        raise LatexError(f"unsupported token {token!r}")

    def sequence_raw(self) -> list[str]:
        self.take()  # "{"
        raw = []
        while (token := self.take()) != "}":
            raw.append(token)
        return raw

    def command(self, name: str) -> list[str]:
        if name == "frac":
            return ["(", self.argument(), "/", self.argument(), ")"]
        if name == "binom":
            return ["binomial(", self.argument(), ",", self.argument(), ")"]
        if name == "sqrt" and self.peek() == "[":
            self.pos += 1
            index = " ".join(self.sequence("]"))
            return ["((", self.argument(), ") ** (1 / (", index, ")))"]
        if name in FUNCTIONS:
            return [FUNCTIONS[name] + "(", self.argument(), ")"]
        if name in CONSTANTS:
            return [CONSTANTS[name]]
        if name in OPERATORS:
            return [OPERATORS[name]]
        if name in GREEK:
            return [name]
        raise LatexError(f"unsupported command \\{name}")


def latex_to_sympy(text: str) -> str:
    """Converts a normalised LaTeX answer to sympy syntax; raises ``LatexError`` outside the subset."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if len(text) > MAX_INPUT_CHARS:
        raise LatexError(f"answer longer than {MAX_INPUT_CHARS} characters")
    tokens = _tokens(text)
    if not tokens:
        raise LatexError("empty expression")
    try:
        pieces = _Converter(tokens).sequence(None)
    except RecursionError:
        raise LatexError("expression nested too deeply") from None
    result = " ".join(pieces)
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", result):
        if word not in SAFE_NAMES and not re.fullmatch(r"[a-zA-Z](_[a-zA-Z0-9]{1,8})?", word):
            raise LatexError(f"unsupported name {word!r}")
    return result
