"""Soundness of every registered proof strategy: bound <= exact accuracy on random, max-like
(hand-built), trained, noised and adversarially perturbed small models, both distributions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from flint import arb, ctx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.distributions import DISTINCT, DISTRIBUTIONS, UNIFORM, get_distribution
from maxk.errors import MaxkError
from maxk.exact import all_sequences, evaluate
from maxk.flops import FlopCounter
from maxk.model import MaxKTransformer
from maxk.proofs.brute import brute_certified
from maxk.proofs.cubic import certified_sets, cubic_certified
from maxk.proofs.enclose import enclosed_tables
from maxk.proofs.registry import STRATEGIES, prove, prove_all
from maxk.registry import Refused

from .helpers import arb_tables, max_like_model, random_model

ctx.prec = 300


def _margins(model) -> tuple[np.ndarray, np.ndarray]:
    """All inputs [n^k, k] and their float64 logit margins (max logit minus best other)."""
    tab = circuit_tables(model)
    xs = all_sequences(model.cfg.n, model.cfg.k)
    lg = tab.logits(xs)
    rows, mx = np.arange(len(xs)), xs.max(axis=1)
    lm = lg[rows, mx].copy()
    lg[rows, mx] = -np.inf
    return xs, lm - lg.max(axis=1)


# hypothesis draws for ``drawn_model`` (with a noise level of the test's choosing)
DRAWN = dict(n=st.integers(3, 9), k=st.integers(2, 4), seed=st.integers(0, 10**6), adv=st.integers(-1, 1))


def drawn_model(n: int, k: int, seed: int, noise: float, adv: int) -> MaxKTransformer:
    """The soundness tests' model: max-like (noised) for most seeds, random for a third, then
    made adversarial (``adversarial(model, adv)``) when adv >= 0."""
    model = max_like_model(n, k, seed, noise) if seed % 3 else random_model(n=n, k=k, seed=seed, d_model=6, d_head=3)
    return adversarial(model, adv) if adv >= 0 else model


def adversarial(model, which: int = 0) -> MaxKTransformer:
    """Perturb b_U so that the input with the ``which``-th smallest positive margin is (nearly)
    tied with its runner-up: its margin drops to float32 rounding of the old margin, either sign."""
    xs, marg = _margins(model)
    pos = np.nonzero(marg > 0)[0]
    if len(pos) == 0:
        return model
    i = pos[np.argsort(marg[pos])[min(which, len(pos) - 1)]]
    lg = circuit_tables(model).logits(xs[i : i + 1])[0]
    m = xs[i].max()
    lg[m] = -np.inf
    o = int(lg.argmax())
    with torch.no_grad():
        model.unembed.b_U[o] += float(marg[i])
    return model


def _check_all(model, dists=(UNIFORM, DISTINCT)) -> None:
    """Every registered strategy's bound <= the exact accuracy. A strategy may refuse a model
    only as it declared (``Method.refuses``): in advance, or while running with ``Refused``."""
    n, k = model.cfg.n, model.cfg.k
    for dist in dists:
        if not dist.allows_repeats and k > n:
            continue
        ev = evaluate(model, dist)
        for name, method in STRATEGIES.items():
            if method.refusal(model.cfg, dist) is not None:
                with pytest.raises(MaxkError):
                    prove(model, name, dist)
                continue
            try:
                r = prove(model, name, dist)
            except Refused as e:
                assert e.refusal in method.refuses, (name, e)
                continue
            assert r.certified <= ev.correct, (name, dist, r.certified, ev.correct)
            assert r.bound <= ev.accuracy
            assert r.flops > 0 and r.n_sequences == ev.n_sequences


model_params = dict(
    n=st.integers(2, 12),
    k=st.integers(1, 4),
    seed=st.integers(0, 10**6),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**model_params, scale=st.sampled_from([0.05, 0.5, 2.0]), biases=st.booleans(), heads=st.integers(1, 2))
def test_random_models_all_strategies_sound(n, k, seed, scale, biases, heads):
    if n**k > 6000:
        k = max(1, int(math.log(6000) / math.log(n)))
    _check_all(random_model(n=n, k=k, d_model=6, d_head=3, heads=heads, seed=seed, scale=scale, biases=biases))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**model_params, noise=st.sampled_from([0.0, 0.01, 0.05, 0.2]), adv=st.integers(-1, 3))
def test_max_like_noised_and_adversarial_models_sound(n, k, seed, noise, adv):
    if n**k > 6000:
        k = max(1, int(math.log(6000) / math.log(n)))
    model = max_like_model(n, k, seed, noise)
    if adv >= 0:
        model = adversarial(model, adv)
    _check_all(model)


@pytest.mark.parametrize("dist", [UNIFORM, DISTINCT], ids=lambda d: d.name)
@pytest.mark.parametrize("n,k", [(10, 4), (12, 3)])
def test_every_strategy_certifies_a_clean_max_like_model(dist, n, k):
    """Not vacuous, for every registered strategy: on a clean max-like model each must certify
    at least half of the inputs (a strategy that certifies nothing fails here)."""
    model = max_like_model(n, k, 0, 0.0)
    ev = evaluate(model, dist)
    assert ev.accuracy == 1.0
    for name, method in STRATEGIES.items():
        assert method.refusal(model.cfg, dist) is None, name
        r = prove(model, name, dist)
        assert r.bound >= 0.5, (name, r.bound)


def test_max_like_model_is_proved_well():
    """Not vacuous: on a clean max-like model the cubic bound is close to the truth."""
    model = max_like_model(10, 4, 0, 0.0)
    ev = evaluate(model)
    assert ev.accuracy > 0.9
    assert prove(model, "cubic").bound >= 0.9 * ev.accuracy
    assert prove(model, "brute").certified == ev.correct


def assert_certificates_cover_only_correct(model, tab, dist: str, certs, count: int) -> None:
    """Every input of ``dist`` that the per-max-token certificates ``certs`` (indexable by m,
    each counted already) cover is correct (exact float64 margin > 0), and ``count`` is their
    number."""
    n, k = tab.n, tab.k
    xs = all_sequences(n, k)
    if dist == "distinct":
        xs = xs[np.array([len(set(x)) == k for x in xs], dtype=bool)]
    covered = np.array([certs[int(x.max())].covers(x) for x in xs], dtype=bool)
    _, marg_all = _margins(model)
    index = {tuple(x): i for i, x in enumerate(all_sequences(n, k))}
    marg = marg_all[[index[tuple(x)] for x in xs]]
    assert np.all(marg[covered] > 0)
    assert count == int(covered.sum())


def assert_covers_only_correct(model, tab, dist: str, sets=certified_sets, **options) -> int:
    """Every input the cubic proof's certificates (``sets(tab, m, dist, counter, **options)`` per
    max token) cover is correct and the count is their number; returns the count."""
    certs = [sets(tab, m, dist, FlopCounter(), **options) for m in range(tab.n)]
    count = sum(cert.count() for cert in certs)
    assert_certificates_cover_only_correct(model, tab, dist, certs, count)
    return count


@settings(max_examples=40, deadline=None)
@given(
    **model_params,
    noise=st.sampled_from([0.0, 0.02, 0.1, 0.5]),
    adv=st.integers(-1, 2),
    dist=st.sampled_from(["uniform", "distinct"]),
)
def test_cubic_certifies_only_correct_inputs(n, k, seed, noise, adv, dist):
    """Stronger than counting: each input inside the cubic proof's certified sets is correct,
    and the count it reports is exactly the number of such inputs."""
    n, k = min(n, 8), min(k, 4)
    if dist == "distinct" and k > n:
        return
    model = drawn_model(n, k, seed, noise, adv)
    tab = enclosed_tables(model)
    assert cubic_certified(tab, dist) == assert_covers_only_correct(model, tab, dist)


def _mixture_counts_by_enumeration(dist: str, bucket: np.ndarray, K: int, m: int) -> dict[tuple[int, int], int]:
    """{(q, cc): the ordered cc-tuples of non-max tokens whose buckets sum below K}, by
    enumeration, for the groups ``count_bucketed`` fills (uniform: every (q, cc); distinct:
    cc = k-2 for q < m without the query token, cc = k-1 for q = m)."""
    nq, f, _ = bucket.shape
    out = {}
    for q in range(nq):
        if dist == "distinct":
            cc = f - 1 if q < m else f
            toks = [t for t in range(m) if t != q]
            if cc >= 1:
                subs = itertools.combinations(toks, cc)
                sets = sum(1 for sub in subs if sum(bucket[q, cc - 1, t] for t in sub) < K)
                out[q, cc] = math.factorial(cc) * sets  # ordered tuples
            continue
        toks = [t for t in range(m) if dist == "uniform" or t != q]
        for cc in range(1, f + 1):
            tuples = itertools.product(toks, repeat=cc)
            out[q, cc] = sum(1 for tup in tuples if sum(bucket[q, cc - 1, t] for t in tup) < K)
    return out


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), nq=st.integers(1, 4), m=st.integers(1, 7), f=st.integers(1, 4))
def test_mixture_counts_match_enumeration(seed, nq, m, f):
    """The exact tuple counts of the mixture certificate against plain enumeration."""
    from maxk.proofs.cubic import MIX_BUCKETS as K

    rng = np.random.default_rng(seed)
    bucket = rng.choice([0, 1, 2, 5, 11, K - 1, K], size=(nq, f, m))
    got = UNIFORM.count_bucketed(bucket, K, m, f + 1, FlopCounter())
    for (q, cc), want in _mixture_counts_by_enumeration("uniform", bucket, K, m).items():
        assert got[q, cc - 1] == want
    bucket = rng.choice([0, 1, 3, 9, K - 2, K], size=(m + 1, f, m))  # distinct: one row per query q <= m
    got = DISTINCT.count_bucketed(bucket, K, m, f + 1, FlopCounter())
    for (q, cc), want in _mixture_counts_by_enumeration("distinct", bucket, K, m).items():
        assert got[q, cc - 1] == want


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), m=st.integers(2, 6), f=st.integers(2, 4), dist=st.sampled_from(DISTRIBUTIONS))
def test_mixture_count_memo_gives_the_same_counts(seed, m, f, dist):
    """A memo kept over calls (one proof's) changes the work, never the counts (against
    enumeration): buckets counted again, rows whose tokens are permuted (the same histograms)
    and one histogram at every group size, with uniform's counts of the same buckets in the memo."""
    from maxk.proofs.cubic import MIX_BUCKETS as K

    d = get_distribution(dist)
    rng = np.random.default_rng(seed)
    nq = m + 1
    bucket = rng.choice([0, 1, 3, 9, 17, K - 2, K], size=(nq, f, m))
    shuffled = bucket.copy()
    shuffled[m] = bucket[m][:, rng.permutation(m)]  # q = m: no token is the query's
    same = np.repeat(bucket[:, :1], f, axis=1)  # one histogram for every group size
    memo: dict = {}
    UNIFORM.count_bucketed(bucket, K, m, f + 1, FlopCounter(), memo)  # another law's counts in the same memo
    for b in (bucket, shuffled, same, bucket):
        fresh, kept = FlopCounter(), FlopCounter()
        got = d.count_bucketed(b, K, m, f + 1, kept, memo)
        d.count_bucketed(b, K, m, f + 1, fresh)
        for (q, cc), want in _mixture_counts_by_enumeration(d.name, b, K, m).items():
            assert got[q, cc - 1] == want
        assert kept.total <= fresh.total
    again = FlopCounter()
    d.count_bucketed(bucket, K, m, f + 1, again, memo)
    assert again.by_label.get("count DP", 0) <= 3 * bucket.size  # every hard row looked up


