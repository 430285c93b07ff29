"""The published report, opened in a real headless Chromium: it loads offline with no failed
request, no console error, and every image decoded. A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipeline
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Debian's chromium is not installed (make test installs it when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_report_loads_offline_with_every_image_decoded(repo: Path, project_root: Path) -> None:
    from playwright.sync_api import sync_playwright

    requests, failed, errors = [], [], []
    artifacts = project_root / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.on("request", lambda request: requests.append(request.url))
        page.on("requestfailed", lambda request: failed.append(f"{request.url}: {request.failure}"))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((repo / "reports" / "index.html").as_uri(), wait_until="load")
        images = page.evaluate(
            "Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth,"
            " height: i.naturalHeight, shown: i.getBoundingClientRect().width}))")
        page.screenshot(path=str(artifacts / "report-first-screen.png"))
        browser.close()
    assert failed == [] and errors == []
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert len(images) >= 3
    assert all(image["complete"] and image["width"] > 0 and image["height"] > 0 and image["shown"] > 0
               for image in images), images
    assert (artifacts / "report-first-screen.png").stat().st_size > 10_000
