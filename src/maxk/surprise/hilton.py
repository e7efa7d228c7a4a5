"""Hilton's (2024) Boolean-circuit example, worked through the same code as maxk's rows.

A circuit outputs TRUE on all 256 of its inputs (Y = 256 correct of N = 256). Each explanation
states some one-bit facts about the gates (prior: each fact holds with probability 1/2) and then
predicts each output independently TRUE with some probability p; S(Y | π) is the binomial tail of
256 successes, exactly as the maxk rows' (``tails.tail_bits``), and the row is ``make_row``'s:
- no explanation: 0 facts, p = 1/2 -> 0 + 256 = 256 bits;
- "the final gate is OR": 1 fact, p = 3/4 -> 1 + 256·log2(4/3) ≈ 107.25;
- "final OR plus the pattern of NOT gates": 16 facts, p = 25/32 -> 16 + 256·log2(32/25) ≈ 107.17;
- "the pattern of all gates": 23 facts, p = 1 -> 23 + 0 = 23.
"""

from __future__ import annotations

from fractions import Fraction

from .checks import Check, account, exact_check
from .table import SurpriseRow, make_row
from .tails import tail_bits

N_INPUTS = 256
EXPLANATIONS: tuple[tuple[str, int, Fraction], ...] = (
    ("no explanation", 0, Fraction(1, 2)),
    ("final gate is OR", 1, Fraction(3, 4)),
    ("final OR plus the pattern of NOT gates", 16, Fraction(25, 32)),
    ("the pattern of all gates", 23, Fraction(1)),
)


def hilton_circuit_rows() -> list[SurpriseRow]:
    """The four rows of Hilton's example (module docstring). Cost O(1)."""
    rows = []
    for name, facts, p_true in EXPLANATIONS:
        checks: list[Check] = [exact_check("one-bit fact about the gates", facts, 0.5)] if facts else []
        rows.append(
            make_row(
                name,
                "circuit",
                "accuracy",
                1.0,
                account(checks),
                tail_bits(N_INPUTS, N_INPUTS, float(p_true)),
                None,
                "exact",
                checks=checks,
                presumption="outputs independent given the explanation",
                details={"p_true": str(p_true), "facts": facts},
            )
        )
    return rows
