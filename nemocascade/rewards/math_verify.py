"""Math final-answer extraction and equivalence with a reference answer.

Order of checks (cheap first, sympy last):
1. normalise both (``$``, ``\\left``/``\\right``, spacing macros, ``\\dfrac``, ``\\text{}``, units, degrees,
   thousands separators, unicode minus, trailing period, a leading ``x \\in``); ``x =`` is dropped when only
   one side is an equation; two equations are equal when ``lhs - rhs`` agree up to a constant factor;
2. structure: intervals/tuples ``(a, b]`` compare element-wise with their brackets; sets ``\\{..\\}``,
   bare lists ``a, b`` and unions ``A \\cup B`` compare as multisets;
3. scalars: equal strings; exact rationals (integers, decimals, ``a/b``, ``\\frac``) compared exactly, so
   ``0.5 == 1/2`` but ``1/3 != 0.33``; a percentage ``p%`` equals ``p`` or ``p/100``;
4. a decimal against a closed form (``1.414`` vs ``\\sqrt{2}``): equal when the closed form rounds to the
   decimal at the decimal's precision;
5. anything else: sympy (simplification, then numeric probes) in a worker process with a time limit.
An unparseable answer is simply not equivalent; ``Verdict.reason`` says why.
"""
from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from typing import Sequence

from nemocascade.rewards import latex_expr
from nemocascade.rewards.sympy_worker import SympyTimeout, shared_worker

DEFAULT_SYMPY_TIMEOUT = 3.0
MAX_ANSWER_CHARS = 1000  # longer "answers" are not compared (and would make the regexes slow)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """``equal``: whether the answers match; ``reason``: "" when equal, else why not."""
    equal: bool
    reason: str = ""


