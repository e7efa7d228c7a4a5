"""The cubic proof's checks, itemised from its public pieces (``maxk.proofs.cubic``).

For max m, query q and c copies of a non-max token the proof relies on:
- ``cert0``: the input with every free position m is correct (c = 0), when it certifies it;
- per-token certificate (groups where it is used): "t is in S(m, q, c)" for each t it counts;
- mixture certificate (the other groups): "ceil(K·rho(t)) <= b" for each t whose bucket b < K
  (a token at K is not relied on).
Each check is a function of the rows and columns of tokens q, m, t (and every output o != m), so
under the initialisation prior (i.i.d. entries: relabelling tokens changes nothing) its pass
probability depends only on which of q, m, t coincide and on c (up to the rounding of the
proof's per-query shift, which is a function of the order). The classes:
``eq`` (q = m), ``tq`` (q < m, t = q), ``ne`` (q < m, t != q), each with c = 1..k-1.
"""

from __future__ import annotations

import inspect
import json
from collections import defaultdict

import numpy as np

from ..distributions import Distribution
from ..flops import FlopCounter
from ..proofs.cubic import MIX_BUCKETS, MaxCertificate, certified_sets, cubic_certified
from ..proofs.enclose import enclosed_tables
from .checks import Check, rate_check
from .prior import Prior


def candidate_settings() -> list[dict]:
    """Keyword settings of ``certified_sets`` that may reproduce ``prove(model, "cubic")``: the
    defaults ``cubic_certified`` passes for the keywords both take (a negative number read as None,
    the proof's "no limit"), then ``certified_sets``' own defaults. The itemisation uses the
    first whose certified count equals the registry's."""
    own = inspect.signature(certified_sets).parameters
    shared = {
        name: (None if _negative_number(p.default) else p.default)
        for name, p in inspect.signature(cubic_certified).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name in own
    }
    return [shared, {}] if shared else [{}]


def _negative_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x < 0


def certificates(tab, m: int, dist: Distribution, counter: FlopCounter, settings: dict) -> MaxCertificate:
    """``certified_sets`` for max m with keyword ``settings``."""
    return certified_sets(tab, m, dist, counter, **settings)


def _classes(m: int, nq: int) -> np.ndarray:
    """Class of each (q, t) [nq, m]: 0 = eq, 1 = tq, 2 = ne."""
    q = np.arange(nq)[:, None]
    t = np.arange(m)[None, :]
    return np.where(q == m, 0, np.where(t == q, 1, 2))


_NAMES = ("eq", "tq", "ne")


def cubic_facts(model, dist: Distribution, certified: int) -> tuple[dict, dict] | None:
    """The facts the cubic proof relies on for ``model``: ({check name: count}, the settings
    that reproduce ``certified``), or None if no candidate setting does. Check names:
    ``cert0:{eq|ne}``, ``ok:{cls}:c{c}``, ``bucket:{cls}:c{c}:<={b}``. Cost: the cubic proof's
    per candidate tried."""
    for settings in candidate_settings():
        facts, total = _facts(model, dist, settings)
        if total == certified:
            return facts, settings
    return None


def _facts(model, dist: Distribution, settings: dict) -> tuple[dict, int]:
    counter = FlopCounter()
    tab = enclosed_tables(model, counter)
    n, k = tab.n, tab.k
    facts: dict[str, int] = defaultdict(int)
    total = 0
    for m in range(n):
        cert = certificates(tab, m, dist, counter, settings)
        total += cert.count(counter)
        for q in range(m + 1):
            if dist.max_only_occurs(k, m, q) and cert.cert0[q]:
                facts[f"cert0:{'eq' if q == m else 'ne'}"] += 1
        if cert.ok is None or m == 0:
            continue
        assert cert.bucket is not None and cert.use_mix is not None
        cls = _classes(m, m + 1)
        for q, cc, _ways in dist.nonmax_groups(k, m):
            allowed = np.ones(m, dtype=bool)
            if not dist.allows_repeats and q < m:
                allowed[q] = False
            if cert.use_mix[q, cc - 1]:
                b = cert.bucket[q, cc - 1]
                for t in np.nonzero(allowed & (b < MIX_BUCKETS))[0]:
                    facts[f"bucket:{_NAMES[cls[q, t]]}:c{cc}:<={int(b[t])}"] += 1
            elif dist.count_tokens(cert.ok[q, cc - 1], q, cc) > 0:
                for t in np.nonzero(allowed & cert.ok[q, cc - 1])[0]:
                    facts[f"ok:{_NAMES[cls[q, t]]}:c{cc}"] += 1
    return dict(facts), total


