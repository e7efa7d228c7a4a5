"""The child side of ``maxk.proofs.shard_processes``: ``python -m maxk.proofs.shard_child DIR
s ...`` proves shards s, ... of the cubic proof whose tables and job DIR holds, on one thread, and
writes each shard's count and FLOPs to DIR/shard-s.json (whole or not at all). On an error it
prints one line to stderr and exits 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text_atomic
from ..circuits import CircuitTables
from ..config import ModelConfig
from ..distributions import resolve
from .cubic import prove_shard
from .enclose import IntervalTables
from .shard_processes import FIELDS


def _main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    folder, shard_ids = Path(argv[0]), [int(s) for s in argv[1:]]
    job = json.loads((folder / "job.json").read_text())
    cfg = ModelConfig.from_dict(job["cfg"])
    with np.load(folder / "tables.npz", allow_pickle=False) as z:
        lo, hi = (CircuitTables(cfg, *(z[f"{side}_{name}"] for name in FIELDS)) for side in ("lo", "hi"))
    tab = IntervalTables(cfg, lo, hi)
    d = resolve(job["dist"], tab.n, tab.k)
    for s in shard_ids:
        count, cs = prove_shard(tab, d, s, int(job["shards"]), **job["options"])
        write_text_atomic(
            folder / f"shard-{s}.json", json.dumps({"count": str(count), "total": cs.total, "by_label": cs.by_label})
        )


if __name__ == "__main__":
    try:
        _main(sys.argv[1:])
    except Exception as exc:  # one line for the parent's error message
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
