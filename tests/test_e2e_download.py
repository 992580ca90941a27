"""The browser step for the CIFAR-10 download offer: a server with no CIFAR-10, a stand-in
download server on 127.0.0.1 (no network), one click. A module of its own: it needs a server of
its own (an empty data folder), and the main browser test's tab stays open for its whole module
(Playwright's sync API runs one at a time). Screenshots 16-18 go where the main test's go.
Skipped without Debian chromium, as the main browser test is."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import test_e2e_browser as e2e  # tests/ is on sys.path; skips this module too without chromium
from download_standin import md5, serve, standin_archive

pytestmark = pytest.mark.e2e


def test_download_offer_with_a_stand_in_server(tmp_path: Path) -> None:
    """A server with no CIFAR-10 offers it in the sidebar; a click downloads the stand-in
    archive with progress, and CIFAR-10 becomes the data set in use, with no restart."""
    folder = Path(os.environ["RESNET_VIZ_SCREENSHOTS"]) if os.environ.get("RESNET_VIZ_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    archive = standin_archive(padding=2_000_000)
    with serve(archive, chunk=1 << 16, pause_s=0.2) as url, \
            e2e.streamlit_server(e2e.ROOT / "app.py", tmp_path, {"RESNET_VIZ_DATA": str(tmp_path / "data"),
                                                         "RESNET_VIZ_CIFAR_URL": url,
                                                         "RESNET_VIZ_CIFAR_MD5": md5(archive)}) as base, \
            e2e.browser_tab() as tab:
        e2e.open_page(tab, base, "")
        side = tab.locator("[data-testid='stSidebar']")
        offer = side.get_by_role("button", name=re.compile(r"Download CIFAR-10 \(2\.1 MB\)"))
        e2e.expect(offer).to_be_visible()
        e2e.shoot(tab, folder, "16-download-offer.png")
        offer.click()
        progress = side.get_by_text(re.compile(r"Downloading CIFAR-10: .* MB/s"))
        e2e.expect(progress).to_be_visible(timeout=e2e.RUN_TIMEOUT_MS)
        e2e.expect(side.get_by_role("button", name="Stop")).to_be_visible()
        e2e.shoot(tab, folder, "17-download-progress.png")
        data = side.locator("[data-testid='stAlert']").first
        e2e.expect(data).to_contain_text("official files in", timeout=e2e.RUN_TIMEOUT_MS)
        e2e.expect(side.get_by_role("button", name=re.compile("Download CIFAR-10"))).to_have_count(0)
        e2e.wait_for_app(tab)
        e2e.assert_healthy(tab)
        e2e.shoot(tab, folder, "18-downloaded.png")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-batches-py"]
