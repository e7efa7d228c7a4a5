"""A JSON file of named sections of plain data, each computed once and saved atomically.

The prior (per config) and the per-model parts of a table (weights description, estimator
calibration) are cached this way under ``$MAXK_CACHE/surprise`` (default ``~/.cache/maxk``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..errors import MaxkError


def cache_root() -> Path:
    """``$MAXK_CACHE/surprise`` (default ``~/.cache/maxk/surprise``)."""
    return Path(os.environ.get("MAXK_CACHE", Path.home() / ".cache" / "maxk")) / "surprise"


class SectionFile:
    """Sections of plain data in the JSON file ``path`` (or in memory only if ``path`` is None),
    tagged with ``key``: a file with another key is refused. ``extra`` is saved beside the
    sections (e.g. the prior's seeds and weight hashes) and read back as ``stored_extra``."""

    def __init__(self, path: Path | None, key: str, extra: Callable[[], dict] | None = None) -> None:
        self.path, self.key, self._extra = path, key, extra
        self.sections: dict[str, Any] = {}
        self.stored_extra: dict = {}
        if path is not None and path.exists():
            data = self._read()
            self.sections = data.get("sections", {})
            self.stored_extra = {k: v for k, v in data.items() if k not in ("key", "sections")}

    def _read(self) -> dict:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise MaxkError(f"unreadable cache {self.path}: {e} (delete it to rebuild)") from e
        if not isinstance(data, dict) or data.get("key") != self.key:
            raise MaxkError(f"cache {self.path} belongs to something else (delete it to rebuild)")
        return data

    def get(self, name: str, compute: Callable[[], Any]) -> Any:
        """Section ``name``: cached, or ``compute()`` (made plain JSON data), stored and saved."""
        if name not in self.sections:
            self.sections[name] = json.loads(json.dumps(compute(), default=float))
            self.save()
        return self.sections[name]

    def save(self) -> None:
        """Write the file atomically, keeping sections another run added meanwhile."""
        if self.path is None:
            return
        merged = dict(self.sections)
        if self.path.exists():
            try:
                merged = {**self._read().get("sections", {}), **self.sections}
            except MaxkError:
                pass
        extra = self._extra() if self._extra is not None else {}
        write_text_atomic(self.path, json.dumps({"key": self.key, **extra, "sections": merged}, sort_keys=True))
