"""The app's offer to download CIFAR-10 (sidebar and Home), through AppTest, against a local
stand-in server or a closed port: no network in tests."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from download_standin import closed_port_url, md5, serve, standin_archive
from streamlit.testing.v1 import AppTest

from resnet_viz.app import cifar_download
from resnet_viz.app.state import Keys
from resnet_viz.config import DataConfig
from resnet_viz.data import download, sources

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def empty_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A server with no CIFAR-10 of any kind: an empty data folder, no JPEG copy beside it."""
    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("RESNET_VIZ_DATA", str(tmp_path / "data"))
    for name in ("RESNET_VIZ_CIFAR_FOLDER", "RESNET_VIZ_DEFAULT_DATA", "RESNET_VIZ_CIFAR_MD5", "RESNET_VIZ_ADMINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sources, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(cifar_download, "_registry", None)
    monkeypatch.chdir(ROOT)
    download.forget_reachability()
    yield tmp_path / "data"
    download.forget_reachability()
    registry = cifar_download._registry
    task = registry.get(cifar_download.KEY) if registry is not None else None
    if task is not None:
        with contextlib.suppress(ValueError):
            task.stop()
        task.wait(15)


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _sidebar_text(at: AppTest) -> str:
    return " ".join(e.value for e in at.sidebar.caption) + " ".join(b.label for b in at.sidebar.button)


def test_offline_the_offer_says_it_cannot_reach_the_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNET_VIZ_CIFAR_URL", closed_port_url())
    at = _app()
    text = _sidebar_text(at)
    assert "CIFAR-10 is not on this server" in text and "cannot be reached" in text
    assert "carries on with the embedded synthetic set" in text
    assert not [b for b in at.sidebar.button if "Download" in b.label]  # nothing to press that cannot work
    assert "Synthetic" in at.sidebar.warning[0].value


def test_online_the_offer_downloads_and_cifar_becomes_everyones_default(
        empty_server: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = standin_archive(padding=300_000)
    with serve(archive, chunk=8192, pause_s=0.03) as url:
        monkeypatch.setenv("RESNET_VIZ_CIFAR_URL", url)
        monkeypatch.setenv("RESNET_VIZ_CIFAR_MD5", md5(archive))
        owner, other = _app(), _app()
        assert other.session_state[Keys.DATA_CONFIG] == DataConfig()  # both start on the synthetic default
        offer = [b for b in owner.sidebar.button if b.label.startswith("Download CIFAR-10")]
        assert [b.label for b in offer] == ["Download CIFAR-10 (0.4 MB)"], _sidebar_text(owner)
        assert [b for b in owner.main.button if b.label.startswith("Download CIFAR-10")]  # Home offers it too
        offer[0].click().run()
        assert "Stop" in [b.label for b in owner.sidebar.button]
        other.run()  # a second visitor sees the running download, with no Download button and no Stop
        labels = [b.label for b in other.sidebar.button]
        assert "Stop" not in labels and not [b for b in labels if b.startswith("Download")], labels
        assert "Another visitor started this download" in _sidebar_text(other)
        assert other.sidebar.get("progress"), "the second visitor sees its progress"
        assert cifar_download.registry().start(cifar_download.KEY, lambda p, s: None) is \
            cifar_download.registry().get(cifar_download.KEY)  # one download at a time: a second start joins it
        wait_until(lambda: download.cifar10_present(empty_server), "the download to finish", timeout=60)
    task = cifar_download.registry().get(cifar_download.KEY)
    assert task is not None and task.wait(10) and task.snapshot().state == "done", task.snapshot()
    other.run()  # without a restart, a session on the default moves to CIFAR-10
    assert other.session_state[Keys.DATA_CONFIG] == DataConfig(source="cifar10", download=False)
    assert "**Data:** CIFAR-10 \\(official files in" in other.sidebar.info[0].value
    assert not [b for b in other.sidebar.button if "Download" in b.label]
    shutil.rmtree(empty_server / "cifar-10-batches-py")  # deleted by hand: offered, and downloaded, again
    with serve(archive) as url:
        monkeypatch.setenv("RESNET_VIZ_CIFAR_URL", url)
        other.run()
        next(b for b in other.sidebar.button if b.label.startswith("Download CIFAR-10")).click().run()
        again = cifar_download.registry().get(cifar_download.KEY)
        assert again is not None and again is not task and again.wait(30) and again.snapshot().state == "done"
    assert download.cifar10_present(empty_server)


def test_a_session_that_chose_its_data_keeps_it(empty_server: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app()
    mine = DataConfig(source="synthetic", synthetic_train=640, synthetic_test=160)
    at.session_state[Keys.DATA_CONFIG] = mine
    at.run()
    (empty_server / "cifar-10-batches-py").mkdir(parents=True)
    for name in download.FILES:
        (empty_server / "cifar-10-batches-py" / name).write_bytes(b"x")
    at.run()
    assert at.session_state[Keys.DATA_CONFIG] == mine


def test_stop_ends_the_download_and_offers_it_again(empty_server: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = standin_archive(padding=1_000_000)
    with serve(archive, chunk=8192, pause_s=0.05) as url:
        monkeypatch.setenv("RESNET_VIZ_CIFAR_URL", url)
        monkeypatch.setenv("RESNET_VIZ_CIFAR_MD5", md5(archive))
        at = _app()
        next(b for b in at.sidebar.button if b.label.startswith("Download CIFAR-10")).click().run()
        next(b for b in at.sidebar.button if b.label == "Stop").click().run()
        task = cifar_download.registry().get(cifar_download.KEY)
        assert task is not None and task.wait(20) and task.snapshot().state == "stopped", task.snapshot()
        at.run()
    assert "The last CIFAR-10 download stopped." in _sidebar_text(at)
    assert [b for b in at.sidebar.button if b.label.startswith("Download CIFAR-10")]  # offered again
    assert not download.cifar10_present(empty_server)
    assert not [p.name for p in empty_server.iterdir()], "a stopped download leaves nothing in the data folder"
