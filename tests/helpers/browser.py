"""A real headless browser for the page tests: Debian's Chromium (`apt install chromium`), driven by Playwright
for Python with that executable (Playwright's own browser download needs the internet this machine lacks)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator

# On PATH (Debian's, Ubuntu's, Chrome's own package), else where macOS installs Chrome (GitHub's macOS runners
# have it there): shutil.which also takes a full path to an executable.
MAC_CHROME = "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome", MAC_CHROME))), None)
MISSING = "no Chromium or Chrome here (Debian: apt install chromium; .ci/run installs it)"
# Without the background-networking flags Chromium keeps dialling Google, and this machine refuses every try.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def open_page(url: str, flags: tuple[str, ...] = ()) -> Iterator:
    """``url`` in a fresh headless Chromium (a new profile), with ``flags`` besides :data:`FLAGS`."""
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        raise RuntimeError(MISSING)

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        size = {"width": 900, "height": 760}
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=[*FLAGS, *flags], headless=True, viewport=size
        )
        try:
            page = browser.new_page()
            page.goto(url)
            yield page
        finally:
            browser.close()
