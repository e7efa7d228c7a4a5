"""`maxk demo` end to end, as `make demo` runs it: every section prints and it ends with the
path of the sweep's report, whose page and the Pareto plot exist."""

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    env = {**os.environ, "MAXK_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "maxk", "demo", "--out-dir", str(out)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    for section in ("exact (uniform)", "Compact proofs", "Heuristic estimates", "Wick values", "Surprise", "Sweep"):
        assert section in text, section
    assert proc.stdout.rstrip().splitlines()[-1].endswith(str(out / "report" / "index.html"))
    assert (out / "frontier.png").stat().st_size > 0
    assert (out / "report" / "index.html").stat().st_size > 0
    assert len(list((out / "sweep").glob("*/seed-*.json"))) == 3
