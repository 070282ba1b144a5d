"""A real browser for the page tests: Debian's chromium, driven by Playwright (never
`playwright install`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.http import TEST_PASSWORD

CHROMIUM = Path("/usr/bin/chromium")


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
AXE = Path(__file__).resolve().parents[2] / "vendor" / "axe-core" / "axe.min.js"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium: make chromium"
)


@contextmanager
def launched_chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def log_in(tab, username: str) -> None:
    tab.goto("/login")
    tab.fill("#username", username)
    tab.fill("#password", TEST_PASSWORD)
    tab.click("form#login button[type=submit]")
    tab.wait_for_url(re.compile(r"/$"))


def axe_violations(tab) -> list[dict]:
    """axe-core's violations on the tab's page: [{id, impact, help, nodes: [target, ...]}].

    The script is evaluated through the DevTools protocol, so the page's Content Security Policy
    (which refuses inline scripts) stays on while axe reads the page."""
    if not tab.evaluate("typeof window.axe !== 'undefined'"):
        tab.evaluate(AXE.read_text())
    return tab.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 5),
            }));
        }"""
    )
