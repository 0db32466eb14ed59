"""Math answer extraction and equivalence: a table of equal / not-equal pairs, traps included."""
import time

import pytest

from nemocascade.rewards.latex_expr import LatexError, latex_to_sympy
from nemocascade.rewards.math_verify import MathVerifier, extract_answer, extract_boxed, normalize_answer, parse_number

EQUIVALENT = [
    ("42", "42"), ("0.5", "1/2"), (r"\frac{1}{2}", "0.5"), (r"\dfrac{3}{4}", "3/4"), (r"\tfrac{3}{4}", "0.75"),
    (r"\frac34", "0.75"), ("-7", "-7.0"), ("\u22127", "-7"), ("1,000", "1000"), ("1{,}000{,}000", "1000000"),
    (r"1\,000", "1000"), (r"50\%", "50"), ("50%", "0.5"), ("x = 5", "5"), (r"\left(1, 2\right)", "(1,2)"),
    ("[1, 2)", "[1,2)"), (r"(-\infty, 3]", r"(-\infty,3]"), (r"\sqrt{2}", r"\sqrt2"), (r"2\sqrt{2}", r"\sqrt{8}"),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}"), (r"2\pi", r"\pi \cdot 2"), ("x^2+2x+1", "(x+1)^2"),
    (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}"), ("1.414", r"\sqrt{2}"), ("3.14", r"\pi"), (r"5\text{ cm}", "5"),
    (r"90^\circ", "90"), (r"90^{\circ}", "90"), (r"\text{Monday}", "monday"), ("(B)", "B"),
    (r"\{1, 2\}", r"\{2, 1\}"), ("1, 2", "2, 1"), ("+5", "5"), ("10^{3}", "1000"), (r"1.5 \times 10^{3}", "1500"),
    (r"\frac{-1}{2}", r"-\frac{1}{2}"), ("-0.5", r"-\frac12"), (".5", "0.5"), ("2.50", "2.5"),
    (r"(1,2) \cup (3,4)", r"(3,4)\cup(1,2)"), (r"\sqrt[3]{8}", "2"), ("3+4i", "4i+3"), (r"\frac{x}{2}", "x/2"),
    ("2x", "x+x"), (r"\$5", "5"), ("$42$", "42"), (r"e^{2}", r"\exp(2)"), ("y = 2x + 1", "y=1+2x"),
    ("2x + 3y = 6", r"y = 2 - \frac{2}{3}x"), (r"\left[ 0, \frac{1}{2} \right]", "[0, 0.5]"),
    ("1,000,000.5", "1000000.5"),
    ("(0.5, -3)", r"\left(\frac{1}{2}, -3\right)"), (r"x = \frac{1}{2}", "0.5"), ("6.", "6"),
    (r"x \in [2, 5]", "[2,5]"), (r"\text{(C)}", "C"), ("2^{10}", "1024"),
]

NOT_EQUIVALENT = [
    ("12", "1.2"), ("0.5", "0.55"), ("1/2", "2/1"), ("-7", "7"), ("1,000", "1.000"), ("(1, 2)", "(2, 1)"),
    ("[1, 2)", "(1, 2)"), ("[1,2]", "[1,2)"), ("50", "0.5"), (r"\sqrt{2}", "2"), ("1.42", r"\sqrt{2}"),
    ("3.15", r"\pi"), ("x^2+1", "(x+1)^2"), (r"\pi", "3"), ("Monday", "Tuesday"), ("(B)", "C"), ("1, 2", "1, 2, 3"),
    (r"\{1,2\}", r"\{1,3\}"), ("2x", "2y"), ("", "5"), ("five", "5"), (r"\frac{1}{3}", "0.33"), ("1000", "100"),
    (r"-\infty", r"\infty"), (r"2\pi", r"\pi"), ("10^{3}", "10^{4}"), ("3+4i", "3-4i"), ("0", "-1"), ("x = 5", "6"),
    ("1, 234", "1234"), ("x = 5", "y = 5"), ("(1, 2)", "[1, 2]"), (r"\{1, 2\}", "(1, 2)"), ("50%", "50.5"),
]


@pytest.fixture(scope="module")
def verifier():
    return MathVerifier(sympy_timeout=2.0)


def test_the_table_is_big_enough():
    assert len(EQUIVALENT) + len(NOT_EQUIVALENT) >= 60


@pytest.mark.parametrize("answer,reference", EQUIVALENT)
def test_equivalent_pairs(verifier, answer, reference):
    verdict = verifier.verify(answer, reference)
    assert verdict.equal and verdict.reason == "", verdict
    assert verifier.verify(reference, answer).equal  # symmetric


@pytest.mark.parametrize("answer,reference", NOT_EQUIVALENT)
def test_not_equivalent_pairs(verifier, answer, reference):
    verdict = verifier.verify(answer, reference)
    assert not verdict.equal and verdict.reason, verdict


def test_extract_boxed_handles_nesting_last_box_and_short_forms():
    assert extract_boxed(r"so \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert extract_boxed(r"first \boxed{3}, then corrected: \boxed{4}") == "4"
    assert extract_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert extract_boxed(r"\boxed{\left(\frac{a}{b}, {c}\right)}") == r"\left(\frac{a}{b}, {c}\right)"
    assert extract_boxed(r"$\boxed 7$") == "7"
    assert extract_boxed(r"\fbox{12}") == "12"
    assert extract_boxed("no box here: 5") is None
    assert extract_boxed(r"\boxed{3} and then a cut-off \boxed{\frac{1}{") is None  # the last one decides


def test_extract_answer_uses_the_pattern_only_without_a_box():
    pattern = r"(?i)answer:\s*(\S+)"
    assert extract_answer("Answer: 7. Later answer: 9", pattern) == "9"
    assert extract_answer(r"Answer: 7 but \boxed{8}", pattern) == "8"
    assert extract_answer("Answer: 7") is None


def test_normalisation_and_number_parsing():
    assert normalize_answer(r"$\left( \dfrac{1}{2} \right)$.") == r"( \frac{1}{2} )"
    assert normalize_answer(r"\text{(c)}") == "C"
    assert parse_number("1,234.5").value == pytest.approx(1234.5)
    assert parse_number(r"-\frac{3}{4}").value == -0.75 and parse_number("7%").percent
    assert parse_number("1/0") is None and parse_number("abc") is None and parse_number("1e999999999") is None


def test_hostile_or_unparseable_answers_give_a_reason_not_a_crash(verifier):
    for answer in ["__import__('os').system('echo hi')", r"\unknownmacro{3}", "x |y|", "{{{", "}", "a" * 1000,
                   "1" * 5000, "{" * 150 + "}" * 150]:
        verdict = verifier.verify(answer, "0")
        assert not verdict.equal and verdict.reason, (answer, verdict)
    with pytest.raises(LatexError):
        latex_to_sympy("lambda: 0")
    assert latex_to_sympy(r"\frac12 x^2") == "( 1 / (2) ) x ** (2)"


def test_sympy_time_limit_is_enforced_and_the_worker_recovers(verifier):
    start = time.monotonic()
    verdict = verifier.verify("9^{9^{9^{9}}}", "1")
    assert not verdict.equal and "timed out" in verdict.reason
    assert time.monotonic() - start < verifier.sympy_timeout + 1.0
    assert verifier.verify(r"\sqrt{8}", r"2\sqrt{2}").equal  # a fresh worker answers


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="sympy_timeout"):
        MathVerifier(sympy_timeout=0)
    with pytest.raises(TypeError, match="str"):
        MathVerifier().verify(5, "5")
