"""maxk.sweep on a real Dask LocalCluster (worker processes): the same records as in process,
and a worker killed mid-sweep does not lose a seed."""

from __future__ import annotations

import os
import signal

import pytest

import maxk
from maxk.errors import MaxkError

from .test_sweep import SEEDS, TINY, comparable

distributed = pytest.importorskip("distributed", reason="the cluster extra (dask.distributed) is not installed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("in-process")
    maxk.sweep(out, seeds=SEEDS, **TINY)
    return comparable(out)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0", silence_logs=40
    ) as c:
        yield c


def test_local_workers_equal_in_process(in_process, tmp_path):
    """``workers=2`` (the sweep starts its own LocalCluster) gives the in-process records."""
    summary = maxk.sweep(tmp_path, seeds=SEEDS, workers=2, **TINY)
    assert summary.runner.startswith("dask ") and len(summary.written) == 4
    assert comparable(tmp_path) == in_process


def test_worker_killed_mid_sweep(in_process, cluster, tmp_path):
    """SIGKILL one of the two workers after the first seed is written: the scheduler reruns its
    task elsewhere (the nanny restarts the worker) and every seed is written, as in process."""
    with distributed.Client(cluster) as watcher:
        pids = watcher.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = []

    def kill_after_first(done: int, total: int) -> None:
        if done == 1 and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    summary = maxk.sweep(tmp_path, seeds="0-5", scheduler=cluster.scheduler_address, progress=kill_after_first, **TINY)
    assert killed and len(summary.written) == 6
    with distributed.Client(cluster) as watcher:
        watcher.wait_for_workers(2, timeout=60)
        assert victim not in watcher.run(os.getpid).values()  # it did die (its nanny restarted it)
    records = comparable(tmp_path)
    assert [r["seed"] for r in records] == list(range(6))
    assert records[:4] == in_process


def test_unreachable_scheduler(tmp_path):
    with pytest.raises(MaxkError, match="cannot reach"):
        maxk.sweep(tmp_path, seeds=0, scheduler="tcp://127.0.0.1:9", **TINY)