# ----------------------------------------------------------------------------------------- extraction
def _braced(text: str, open_index: int) -> int | None:
    """Index of the ``}`` matching the ``{`` at ``open_index`` (escaped ``\\{``/``\\}`` skipped), or None."""
    depth, i = 0, open_index
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed) or ``\\boxed x`` short
    form; None when there is none or the last one is not closed (a truncated answer)."""
    matches = list(re.finditer(r"\\(?:boxed|fbox)\s*(\{|[^\s{])", text))
    if not matches:
        return None
    last = matches[-1]
    if last.group(1) != "{":
        return re.match(r"[^\s$]+", text[last.start(1):]).group(0)
    close = _braced(text, last.start(1))
    return None if close is None else text[last.start(1) + 1:close].strip()


def extract_answer(text: str, answer_pattern: str | None = None) -> str | None:
    """The last boxed answer; else, when ``answer_pattern`` (a regex with one group) is given, its last match."""
    boxed = extract_boxed(text)
    if boxed is not None or answer_pattern is None:
        return boxed
    matches = list(re.finditer(answer_pattern, text))
    return matches[-1].group(1).strip() if matches else None


# ----------------------------------------------------------------------------------------- normalisation
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad(?![a-zA-Z])|~|\\displaystyle"
                      r"|\\(?:left|right|big|Big|bigg|Bigg)[lr]?(?![a-zA-Z])")
_TEXT_MACRO = r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}"
_UNIT = re.compile(r"^(.*?[0-9}.])\s*" + _TEXT_MACRO + r"$")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_ASSIGNMENT = re.compile(r"^[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?\s*=\s*(?=\S)")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?%?$")
_WORD = re.compile(r"[A-Za-z][A-Za-z ]*[A-Za-z]")  # plain words ("Monday"), compared case-insensitively


def normalize_answer(answer: str) -> str:
    """A canonical LaTeX-ish string for comparison (see the module docstring)."""
    s = answer.strip().rstrip(".").strip()
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    s = s.replace("\u2212", "-").replace("\\$", "").replace("{,}", ",").replace("\\%", "%")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = _SPACING.sub(" ", s)
    s = _DEGREES.sub("", s)
    unit = _UNIT.match(s.strip())
    if unit and re.search(r"[a-zA-Z]", unit.group(2)):
        s = unit.group(1)
    s = re.sub(_TEXT_MACRO, r"\1", s)
    s = s.strip().rstrip(".").strip()
    s = re.sub(r"^[a-zA-Z]\s*\\in\s*(?=\S)", "", s)  # "x \in [2, 5]" -> "[2, 5]"
    s = re.sub(r"\s+", " ", s).strip()
    choice = re.fullmatch(r"\(?([A-Za-z])\)", s) or re.fullmatch(r"([A-Z])", s)
    return choice.group(1).upper() if choice else s


def _drop_assignment(s: str) -> str:
    """``x = 5`` -> ``5`` (one ``=`` whose left side is a single, possibly subscripted, variable)."""
    return _ASSIGNMENT.sub("", s) if s.count("=") == 1 else s


def _compact(s: str) -> str:
    """Whitespace-free form; spaces only matter after a macro name (``\\pi r``) and become ``{}`` there."""
    return re.sub(r"(\\[a-zA-Z]+) (?=[a-zA-Z])", r"\1{}", s).replace(" ", "")


# ----------------------------------------------------------------------------------------- numbers
@dataclasses.dataclass(frozen=True)
class _Number:
    value: Fraction
    percent: bool
    decimals: int  # digits after the decimal point in a decimal literal; 0 for integers/fractions


_DECIMAL = re.compile(r"([-+]?)(\d*)\.?(\d*)")


def _parse_decimal(s: str) -> tuple[Fraction, int] | None:
    match = _DECIMAL.fullmatch(s)
    if not match or not (match.group(2) or match.group(3)) or len(s) > latex_expr.MAX_NUMBER_DIGITS:
        return None
    sign, whole, frac = match.groups()
    value = Fraction(int(whole or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac))
    return (-value if sign == "-" else value), len(frac)


def parse_number(s: str) -> _Number | None:
    """Exact value of an integer, decimal, ``a/b``, ``\\frac{a}{b}``/``\\frac ab`` or percentage; else None."""
    s = _compact(s)
    percent = s.endswith("%")
    s = s.rstrip("%")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    sign = -1 if s.startswith("-") else 1
    body = s[1:] if s[:1] in "-+" else s
    frac = re.fullmatch(r"\\frac(?:\{([^{}]+)\}|(\d))(?:\{([^{}]+)\}|(\d))", body)
    if frac:
        parts = [_parse_decimal(frac.group(1) or frac.group(2)), _parse_decimal(frac.group(3) or frac.group(4))]
    elif body.count("/") == 1:
        parts = [_parse_decimal(p) for p in body.split("/")]
    else:
        single = _parse_decimal(body)
        return None if single is None else _Number(sign * single[0], percent, single[1])
    if None in parts or parts[1][0] == 0:
        return None
    return _Number(sign * parts[0][0] / parts[1][0], percent, 0)


def _numbers_equal(a: _Number, b: _Number) -> bool:
    if a.value == b.value:
        return True
    if a.percent != b.percent:
        pct, other = (a, b) if a.percent else (b, a)
        return pct.value / 100 == other.value
    return False


# ----------------------------------------------------------------------------------------- structure
def _split_top_level(s: str, separator: str) -> list[str]:
    """Splits on ``separator`` outside (), [], {} and \\{ \\}."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        if s.startswith("\\{", i) or s.startswith("\\}", i):
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if s[i] in "([{":
            depth += 1
        elif s[i] in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(separator, i):
            parts.append(s[start:i])
            i += len(separator)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _wrapping_brackets(s: str) -> tuple[str, str, str] | None:
    """(open, close, inside) when ``s`` is one bracketed group; an interval may mix ( and ]."""
    for opener in ("\\{", "(", "["):
        if s.startswith(opener):
            break
    else:
        return None
    closer = "\\}" if opener == "\\{" else s[-1:]
    if closer not in (")", "]", "\\}") or (opener == "\\{") != s.endswith("\\}"):
        return None
    inside = s[len(opener):len(s) - len(closer)]
    return (opener, closer, inside) if _balanced(inside) else None


