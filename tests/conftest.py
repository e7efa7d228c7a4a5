"""Shared fixtures: small models built in memory (no network, no files outside tmp_path)."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# CI runs the same examples every time (a failure there is reproducible); locally they vary.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Trained-model cache shared by the session's workers, never the user's own."""
    if "MAXK_CACHE" not in os.environ:
        os.environ["MAXK_CACHE"] = str(tmp_path_factory.getbasetemp().parent / "maxk-cache")
    yield
