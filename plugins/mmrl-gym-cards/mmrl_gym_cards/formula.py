"""Formulas over card values: the words they are spelled with, their value, and every solution.

A formula is a list of words: card values (``"3"``), operators (``plus``, ``minus``, ``times``,
``over``) and brackets (``open``, ``close``). Words rather than symbols, because the harness's
action parsers read a reply's words (punctuation is dropped). Arithmetic is exact (``Fraction``),
so ``8 over open 3 minus 8 over 3 close`` is exactly 24.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

OPERATORS: dict[str, str] = {"plus": "+", "minus": "-", "times": "*", "over": "/"}
OPEN, CLOSE, EQUALS = "open", "close", "equals"


class FormulaError(ValueError):
    """The words do not form a complete formula (or divide by zero)."""


def evaluate(words: Sequence[str]) -> Fraction:
    """The exact value of a complete formula; ``FormulaError`` if it is not one."""
    value, end = _sum(list(words), 0)
    if end != len(words):
        raise FormulaError(f"unexpected {words[end]!r} at word {end}")
    return value


def _sum(words: list[str], i: int) -> tuple[Fraction, int]:
    value, i = _product(words, i)
    while i < len(words) and words[i] in ("plus", "minus"):
        right, j = _product(words, i + 1)
        value, i = (value + right if words[i] == "plus" else value - right), j
    return value, i


def _product(words: list[str], i: int) -> tuple[Fraction, int]:
    value, i = _operand(words, i)
    while i < len(words) and words[i] in ("times", "over"):
        right, j = _operand(words, i + 1)
        if words[i] == "over" and right == 0:
            raise FormulaError("division by zero")
        value, i = (value * right if words[i] == "times" else value / right), j
    return value, i


def _operand(words: list[str], i: int) -> tuple[Fraction, int]:
    if i >= len(words):
        raise FormulaError("the formula ends where a number is expected")
    if words[i] == OPEN:
        value, j = _sum(words, i + 1)
        if j >= len(words) or words[j] != CLOSE:
            raise FormulaError("unbalanced brackets")
        return value, j + 1
    if words[i].isdigit():
        return Fraction(int(words[i])), i + 1
    raise FormulaError(f"expected a number or 'open', got {words[i]!r}")


#: Operator precedence: a compound operand is bracketed only where precedence requires it.
_PRECEDENCE = {"plus": 1, "minus": 1, "times": 2, "over": 2}


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    if op == "plus":
        return a + b
    if op == "minus":
        return a - b
    return a * b if op == "times" else a / b


@dataclass(frozen=True)
class _Term:
    """A partial formula: its value, its words, and its top operator (None for a single card)."""

    value: Fraction
    words: tuple[str, ...]
    top: str | None = None


def _combine(op: str, left: _Term, right: _Term) -> _Term:
    """``left op right``, bracketing an operand only where precedence requires it."""
    rank = _PRECEDENCE[op]
    lw, rw = left.words, right.words
    if left.top is not None and _PRECEDENCE[left.top] < rank:
        lw = (OPEN, *lw, CLOSE)
    if right.top is not None and (
        _PRECEDENCE[right.top] < rank
        or (_PRECEDENCE[right.top] == rank and op in ("minus", "over"))
    ):
        rw = (OPEN, *rw, CLOSE)
    return _Term(_apply(op, left.value, right.value), (*lw, op, *rw), op)


def solve(
    cards: Sequence[int], target: int, ops: Sequence[str], brackets: bool = True
) -> tuple[str, ...] | None:
    """One formula using every card once that equals ``target`` (fewest brackets), or None.

    Searches by combining two terms at a time (the classic 24-game search), remembering value
    sets already shown to fail, so a four-card hand takes milliseconds. Without ``brackets`` only
    formulas whose spelling needs no bracket count.
    """
    terms = tuple(_Term(Fraction(c), (str(c),)) for c in cards)
    return _search(terms, Fraction(target), tuple(ops), brackets, set())


def _search(
    terms: tuple[_Term, ...],
    target: Fraction,
    ops: tuple[str, ...],
    brackets: bool,
    failed: set[Any],
) -> tuple[str, ...] | None:
    if len(terms) == 1:
        (term,) = terms
        ok = term.value == target and (brackets or OPEN not in term.words)
        return term.words if ok else None
    # Bracket-free search depends on spelling, not only values: memoise values with brackets only.
    key = tuple(sorted(t.value for t in terms)) if brackets else None
    if key is not None and key in failed:
        return None
    for i, j in itertools.permutations(range(len(terms)), 2):
        rest = tuple(t for k, t in enumerate(terms) if k not in (i, j))
        for op in ops:
            if op == "over" and terms[j].value == 0:
                continue
            if op in ("plus", "times") and i > j:
                continue  # commutative: the other order is the same formula
            found = _search(
                (*rest, _combine(op, terms[i], terms[j])), target, ops, brackets, failed
            )
            if found is not None:
                return found
    if key is not None:
        failed.add(key)
    return None
