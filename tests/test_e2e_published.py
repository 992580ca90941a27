"""The browser step for the published nets' offer. A module of its own: it needs a server of its
own (an empty data folder, no network), and the main browser test's tab stays open for its whole
module (Playwright's sync API runs one session at a time). Skipped without Debian chromium, as the
main browser test is."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import test_e2e_browser as e2e  # tests/ is on sys.path; skips this module too without chromium

pytestmark = pytest.mark.e2e


def test_published_nets_offer(tmp_path: Path) -> None:
    """Inspect offers the published nets; with no network a click says it cannot reach the download,
    and with the team's copy beside the checkout the net lands in the model picker."""
    from resnet_viz.store import published

    local = published.SHARED_COPY is not None and (published.SHARED_COPY / "resnet20-12fca82f.th").is_file()
    env = {"RESNET_VIZ_DEFAULT_DATA": "synthetic", "RESNET_VIZ_DATA": str(tmp_path / "data"),
           published.URL_ENV: f"http://127.0.0.1:{e2e._free_port()}/"}  # nothing listens there: offline
    folder = Path(os.environ.get("RESNET_VIZ_SCREENSHOTS") or tmp_path)
    with e2e.streamlit_server(e2e.ROOT / "app.py", tmp_path, env) as base, e2e.browser_tab() as tab:
        e2e.open_page(tab, base, "inspect")
        e2e.main(tab).get_by_text("Published nets").click()
        e2e.main(tab).get_by_role("button", name="Download ResNet-20 (1.1 MB)").click()
        if local:
            picker = e2e.main(tab).locator("[data-testid='stSelectbox']").first
            # No button (started) and no progress bar (finished): done.
            e2e.expect(e2e.main(tab).get_by_role("button", name="Download ResNet-20 (1.1 MB)")).to_have_count(
                0, timeout=e2e.RUN_TIMEOUT_MS)
            e2e.expect(e2e.main(tab).locator("[data-testid='stProgress']")).to_have_count(0, timeout=e2e.RUN_TIMEOUT_MS)
            e2e.wait_for_app(tab)
            picker.click()
            e2e.expect(tab.get_by_role("option", name=re.compile("ResNet\\(A\\)-20 \\(pad both\\) · published"))
                   ).to_be_visible()
            tab.keyboard.press("Escape")
        else:
            e2e.expect(e2e.main(tab).get_by_text("cannot reach 127.0.0.1")).to_be_visible(timeout=e2e.RUN_TIMEOUT_MS)
        e2e.wait_for_app(tab)
        e2e.assert_healthy(tab)
        e2e.shoot(tab, folder, "21-published-offer.png")
