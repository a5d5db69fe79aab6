"""A real browser (Playwright driving Debian's ``chromium``) on the e2e stack's Prefect UI.

Playwright's own browser download cannot work here, so it drives the system Chromium
(``FRESHET_CHROMIUM``, default ``/usr/bin/chromium``). Without it the browser tests skip
with a message naming the package; ``FRESHET_REQUIRE_BROWSER=1`` (set by ``.ci/run``)
turns that skip into a failure. ``FRESHET_SCREENSHOTS=docs`` makes the tests write
their screenshots into that folder (the README shows ``docs/ui-*.png``); otherwise
they write none, so a test run never rewrites the committed images.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.stack import AUTH, E2E, REPO

CHROMIUM = os.environ.get("FRESHET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# What the Prefect UI shows when the browser cannot reach the API it was told about
# (v1 and v2 wording), or, with basic auth on, when the login cannot be checked.
UNREACHABLE = ("Can't connect to Server API", "Unable to connect to Prefect server", "Invalid credentials")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable; skips (or fails, with FRESHET_REQUIRE_BROWSER=1) without one."""
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the browser tests need playwright: pip install -e '.[dev]'"
    if problem is None and not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        problem = f"the browser tests need Chromium at {CHROMIUM}: apt-get install -y chromium (or set FRESHET_CHROMIUM)"
    if problem:
        if os.environ.get("FRESHET_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{problem} (FRESHET_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(problem)
    return CHROMIUM


@dataclass
class UI:
    """A logged-in browser page on the stack's UI."""

    page: object  # playwright.sync_api.Page
    url: str

    def open(self, path: str) -> None:
        self.page.goto(self.url + path)

    def assert_reaches_api(self) -> None:
        """Fail if the page says the UI cannot reach its API."""
        body = self.page.locator("body").inner_text()
        for text in UNREACHABLE:
            assert text not in body, f"the UI cannot reach its API ({text!r} on {self.page.url})"

    def shot(self, name: str) -> None:
        """Save a screenshot as ``$FRESHET_SCREENSHOTS/<name>.png`` when that is set."""
        folder = os.environ.get("FRESHET_SCREENSHOTS")
        if folder:
            path = REPO / folder / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(path))


@pytest.fixture(scope="module")
def ui(chromium: str, e2e: E2E, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    """Chromium with a fresh profile, logged in through the UI's basic-auth form as a person would."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    base = e2e.stack.ui_url()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 900})
        context.set_default_timeout(30_000)
        # a loaded server (after the whole e2e session) answers the UI's queries slowly
        from playwright.sync_api import expect
        expect.set_options(timeout=30_000)
        try:
            page = context.new_page()
            page.goto(base + "/")
            page.get_by_placeholder("admin:pass").fill(AUTH)
            page.get_by_role("button", name="Login").click()
            ui = UI(page=page, url=base)
            # the UI checks the login against the API it was told about: a wrong API URL fails here
            try:
                page.wait_for_url(lambda url: "/login" not in url)
            except PlaywrightTimeout:
                ui.assert_reaches_api()
                raise
            ui.assert_reaches_api()
            yield ui
        finally:
            context.close()
