"""Several heads with the margin split between them (maxk.proofs.head_split): the direct-term
offset hook of subcubic-coupled, the exact split, and soundness over every input of small 2- and
4-head models (random, max-like split over heads, adversarially near-tied, trained)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.flops import FlopCounter
from maxk.proofs.head_split import exact_split, split_thresholds
from maxk.proofs.per_head import per_head_thresholds
from maxk.proofs.registry import prove
from maxk.proofs.subcubic import SUBCUBIC_VARIANTS, count_certified, subcubic_thresholds
from maxk.proofs.subcubic_coupled import coupled_thresholds
from maxk.train import trained_model

from .helpers import max_like_model, random_model
from .test_proofs_soundness import _margins, _split_heads, adversarial


def _inputs(model):
    """Every input [N, k], its max [N], query [N], float64 margin [N] (right logit minus the best
    other) and largest non-max token at a free position [N] (−1: all free positions hold the max)."""
    xs, margin = _margins(model)
    mx, q = xs.max(1), xs[:, -1]
    nonmax_top = np.where(xs[:, :-1] == mx[:, None], -1, xs[:, :-1]).max(1, initial=-1)
    return xs, mx, q, margin, nonmax_top


def _covered(T, mx, q, nonmax_top):
    return (T[q, mx] >= -1) & (nonmax_top <= T[q, mx])


def _coupled(counter, **options):
    return lambda view, c, b: coupled_thresholds(view, counter, direct_offset=c, max_offset=b, **options)


def test_exact_split_sums_to_zero_exactly():
    rng = np.random.default_rng(0)
    for H in (2, 4, 8):
        for scale in (1e-3, 1.0, 37.5, 1e6):
            off = rng.normal(size=(H, 5, 5)) * scale
            out = exact_split(off)
            want = off.copy()
            want[0] = -off[1:].sum(axis=0)
            assert np.all(out[1:] <= off[1:]) and np.allclose(out, want, rtol=0, atol=1e-9 * scale)
            for i in range(5):
                for j in range(5):
                    assert sum(Fraction(float(x)) for x in out[:, i, j]) == 0
    assert np.all(exact_split(np.array([[np.inf, 1.0], [np.nan, 2.0]]))[:, 0] == 0)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(3, 8), k=st.integers(2, 4), seed=st.integers(0, 10**6), scale=st.sampled_from([0.3, 2.0]))
def test_direct_offset_certifies_margin_above_it(n, k, seed, scale):
    """A one-head check with direct_offset c[q, m] covers only inputs whose margin exceeds c (and
    with max_offset b, whose margin against each output o exceeds c[q, m] + b[m, o])."""
    if n**k > 6000:
        k = max(2, int(math.log(6000) / math.log(n)))
    model = max_like_model(n, k, seed, 0.1) if seed % 2 else random_model(n=n, k=k, seed=seed)
    xs, mx, q, margin, top = _inputs(model)
    off = np.random.default_rng(seed).normal(size=(n, n)) * scale
    T = coupled_thresholds(model, FlopCounter(), direct_offset=off)
    cov = _covered(T, mx, q, top)
    assert not (cov & ~(margin > off[q, mx] - 1e-9)).any()
    # with a max offset b[m, o] too: every output's margin exceeds c[q, m] + b[m, o]
    b = np.random.default_rng(seed + 1).normal(size=(n, n)) * scale
    Tb = coupled_thresholds(model, FlopCounter(), direct_offset=off, max_offset=b)
    lg = circuit_tables(model).logits(xs)
    np.fill_diagonal(b, 0.0)  # ignored by the check
    need = off[q, mx][:, None] + b[mx]  # [N, n_out]
    gap = lg[np.arange(len(xs)), mx][:, None] - lg
    gap[np.arange(len(xs)), mx] = np.inf
    assert not (_covered(Tb, mx, q, top) & ~(gap > need - 1e-9).all(axis=1)).any()
    # a uniform offset c shifts what is certified the same way as comparing margins with c
    T0 = coupled_thresholds(model, FlopCounter(), direct_offset=np.zeros((n, n)))
    assert (T0 >= T)[np.triu_indices(n)][off[np.triu_indices(n)] >= 0].all()


def test_split_with_options_covers_only_correct_inputs():
    """With subcubic-coupled's options (rivals one by one, the second pass) and for members of
    the subcubic family, on 2- and 4-head models (max-like split over heads, random, near-tied),
    every input the split thresholds cover is correct and prove's count is their number (the
    registry options; tests/test_proofs_soundness.py covers the defaults under hypothesis)."""
    variants = {v.name: v.settings for v in SUBCUBIC_VARIANTS}
    cases = [
        ("subcubic-coupled", {"exact_outputs": 2}),
        ("subcubic-coupled", {"exact_outputs": 1, "refine_outputs": 3, "refine_top": 3}),
        ("subcubic-split", {}),
        ("direct-quadratic", {}),
    ]
    for seed in range(6):
        heads, n, k = (2, 4)[seed % 2], 5 + seed % 3, 3 + seed % 2
        model = (
            _split_heads(max_like_model(n, k, seed, 0.05 * seed), heads, seed)
            if seed % 3
            else random_model(n=n, k=k, d_model=8, d_head=4, heads=heads, seed=seed)
        )
        if seed % 2:
            model = adversarial(model, seed)
        xs, mx, q, margin, top = _inputs(model)
        for name, options in cases:
            c = FlopCounter()
            if name == "subcubic-coupled":
                T = split_thresholds(model, _coupled(c, **options), c)
            else:
                s = variants[name]
                T = split_thresholds(
                    model, lambda v, o, b, s=s, c=c: subcubic_thresholds(v, c, direct_offset=o, max_offset=b, **s), c
                )
            cov = _covered(T, mx, q, top)
            assert not (cov & ~(margin > 0)).any(), (seed, name, xs[cov & ~(margin > 0)][:3])
            assert prove(model, name, **options).certified == int(cov.sum()) == count_certified(T, k, "uniform")


def test_final_offsets_sum_to_zero_and_the_search_is_not_counted():
    """The offsets of the counted (last H) calls sum to exactly 0 per pair (direct offsets) and
    per (m, o) (max offsets); the verification's FLOPs are those H calls' and the sums' only."""
    model = _split_heads(max_like_model(6, 3, 4, 0.05), 4, 4)
    seen: list[np.ndarray] = []
    seen_b: list[np.ndarray] = []
    per_call: list[float] = []
    counter = FlopCounter()

    def th(view, off, b):
        before = counter.total
        seen.append(off)
        seen_b.append(b)
        T = coupled_thresholds(view, counter, direct_offset=off, max_offset=b)
        per_call.append(counter.total - before)
        return T

    split_thresholds(model, th, counter)
    assert len(seen) > 4
    last = seen[-4:]
    for i, j in zip(*np.triu_indices(6), strict=True):
        assert sum(Fraction(float(o[i, j])) for o in last) == 0
    for i in range(6):
        for j in range(6):
            assert sum(Fraction(float(o[i, j])) for o in seen_b[-4:]) == 0
    assert counter.total == sum(per_call[-4:]) + 2 * 2 * 4 * 6 * 6  # and the offsets' sums


def test_trained_multi_head_models_split_beats_views():
    """On small trained 2- and 4-head models the split is sound and certifies at least what the
    views' minimum does (the search starts from the equal split)."""
    for heads in (2, 4):
        cfg = ModelConfig(d_vocab=8, n_ctx=3, d_model=16, d_head=8, n_heads=heads)
        model = trained_model(cfg, seed=0, steps=400)
        xs, mx, q, margin, top = _inputs(model)
        T = split_thresholds(model, _coupled(FlopCounter()), FlopCounter())
        cov = _covered(T, mx, q, top)
        assert not (cov & ~(margin > 0)).any()
        views = per_head_thresholds(model, lambda v: coupled_thresholds(v, FlopCounter()))
        assert cov.sum() >= _covered(views, mx, q, top).sum()
        assert prove(model, "subcubic-coupled").certified == int(cov.sum())