def cubic_prior(prior: Prior, dist: Distribution, settings: dict) -> dict:
    """The prior section: per initialisation, pass counts and trials of every check class (cert0,
    ok) and the histogram of mixture buckets per class, plus each initialisation's certified
    count. Cost: one cubic proof per initialisation (~2 s at n = 64, k = 4)."""

    def compute(models) -> dict:
        K = MIX_BUCKETS
        out: dict = {"certified": [], "classes": {}}
        for j, model in enumerate(models):
            counter = FlopCounter()
            tab = enclosed_tables(model, counter)
            n, k = tab.n, tab.k
            acc: dict = defaultdict(lambda: [0, 0])
            hist: dict = defaultdict(lambda: np.zeros(K + 1, dtype=np.int64))
            total = 0
            for m in range(n):
                cert = certificates(tab, m, dist, counter, settings)
                total += cert.count(counter)
                for q in range(m + 1):
                    if dist.max_only_occurs(k, m, q):
                        a = acc[f"cert0:{'eq' if q == m else 'ne'}"]
                        a[0] += int(cert.cert0[q])
                        a[1] += 1
                if cert.ok is None or m == 0:
                    continue
                assert cert.bucket is not None
                cls = _classes(m, m + 1)
                for q, cc, _ways in dist.nonmax_groups(k, m):
                    allowed = np.ones(m, dtype=bool)
                    if not dist.allows_repeats and q < m:
                        allowed[q] = False
                    for ci, name in enumerate(_NAMES):
                        sel = allowed & (cls[q] == ci)
                        if not sel.any():
                            continue
                        a = acc[f"ok:{name}:c{cc}"]
                        a[0] += int(cert.ok[q, cc - 1][sel].sum())
                        a[1] += int(sel.sum())
                        hist[f"bucket:{name}:c{cc}"] += np.bincount(cert.bucket[q, cc - 1][sel], minlength=K + 1)
            out["certified"].append(total)
            for key, (p, t) in acc.items():
                out["classes"].setdefault(key, {"passes": [0] * j, "trials": [0] * j})
                out["classes"][key]["passes"].append(p)
                out["classes"][key]["trials"].append(t)
            for key, h in hist.items():
                out["classes"].setdefault(key, {"hist": [[0] * (K + 1)] * j})
                out["classes"][key].setdefault("hist", [])
                out["classes"][key]["hist"].append(h.tolist())
        return out

    return prior.section(f"cubic:{dist.name}:{json.dumps(settings, sort_keys=True)}", compute)


def cubic_checks(prior: Prior, dist: Distribution, facts: dict, settings: dict) -> list[Check]:
    """Price the cubic facts (``cubic_facts``) with the prior's pass rates. A bucket fact
    "<= b" passes on an initialisation's check of the same class when its bucket is <= b."""
    stats = cubic_prior(prior, dist, settings)["classes"]
    checks = []
    for name, count in sorted(facts.items()):
        if name.startswith("bucket:"):
            base, bound = name.rsplit(":<=", 1)
            hist = np.asarray(stats[base]["hist"], dtype=np.int64)  # [M, K+1]
            passes = hist[:, : int(bound) + 1].sum(axis=1)
            trials = hist.sum(axis=1)
            checks.append(rate_check(f"cubic {name}", count, passes.tolist(), trials.tolist()))
        else:
            st = stats[name]
            checks.append(rate_check(f"cubic {name}", count, st["passes"], st["trials"]))
    return checks
