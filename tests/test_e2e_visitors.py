"""Two visitors in two browsers (two Chromium profiles: two cookie jars) on one served app.

Ann starts a run. Bob sees it, live, with neither Pause nor Stop: it is Ann's. Ann reloads the
page, opens it in a new tab of the same browser, and still steers her run (her browser is who
she is, not the tab and not the URL); she stops it. Skipped without Debian chromium, as the
main browser test is. Screenshots (16-visitor-ann.png, 17-visitor-bob.png) go where the main
test puts its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import test_e2e_browser as e2e  # tests/ is on sys.path; skips this module too without chromium

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("visitors")
    shots = Path(os.environ.get("RESNET_VIZ_SCREENSHOTS") or tmp / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    env = {"RESNET_VIZ_DEFAULT_DATA": "synthetic", "RESNET_VIZ_ADMINS": ""}
    with e2e.streamlit_server(e2e.ROOT / "app.py", tmp, env) as base:
        yield base, shots


@contextmanager
def two_browsers() -> Iterator[tuple]:
    """Two tabs in two browser contexts of one Chromium: two cookie jars, so two visitors."""
    with e2e.playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(e2e.CHROMIUM), headless=True, args=e2e.CHROMIUM_ARGS)
        try:
            tabs = []
            for _ in range(2):
                tab = browser.new_context(viewport=e2e.VIEWPORT).new_page()
                tab.set_default_timeout(30_000)
                tab.js_errors = []
                tab.on("pageerror", lambda e, t=tab: t.js_errors.append(str(e)))
                tabs.append(tab)
            yield tuple(tabs)
        finally:
            browser.close()


def start_run(tab, base: str) -> None:
    e2e.open_page(tab, base, "train")
    form = e2e.main(tab).locator(".st-key-train_form")
    form.locator("[data-testid='stRadio']").filter(has_text="Budget in").get_by_text("steps", exact=True).click()
    budget = form.get_by_label("Budget", exact=True)
    budget.fill("100000")
    budget.press("Tab")
    form.get_by_role("button", name="Start training").click()
    e2e.expect(e2e.main(tab).locator("[data-testid='stProgress']")).to_contain_text(
        "of 100,000", timeout=e2e.RUN_TIMEOUT_MS)


def test_a_visitor_watches_anothers_run_and_only_its_owner_steers_it(served) -> None:
    base, shots = served
    with two_browsers() as (ann, bob):
        start_run(ann, base)
        stop = e2e.main(ann).get_by_role("button", name="Stop")
        e2e.expect(stop).to_be_visible()
        e2e.shoot(ann, shots, "16-visitor-ann.png")

        e2e.open_page(bob, base, "train")
        e2e.expect(e2e.main(bob).locator("[data-testid='stProgress']")).to_contain_text("of 100,000")
        e2e.expect(e2e.main(bob).get_by_text("Started by another visitor")).to_be_visible()
        e2e.expect(e2e.main(bob).get_by_role("button", name="Stop")).to_have_count(0)
        e2e.expect(e2e.main(bob).get_by_role("button", name="Pause")).to_have_count(0)
        e2e.shoot(bob, shots, "17-visitor-bob.png")
        e2e.assert_healthy(bob)

        e2e.open_page(ann, base, "train")  # a reload: the same visitor
        second = ann.context.new_page()  # a new tab of the same browser: the same visitor too
        second.js_errors = []
        second.on("pageerror", lambda e: second.js_errors.append(str(e)))
        e2e.open_page(second, base, "train")
        stop = e2e.main(second).get_by_role("button", name="Stop")
        e2e.expect(stop).to_be_visible(timeout=e2e.RUN_TIMEOUT_MS)
        stop.click()
        e2e.expect(e2e.main(second).get_by_text("· stopped")).to_be_visible(timeout=e2e.RUN_TIMEOUT_MS)
        e2e.assert_healthy(ann)
