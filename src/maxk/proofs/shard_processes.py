"""The cubic proof's shards in child Python processes, so that they use several cores at once.

Threads share the GIL, which the proof's many small steps hold (two threads ran (20, 512) only
×1.42 faster than one on 2 cores). Each child is ``python -m maxk.proofs.shard_child DIR s ...``:
it reads the enclosed tables (``tables.npz``: plain float64 arrays, loaded without
pickle) and the job (``job.json``: the model's config, the distribution's name, the number of
shards and the proof's options) from DIR, proves its shards with ``cubic.prove_shard`` on one
thread and writes each shard's count and FLOPs to ``shard-s.json``, whole or not at all. The
count and FLOPs are those of the shards run in turn: the shards decide them, not the processes.
A child that fails makes the proof fail with its last error line (MaxkError)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..distributions import Distribution, get_distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from .enclose import IntervalTables

FIELDS = ("eqke", "eqkp", "evou", "pvou", "eupu")  # the tables handed over, as lo_<name> and hi_<name>
CHILD = "maxk.proofs.shard_child"
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def can_run(d: Distribution) -> bool:
    """Whether a child process can rebuild ``d`` from its name (a registered distribution)."""
    try:
        return type(get_distribution(d.name)) is type(d)
    except MaxkError:
        return False


def run(
    tab: IntervalTables, d: Distribution, shards: int, options: dict, workers: int
) -> list[tuple[int, FlopCounter]]:
    """(count, FLOP counter) of each shard of the cubic proof of ``tab`` under ``d``
    (``cubic.prove_shard`` with ``options``), the shards dealt round-robin to ``workers`` child
    processes run at once. Cost: the shards' own, plus each child's start (~1-3 s: importing
    numpy and torch) and O(h·n²) to hand it the tables."""
    with tempfile.TemporaryDirectory(prefix="maxk-shards-") as tmp:
        folder = Path(tmp)
        np.savez(
            folder / "tables.npz",
            **{f"{side}_{name}": getattr(getattr(tab, side), name) for side in ("lo", "hi") for name in FIELDS},
        )
        job = {"cfg": tab.cfg.to_dict(), "dist": d.name, "shards": shards, "options": options}
        (folder / "job.json").write_text(json.dumps(job))
        package_root = str(Path(__file__).resolve().parents[2])  # the maxk this process runs, first on the path
        env = dict(os.environ, **_ONE_THREAD)
        env["PYTHONPATH"] = os.pathsep.join([package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        procs = []
        try:
            for w in range(workers):
                argv = [sys.executable, "-m", CHILD, tmp, *map(str, range(w, shards, workers))]
                with open(folder / f"stderr-{w}.txt", "wb") as err:  # the child keeps its own copy
                    proc = subprocess.Popen(
                        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
                    )
                procs.append(proc)
            for proc in procs:
                proc.wait()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for w, proc in enumerate(procs):
            if proc.returncode != 0:
                lines = (folder / f"stderr-{w}.txt").read_text(errors="replace").strip().splitlines()
                raise MaxkError(
                    f"cubic: a shard process failed: {lines[-1] if lines else f'exit code {proc.returncode}'}"
                )
        return [_read_result(folder / f"shard-{s}.json") for s in range(shards)]


def _read_result(path: Path) -> tuple[int, FlopCounter]:
    data = json.loads(path.read_text())
    return int(data["count"]), FlopCounter(int(data["total"]), {str(k): int(v) for k, v in data["by_label"].items()})