def _arb_correct(model) -> int:
    """Number of correct inputs (uniform) decided in arb from the exact tables."""
    t = arb_tables(model)
    n, k = model.cfg.n, model.cfg.k
    eqke, eqkp, evou, pvou, eupu = t["eqke"][0], t["eqkp"][0], t["evou"][0], t["pvou"][0], t["eupu"][0]
    correct = 0
    for x in itertools.product(range(n), repeat=k):
        q, m = x[-1], max(x)
        w = [(eqke[q, x[i]] + eqkp[q, i]).exp() for i in range(k)]
        z = sum(w, arb(0))
        logit = [
            eupu[q, o] + sum((w[i] * (evou[x[i], o] + pvou[i, o]) for i in range(k)), arb(0)) / z for o in range(n)
        ]
        diffs = [logit[m] - logit[o] for o in range(n) if o != m]
        if all(bool(d > 0) for d in diffs):
            correct += 1
        else:
            assert all(bool(d > 0) or bool(d <= 0) for d in diffs), "arb could not decide"
    return correct


@pytest.mark.parametrize("seed", [0, 1])
def test_brute_matches_arb_exact_count(seed):
    model = max_like_model(5, 3, seed, 0.3) if seed else random_model(n=5, k=3, seed=7, d_model=6, d_head=3)
    ties = adversarial(model, 0)
    for m in (model, ties):
        assert brute_certified(m, "uniform") == _arb_correct(m)


