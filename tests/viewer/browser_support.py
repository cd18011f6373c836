"""Shared by the browser tests: Debian's ``chromium`` driven by Playwright.

Playwright's own browser download is not used: the system binary is launched through
``executable_path``. Set ``RLMX_CHROMIUM`` to point at another binary. The ``browser``
and ``page`` fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("RLMX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> Any:
    """``playwright.sync_api``; skips the calling module without Playwright or Chromium."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set RLMX_CHROMIUM)",
            allow_module_level=True,
        )
    return sync_api


class Watch:
    """What the page did besides rendering: script errors, dialogs, requests."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", self._on_dialog)
        page.on("request", lambda request: self.requests.append(request.url))

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def open_page(page: Any, path: Path) -> None:
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready]")


def card(page: Any, n: int | str) -> Any:
    return page.locator(f"#timeline .iter[data-n='{n}']")
