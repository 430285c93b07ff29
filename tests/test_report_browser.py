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


PAGE_FACTS = """() => ({
  title: document.title,
  stderr: document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]').length,
  text: document.body.innerText,
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
  beyond: Array.from(document.querySelectorAll('table, img, svg, pre'))
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
            .map(e => e.tagName + ': ' + (e.innerText || e.getAttribute('alt') || '').slice(0, 80)),
  images: Array.from(document.images).map(i => { const r = i.getBoundingClientRect();
                                                 return [r.left, r.top, r.right, r.bottom]; }),
  headers: Array.from(document.querySelectorAll('table')).slice(0, 1)
             .flatMap(t => Array.from(t.querySelectorAll('th')).map(th => th.innerText)),
  cells: Array.from(document.querySelectorAll('table')).slice(0, 1)
           .flatMap(t => Array.from(t.querySelectorAll('td')).map(td => ({
              text: td.innerText, height: td.getBoundingClientRect().height,
              line: parseFloat(getComputedStyle(td).lineHeight) || 1.5 * parseFloat(getComputedStyle(td).fontSize)})))
})"""


def _overlap(a: list[float], b: list[float]) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > 1 and min(a[3], b[3]) - max(a[1], b[1]) > 1


def test_every_published_page_reads_cleanly_and_every_link_resolves(repo: Path, project_root: Path) -> None:
    from playwright.sync_api import sync_playwright

    reports = repo / "reports"
    pages = sorted(reports.glob("*.html"))
    assert {"index.html", "preprocess.html", "split.html", "train-cnn.html", "export-cnn.html"} <= {p.name for p in pages}
    artifacts = project_root / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        for html in pages:
            page.goto(html.as_uri(), wait_until="load")
            facts = page.evaluate(PAGE_FACTS)
            assert facts["title"] not in ("", "Notebook") and facts["title"].startswith("imgpipe"), html.name
            assert facts["stderr"] == 0, f"{html.name} shows stderr output"
            assert facts["beyond"] == [], f"{html.name} runs past the right edge of a 1280 px window"
            assert str(repo) not in facts["text"] and "/tmp/" not in facts["text"], f"{html.name} shows a local path"
            for href in facts["links"]:
                if href.startswith(("#", "http://", "https://", "mailto:")):
                    continue
                target = (reports / href.split("#")[0]).resolve()
                assert target.is_file(), f"{html.name} links to {href}, which does not exist"
            nav = {href for href in facts["links"] if href.endswith(".html")}
            assert {p.name for p in pages} <= nav, f"{html.name} does not link to every page"
            for i, first in enumerate(facts["images"]):
                for second in facts["images"][i + 1:]:
                    assert not _overlap(first, second), f"two figures overlap on {html.name}"
            if html.name == "index.html":
                page.screenshot(path=str(artifacts / "report-full.png"), full_page=True)
                assert all("_" not in header for header in facts["headers"]), facts["headers"]
                for cell in facts["cells"]:
                    assert cell["height"] < 1.9 * cell["line"], f"table cell wraps: {cell['text']!r}"
                assert any("," in cell["text"] and cell["text"].replace(",", "").isdigit() for cell in facts["cells"])
        browser.close()


def test_dvc_plots_show_renders_offline_with_one_colour_per_model(repo: Path, project_root: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tests.helpers import run

    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    html = repo / "dvc_plots" / "index.html"
    text = html.read_text()
    assert "cdn.jsdelivr" not in text and '<script src="http' not in text
    assert "toNumber(datum.step) + 1" in text and '"model"' in text     # .dvc/plots/epochs.json was used
    requests, errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        context = browser.new_context(offline=True, viewport={"width": 1280, "height": 1600})
        page = context.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(html.as_uri(), wait_until="load")
        page.wait_for_selector("canvas, svg.marks", timeout=30_000)
        drawn = page.evaluate("document.querySelectorAll('canvas, svg.marks').length")
        page.screenshot(path=str(project_root / "test-artifacts" / "dvc-plots-offline.png"), full_page=True)
        browser.close()
    assert errors == [], errors
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert drawn >= 3, "every plot is drawn"
    with (repo / "dvclive/train/cnn/plots/metrics/eval/accuracy.tsv").open() as table:
        assert table.readline().split("\t")[0] == "step"      # epochs are drawn from step + 1 by the template
