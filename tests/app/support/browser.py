"""A real browser for the page tests: Debian's chromium, driven by Playwright (never
`playwright install`)."""

from __future__ import annotations

import re
from pathlib import Path

from support.http import TEST_PASSWORD

CHROMIUM = Path("/usr/bin/chromium")


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def log_in(tab, username: str) -> None:
    tab.goto("/login")
    tab.fill("#username", username)
    tab.fill("#password", TEST_PASSWORD)
    tab.click("form#login button[type=submit]")
    tab.wait_for_url(re.compile(r"/$"))
