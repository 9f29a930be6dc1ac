"""The web page in a real browser: Debian's headless Chromium, driven by Playwright, against ``modelprint serve``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from serving import MODELS, build_gallery, demo_images, served

OUT = Path(__file__).resolve().parent.parent / "out"
TOKEN = "browser-token-42"


def chromium() -> str:
    """Debian's Chromium; a skip only where it cannot be installed (no root or apt), never silently here."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail("chromium is not installed: run scripts/install-system-deps.sh (make test does)")
    pytest.skip("Debian's chromium is not installed and cannot be (needs root and apt): scripts/install-system-deps.sh")


def test_page_identifies_an_uploaded_image_and_lists_the_gallery(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    gallery = build_gallery(tmp_path / "g.sqlite")
    query = demo_images("gen-deep-transposed")[12]
    with served(gallery, token=TOKEN) as (url, _proc):
        files = {"file": (query.name, query.read_bytes(), "image/png")}
        expected = httpx.post(f"{url}/v1/identify", headers={"Authorization": f"Bearer {TOKEN}"}, files=files,
                              timeout=60).json()["results"][0]
        assert expected["prediction"] == "gen-deep-transposed"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(url)
                page.set_input_files("#file-input", str(query))
                page.click("#identify-button")
                expect(page.locator("#error")).to_contain_text("401: missing bearer token", timeout=30_000)

                page.fill("#token", TOKEN)
                page.click("#save-token")
                assert page.evaluate("sessionStorage.getItem('modelprint-token')") == TOKEN
                page.click("#identify-button")
                expect(page.locator("#result")).to_be_visible(timeout=60_000)
                expect(page.locator("#prediction")).to_have_text(expected["prediction"])
                rows = page.locator("#topk-table tbody tr")
                expect(rows).to_have_count(3)
                assert rows.nth(0).locator("td").nth(1).inner_text() == expected["top_k"][0]["model"]
                assert rows.nth(0).locator("td").nth(2).inner_text() == f"{expected['top_k'][0]['similarity']:.3f}"
                caption = f"mean spectrum of {expected['prediction']}"
                expect(page.locator("#spectrum-model-caption")).to_have_text(caption)
                painted = page.evaluate("""() => ['spectrum-image', 'spectrum-model'].map(id => {
                    const c = document.getElementById(id);
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    return new Set(Array.from({length: 64}, (_, i) => d[4 * (i * 1031 % (c.width * c.height))])).size;
                })""")
                assert all(n > 4 for n in painted), painted  # both spectra drawn, not blank
                OUT.mkdir(exist_ok=True)
                page.screenshot(path=str(OUT / "service-identify.png"), full_page=True)

                page.click("#tab-gallery")
                expect(page.locator("#gallery-table tbody tr")).to_have_count(len(MODELS))
                expect(page.locator("#calibration-table tbody tr")).to_contain_text("learned")
                page.screenshot(path=str(OUT / "service-gallery.png"), full_page=True)
            finally:
                browser.close()
