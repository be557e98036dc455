"""Execute every notebook in notebooks/ through papermill (CPU defaults) and check the reports.

Per notebook (expectations from its metadata "mxfp4lab": min_figures, results -- see
mxfp4lab.report.notebook_expectations): no error outputs, at least min_figures image/png outputs,
results.json holds the expected keys, the HTML report embeds the figures as data: URIs; and headless
Chromium renders the HTML with its figures (screenshot compared with the same page, images removed).

Set MXFP4LAB_SCREENSHOT_DIR to keep the screenshots (e.g. as CI artifacts).
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest

from mxfp4lab import report

REPORTS = report.available_reports()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Debian/Ubuntu: apt-get update && apt-get install -y chromium


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run each report once (lazily), into one temporary output root."""
    out = tmp_path_factory.mktemp("reports")
    cache = {}

    def get(name):
        if name not in cache:
            try:
                cache[name] = report.run_report(name, out_dir=out, progress=False)
            except report.ReportError as e:
                cache[name] = e
        if isinstance(cache[name], Exception):
            pytest.fail(f"report {name} failed: {cache[name]}")
        return cache[name]

    return get


def _executed(path: Path):
    (nb_file,) = [p for p in path.glob("*.ipynb")]
    return nbformat.read(str(nb_file), as_version=4)


def test_there_is_a_layout_notebook():
    assert "layout" in REPORTS


@pytest.mark.parametrize("name", REPORTS)
def test_notebook_executes_with_figures_and_results(name, runs):
    path = runs(name)
    nb = _executed(path)
    exp = report.notebook_expectations(nb)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) >= exp["min_figures"], f"{len(pngs)} figures, expected >= {exp['min_figures']}"
    results = json.loads((path / "results.json").read_text())
    missing = [k for k in exp["results"] if k not in results]
    assert not missing, f"results.json lacks {missing}"
    (html_file,) = path.glob("*.html")
    html = html_file.read_text()
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) >= exp["min_figures"]
    assert json.loads((path / "run.json").read_text())["status"] == "ok"


def test_layout_key_numbers(runs):
    res = json.loads((runs("layout") / "results.json").read_text())
    from mxfp4lab.layout import SM90_FP4_BIT_PERM, weight_element_destination

    assert res["bit_permutation"] == list(SM90_FP4_BIT_PERM)
    assert res["tile_elements"] == 1024 and res["tile_fraction_row_moved"] == 0.5
    assert res["scale_fold_shape"] == [16, 16]
    assert res["check"]["bit_mismatches"] == 0 and res["check"]["scale_mismatches"] == 0
    tr = res["trace"]
    assert (tr["ckpt_row"], tr["row"]) == (17, 8)  # checkpoint row 17 = up_8
    d = weight_element_destination(tr["row"], tr["k"])
    assert tr["dst_row"] == int(d["dst_row"]) and tr["dst_byte"] == d["dst_byte"].tolist()
    assert (res["reverse"]["row"], res["reverse"]["k"]) == (8, 45)
    (html_file,) = runs("layout").glob("*.html")
    html = html_file.read_text()
    assert "Static snapshot of the layout explorer" in html and "widget-view+json" not in html  # opens offline
    assert html.index("Findings") < html.index("1. Where each element")  # findings up front
    assert [f["verdict"] for f in res["findings"]][0] == "bit-exact"


@pytest.mark.parametrize("name", REPORTS)
def test_report_opens_with_findings(name, runs):
    path = runs(name)
    res = json.loads((path / "results.json").read_text())
    assert res["findings"] and all(f["question"] and f["verdict"] for f in res["findings"])
    nb = _executed(path)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "remove-input" in first_code.metadata.get("tags", [])
    html = first_code.outputs[0]["data"]["text/html"]
    assert res["findings"][0]["verdict"] in html  # the top cell shows this run's findings, not a placeholder


def _screenshot(html: Path, png: Path, tmp: Path, height: int = 4000) -> None:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}", f"--screenshot={png}",
           f"--window-size=1280,{height}", html.resolve().as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.exists(), f"no screenshot: rc={r.returncode}\n{r.stderr[-2000:]}"


def _pixels(png: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(png).convert("RGB")).astype(np.int16)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not on PATH (apt-get update && apt-get install -y chromium)")
@pytest.mark.parametrize("name", REPORTS)
def test_html_report_renders_figures_in_chromium(name, runs, tmp_path):
    path = runs(name)
    (html_file,) = path.glob("*.html")
    shot = tmp_path / f"{name}.png"
    _screenshot(html_file, shot, tmp_path)
    # the same page with every image removed: the difference is what the figures drew
    bare = tmp_path / f"{name}-noimg.html"
    bare.write_text(re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', html_file.read_text()))
    bare_shot = tmp_path / f"{name}-noimg.png"
    _screenshot(bare, bare_shot, tmp_path)
    keep = os.environ.get("MXFP4LAB_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    px, bare_px = _pixels(shot), _pixels(bare_shot)
    non_white = (px.min(axis=2) < 235).mean()
    colorful = ((px.max(axis=2) - px.min(axis=2)) > 60).mean()
    assert non_white > 0.05, f"page mostly blank: {non_white:.3f} non-white"
    assert px.std() > 20, f"no contrast: std {px.std():.1f}"
    assert colorful > 0.005, f"no colored figure pixels: {colorful:.4f}"
    drawn = (np.abs(px - bare_px).max(axis=2) > 30).mean()
    assert drawn > 0.02, f"figures did not render: only {drawn:.4f} of pixels differ without images"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not on PATH (apt-get update && apt-get install -y chromium)")
@pytest.mark.parametrize("name", REPORTS)
def test_html_report_fits_the_page_width(name, runs):
    """No table or figure is wider than a 1280-pixel window (the page never scrolls sideways)."""
    pw = pytest.importorskip("playwright.sync_api",
                             reason="the Python package playwright is not installed (pip install -e '.[test]')")
    (html_file,) = runs(name).glob("*.html")
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(html_file.resolve().as_uri())
            wide = page.evaluate("""() => [...document.querySelectorAll('table, img, pre, .jp-OutputArea-output')]
                .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                .map(e => e.tagName + ' ' + Math.round(e.getBoundingClientRect().right) + ': ' +
                          e.innerText.slice(0, 60))""")
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280 + 1, wide
            assert not wide, wide
        finally:
            browser.close()
