"""``sweep``: plan the jobs, skip the finished ones, run the rest on a runner, write each result."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ModelConfig
from ..distributions import resolve
from ..errors import MaxkError
from .plan import (
    DEFAULT_BUDGET,
    DEFAULT_MEMORY_GIB,
    FRONTIER_BUDGETS,
    WICK_SAMPLES,
    Recipe,
    SweepOptions,
    model_configs,
    parse_seeds,
    plan,
)
from .runners import dask_client, run_in_process, run_on_dask
from .seed import surprise_available
from .store import is_done, locked, remove_stray_temporaries, seed_paths, write_manifest, write_seed


@dataclass(frozen=True)
class SweepSummary:
    """What a sweep did: its folder, the records it wrote, the seeds it found finished, where it
    ran and how long it took."""

    out: Path
    written: list[Path] = field(default_factory=list)
    skipped: int = 0
    runner: str = "in-process"
    seconds: float = 0.0


def sweep(
    out: str | os.PathLike,
    *,
    seeds: str | int | Iterable[int] = "0-150",
    configs: list[ModelConfig] | None = None,
    paper: bool = False,
    k: str | int | Iterable[int] = 4,
    vocab: str | int | Iterable[int] = 64,
    d_model: int = 32,
    d_head: int | None = None,
    heads: int = 1,
    steps: int = 3000,
    batch: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    dist: str = "uniform",
    extras: Iterable[str] = (),
    eval_samples: int = 1_000_000,
    wick_samples: int = WICK_SAMPLES,
    frontier_budgets: Iterable[float] = FRONTIER_BUDGETS,
    budget: float = DEFAULT_BUDGET,
    memory_gb: float | None = DEFAULT_MEMORY_GIB,
    scheduler: str | None = None,
    workers: int | None = None,
    redo: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SweepSummary:
    """The paper's experiment over ``seeds`` and configurations, written under ``out``.

    For each (configuration, seed): train with the recipe (``steps``, ``batch``, ``lr``,
    ``weight_decay``), evaluate exactly (stratified with ``eval_samples`` when n^k is out of
    reach), run every proof strategy and estimator (refusals recorded, decided from declared
    refusals and costs against ``budget``, or met while running: more than ``memory_gb`` GiB
    of address space for one method, None for no cap), and with ``extras`` ("wick", "surprise",
    "frontier") the Wick summary, the surprise table and every budgeted estimator at each of
    ``frontier_budgets`` FLOPs; write the model and the record atomically
    (``maxk.sweep.store`` has the layout). Configurations: ``configs``, else ``k`` × ``vocab``
    (ints or comma lists) with ``d_model``, ``d_head`` (default d_model), ``heads``, or with
    ``paper`` the paper's six. Runs here by default, on a new ``LocalCluster`` of ``workers``
    processes, or on the Dask ``scheduler`` at an address. Finished seeds are skipped (``redo``:
    recomputed); ``progress(done, total)`` before the first seed and after each one (``total``:
    the seeds to run). A seed that fails (an error, not a refusal) does not stop the others;
    MaxkError naming the failed seeds at the end."""
    t_start = time.perf_counter()
    out = Path(out)
    options = SweepOptions(
        recipe=Recipe(steps=steps, batch=batch, lr=lr, weight_decay=weight_decay),
        dist=dist,
        extras=tuple(extras),
        eval_samples=eval_samples,
        wick_samples=wick_samples,
        frontier_budgets=tuple(frontier_budgets),
        budget=budget,
        memory_gib=memory_gb,
    )
    if "surprise" in options.extras and not surprise_available():
        raise MaxkError("--with surprise needs maxk.surprise, which this installation does not have")
    if steps < 1 or batch < 1 or not lr > 0 or weight_decay < 0:
        raise MaxkError("steps and batch must be positive, lr > 0 and weight decay >= 0")
    if scheduler is not None and workers is not None:
        raise MaxkError("give --scheduler or --workers, not both")
    if workers is not None and workers < 1:
        raise MaxkError(f"--workers must be at least 1, got {workers}")
    cfgs = configs if configs is not None else model_configs(k, vocab, d_model, d_head, heads, paper)
    seed_list = parse_seeds(seeds)
    for cfg in cfgs:
        resolve(dist, cfg.d_vocab, cfg.n_ctx)  # a bad distribution fails here, not in every seed
    distributed_run = scheduler is not None or workers is not None
    jobs = plan(cfgs, seed_list, options, threads=1 if distributed_run else None)
    arguments = {
        "configs": [c.to_dict() for c in cfgs],
        "seeds": list(seed_list),
        "scheduler": scheduler,
        "workers": workers,
    }
    written: list[Path] = []
    failed: list[str] = []
    runner = "in-process"
    with locked(out):
        write_manifest(out, options, arguments, redo)
        remove_stray_temporaries(out)
        todo = jobs if redo else [j for j in jobs if not is_done(out, j)]
        if progress is not None:
            progress(0, len(todo))
        if todo and distributed_run:
            with dask_client(scheduler, workers) as client:
                runner = f"dask {client.scheduler.address}"
                _collect(out, run_on_dask(todo, client), written, failed, progress, len(todo))
        elif todo:
            _collect(out, run_in_process(todo), written, failed, progress, len(todo))
    if failed:
        raise MaxkError(f"{len(failed)} seed(s) failed (the others are written): " + "; ".join(failed[:5]))
    return SweepSummary(out, written, len(jobs) - len(todo), runner, time.perf_counter() - t_start)


def _collect(out: Path, outcomes, written: list[Path], failed: list[str], progress, total: int) -> None:
    """Write each finished seed as it arrives; note the failures."""
    done = 0
    for job, result in outcomes:
        if isinstance(result, BaseException):
            failed.append(f"{seed_paths(out, job)[0]}: {type(result).__name__}: {result}")
        else:
            written.append(write_seed(out, job, result.record, result.model_bytes))
        done += 1
        if progress is not None:
            progress(done, total)
