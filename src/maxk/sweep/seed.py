"""One seed of a sweep: train, evaluate, every proof strategy, every estimator, the extras.

``compute_seed(job)`` runs wherever the runner puts it (this process, a Dask worker) and
returns the seed's record and its model's safetensors bytes; it writes nothing, so the sweep's
own process is the only writer of the folder. Every part is deterministic given the job (the
training recipe is seeded by the seed; sampled evaluation, estimators and Wick sampling draw from
generators seeded by it too), so a record is the same wherever it was computed, timings aside.

A method that declares it refuses the configuration, whose declared cost is above the budget
(``budget.planned_refusal``), that refuses while running (``maxk.registry.Refused``, or a
MaxkError it raises for its input) or that needs more memory than the cap (``memory``) is
recorded as ``{"kind": "refused", "method", "reason"}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint
from ..circuits import circuit_tables
from ..distributions import resolve
from ..errors import MaxkError
from ..estimators.registry import ESTIMATORS, estimate
from ..exact import evaluate
from ..model import MaxKTransformer
from ..proofs.registry import STRATEGIES, prove
from ..registry import Refused
from ..results import plain
from ..sampling import evaluate_sampled
from ..torch_threads import single_threaded
from ..train import train
from .budget import planned_refusal
from .memory import is_out_of_memory, memory_cap
from .plan import Job
from .store import SEED_KIND

REFUSED = "refused"
WICK_METHOD = "cumulant"  # the estimator whose explanation the Wick values are (its cost and refusals apply)


@dataclass(frozen=True)
class SeedOutput:
    """What a worker sends back: the seed's record (plain JSON data) and the model's bytes."""

    record: dict[str, Any]
    model_bytes: bytes


def refusal(method: str, reason: str) -> dict[str, str]:
    """The record of a method not run at this seed, and why."""
    return {"kind": REFUSED, "method": method, "reason": reason}


def surprise_available() -> bool:
    """Whether this installation has surprise accounting: ``maxk.surprise.surprise``, callable."""
    if importlib.util.find_spec("maxk.surprise") is None:
        return False
    try:
        module = importlib.import_module("maxk.surprise")
    except Exception:  # a partial or broken installation counts as absent
        return False
    return callable(getattr(module, "surprise", None))


def weights_sha256(model: MaxKTransformer) -> str:
    """sha256 of the model's weights: of the safetensors serialisation of its state dict without
    metadata (deterministic, unlike the file, whose metadata order varies between processes).
    Recompute from a file with ``safetensors.torch.save(safetensors.torch.load_file(path))``."""
    from safetensors.torch import save

    return hashlib.sha256(save({k: v.contiguous() for k, v in model.state_dict().items()})).hexdigest()


def model_file_bytes(model: MaxKTransformer) -> bytes:
    """The model as ``maxk.checkpoint.save`` writes it (with its training record), as bytes."""
    with tempfile.TemporaryDirectory(prefix="maxk-sweep-") as tmp:
        path = Path(tmp) / "model.safetensors"
        checkpoint.save(model, path, model.training_record)
        return path.read_bytes()


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def guarded(name: str, run: Callable[[], dict[str, Any]], memory_gib: float | None) -> dict[str, Any]:
    """``run()``'s record, under the memory cap; the refusal of method ``name`` if it refuses
    while running (``Refused``, or a MaxkError for its input) or needs more than the cap."""
    try:
        with memory_cap(memory_gib):
            return run()
    except (Refused, MaxkError) as e:
        return refusal(name, str(e))
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        return refusal(name, f"needed more memory than the sweep's cap of {memory_gib:g} GiB (--memory-gb)")


def _each(registry, run: Callable[[str], dict[str, Any]], job: Job, dist) -> list[dict[str, Any]]:
    """One record per registered method: ``run(name)``'s, or its refusal (decided up front from
    its declarations, or met while running)."""
    out = []
    for name, method in registry.items():
        reason = planned_refusal(method, job.cfg, dist, job.options.budget)
        if reason is not None:
            out.append(refusal(name, reason))
        else:
            out.append(guarded(name, lambda name=name: run(name), job.options.memory_gib))
    return out


def _finite(x: Any) -> Any:
    """``x`` with non-finite floats replaced by None (JSON has no NaN or infinity)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _evaluation(model: MaxKTransformer, dist, samples: int, seed: int) -> dict[str, Any]:
    """Exact evaluation when exhaustive work is in reach (decided by ``evaluate`` from n, k before
    any work), else stratified sampling with its standard errors."""
    try:
        return evaluate(model, dist).to_dict()
    except MaxkError:
        return evaluate_sampled(model, dist, samples, seed=seed).to_dict()


