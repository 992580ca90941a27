"""Downloading CIFAR-10 (data.download) from a local stand-in server: no network in tests."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_until
from download_standin import closed_port_url, md5, serve, standin_archive

from resnet_viz.config import DataConfig
from resnet_viz.data import download, sources
from resnet_viz.data.files import DataError


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data folder as the server's default, with no JPEG copy beside the checkout."""
    monkeypatch.setattr(sources, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("RESNET_VIZ_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("RESNET_VIZ_CIFAR_FOLDER", raising=False)
    monkeypatch.delenv("RESNET_VIZ_DEFAULT_DATA", raising=False)
    return tmp_path / "data"


def _nothing_like_data(root: Path) -> None:
    assert not download.cifar10_present(root)
    assert sources.default_source().source == "synthetic"
    left = [p.name for p in root.iterdir()] if root.exists() else []
    assert not [n for n in left if n.startswith(("cifar-10", download.TEMP))], left


def test_constants_are_torchvisions() -> None:
    from torchvision.datasets import CIFAR10

    assert (CIFAR10.url, CIFAR10.tgz_md5) == (download.CIFAR_URL, download.CIFAR_MD5)


def test_download_extracts_loads_and_becomes_the_default(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = standin_archive()
    seen: list[tuple[float, str]] = []
    assert sources.default_source().source == "synthetic"
    with serve(archive, chunk=512) as url:
        out = download.download_cifar10(data_dir, url, md5(archive), progress=lambda f, m: seen.append((f, m)))
    assert out["bytes"] == len(archive) and not out["already"]
    assert download.cifar10_present(data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-batches-py"]  # no temporaries left
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    rate = next(m for _, m in seen if "MB/s" in m)
    assert re.fullmatch(r"Downloading CIFAR-10: [\d.]+ of 0\.1 MB · [\d.]+ MB/s · about \d+:\d\d left", rate), rate
    # The default for everyone from now on, without a restart: default_source reads the disk.
    assert sources.default_source() == DataConfig(source="cifar10", download=False)
    assert str(data_dir) in sources.describe_default_source()
    import torchvision.datasets.cifar as cifar  # the stand-in's files are not the official ones

    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    ds = sources.load_data(sources.default_source(), cache_dir=data_dir.parent / "cache")
    assert ds.source == "cifar10" and len(ds.train_y) == 20 and len(ds.test_y) == 4 and len(ds.classes) == 10
    again = download.download_cifar10(data_dir, url, md5(archive))  # nothing to do: no request made
    assert again["already"]


def test_a_wrong_md5_is_refused_and_leaves_nothing(data_dir: Path) -> None:
    archive = standin_archive()
    with serve(archive) as url, pytest.raises(DataError, match="damaged.*deleted"):
        download.download_cifar10(data_dir, url, "0" * 32)
    _nothing_like_data(data_dir)


def test_stop_mid_download_leaves_nothing(data_dir: Path) -> None:
    archive = standin_archive(padding=400_000)
    stop = threading.Event()
    seen: list[float] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        if fraction > 0.1:
            stop.set()

    with serve(archive, chunk=8192, pause_s=0.02) as url, pytest.raises(download.DownloadStopped):
        download.download_cifar10(data_dir, url, md5(archive), progress=progress, stop=stop)
    assert 0.1 < seen[-1] < 0.5  # it stopped within a chunk of being asked
    _nothing_like_data(data_dir)


def test_unreachable_says_offline(data_dir: Path) -> None:
    url = closed_port_url()
    reach = download.reachability(url, wait_s=5)
    assert reach.ok is False and reach.why
    assert download.reachability(url, wait_s=0).at == reach.at  # cached: not asked again at once
    with pytest.raises(DataError, match="could not download CIFAR-10 from 127.0.0.1.*Try again when online"):
        download.download_cifar10(data_dir, url, download.CIFAR_MD5)
    _nothing_like_data(data_dir)


def test_reachability_of_a_server_and_its_size() -> None:
    archive = standin_archive()
    with serve(archive) as url:
        reach = download.reachability(url, wait_s=5)
    assert reach.ok is True and reach.size == len(archive)


def test_a_partial_folder_is_not_overwritten(data_dir: Path) -> None:
    (data_dir / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(DataError, match="lacks some of its files: delete that folder"):
        download.download_cifar10(data_dir, closed_port_url(), download.CIFAR_MD5)


def test_an_archive_with_files_outside_its_folder_writes_only_its_folder(data_dir: Path, tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("../escaped", "cifar-10-batches-py/data_batch_1"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with serve(buf.getvalue()) as url, pytest.raises(DataError, match="lacks data_batch_2"):
        download.download_cifar10(data_dir, url, md5(buf.getvalue()))
    assert not (tmp_path / "escaped").exists() and not (data_dir / "escaped").exists()
    _nothing_like_data(data_dir)


def test_a_slow_check_holds_a_page_run_at_most_its_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name lookup can hang for many seconds: the run that starts the check waits wait_s,
    the runs after it not at all, and the answer is there once the check ends."""
    release = threading.Event()

    def slow(url: str) -> None:
        release.wait(10)
        with download._reach_lock:
            download._reach[url] = download.Reach(True, at=time.monotonic())

    monkeypatch.setattr(download, "_check", slow)
    url = "http://slow.invalid/cifar-10-python.tar.gz"
    t0 = time.monotonic()
    assert download.reachability(url, wait_s=0.3).ok is None
    t1 = time.monotonic()
    assert download.reachability(url, wait_s=0.3).ok is None
    t2 = time.monotonic()
    assert 0.25 < t1 - t0 < 1.0 and t2 - t1 < 0.1
    release.set()
    wait_until(lambda: download.reachability(url, wait_s=0).ok is True, "the check to answer", timeout=10)
    download.forget_reachability()


def test_the_cli_downloads_where_the_app_looks_and_says_why_it_cannot(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from resnet_viz.cli.main import main

    archive = standin_archive()
    with serve(archive) as url:
        monkeypatch.setenv("RESNET_VIZ_CIFAR_URL", url)
        monkeypatch.setenv("RESNET_VIZ_CIFAR_MD5", md5(archive))
        assert main(["download"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["root"] == str(data_dir) and out["bytes"] == len(archive)
    assert download.cifar10_present(data_dir) and sources.default_source().source == "cifar10"
    monkeypatch.setenv("RESNET_VIZ_CIFAR_URL", closed_port_url())  # offline: one line, exit 2, no traceback
    assert main(["download", "--root", str(data_dir.parent / "other")]) == 2
    err = capsys.readouterr().err
    assert "download: error:" in err and "Traceback" not in err
    assert not download.cifar10_present(data_dir.parent / "other")