def test_exact_ties_are_never_certified():
    """Two identical unembedding columns: inputs whose max is either of them are wrong (equal
    logits), and no strategy may certify them."""
    model = max_like_model(8, 3, 0, 0.0)
    with torch.no_grad():
        model.unembed.W_U[:, 6] = model.unembed.W_U[:, 7]
        model.unembed.b_U[6] = model.unembed.b_U[7]
    ev = evaluate(model)
    assert ev.accuracy < 1.0
    _check_all(model)
    assert brute_certified(model) == ev.correct


def test_brute_equals_exact_on_random_models():
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n, k = int(rng.integers(2, 9)), int(rng.integers(1, 5))
        model = random_model(n=n, k=k, d_model=6, d_head=3, seed=seed, scale=2.0)  # huge scores: underflow paths
        for dist in ("uniform", "distinct"):
            if dist == "distinct" and k > n:
                continue
            assert brute_certified(model, dist) == evaluate(model, dist).correct


@pytest.fixture(scope="session")
def trained_small():
    from maxk.train import trained_model

    return trained_model(ModelConfig(d_vocab=8, n_ctx=3, d_model=16, d_head=16), seed=0, steps=300)


@pytest.mark.slow
def test_trained_and_noised_trained_models_sound(trained_small):
    _check_all(trained_small)
    ev = evaluate(trained_small)
    assert prove(trained_small, "cubic").bound >= 0.9 * ev.accuracy
    g = torch.Generator().manual_seed(1)
    for noise in (0.01, 0.1):
        noised = MaxKTransformer(trained_small.cfg)
        noised.load_state_dict(trained_small.state_dict())
        with torch.no_grad():
            for p in noised.parameters():
                p.add_(torch.randn(p.shape, generator=g) * noise)
        _check_all(adversarial(noised, 0))


