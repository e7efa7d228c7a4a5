"""The sweep's directory: the manifest, one folder per configuration, per seed a model and a record.

    OUT/manifest.json
    OUT/k4-n64-d32/seed-0000.safetensors   the trained model (written first)
    OUT/k4-n64-d32/seed-0000.json          the seed's record (written last: its presence = done)

Both files are written by the sweep's own process (workers return bytes), each through a
temporary file and a rename, so a killed sweep leaves whole files or none (and at worst stray
``.seed-*.tmp`` files, removed on the next run). A lock file keeps two sweeps out of one folder.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, write_text_atomic
from ..errors import MaxkError
from .plan import Job, SweepOptions

MANIFEST = "manifest.json"
MANIFEST_KIND = "maxk-sweep"
SEED_KIND = "maxk-sweep-seed"
_LOCK = ".maxk-sweep.lock"


def versions() -> dict[str, str]:
    """The versions a sweep's results depend on (the manifest's)."""
    from importlib.metadata import version

    import numpy
    import torch

    return {
        "maxk": version("maxk"),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def seed_paths(out: Path, job: Job) -> tuple[Path, Path]:
    """(record .json, model .safetensors) of a job under ``out``."""
    folder = out / job.config_dir
    return folder / f"{job.stem}.json", folder / f"{job.stem}.safetensors"


def read_record(path: Path) -> dict[str, Any] | None:
    """The seed record at ``path``, or None when it is missing or not a whole record (a file
    someone truncated or edited: the seed is redone)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("kind") == SEED_KIND else None


def is_done(out: Path, job: Job) -> bool:
    """Whether the job's record is there and its model beside it. MaxkError when the record was
    made with other options (a re-run must not mix the answers to two questions)."""
    rec_path, model_path = seed_paths(out, job)
    rec = read_record(rec_path)
    if rec is None or not model_path.is_file():
        return False
    if rec.get("options") != job.options.to_dict() or rec.get("config") != job.cfg.to_dict():
        raise MaxkError(
            f"{rec_path} was made with other options than this sweep's; use another --out or --redo to replace it"
        )
    return True


def write_seed(out: Path, job: Job, record: dict[str, Any], model_bytes: bytes) -> Path:
    """Write the job's model, then its record, each atomically; returns the record's path."""
    rec_path, model_path = seed_paths(out, job)
    with atomic_path(model_path) as tmp:
        tmp.write_bytes(model_bytes)
    write_text_atomic(rec_path, json.dumps(record, sort_keys=True, indent=1) + "\n")
    return rec_path


def remove_stray_temporaries(out: Path) -> int:
    """Delete the temporary files a killed sweep left in ``out``'s configuration folders (only
    names ``atomic_path`` makes for seed files); returns how many."""
    count = 0
    for tmp in out.glob("*/.seed-*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            count += 1
    return count


def write_manifest(out: Path, options: SweepOptions, arguments: dict[str, Any], redo: bool) -> dict[str, Any]:
    """Create or update ``out/manifest.json``: versions, first creation time, the sweep's
    arguments. MaxkError if it records a sweep with other result-deciding options (unless
    ``redo``) or other versions of maxk/torch/numpy (records would not be comparable)."""
    path = out / MANIFEST
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    old = None
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise MaxkError(f"{path} is not a readable manifest; use another --out") from None
        if not isinstance(old, dict) or old.get("kind") != MANIFEST_KIND:
            raise MaxkError(f"{path} is not a maxk sweep manifest; use another --out")
    vers = versions()
    if old is not None and not redo:
        if old.get("options", {}).get("results") != options.to_dict():
            raise MaxkError(f"{out} holds a sweep with other options; use another --out or --redo to replace it")
        changed = [k for k in ("maxk", "torch", "numpy") if old.get(k) != vers[k]]
        if changed:
            raise MaxkError(
                f"{out} was swept with other versions ({', '.join(f'{k} {old.get(k)}' for k in changed)}); "
                "use another --out or --redo"
            )
    manifest = {
        "kind": MANIFEST_KIND,
        **vers,
        "created": old.get("created", now) if old is not None else now,
        "updated": now,
        "options": {**arguments, "results": options.to_dict()},
    }
    write_text_atomic(path, json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    return manifest


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the duration (released when the process ends, however it ends);
    MaxkError if another sweep holds it."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MaxkError(f"another sweep is writing to {out}") from None
        yield
    finally:
        os.close(fd)


def without_timings(x: Any) -> Any:
    """A record (or any JSON data) without its timing fields, "seconds" at any depth: what two
    runs of the same sweep must agree on exactly."""
    if isinstance(x, dict):
        return {k: without_timings(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [without_timings(v) for v in x]
    return x


def read_records(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished seed record under ``out``, by configuration folder then seed. Cost: one
    JSON parse per seed."""
    recs = []
    for path in sorted(Path(out).glob("*/seed-*.json")):
        rec = read_record(path)
        if rec is not None:
            recs.append(rec)
    return recs
