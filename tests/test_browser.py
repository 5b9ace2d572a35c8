"""The web page in a real headless Chromium: upload a photo, see the score and the explanation panel."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mfclip import Detector
from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model
from mfclip.serve import ServeSettings, create_app

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def require_chromium() -> None:
    """Skip without Debian's chromium, or fail when MFCLIP_REQUIRE_BROWSER=1 says the test must run."""
    if CHROMIUM.exists():
        return
    reason = (
        f"Debian's chromium is not installed at {CHROMIUM}; install it with: sudo apt-get install chromium"
    )
    if os.environ.get("MFCLIP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (MFCLIP_REQUIRE_BROWSER=1 requires the browser test to run)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def chromium() -> Path:
    require_chromium()
    return CHROMIUM


@pytest.fixture(scope="module")
def server_url(chromium: Path, tmp_path_factory: pytest.TempPathFactory):
    import uvicorn

    torch.manual_seed(0)
    directory = save_checkpoint(
        create_model("mfclip-tiny"),
        tmp_path_factory.mktemp("browser") / "tiny",
        {"name": "browser-test", "synthetic": True},
    )
    detector = Detector.from_pretrained(directory, device="cpu")
    port = _free_port()
    config = uvicorn.Config(
        create_app(detector, ServeSettings()), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_missing_browser_skips_unless_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("MFCLIP_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        require_chromium()
    monkeypatch.setenv("MFCLIP_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        require_chromium()


def test_upload_page_shows_score_and_heat_map(chromium: Path, server_url: str, astronaut_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(server_url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('browser-test')")
            # A model trained on synthetic data says so before anything is scored.
            assert "trained on SYNTHETIC data" in (page.text_content("#model") or "")
            assert page.is_visible("#warning") and "SYNTHETIC" in (page.text_content("#warning") or "")
            page.set_input_files("#file", str(astronaut_path))
            page.click("#submit")
            page.wait_for_function("document.getElementById('score').dataset.pFake !== ''", timeout=30_000)
            p_fake = float(page.get_attribute("#score", "data-p-fake") or "nan")
            shown = float(page.text_content("#score") or "nan")
            assert 0.0 <= p_fake <= 1.0
            assert shown == pytest.approx(p_fake, abs=1e-4)
            assert page.text_content("#label") in ("real", "fake")
            page.wait_for_function(
                "(() => { const img = document.getElementById('heatmap');"
                " return !img.hidden && img.complete && img.naturalWidth > 400; })()",
                timeout=30_000,
            )
            assert page.text_content("#error") == ""
        finally:
            browser.close()
    # Everything the page loaded came from the server itself (no CDN) or the page's own blobs.
    assert requested and all(url.startswith((server_url, "blob:")) for url in requested)
