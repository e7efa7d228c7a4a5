"""Where seeds run: in this process, or on a Dask distributed cluster (a ``LocalCluster`` of
worker processes this process starts, or an existing scheduler).

A runner takes the jobs and yields ``(job, SeedOutput | BaseException)`` as each finishes, in
whatever order they finish; the sweep writes each output as it arrives. Dask reschedules the
tasks of a worker that dies on the workers that remain (a task whose workers die three times, the
scheduler's ``allowed-failures``, comes back as a ``KilledWorker`` error for that seed only).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from ..errors import MaxkError
from .plan import Job
from .seed import SeedOutput, compute_seed
from .store import versions

Outcome = tuple[Job, "SeedOutput | BaseException"]


def run_in_process(jobs: list[Job]) -> Iterator[Outcome]:
    """Each job in turn, here. An error in one seed (a bug, not a refusal) is yielded, and the
    next seed runs."""
    for job in jobs:
        try:
            yield job, compute_seed(job)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            yield job, e


def _dask():
    try:
        import distributed
    except ImportError:
        raise MaxkError("--workers and --scheduler need dask.distributed: pip install 'maxk[cluster]'") from None
    return distributed


def _check_workers(client: Any) -> None:
    """MaxkError unless every worker runs the versions this process does (the same records need
    the same code), or there is no worker."""
    mine = versions()
    theirs = client.run(versions)
    if not theirs:
        raise MaxkError(f"the Dask scheduler at {client.scheduler.address} has no workers")
    for addr, v in theirs.items():
        diff = [f"{k} {v.get(k)} (here {mine[k]})" for k in ("maxk", "torch", "numpy") if v.get(k) != mine[k]]
        if diff:
            raise MaxkError(f"Dask worker {addr} runs other versions: {', '.join(diff)}")


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: connected to ``scheduler`` (an address such as tcp://host:8786),
    or to a new ``LocalCluster`` of ``workers`` single-threaded worker processes (closed after)."""
    distributed = _dask()
    if (scheduler is None) == (workers is None):
        raise MaxkError("give a scheduler address or a number of workers (not both)")
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as e:
            raise MaxkError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        with client:
            _check_workers(client)
            yield client
        return
    if workers is None or workers < 1:
        raise MaxkError(f"--workers must be at least 1, got {workers}")
    # the scheduler always serves HTTP; on a free local port, never the default 8787 another
    # cluster may hold (its "port in use" fallback warns, and a warning fails a strict caller)
    local_http: dict[str, Any] = {"dashboard_address": "127.0.0.1:0"}
    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, silence_logs=40, **local_http
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def run_on_dask(jobs: list[Job], client: Any) -> Iterator[Outcome]:
    """Every job as a task on ``client``'s cluster, yielded as each finishes. Workers run torch
    single-threaded (one task per worker thread). If the caller stops early, the remaining tasks
    are cancelled."""
    distributed = _dask()
    by_key = {}
    futures = []
    for job in jobs:
        key = f"maxk-sweep-{job.config_dir}-{job.stem}-{uuid.uuid4().hex[:8]}"
        fut = client.submit(compute_seed, job, key=key, pure=False, retries=0)
        by_key[fut.key] = job
        futures.append(fut)
    try:
        for fut in distributed.as_completed(futures):
            job = by_key[fut.key]
            try:
                yield job, fut.result()
            except Exception as e:
                yield job, e
            fut.release()
    finally:
        client.cancel([f for f in futures if not f.done()])