THRESHOLD_STRATEGIES = ("subcubic", "subcubic-svd", "subcubic-meandiff", "subcubic-split", "subcubic-coupled")


def test_head_views_add_up_to_the_model():
    """The one-head views (W_O times H) average to the model's logits on every input."""
    from maxk.proofs.per_head import head_views

    for heads in (2, 4):
        model = random_model(n=6, k=3, d_model=8, d_head=4, heads=heads, seed=heads)
        xs = all_sequences(6, 3)
        views = [circuit_tables(v).logits(xs) for v in head_views(model)]
        assert np.allclose(sum(views) / heads, circuit_tables(model).logits(xs), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 9),
    k=st.integers(2, 4),
    heads=st.sampled_from([2, 4]),
    seed=st.integers(0, 10**6),
    noise=st.sampled_from([0.0, 0.05, 0.3]),
    adv=st.booleans(),
)
def test_per_head_threshold_proofs_cover_only_correct_inputs(n, k, heads, seed, noise, adv):
    """Several heads: every input the split thresholds (the heads' views with the margin split
    between them, maxk.proofs.head_split) cover is correct, for every threshold strategy, on
    max-like models split over heads (and random ones), adversarially near-tied or not; prove's
    count is exactly that set's size."""
    from maxk.proofs.head_split import split_thresholds
    from maxk.proofs.subcubic import SUBCUBIC_VARIANTS, subcubic_thresholds
    from maxk.proofs.subcubic_coupled import coupled_thresholds

    if n**k > 6000:
        k = max(2, int(math.log(6000) / math.log(n)))
    model = (
        _split_heads(max_like_model(n, k, seed, noise), heads, seed)
        if seed % 3
        else random_model(n=n, k=k, d_model=8, d_head=4, heads=heads, seed=seed)
    )
    if adv:
        model = adversarial(model, 0)
    xs = all_sequences(n, k)
    lg = circuit_tables(model).logits(xs)
    mx, q = xs.max(1), xs[:, -1]
    rows = np.arange(len(xs))
    right = lg[rows, mx].copy()
    lg[rows, mx] = -np.inf
    correct = right > lg.max(1)
    # the largest non-max token at a free position (-1: every free position holds the max)
    nonmax_top = np.where(xs[:, :-1] == mx[:, None], -1, xs[:, :-1]).max(1)
    variants = {v.name: v.settings for v in SUBCUBIC_VARIANTS}
    for name in THRESHOLD_STRATEGIES:
        c = FlopCounter()  # the margin split between the heads (maxk.proofs.head_split)
        if name == "subcubic-coupled":
            T = split_thresholds(model, lambda v, o, b, c=c: coupled_thresholds(v, c, direct_offset=o, max_offset=b), c)
        else:
            T = split_thresholds(
                model,
                lambda v, o, b, c=c, s=variants[name]: subcubic_thresholds(v, c, direct_offset=o, max_offset=b, **s),
                c,
            )
        covered = (T[q, mx] >= -1) & (nonmax_top <= T[q, mx])
        assert not (covered & ~correct).any(), (name, xs[covered & ~correct][:3])
        assert prove(model, name).certified == int(covered.sum()), name


