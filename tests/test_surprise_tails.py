"""Surprise accounting's arithmetic: binomial tails in log space against exact big-integer and
fraction arithmetic, scipy where it does not underflow, the Gaussian window, and Hilton's example."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binom, norm

from maxk.surprise import hilton_circuit_rows
from maxk.surprise.tails import normal_window_bits, tail_bits


def log2_fraction(x: Fraction) -> float:
    """log2 of a positive fraction of big integers, to double precision."""

    def log2_int(v: int) -> float:
        shift = max(0, v.bit_length() - 60)
        return math.log2(v >> shift) + shift

    return log2_int(x.numerator) - log2_int(x.denominator)


def exact_tail_bits(N: int, c: int, p: Fraction) -> float:
    total = Fraction(0) + sum(Fraction(math.comb(N, j)) * p**j * (1 - p) ** (N - j) for j in range(max(c, 0), N + 1))
    return -log2_fraction(total)


@pytest.mark.parametrize("p", [Fraction(1, 2), Fraction(1, 4), Fraction(1, 64), Fraction(3, 10), Fraction(0.7)])
@pytest.mark.parametrize("N", [1, 2, 7, 16, 60])
def test_tail_matches_fractions(N, p):
    for c in range(0, N + 1):
        assert tail_bits(N, c, float(p)) == pytest.approx(exact_tail_bits(N, c, p), abs=1e-9, rel=1e-12)


def test_tail_degenerate_cases():
    assert tail_bits(10, 0, 0.3) == 0.0 and tail_bits(10, -3, 0.3) == 0.0
    assert tail_bits(10, 11, 0.3) == math.inf and tail_bits(10, 1, 0.0) == math.inf
    assert tail_bits(10, 10, 1.0) == 0.0
    assert tail_bits(256, 256, 0.5) == pytest.approx(256.0, abs=1e-9)


@pytest.mark.parametrize("N, p", [(1000, 1 / 64), (100_000, 1 / 64), (1_000_000, 0.3), (4096, 1 / 16)])
def test_tail_matches_scipy_across_counts(N, p):
    mean, sd = N * p, math.sqrt(N * p * (1 - p))
    counts = np.unique(np.clip(np.round(mean + sd * np.linspace(-6, 60, 200)), 0, N).astype(int))
    checked = 0
    for c in counts:
        ref = float(binom.logsf(c - 1, N, p))
        if not math.isfinite(ref) or ref < -700:  # scipy's own log of a float underflows here
            continue
        assert tail_bits(N, int(c), p) == pytest.approx(-ref / math.log(2), rel=1e-9, abs=1e-9)
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("wrong", [0, 1, 5, 100, 4377])
def test_near_perfect_model_against_big_integers(wrong):
    """n = 64, k = 4: P(Binomial(64^4, 1/64) >= N - r) is ~2^-10^8, far below float64; exactly it
    is sum_{i<=r} C(N, i) 63^i / 64^N."""
    n, N = 64, 64**4
    num, term = 0, 1
    for i in range(wrong + 1):  # C(N, i)·63^i, built incrementally (exact integers)
        num += term
        term = term * (N - i) * (n - 1) // (i + 1)
    exact = 6 * N - log2_fraction(Fraction(num))
    assert float(binom.logsf(N - wrong - 1, N, 1 / n)) == -math.inf or wrong > 10**6  # scipy underflows
    assert tail_bits(N, N - wrong, 1 / n) == pytest.approx(exact, rel=1e-13)


@given(
    N=st.integers(1, 3000),
    frac_c=st.floats(0, 1),
    b1=st.floats(0, 1),
    b2=st.floats(0, 1),
    p=st.sampled_from([1 / 64, 1 / 4, 1 / 2]),
)
def test_more_certified_never_leaves_more_surprise(N, frac_c, b1, b2, p):
    """A proof certifying more of the c correct inputs (same checks) leaves no more surprise:
    tail(N - B, c - B) is non-increasing in B."""
    c = round(frac_c * N)
    lo, hi = sorted((round(b1 * c), round(b2 * c)))
    assert tail_bits(N - hi, c - hi, p) <= tail_bits(N - lo, c - lo, p) + 1e-9 * (1 + tail_bits(N - lo, c - lo, p))


@pytest.mark.parametrize(
    "y, mean, sd, width", [(0.3, 0.31, 0.02, 1e-3), (0.9, 0.5, 0.05, 1e-2), (0.1, 0.12, 0.01, 0.01)]
)
def test_normal_window_against_cdf(y, mean, sd, width):
    p = norm.sf(y - width / 2, mean, sd) - norm.sf(y + width / 2, mean, sd)  # upper tails: no cancellation
    assert normal_window_bits(y, mean, sd, width) == pytest.approx(-math.log2(p), rel=1e-9)


def test_normal_window_narrow_and_far():
    # narrow window: density times width
    bits = normal_window_bits(0.5, 0.5, 0.01, 1e-9)
    assert bits == pytest.approx(-math.log2(norm.pdf(0, 0, 0.01) * 1e-9), rel=1e-9)
    # far tail (probability ~ 1e-2000): finite, and equal to the log density there to leading order
    far = normal_window_bits(1.0, 0.0, 0.01, 1e-6)
    assert math.isfinite(far) and far == pytest.approx(
        -(norm.logpdf(100) - math.log(0.01) + math.log(1e-6)) / math.log(2), rel=1e-6
    )


def test_hilton_circuit_rows():
    """Hilton 2024's worked example through the same row code: 256, 107.25, 107.17, 23 bits."""
    rows = {r.explanation: r for r in hilton_circuit_rows()}
    totals = [r.total for r in rows.values()]
    expected = [256.0, 1 + 256 * math.log2(4 / 3), 16 + 256 * math.log2(32 / 25), 23.0]
    assert totals == pytest.approx(expected, abs=1e-9)
    assert [round(t, 2) for t in totals] == [256.0, 107.25, 107.17, 23.0]
    assert rows["final gate is OR"].s_pi == 1.0 and rows["the pattern of all gates"].s_y_given_pi == 0.0
    assert all(r.kind == "exact" for r in rows.values())
