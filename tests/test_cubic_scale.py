"""The cubic proof's partial stage and its options: every (exact_outputs, exact_budget,
recheck_share) certifies only correct inputs, counts them exactly, more exact work never lowers
the bound, and the recheck pool keeps the rechecks' FLOPs within its share."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maxk.checkpoint import load
from maxk.distributions import UNIFORM
from maxk.errors import MaxkError
from maxk.flops import FlopCounter
from maxk.proofs import cubic, shard_processes
from maxk.proofs.cubic import RecheckPool, certified_sets, cubic_certified
from maxk.proofs.enclose import enclosed_tables
from maxk.proofs.registry import prove

from .helpers import max_like_model
from .test_proofs_soundness import (
    DRAWN,
    adversarial,
    assert_certificates_cover_only_correct,
    assert_covers_only_correct,
    drawn_model,
)


@settings(max_examples=25, deadline=None)
@given(
    **DRAWN,
    noise=st.sampled_from([0.0, 0.02, 0.1]),
    r=st.integers(1, 3),
    budget=st.sampled_from([None, 0.0, 0.5]),
    dist=st.sampled_from(["uniform", "distinct"]),
    per_position=st.sampled_from(["shared", "all"]),
)
def test_options_certify_only_correct_inputs(n, k, seed, noise, adv, r, budget, dist, per_position):
    if dist == "distinct" and k > n:
        return
    model = drawn_model(n, k, seed, noise, adv)
    tab = enclosed_tables(model)
    assert_covers_only_correct(model, tab, dist, exact_outputs=r, exact_budget=budget, per_position=per_position)


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_more_exact_work_never_lowers_the_bound(noise):
    model = max_like_model(12, 4, 1, noise)
    tab = enclosed_tables(model)
    full = cubic_certified(tab, exact_budget=-1)
    for r in (1, 2, 4):
        counts = [cubic_certified(tab, exact_outputs=r, exact_budget=b) for b in (0, 0.2, 1, -1)]
        assert counts == sorted(counts) and counts[-1] == full


@settings(max_examples=25, deadline=None)
@given(
    **DRAWN,
    noise=st.sampled_from([0.0, 0.05, 0.2]),
    share=st.sampled_from([0.0, 0.002, 0.02, 0.12]),
    dist=st.sampled_from(["uniform", "distinct"]),
)
def test_recheck_pools_certify_only_correct_inputs(n, k, seed, noise, adv, share, dist):
    """One pool shared by every max token (a fresh counter each, as the enumeration helper
    gives): every covered input is correct, the count is their number, and the rechecks spent
    at most share·core plus the dearest chunk."""
    if dist == "distinct" and k > n:
        return
    model = drawn_model(n, k, seed, noise, adv)
    pool = RecheckPool(share)
    assert_covers_only_correct(model, enclosed_tables(model), dist, pool=pool)
    assert pool.spent <= share * pool.core + pool.largest
    assert pool.core > 0


def test_recheck_share_zero_is_no_recheck():
    """beta = 0 allows no recheck: the count and FLOPs of exact_budget = 0 without a pool."""
    tab = enclosed_tables(load("default"))
    c0, c1 = FlopCounter(), FlopCounter()
    assert cubic_certified(tab, counter=c0, exact_budget=0, recheck_share=-1) == cubic_certified(
        tab, counter=c1, recheck_share=0
    )
    assert c0.total == c1.total


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_recheck_shares_lie_between_none_and_every_recheck(dist):
    """On the shipped model (rechecks worth ~0.6% of the FLOPs): any share certifies at least
    what no recheck does and at most what every recheck does, a small share binds and spends at
    most share·core plus its dearest chunk, and the default share certifies what every recheck
    does."""
    tab = enclosed_tables(load("default"))
    none_ = cubic_certified(tab, dist, recheck_share=0)
    every = cubic_certified(tab, dist, recheck_share=-1)
    assert none_ < every
    for share in (1e-4, 1e-3, cubic.RECHECK_SHARE):
        pool, c = RecheckPool(share), FlopCounter()
        pool.attach(c)
        count = sum(certified_sets(tab, m, dist, c, pool=pool).count(c) for m in range(tab.n))
        pool.settle(False)  # the last counts are core
        assert pool.spent + pool.core == c.total
        assert pool.spent <= share * pool.core + pool.largest
        assert none_ <= count <= every
        if share < 0.01:
            assert count < every and pool.spent > 0  # the pool binds
        else:
            assert count == every
    assert cubic_certified(tab, dist) == every


def test_query_blocks_give_the_same_count(monkeypatch):
    model = adversarial(max_like_model(10, 4, 2, 0.05), 0)
    want = cubic_certified(model)
    monkeypatch.setattr(cubic, "_BLOCK_FLOATS", 1)  # one query per block
    assert cubic_certified(model) == want


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_worst_arrangements_on_the_shared_rivals_keep_the_count_for_fewer_flops(dist):
    """G per free position only on the shared rivals, G0 at every other output (the default),
    against G on every output: the same counts on the shipped model (measured 16,772,275
    uniform and 15,247,026 distinct) for 2.55e7 FLOPs against 2.79e7 (uniform, tables included;
    2.91e7 against 3.38e7 before the ninth round cheapened both)."""
    tab = enclosed_tables(load("default"))
    counts, flops = {}, {}
    for p in ("shared", "all"):
        c = FlopCounter()
        counts[p], flops[p] = cubic_certified(tab, dist, c, per_position=p), c.total
    assert counts["shared"] == counts["all"]
    assert flops["shared"] < 0.95 * flops["all"]


@settings(max_examples=25, deadline=None)
@given(
    **DRAWN,
    noise=st.sampled_from([0.0, 0.05, 0.2]),
    share=st.sampled_from([0.0, 0.002, 0.02, 0.12]),
    shards=st.integers(1, 4),
    dist=st.sampled_from(["uniform", "distinct"]),
)
def test_shards_certify_only_correct_inputs(n, k, seed, noise, adv, share, shards, dist):
    """Each shard's max tokens in order with its own pool, memo and counter: every input their
    certificates cover is correct, and ``cubic_certified(shards=S)`` counts exactly those, with
    the FLOPs of the shards added."""
    if dist == "distinct" and k > n:
        return
    model = drawn_model(n, k, seed, noise, adv)
    tab = enclosed_tables(model)
    certs, total, flops = {}, 0, 0
    for s in range(shards):
        pool, memo, c = RecheckPool(share), {}, FlopCounter()
        pool.attach(c)
        for m in range(s, n, shards):
            certs[m] = certified_sets(tab, m, dist, c, pool=pool, memo=memo)
            total += certs[m].count(c)
        flops += c.total
    assert_certificates_cover_only_correct(model, tab, dist, certs, total)
    c = FlopCounter()
    assert cubic_certified(tab, dist, c, recheck_share=share, shards=shards) == total
    assert c.total == flops


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_threads_and_processes_do_not_change_the_sharded_proof(dist, monkeypatch):
    """The shards run in turn (one thread), on worker threads or in child processes (torch's
    thread count of them; here at any size): all three give the same count and the same FLOPs
    per label, also with more shards than workers; on the shipped model with a binding pool
    (beta = 1e-3) one shard and two both lie between no recheck and every recheck."""
    monkeypatch.setattr(cubic, "_THREADED_WORK", 0)
    tab = enclosed_tables(load("default"))
    none_ = cubic_certified(tab, dist, recheck_share=0)
    every = cubic_certified(tab, dist, recheck_share=-1)
    before = torch.get_num_threads()
    runs = {}
    try:
        for (threads, processes), shards in itertools.product(((1, False), (2, False), (2, True)), (1, 2, 3)):
            torch.set_num_threads(threads)
            monkeypatch.setattr(cubic, "_PROCESSES", processes)
            c = FlopCounter()
            got = cubic_certified(tab, dist, c, recheck_share=1e-3, shards=shards)
            runs[threads, processes, shards] = got, c.total, c.by_label
    finally:
        torch.set_num_threads(before)
    for shards in (1, 2, 3):
        assert runs[1, False, shards] == runs[2, False, shards] == runs[2, True, shards]
        assert none_ <= runs[1, False, shards][0] < every


def test_a_failing_shard_process_is_a_one_line_error():
    tab = enclosed_tables(load("default"))
    with pytest.raises(MaxkError, match=r"shard process failed: TypeError: .*bogus") as err:
        shard_processes.run(tab, UNIFORM, 2, {"bogus": 1}, 2)
    assert "\n" not in str(err.value)


def test_an_unregistered_distribution_stays_in_this_process():
    class Renamed(type(UNIFORM)):
        name = "not-registered"

    assert shard_processes.can_run(UNIFORM)
    assert not shard_processes.can_run(Renamed())


def test_bad_option_is_a_clear_error():
    with pytest.raises(MaxkError, match="exact_outputs"):
        prove(max_like_model(6, 3, 0, 0.0), "cubic", exact_outputs=0)
    with pytest.raises(MaxkError, match="per_position"):
        prove(max_like_model(6, 3, 0, 0.0), "cubic", per_position="some")
    with pytest.raises(MaxkError, match="shards"):
        prove(max_like_model(6, 3, 0, 0.0), "cubic", shards=0)
    with pytest.raises(MaxkError, match="does not take"):
        prove(max_like_model(6, 3, 0, 0.0), "cubic", budget=3)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(3, 9), k=st.integers(2, 4), seed=st.integers(0, 10**6), noise=st.sampled_from([0.0, 0.05, 0.3]))
def test_every_frontier_point_is_sound(n, k, seed, noise):
    """Every (strategy, options) point that ``--frontier`` runs, on noised and near-tied models."""
    from maxk.exact import evaluate
    from maxk.proofs.frontier import frontier_runs
    from maxk.proofs.registry import STRATEGIES

    model = adversarial(max_like_model(n, k, seed, noise), seed % 2)
    for dist in ("uniform", "distinct"):
        if dist == "distinct" and k > n:
            continue
        correct = evaluate(model, dist).correct
        assert correct is not None
        for name, options in frontier_runs(model.cfg, STRATEGIES.names()):
            if name in ("brute",):
                continue
            assert prove(model, name, dist, **options).certified <= correct, (name, options)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), nq=st.integers(1, 3), m=st.integers(1, 5), f=st.integers(1, 3))
def test_mixture_gains_count_the_tuples_a_lowered_bucket_adds(seed, nq, m, f):
    """The mixture recheck priority: for case (q, cc, t), cc·ways times the (cc-1)-tuples of
    tokens (repeats allowed, buckets as they are) whose bucket sum is below K - floor_t and not
    below K - bucket_t, by enumeration; 0 for cases not eligible."""
    K = cubic.MIX_BUCKETS
    rng = np.random.default_rng(seed)
    bucket = rng.integers(0, K + 1, (nq, f, m))
    floor = np.minimum(bucket, rng.integers(0, K + 1, (nq, f, m)))
    eligible = rng.random((nq, f, m)) < 0.7
    ways = rng.integers(1, 4, (nq, f)).astype(float)
    got = cubic._mixture_gains(bucket, floor, eligible, ways)
    for q, cc_, t in itertools.product(range(nq), range(f), range(m)):
        want = 0.0
        if eligible[q, cc_, t]:
            sums = [sum(int(bucket[q, cc_, s]) for s in rest) for rest in itertools.product(range(m), repeat=cc_)]
            fits = sum(K - int(bucket[q, cc_, t]) <= x < K - int(floor[q, cc_, t]) for x in sums)
            want = (cc_ + 1) * ways[q, cc_] * fits
        assert got[q, cc_, t] == want
