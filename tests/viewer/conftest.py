"""Fixtures: the real run logs (session-wide, they are read only), a big synthetic log,
and a headless Chromium for the browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import ARGS, CHROMIUM, Watch, require_browser
from viewer_data import run_logged, run_story, write_big_log

from rlm.base.types import RLMChatCompletion


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RLMChatCompletion]:
    return run_logged(tmp_path_factory.mktemp("viewer-logs"))


@pytest.fixture(scope="session")
def real_log(real_run: tuple[Path, RLMChatCompletion]) -> Path:
    return real_run[0]


@pytest.fixture
def big_log(tmp_path: Path) -> Path:
    return write_big_log(tmp_path / "big.jsonl")


@pytest.fixture(scope="session")
def story_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RLMChatCompletion]:
    return run_story(tmp_path_factory.mktemp("viewer-story"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with require_browser().sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page, Watch(page)
    context.close()
