from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SDK = Path(__file__).parent / "node_modules" / "@alaasync" / "layersync-web" / "dist" / "index.global.js"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    return os.environ.get("LAYERSYNC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _missing() -> str | None:
    if not SDK.is_file():
        return f"the browser SDK is not installed ({SDK}); run: npm ci --prefix tests/e2e"
    if _chromium() is None:
        return "no chromium on PATH; on Debian: apt-get install chromium"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        # CI must run these: there a missing piece is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(f"end-to-end prerequisites missing in CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def sdk_path() -> Path:
    return SDK
