"""``wick``: per-input Wick values of the cumulant explanation over every input, a sample, or given inputs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from math import perm

import numpy as np
import torch

from ..circuits import CircuitTables, circuit_tables
from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..flops import FlopCounter
from .exhaustive import exhaustive_values
from .explanation import VALUE_FIELDS, WickExplanation, explain

EXHAUSTIVE_MAX = 2 * 10**7  # inputs: exhaustive by default up to n^k of this
OPTIONS = frozenset(
    {
        "readout",
        "order",
        "tau",
        "max_heavy",
        "heavy_order",
        "prune_mass",
        "max_copies",
        "heavy_path",
        "ratio_correction",
        "lse_correction",
    }
)  # the cumulant estimator's options, which ``explain`` takes


@dataclass(frozen=True, eq=False)
class WickValues:
    """Per-input Wick values of the cumulant explanation (``wick``).

    inputs [N, k] (int16 when n < 32768), weight [N] (each input's probability weight in the
    mean: 1/N over every input or a sample; read-only), and per input, float64 unless said:
    wick W(x), wick_first W1(x), soft f(x) (the model's probability on the max), correct (bool:
    the max's logit strictly above every other), stratum (int32 row, −1: covered by no row),
    constant est_s, first and second (the Wick terms; W = constant + first + second).
    estimate / estimate_first: the cumulant explanation's estimate and its order-1 estimate;
    mean_wick: Σ weight·wick (over every input: equal to ``estimate`` to rounding);
    exhaustive: whether the inputs are every input of the distribution; n_inputs: N;
    seconds, flops: of the whole call (explanation included).
    With a reference law (``wick(..., reference=)``, the explanation built on it and the inputs
    drawn from ``dist``): reference, its name; outside [N] bool, the inputs outside its support
    (what anomaly detection should find); confidence [N], the model's largest output
    probability max_o p_o(x) (the output-only baseline's score). All three None otherwise.
    explanation: the ``WickExplanation`` the values came from (for ``terms`` of a few inputs)."""

    inputs: np.ndarray
    weight: np.ndarray
    wick: np.ndarray
    wick_first: np.ndarray
    soft: np.ndarray
    correct: np.ndarray
    stratum: np.ndarray
    constant: np.ndarray
    first: np.ndarray
    second: np.ndarray
    estimate: float
    estimate_first: float
    mean_wick: float
    exhaustive: bool
    n_inputs: int
    seconds: float
    flops: int
    explanation: WickExplanation
    reference: str | None = None
    outside: np.ndarray | None = None
    confidence: np.ndarray | None = None


_ENUM_CHUNK = 1 << 20  # inputs per call of ``values`` on an enumerated law


def _prefix_path_applies(d: Distribution, n: int, k: int) -> bool:
    """Whether ``exhaustive_values`` (every n^k tuple, or those of k distinct tokens) enumerates
    ``d``: an exchangeable law whose support is all n^k inputs or all inputs of distinct tokens."""
    if not d.exchangeable:
        return False
    N = d.n_sequences(n, k)
    return N == n**k if d.allows_repeats else N == perm(n, k)


def _alloc(shape: tuple[int, ...], dtype: torch.dtype) -> np.ndarray:
    """An uninitialised numpy array, allocated by torch. numpy asks the kernel for transparent
    huge pages on large arrays, and where those are granted on demand (``defrag=madvise``) the
    first touch of a fragmented machine's memory stalls on compaction: measured 3.1 s for the
    0.8 GB of an exhaustive k = 4 run's floats, against 0.28 s in ordinary pages."""
    return torch.empty(shape, dtype=dtype).numpy()


def _empty(N: int) -> dict[str, np.ndarray]:
    """Uninitialised value arrays [N] in their dtypes."""
    kind = {"correct": torch.bool, "stratum": torch.int32}
    return {name: _alloc((N,), kind.get(name, torch.float64)) for name in VALUE_FIELDS}


def wick(
    model_or_tables,
    dist: str | Distribution = "uniform",
    inputs: np.ndarray | None = None,
    *,
    samples: int | None = None,
    seed: int = 0,
    reference: str | Distribution | None = None,
    **options,
) -> WickValues:
    """Per-input Wick values of the cumulant explanation (``explain`` with ``options``, the
    estimator's own) of a model (or its circuit tables) under ``dist``.

    Inputs: the given ``inputs`` [N, k]; else ``samples`` inputs drawn by ``dist.sample``
    (``seed``); else, when n^k ≤ 2·10^7, every input in ``Distribution.enumerate`` order
    (weight 1/N each, N the number of inputs), which is what makes ``mean_wick`` the estimate.
    ``reference`` (a law other than ``dist``): the explanation is built on it and the inputs come
    from ``dist``, for anomaly detection — inputs outside the reference's support are marked
    (``outside``) and the model's confidence is kept for the output-only baseline; the mean of W
    is then not the estimate. Cost: one more forward pass; every input through ``values`` in
    chunks of 2^20.
    Cost: the explanation, then O(N·h·k·n) (every input: O(N·h·n), prefixes shared); memory
    about 70 bytes per input (n = 64, k = 4 uniform: 1.7·10^7 inputs, 1.2 GB)."""
    t0 = time.perf_counter()
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise MaxkError(f"unknown option(s) {', '.join(unknown)}: wick takes {', '.join(sorted(OPTIONS))}")
    tab = model_or_tables if isinstance(model_or_tables, CircuitTables) else circuit_tables(model_or_tables)
    n, k = tab.n, tab.k
    d = resolve(dist, n, k)
    ref = d if reference is None else resolve(reference, n, k)
    counter = FlopCounter()
    ex = explain(tab, ref, counter=counter, **options)
    itype = np.int16 if n < 32768 else np.int32
    exhaustive = inputs is None and samples is None
    if inputs is not None and samples is not None:
        raise MaxkError("give inputs or samples, not both")
    if exhaustive:
        if n**k > EXHAUSTIVE_MAX:
            raise MaxkError(f"{n}^{k} inputs are too many to enumerate (limit {EXHAUSTIVE_MAX:.0e}): give samples=")
        N = d.n_sequences(n, k)
        if k >= 3 and ref is d and _prefix_path_applies(d, n, k):
            x = _alloc((N, k), torch.int16 if itype is np.int16 else torch.int32)
            vals = _empty(N)
            exhaustive_values(*ex.torch_pieces(), not d.allows_repeats, vals, x, counter)
        else:  # any other law: its enumeration, in pieces
            x = d.enumerate(n, k).astype(itype)
            vals = _chunked_values(ex, x, counter)
    else:
        if samples is not None:
            if samples < 1:
                raise MaxkError(f"samples must be positive, got {samples}")
            x = d.sample(n, k, int(samples), np.random.default_rng(seed)).astype(itype)
        else:
            x = np.asarray(inputs)
            if x.ndim != 2 or x.shape[1] != k or not np.issubdtype(x.dtype, np.integer):
                raise MaxkError(f"inputs must be an integer array [N, {k}]")
            if len(x) and (x.min() < 0 or x.max() >= n):
                raise MaxkError(f"input tokens must lie in [0, {n})")
        vals = _chunked_values(ex, x, counter)
    anomaly = {} if ref is d else _against_reference(tab, ref, x, counter)
    N = len(x)
    weight = np.broadcast_to(np.float64(1.0 / max(N, 1)), (N,))
    mean = float(vals["wick"].sum() / max(N, 1))
    return WickValues(
        inputs=x,
        weight=weight,
        estimate=ex.estimate,
        estimate_first=ex.estimate_first,
        mean_wick=mean,
        exhaustive=exhaustive,
        n_inputs=N,
        seconds=time.perf_counter() - t0,
        flops=counter.total,
        **vals,
        **anomaly,
        explanation=ex,
    )


def _chunked_values(ex, x: np.ndarray, counter: FlopCounter) -> dict[str, np.ndarray]:
    """``ex.values`` of inputs x [N, k], 2^20 at a time (bounded working memory)."""
    if len(x) <= _ENUM_CHUNK:
        return ex.values(x, counter)
    vals = _empty(len(x))
    for s0 in range(0, len(x), _ENUM_CHUNK):
        part = ex.values(x[s0 : s0 + _ENUM_CHUNK], counter)
        for name, v in part.items():
            vals[name][s0 : s0 + len(v)] = v
    return vals


def _against_reference(tab: CircuitTables, ref: Distribution, x: np.ndarray, counter: FlopCounter) -> dict:
    """reference, outside [N] (inputs outside ``ref``'s support) and confidence [N] (the model's
    largest output probability), by a forward pass in chunks. Cost O(N·h·k·n)."""
    outside = np.zeros(len(x), dtype=bool)
    confidence = np.empty(len(x))
    for s0 in range(0, len(x), _ENUM_CHUNK):
        part = np.asarray(x[s0 : s0 + _ENUM_CHUNK], dtype=np.int64)
        keep = ref.support_rows(part, query_last=True)
        if keep is not None:
            outside[s0 : s0 + len(part)] = ~keep
        with torch.inference_mode():
            probs = torch.softmax(tab.logits_torch(torch.as_tensor(part)), dim=1)
        confidence[s0 : s0 + len(part)] = probs.amax(dim=1).numpy()
    counter.add(len(x) * tab.n * (2 * tab.n_heads * tab.k + 4), "confidence")
    return {"reference": ref.name, "outside": outside, "confidence": confidence}
