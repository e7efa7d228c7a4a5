"""The subcubic proof family: error-term bounds against python-flint ``arb`` (an independent
high-precision reference), the gap counting, and soundness (every certified input is correct,
every bound <= exact accuracy) on random, noised and trained small models."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from flint import arb, arb_mat, ctx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.distributions import UNIFORM, get_distribution
from maxk.errors import MaxkError
from maxk.exact import evaluate
from maxk.flops import FlopCounter
from maxk.proofs import lowrank as L
from maxk.proofs import subcubic as S
from maxk.proofs.enclose import Interval, point

from .helpers import random_model

ctx.prec = 300


def _mat(a: np.ndarray) -> arb_mat:
    return arb_mat([[arb(float(v)) for v in row] for row in np.atleast_2d(a)])


def _le(x: arb, y) -> bool:
    """x <= y certainly."""
    return bool(x <= arb(float(y)) if not isinstance(y, arb) else x <= y)


def _exact_qk(model) -> tuple[arb_mat, arb_mat, arb]:
    w = {k: v.detach().to(torch.float64).numpy() for k, v in model.named_parameters()}
    n, k = model.cfg.n, model.cfg.k
    E = _mat(w["embed.W_E"])
    resq = E + arb_mat([[1] for _ in range(n)]) * _mat(w["pos_embed.W_pos"][k - 1 : k])
    qt = resq * _mat(w["blocks.0.attn.W_Q"][0]) + arb_mat([[1] for _ in range(n)]) * _mat(
        w["blocks.0.attn.b_Q"][0][None]
    )
    kt = E * _mat(w["blocks.0.attn.W_K"][0])
    return qt, kt, arb(1) / arb(model.cfg.d_head).sqrt()


def _check_rows_up_to_constant(enc: Interval, exact: arb_mat, constant_per_row: bool) -> None:
    """enc encloses exact (or exact minus a per-row constant): checked on every entry, or on
    every within-row difference."""
    n, m = enc.lo.shape
    for q in range(n):
        for t in range(m):
            if not constant_per_row:
                assert _le(arb(float(enc.lo[q, t])), exact[q, t]) and _le(exact[q, t], enc.hi[q, t]), (q, t)
            else:
                for u in range(m):
                    d = exact[q, t] - exact[q, u]
                    assert _le(d, arb(float(enc.hi[q, t])) - arb(float(enc.lo[q, u]))), (q, t, u)


MODELS = [
    dict(n=6, k=3, d_model=8, d_head=4, seed=1, scale=0.5),
    dict(n=8, k=4, d_model=6, d_head=9, seed=2, scale=2.0),  # d_head > n: rank-deficient sides
    dict(n=5, k=2, d_model=4, d_head=3, seed=3, scale=5.0),  # large weights
]


@pytest.mark.parametrize("kw", MODELS)
@pytest.mark.parametrize("form", ["svd0", "svd1", "svd2", "meandiff", "keydir"])
def test_eqke_error_bounds_enclose_exact(kw, form):
    model = random_model(**kw)
    c = FlopCounter()
    pieces = L.qk_pieces(model, c)
    if form.startswith("svd"):
        enc = L.eqke_svd(pieces, int(form[3:]), c)
    else:
        enc = L.eqke_meandiff(pieces, c, key_direction=(form == "keydir"))
    assert c.total > 0
    qt, kt, s = _exact_qk(model)
    exact = (qt * kt.transpose()) * s
    _check_rows_up_to_constant(enc, exact, constant_per_row=not form.startswith("svd"))


def _adversarial(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n, dh = 7, 5
    if kind == "cancel":  # huge entries that cancel in the product
        a = rng.standard_normal((n, dh))
        a[:, 0], a[:, 1] = 1e12, -1e12
        b = rng.standard_normal((n, dh))
        b[:, 1] = b[:, 0]
        return a, b
    if kind == "rank1":  # exactly rank one: the SVD tail is zero up to rounding
        return np.outer(rng.standard_normal(n), rng.standard_normal(dh)), np.outer(
            rng.standard_normal(n), rng.standard_normal(dh)
        )
    if kind == "zero":
        return np.zeros((n, dh)), rng.standard_normal((n, dh))
    if kind == "wide":  # n < dh: rank deficient
        return rng.standard_normal((4, 9)) * 1e3, rng.standard_normal((4, 9)) * 1e-3
    if kind == "tiny":  # subnormal range
        return rng.standard_normal((n, dh)) * 1e-160, rng.standard_normal((n, dh)) * 1e-160
    if kind == "rows_equal":  # mean rows explain everything
        r = rng.standard_normal(dh)
        return np.tile(r, (n, 1)), rng.standard_normal((n, dh)) * 10
    return rng.standard_normal((n, dh)) * 10.0 ** rng.integers(-3, 4, size=(n, dh)), rng.standard_normal((n, dh))


@pytest.mark.parametrize("kind", ["cancel", "rank1", "zero", "wide", "tiny", "rows_equal", "scales"])
def test_eqke_error_bounds_adversarial(kind):
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    a, b = _adversarial(kind, rng)
    for width in (0.0, 1e-9):
        qt = Interval(a - width * np.abs(a), a + width * np.abs(a)) if width else point(a)
        pieces = L.QKPieces(qt, point(b), Interval(np.array(0.5), np.array(0.5)))
        exact = (_mat(a) * _mat(b).transpose()) * arb(0.5)
        c = FlopCounter()
        for r in (0, 1, 2):
            _check_rows_up_to_constant(L.eqke_svd(pieces, r, c), exact, False)
        for kd in (False, True):
            _check_rows_up_to_constant(L.eqke_meandiff(pieces, c, key_direction=kd), exact, True)


@pytest.mark.parametrize("seed", range(4))
def test_matmul_cs_and_norms_enclose(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((5, 6)) * 10.0 ** rng.integers(-8, 8, size=(5, 6))
    b = rng.standard_normal((6, 4)) * 10.0 ** rng.integers(-8, 8, size=(6, 4))
    a[0] = [1e17, 1.0, -1e17, 3.0, 0.0, 1e-300]  # catastrophic cancellation
    ai = Interval(a - np.abs(a) * 1e-12, a + np.abs(a) * 1e-12) if seed % 2 else point(a)
    out = L.matmul_cs(ai, point(b), FlopCounter())
    exact = _mat(a) * _mat(b)
    for i in range(5):
        for j in range(4):
            assert _le(arb(float(out.lo[i, j])), exact[i, j]) and _le(exact[i, j], out.hi[i, j])
    norms = L.row_norms_up(point(a), FlopCounter())
    for i in range(5):
        ss = sum((arb(float(x)) ** 2 for x in a[i]), arb(0))
        assert _le(ss, arb(float(norms[i])) ** 2)


def test_margin_and_direct_quadratic_bounds():
    rng = np.random.default_rng(7)
    n, d = 7, 5
    resq = rng.standard_normal((n, d))
    resq[3] *= 100.0  # one query far from the mean
    WU = rng.standard_normal((d, n))
    cv = rng.standard_normal((1, n))
    D = S.direct_quadratic_up(point(resq), point(WU), point(cv), FlopCounter())
    eupu = _mat(resq) * _mat(WU) + arb_mat([[1] for _ in range(n)]) * _mat(cv)
    M = S.margin_up(point(resq @ WU), FlopCounter())
    ex = _mat(resq @ WU)
    for q in range(n):
        for m in range(n):
            for o in range(n):
                if o != m:
                    assert _le(eupu[q, o] - eupu[q, m], D[q, m]), (q, m, o)
                    assert _le(ex[q, o] - ex[q, m], M[q, m]), (q, m, o)
    SM, empty = S.side_margins_up(point(resq @ WU), FlopCounter())
    assert empty[0, 0] and empty[1, n - 1] and empty.sum() == 2
    for q in range(n):
        for m in range(n):
            for o in range(n):
                if o != m:
                    assert _le(ex[q, o] - ex[q, m], SM[0 if o < m else 1, q, m]), (q, m, o)
    # the margin is exact up to one rounding: attained by some o
    for q in range(n):
        for m in range(n):
            best = max(float(resq[q] @ WU[:, o]) for o in range(n) if o != m)
            assert M[q, m] - (best - float((resq @ WU)[q, m])) < 1e-12 * (1 + abs(M[q, m]))


# ---------------------------------------------------------------- counting and soundness


def _covered(T: np.ndarray, n: int, k: int, dist: str):
    """Every input of ``dist`` that the thresholds T claim, by enumeration."""
    for x in itertools.product(range(n), repeat=k):
        if dist == "distinct" and len(set(x)) < k:
            continue
        m, q = max(x), x[-1]
        t = T[q, m]
        if t < -1:
            continue
        free = x[:-1]
        if q < m and m not in free:
            continue
        if all(v == m or v <= t for v in free):
            yield x


def _check_sound(model, dist: str) -> None:
    tab = circuit_tables(model)
    exact = evaluate(tab, dist)
    for v in S.SUBCUBIC_VARIANTS:
        name, c = v.name, FlopCounter()
        cert = v.run(model, get_distribution(dist), counter=c)
        assert 0 <= cert <= exact.correct, (name, dist, cert, exact.correct)
        assert c.total > 0
    # the claimed set itself: every covered input is correct, and the count formula is exact
    kw = dict(attention="keydir", direct="full")
    c = FlopCounter()
    pieces = L.qk_pieces(model, c)
    eqke = L.eqke_meandiff(pieces, c)
    for split in (False, True):
        W, D, Pv, empty, eqkp = S.ov_pieces(model, pieces.qt, pieces.s, c, split=split)
        T = S.certify_gaps(S.SubcubicPieces(eqke, eqkp, W, D, Pv, empty), c)
        assert covered_are_correct(tab, T, dist) == S.subcubic_certified(model, dist, split=split, **kw)


def covered_are_correct(tab, T: np.ndarray, dist: str) -> int:
    """Every input the thresholds T [n_q, n_max] claim is correct (by the float64 tables
    ``tab``), and ``count_certified`` counts exactly them; returns their number."""
    n, k = tab.n, tab.k
    xs = np.array(list(_covered(T, n, k, dist)), dtype=np.int64).reshape(-1, k)
    assert len(xs) == S.count_certified(T, k, dist)
    if len(xs):
        logits = tab.logits(xs)
        label = xs.max(axis=1)
        lm = logits[np.arange(len(xs)), label]
        logits[np.arange(len(xs)), label] = -np.inf
        assert np.all(logits.max(axis=1) < lm)
    return len(xs)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 9),
    k=st.integers(1, 4),
    d_head=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([0.3, 1.0, 4.0]),
    dist=st.sampled_from(["uniform", "distinct"]),
)
def test_sound_on_random_models(n, k, d_head, seed, scale, dist):
    if dist == "distinct" and k > n:
        dist = "uniform"
    _check_sound(random_model(n=n, k=k, d_model=6, d_head=d_head, seed=seed, scale=scale), dist)


def _attention_model(n: int, k: int, seed: int, noise: float) -> torch.nn.Module:
    """A hand-built model that computes max-of-k well (attention grows with the key token,
    the OV circuit copies), plus Gaussian noise: many inputs are certified, so soundness is
    tested where it matters."""
    d = 2 * n + 1  # token one-hot | copied token one-hot | constant
    model = random_model(n=n, k=k, d_model=d, d_head=d, seed=seed, scale=0.0, biases=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:, :n] = torch.eye(n)
        model.embed.W_E[:, 2 * n] = 1.0
        attn = model.blocks[0].attn
        attn.W_Q[0, 2 * n, 2 * n] = 1.0  # every query looks the same
        attn.W_K[0, :n, 2 * n] = torch.arange(n, dtype=torch.float32) * 3.0 * d**0.5  # score = 3·t
        attn.W_V[0, :n, n : 2 * n] = torch.eye(n)  # copy the token into the second block
        attn.W_O[0] = torch.eye(d)
        model.unembed.W_U[n : 2 * n, :] = torch.eye(n) * 10  # read only the copied token
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise)
    return model


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 10),
    k=st.integers(2, 4),
    seed=st.integers(0, 10**6),
    noise=st.sampled_from([0.0, 0.02, 0.1, 0.3]),
    dist=st.sampled_from(["uniform", "distinct"]),
)
def test_sound_on_noised_working_models(n, k, seed, noise, dist):
    if dist == "distinct" and k > n:
        dist = "uniform"
    model = _attention_model(n, k, seed, noise)
    _check_sound(model, dist)


def test_working_model_is_mostly_certified():
    """The bound is not vacuous where it should not be (a test that can fail the other way)."""
    model = _attention_model(10, 3, 0, 0.0)
    acc = evaluate(model, "uniform").accuracy
    cert = S.subcubic_certified(model, "uniform", FlopCounter())
    assert acc > 0.95
    assert cert / UNIFORM.n_sequences(10, 3) > 0.5


def trained_and_noised_small_models(seed: int = 0):
    """A small trained model (n = 12, k = 4, cached) and two noised copies of it."""
    from maxk.train import trained_model

    base = trained_model(ModelConfig(d_vocab=12, n_ctx=4, d_model=16, d_head=8), seed=0, steps=400)
    g = torch.Generator().manual_seed(seed)
    return [base, *(_noised(base, noise, g) for noise in (0.05, 0.2))]


@pytest.mark.slow
def test_sound_on_trained_and_noised_small_models():
    for model in trained_and_noised_small_models():
        for dist in ("uniform", "distinct"):
            _check_sound(model, dist)


def _noised(model, sigma: float, g: torch.Generator):
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * sigma * float(p.abs().mean() + 1e-3))
    return m


def test_counts_match_enumeration_for_every_threshold_table():
    rng = np.random.default_rng(0)
    for n, k in [(5, 3), (6, 4), (4, 2), (3, 1)]:
        for dist in ("uniform", "distinct"):
            T = np.full((n, n), -2)
            for q in range(n):
                for m in range(q, n):
                    T[q, m] = rng.integers(-2, m)
            assert S.count_certified(T, k, dist) == len(list(_covered(T, n, k, dist)))


def test_multi_head_thresholds_need_a_single_head_model():
    """The threshold functions take one head; several heads go through their views (per_head)."""
    model = random_model(n=5, k=3, d_model=8, d_head=4, heads=2)
    for v in S.SUBCUBIC_VARIANTS:
        with pytest.raises(MaxkError, match="single-head"):
            S.subcubic_thresholds(model, FlopCounter(), **v.settings)
        assert v.run(model, UNIFORM, counter=FlopCounter()) >= 0
