"""The report page in a real headless Chromium (Debian's ``chromium``, driven by playwright through
``executable_path``; no browser is downloaded): every image decodes, the console shows no error,
nothing is fetched from anywhere, the per-seed table sorts, and a screenshot is saved.

Fails (does not skip) when chromium or playwright is missing: ``make test`` installs chromium.
Set MAXK_SKIP_BROWSER=1 to skip on a machine that cannot have a browser.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from maxk.report import report

from .report_fixtures import shared_runs

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("MAXK_SKIP_BROWSER") == "1", reason="MAXK_SKIP_BROWSER=1"),
]


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory):
    return shared_runs(tmp_path_factory)


def chromium_path() -> str:
    path = os.environ.get("MAXK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "Debian's chromium is not installed (`apt-get install -y chromium`; `make test` does it as root); "
            "set MAXK_SKIP_BROWSER=1 to skip the browser test"
        )
    return path


def open_page(html: Path, screenshot: Path, *, viewport=(1280, 900), full_page: bool = True) -> dict:
    """Open ``html`` in headless Chromium; return what the page did (console errors, page errors,
    requests, image sizes, the seed table's first column before and after a click on a header)
    and save a screenshot."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is not installed (it is in the test extra)")
    seen: dict = {"console": [], "errors": [], "requests": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("console", lambda m: seen["console"].append((m.type, m.text)))
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.on("request", lambda r: seen["requests"].append(r.url))
            page.goto(html.resolve().as_uri(), wait_until="load")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            seen["images"] = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.naturalWidth, e.naturalHeight, e.alt])"
            )
            col = "els => els.map(r => r.cells[2].dataset.v)"
            seen["acc_before"] = page.eval_on_selector_all("#seed-table tbody tr", col)
            page.click("#seed-table th:nth-child(3)")
            seen["acc_asc"] = page.eval_on_selector_all("#seed-table tbody tr", col)
            page.click("#seed-table th:nth-child(3)")
            seen["acc_desc"] = page.eval_on_selector_all("#seed-table tbody tr", col)
            page.screenshot(path=str(screenshot), full_page=full_page)
        finally:
            browser.close()
    return seen


def test_report_in_chromium(report_runs, tmp_path):
    page_path = report(report_runs, tmp_path / "report")
    shot = Path(os.environ.get("MAXK_REPORT_SCREENSHOT") or tmp_path / "report.png")
    seen = open_page(page_path, shot)
    print(f"screenshot: {shot}")
    assert not seen["errors"], seen["errors"]
    errors = [text for kind, text in seen["console"] if kind in ("error", "warning")]
    assert not errors, errors
    foreign = [u for u in seen["requests"] if not u.startswith(("file:", "data:"))]
    assert not foreign, foreign
    assert len(seen["images"]) >= 10, seen["images"]
    for w, h, alt in seen["images"]:
        assert w > 0 and h > 0, f"image {alt!r} did not decode"
    acc = [float(v) for v in seen["acc_before"]]
    assert sorted(acc) == [float(v) for v in seen["acc_asc"]]
    assert sorted(acc, reverse=True) == [float(v) for v in seen["acc_desc"]]
    assert shot.stat().st_size > 10_000