def test_three_heads_are_refused_clearly():
    """Per-head threshold proofs need W_O·H exact: a 3-head model is a declared refusal."""
    model = random_model(n=5, k=3, d_model=6, d_head=2, heads=3)
    with pytest.raises(MaxkError, match="power-of-two"):
        prove(model, "subcubic")
    names = [r.method for r in prove_all(model)]  # skips what it cannot do
    assert "brute" in names and "cubic" in names and "subcubic" not in names and "hybrid" not in names


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(3, 8),
    k=st.integers(2, 4),
    heads=st.integers(2, 4),
    seed=st.integers(0, 10**6),
    noise=st.sampled_from([0.0, 0.05, 0.3]),
    dist=st.sampled_from(["uniform", "distinct"]),
)
def test_multi_head_cubic_certifies_only_correct_inputs(n, k, heads, seed, noise, dist):
    """Several heads: each input the combined certificates cover is correct, the count is their
    number, on max-like models whose copies are split over heads (and random models)."""
    if dist == "distinct" and k > n:
        return
    model = (
        _split_heads(max_like_model(n, k, seed, noise), heads, seed)
        if seed % 3
        else random_model(n=n, k=k, d_model=6, d_head=3, heads=heads, seed=seed)
    )
    from maxk.proofs.cubic import multi_head_sets

    tab = enclosed_tables(model)
    assert assert_covers_only_correct(model, tab, dist, multi_head_sets) == cubic_certified(tab, dist)


