"""A real browser for the page tests: Debian's chromium, driven by Playwright (which can't download its own here).

Never skipped: without chromium the tests fail saying how to install it (`make test` installs it when it can).
Screenshots go to tests/browser/artifacts/ (or $PSS_TEST_ARTIFACTS), kept as test artifacts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("PSS_CHROMIUM", "/usr/bin/chromium")
# Without these, chromium reaches for Google's hosts at start and its background connections are refused here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots are saved."""
    folder = Path(os.environ.get("PSS_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless chromium for the whole session."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(
            f"no chromium at {CHROMIUM}: install Debian's package (`apt-get install -y chromium`, which `make test` runs "
            "as root) or set PSS_CHROMIUM to its path",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class PageWatch:
    """A page with every console error and every request it made, to assert "no errors" and "nothing fetched"."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda message: self.console_errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        page.on("request", lambda request: self.requests.append(request.url))


@pytest.fixture
def watched_page(browser: Any) -> Iterator[PageWatch]:
    """A fresh page (own context) that records its console errors and requests."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield PageWatch(context.new_page())
    finally:
        context.close()