def _balanced(s: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", s):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


def _multiset_match(xs: Sequence[str], ys: Sequence[str], equal) -> bool:
    if len(xs) != len(ys):
        return False
    remaining = list(ys)
    for x in xs:
        for j, y in enumerate(remaining):
            if equal(x, y):
                del remaining[j]
                break
        else:
            return False
    return True


# ----------------------------------------------------------------------------------------- comparison
class MathVerifier:
    """Decides equivalence of a response's final answer with a reference (sympy with ``sympy_timeout`` s).

    Stateless apart from its options: safe to share between threads.
    """

    def __init__(self, sympy_timeout: float = DEFAULT_SYMPY_TIMEOUT):
        if isinstance(sympy_timeout, bool) or not isinstance(sympy_timeout, (int, float)) or not sympy_timeout > 0:
            raise ValueError(f"sympy_timeout must be a number of seconds > 0, got {sympy_timeout!r}")
        self.sympy_timeout = float(sympy_timeout)

    def verify(self, answer: str, reference: str) -> Verdict:
        """Is ``answer`` (the extracted response answer) equivalent to ``reference``?"""
        if not isinstance(answer, str) or not isinstance(reference, str):
            raise TypeError("answer and reference must be str")
        if len(answer) > MAX_ANSWER_CHARS:
            return Verdict(False, f"answer longer than {MAX_ANSWER_CHARS} characters")
        a, b = normalize_answer(answer), normalize_answer(reference)
        if ("=" in a) != ("=" in b):  # "x = 5" against "5": drop a single-variable assignment
            a, b = _drop_assignment(a), _drop_assignment(b)
        if not a:
            return Verdict(False, "empty answer")
        comparison = _Comparison(self.sympy_timeout)
        if comparison.equal(a, b):
            return Verdict(True)
        return Verdict(False, comparison.problem or "not equivalent to the reference")


class _Comparison:
    """One verification; remembers the first problem (unparseable, timeout) to report as the reason."""

    def __init__(self, sympy_timeout: float):
        self.sympy_timeout = sympy_timeout
        self.problem = ""

    def equal(self, a: str, b: str) -> bool:
        if _compact(a) == _compact(b):
            return True
        union_a, union_b = _split_top_level(a, "\\cup"), _split_top_level(b, "\\cup")
        if len(union_a) > 1 or len(union_b) > 1:
            return _multiset_match(union_a, union_b, self.equal)
        wrapped_a, wrapped_b = _wrapping_brackets(a), _wrapping_brackets(b)
        items_a = _split_top_level(wrapped_a[2], ",") if wrapped_a else []
        items_b = _split_top_level(wrapped_b[2], ",") if wrapped_b else []
        if len(items_a) > 1 or len(items_b) > 1:
            if not (wrapped_a and wrapped_b) or wrapped_a[:2] != wrapped_b[:2]:
                return False
            if wrapped_a[0] == "\\{":
                return _multiset_match(items_a, items_b, self.equal)
            return len(items_a) == len(items_b) and all(map(self.equal, items_a, items_b))
        if wrapped_a and wrapped_b and wrapped_a[0] == wrapped_b[0] == "\\{":
            return self.equal(wrapped_a[2], wrapped_b[2])
        list_a = [a] if _THOUSANDS.match(a) else _split_top_level(a, ",")
        list_b = [b] if _THOUSANDS.match(b) else _split_top_level(b, ",")
        if len(list_a) > 1 or len(list_b) > 1:
            return _multiset_match(list_a, list_b, self.equal)
        return self.scalars_equal(a, b)

    def scalars_equal(self, a: str, b: str) -> bool:
        na, nb = parse_number(a), parse_number(b)
        if na is not None and nb is not None:
            return _numbers_equal(na, nb)
        if _WORD.fullmatch(a) and _WORD.fullmatch(b):
            return a.lower() == b.lower()
        try:
            ea, eb = latex_expr.latex_to_sympy(a), latex_expr.latex_to_sympy(b)
        except latex_expr.LatexError as exc:
            self.problem = self.problem or f"unparseable answer: {exc}"
            return False
        for number, other in ((na, eb), (nb, ea)):
            if number is not None and number.decimals and not number.percent:
                return self.decimal_matches(number, other)
        return self.sympy_equal(ea, eb)

    def decimal_matches(self, decimal: _Number, closed_form: str) -> bool:
        """A decimal literal matches a closed form that rounds to it at the literal's precision."""
        answer = self.ask({"op": "evaluate", "a": closed_form})
        value = answer.get("value")
        if value is None:
            self.problem = self.problem or f"could not evaluate {closed_form!r}: {answer.get('error', '')}"
            return False
        half_ulp = 0.5 * 10.0 ** -decimal.decimals
        return abs(float(decimal.value) - value) <= half_ulp * (1 + 1e-9)

    def sympy_equal(self, a: str, b: str) -> bool:
        answer = self.ask({"op": "equal", "a": a, "b": b})
        if answer.get("ok") is None:
            self.problem = self.problem or f"unparseable answer: {answer.get('error', '')}"
        return bool(answer.get("ok"))

    def ask(self, request: dict) -> dict:
        try:
            return shared_worker().request(request, self.sympy_timeout)
        except SympyTimeout:
            self.problem = self.problem or f"sympy timed out after {self.sympy_timeout:g}s"
            return {}