def _split_heads(model, heads: int, seed: int) -> MaxKTransformer:
    """The single-head max-like model as ``heads`` heads that each hold a copy of its attention
    and a random share of its OV circuit (same function), plus a little noise per head."""
    from maxk.config import ModelConfig

    cfg = model.cfg
    new = MaxKTransformer(ModelConfig(**{**cfg.__dict__, "n_heads": heads}))
    g = torch.Generator().manual_seed(seed)
    share = torch.rand(heads, generator=g) + 0.2
    share = share / share.sum()
    with torch.no_grad():
        for name, p in new.named_parameters():
            src = dict(model.named_parameters())[name]
            if name.endswith(("W_Q", "W_K", "b_Q", "b_K", "W_V", "b_V")):
                p.copy_(src.expand_as(p) + 0.01 * torch.randn(p.shape, generator=g))
            elif name.endswith("W_O"):
                p.copy_(src.expand_as(p) * share[:, None, None])
            else:
                p.copy_(src)
    return new


def test_trained_two_and_four_head_models_are_proved():
    """Trained multi-head models: the cubic bound is sound and not vacuous."""
    from maxk.train import trained_model

    for heads in (2, 4):
        cfg = ModelConfig(d_vocab=8, n_ctx=3, d_model=16, d_head=8, n_heads=heads)
        model = trained_model(cfg, seed=0, steps=400)
        ev = evaluate(model)
        r = prove(model, "cubic")
        assert r.certified <= ev.correct
        assert r.bound >= 0.5 * ev.accuracy, (heads, r.bound, ev.accuracy)


@pytest.mark.parametrize("heads", [1, 2, 3])
def test_brute_per_input_path_equals_exact(heads):
    """The multi-head path (also valid for one head) against exact evaluation, including
    adversarial near-ties and huge scores."""
    from maxk.proofs.brute import _certify_heads

    for seed in range(4):
        model = random_model(n=6, k=3, d_model=6, d_head=3, heads=heads, seed=seed, scale=[0.1, 2.0][seed % 2])
        if seed == 2:
            model = adversarial(model, 0)
        tab = enclosed_tables(model)
        xs = all_sequences(6, 3)
        got = sum(int(_certify_heads(tab, q, xs[xs[:, -1] == q][:, :-1], FlopCounter()).sum()) for q in range(6))
        ev = evaluate(model)
        assert got == ev.correct
        assert brute_certified(model) == ev.correct


def test_prove_rejects_unknown_strategy_and_distribution():
    model = random_model(n=5, k=3)
    with pytest.raises(MaxkError, match="unknown proof strategy"):
        prove(model, "nope")
    with pytest.raises(MaxkError, match="distribution"):
        prove(model, "cubic", "gaussian")
    with pytest.raises(MaxkError, match="k <= n"):
        prove(random_model(n=3, k=4), "cubic", "distinct")
    with pytest.raises(MaxkError, match="k <= n"):
        prove_all(random_model(n=3, k=4), "distinct")


def test_flops_are_counted_and_grow_with_n():
    small = prove(max_like_model(6, 3, 0, 0.01), "cubic")
    big = prove(max_like_model(12, 3, 0, 0.01), "cubic")
    assert 0 < small.flops < big.flops
    assert prove(max_like_model(12, 3, 0, 0.01), "brute").flops > big.flops


def test_bound_is_rounded_down():
    from fractions import Fraction

    from maxk.proofs.registry import fraction_down

    for num, den in [(1, 3), (2, 3), (16772839, 16777216), (10**18 - 1, 10**18), (0, 5), (7, 7)]:
        x = fraction_down(num, den)
        assert Fraction(x) <= Fraction(num, den)
        assert Fraction(math.nextafter(x, 2.0)) > Fraction(num, den)