def _wick(tables, dist, job: Job) -> dict[str, Any]:
    from ..wick_propagation import wick
    from ..wick_propagation.run import EXHAUSTIVE_MAX
    from ..wick_propagation.summary import summarize

    reason = planned_refusal(ESTIMATORS.get(WICK_METHOD), job.cfg, dist, job.options.budget)
    if reason is not None:
        return refusal("wick", f"its explanation ({WICK_METHOD}) {reason}")
    n, k = job.cfg.d_vocab, job.cfg.n_ctx
    every = dist.n_sequences(n, k) <= job.options.wick_samples and n**k <= EXHAUSTIVE_MAX
    samples = None if every else job.options.wick_samples
    return guarded(
        "wick",
        lambda: _finite(plain(summarize(wick(tables, dist, samples=samples, seed=job.seed)))),
        job.options.memory_gib,
    )


def _frontier(tables, dist, job: Job) -> dict[str, Any]:
    """Every budgeted estimator at each of the sweep's frontier budgets, with the per-input
    variance that prices Monte Carlo (``estimators.frontier.model_frontier``); a method whose
    declared cost is over the sweep's budget is recorded refused at every budget, unrun."""
    from ..estimators.frontier import FRONTIER_METHODS, model_frontier

    refused = {
        name: reason
        for name in FRONTIER_METHODS
        if (reason := planned_refusal(ESTIMATORS.get(name), job.cfg, dist, job.options.budget)) is not None
    }

    def run() -> dict[str, Any]:
        rec = model_frontier(
            tables,
            dist,
            job.options.frontier_budgets,
            seed=job.seed,
            var_samples=job.options.wick_samples,
            refused=refused,
        )
        return _finite(plain(rec))

    return guarded("frontier", run, job.options.memory_gib)


def _surprise(model: MaxKTransformer, dist, memory_gib: float | None) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        table = importlib.import_module("maxk.surprise").surprise(model, dist)
        return _finite(plain(table.to_dict() if hasattr(table, "to_dict") else table))

    return guarded("surprise", run, memory_gib)  # it refuses n^k > 4e9 (it needs exact evaluation)


def compute_seed(job: Job) -> SeedOutput:
    """Train the job's seed and measure it (see the module docstring). Cost: the recipe's
    training, one evaluation, every strategy and estimator within the budget, the extras."""
    with _threads(job.threads):
        return _compute(job)


def _compute(job: Job) -> SeedOutput:
    opts, cfg = job.options, job.cfg
    dist = resolve(opts.dist, cfg.d_vocab, cfg.n_ctx)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    with single_threaded():  # small steps: one thread is several times faster (maxk.torch_threads)
        model = train(cfg, seed=job.seed, **opts.recipe.to_dict())
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ev = _evaluation(model, dist, opts.eval_samples, job.seed)
    seconds["eval"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    proofs = _each(STRATEGIES, lambda name: prove(model, name, dist).to_dict(), job, dist)
    seconds["proofs"] = time.perf_counter() - t0

    tables = circuit_tables(model)
    t0 = time.perf_counter()
    estimates = _each(ESTIMATORS, lambda name: estimate(tables, name, dist, seed=job.seed).to_dict(), job, dist)
    seconds["estimates"] = time.perf_counter() - t0

    wick_summary = None
    if "wick" in opts.extras:
        t0 = time.perf_counter()
        wick_summary = _wick(tables, dist, job)
        seconds["wick"] = time.perf_counter() - t0
    frontier = None
    if "frontier" in opts.extras:
        t0 = time.perf_counter()
        frontier = _frontier(tables, dist, job)
        seconds["frontier"] = time.perf_counter() - t0
    surprise = None
    if "surprise" in opts.extras:
        t0 = time.perf_counter()
        surprise = _surprise(model, dist, opts.memory_gib)
        seconds["surprise"] = time.perf_counter() - t0

    record = {
        "kind": SEED_KIND,
        "config": cfg.to_dict(),
        "seed": job.seed,
        "recipe": opts.recipe.to_dict(),
        "dist": dist.name,
        "options": opts.to_dict(),
        "model": f"{job.stem}.safetensors",
        "model_sha256": weights_sha256(model),
        "final_loss": model.training_record["final_loss"] if model.training_record else None,
        "eval": ev,
        "proofs": proofs,
        "estimates": estimates,
        "wick": wick_summary,
        "surprise": surprise,
        "frontier": frontier,
        "seconds": seconds,
    }
    return SeedOutput(record, model_file_bytes(model))
