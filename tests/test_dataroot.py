"""A folder data set is read only under the server's allowed data folders (``data/roots.py``).

The app is served to a class from one machine, so a folder typed into the Train page is a path
on the server's disk: it must stay inside an allowed root, links must not lead out of one, a
scan is bounded before anything is decoded, and no message names a path outside the roots.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import _write_tree

from resnet_viz.config import DataConfig
from resnet_viz.data import files, sources
from resnet_viz.data.files import DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path/allowed`` as the server's only data root; ``tmp_path/outside`` is not one."""
    (tmp_path / "allowed").mkdir()
    (tmp_path / "outside").mkdir()
    monkeypatch.setenv("RESNET_VIZ_DATA_ROOTS", str(tmp_path / "allowed"))
    monkeypatch.setenv("RESNET_VIZ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "allowed"


def _load(path: Path | str, trusted: bool = False) -> sources.ImageData:
    cfg = DataConfig(source="folder", path=str(path), holdout_fraction=0.2)
    return sources.load_data(cfg, trusted=True) if trusted else sources.load_data(cfg)


def _no_decode(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record decodes (a refusal must come before any)."""
    decoded: list[Path] = []
    monkeypatch.setattr(files, "decode_image", lambda p: decoded.append(p) or np.zeros((32, 32, 3), np.uint8))
    return decoded


@pytest.mark.parametrize("path", ["/etc", "/", "/etc/no-such-folder", "{allowed}/../outside", "~"])
def test_folders_outside_the_roots_are_refused_naming_only_the_roots(
    allowed: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = _no_decode(monkeypatch)
    path = path.format(allowed=allowed)
    with pytest.raises(DataError, match="not under an allowed data folder") as err:  # never an OSError
        _load(path)
    from resnet_viz.data.roots import not_allowed

    # The roots and nothing else: not the path, nor what exists there.
    assert str(err.value) == not_allowed((allowed.resolve(),))
    assert f"(allowed: {allowed.resolve().as_posix()}/)" in str(err.value)
    assert not decoded


def test_a_link_out_of_the_root_is_not_followed(allowed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = _no_decode(monkeypatch)
    outside = allowed.parent / "outside"
    _write_tree(outside / "secret", per_class=2)
    links = {  # where the link sits in the data set -> what it points to outside
        "classes/cherry": outside / "secret" / "cherry",  # a class folder
        "files/apple/z.png": outside / "secret" / "apple" / "000.png",  # one image
        "nested/apple/deeper": outside / "secret",  # a folder inside a class
        "split/train": outside / "secret",  # the train/ folder
    }
    for name, target in links.items():
        top = allowed / name.split("/")[0]
        _write_tree(top / ("test" if name.startswith("split") else ""), per_class=3)
        if name.startswith("classes"):
            shutil.rmtree(top / "cherry")
        (allowed / name).symlink_to(target)
        with pytest.raises(DataError, match="link to a place outside the allowed data folders") as err:
            _load(allowed / top.name)
        assert str(outside) not in str(err.value) and "secret" not in str(err.value), err.value
        assert name.split("/", 1)[1] in str(err.value)  # says which entry, relative to the root
    (allowed / "whole").symlink_to(outside / "secret")  # the data folder itself
    with pytest.raises(DataError, match="not under an allowed data folder"):
        _load(allowed / "whole")
    assert not decoded


def test_a_link_inside_the_root_is_followed(allowed: Path) -> None:
    _write_tree(allowed / "pool", per_class=4)
    (allowed / "set").mkdir()
    for name in ("apple", "banana", "cherry"):
        (allowed / "set" / name).symlink_to(allowed / "pool" / name)
    assert _load(allowed / "set").classes == ("apple", "banana", "cherry")


def test_a_tree_over_the_caps_is_refused_before_decoding(allowed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_tree(allowed / "fruit", per_class=10)  # 30 images
    decoded = _no_decode(monkeypatch)
    monkeypatch.setattr(files, "MAX_IMAGES", 25)
    with pytest.raises(DataError, match="more than 25 images"):
        _load(allowed / "fruit")
    monkeypatch.setattr(files, "MAX_IMAGES", 100_000)
    monkeypatch.setattr(files, "MAX_ENTRIES", 20)
    with pytest.raises(DataError, match="more than 20 files and folders"):
        _load(allowed / "fruit")
    monkeypatch.setattr(files, "MAX_ENTRIES", 500_000)
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    with pytest.raises(DataError, match=r"fruit/apple/\d+\.\w+ is [\d,]+ bytes, over the limit of 100 "):
        _load(allowed / "fruit")
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 2**20)
    deep = allowed / "fruit" / "apple" / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    with pytest.raises(DataError, match="more than 4 folders deep"):
        _load(allowed / "fruit")
    assert not decoded


def test_pixels_are_capped_before_decoding(allowed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_tree(allowed / "fruit", per_class=5)  # sizes up to 100x80
    monkeypatch.setattr(files, "MAX_PIXELS", 64 * 64)
    too_big = r"/004\.jpg in .*fruit as an image \(DataError: 100x80 pixels is over the limit of 4,096 pixels\)"
    with pytest.raises(DataError, match=too_big):
        _load(allowed / "fruit")


def test_an_allowed_folder_loads_as_before_and_the_cli_trusts_its_own(
    allowed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_tree(allowed / "fruit", per_class=10)
    (allowed / "fruit" / "apple" / "notes.txt").write_text("not an image: skipped")
    direct = sources.load_folder(allowed / "fruit", 0.2, 0, cache_dir=tmp_path / "direct")
    served = _load(allowed / "fruit")
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(served, field), getattr(direct, field)), field
    assert served.classes == direct.classes == ("apple", "banana", "cherry") and served.name == "fruit"
    # The same folder once the operator allows only another root: refused to the app, read by the CLI.
    monkeypatch.setenv("RESNET_VIZ_DATA_ROOTS", str(tmp_path / "outside"))
    with pytest.raises(DataError, match="not under an allowed data folder"):
        _load(allowed / "fruit")
    assert torch.equal(_load(allowed / "fruit", trusted=True).train_x, direct.train_x)


def test_roots_come_from_the_env_var_or_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("RESNET_VIZ_DATA_ROOTS", os.pathsep.join([str(a), "", str(b), str(a)]))
    assert sources.allowed_roots() == (a.resolve(), b.resolve())
    monkeypatch.delenv("RESNET_VIZ_DATA_ROOTS")
    monkeypatch.setenv("RESNET_VIZ_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("RESNET_VIZ_CIFAR_FOLDER", str(tmp_path / "jpegs"))
    roots = sources.allowed_roots()
    assert roots[0] == (tmp_path / "data").resolve() and roots[-1] == (tmp_path / "jpegs").resolve()


def test_trusted_root_gives_data_errors_never_os_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads its operator's path wherever it is, still within the scan's limits."""
    _no_decode(monkeypatch)
    monkeypatch.setattr(files, "MAX_ENTRIES", 2_000)
    with pytest.raises(DataError):
        _load("/", trusted=True)


def test_train_page_refuses_a_folder_outside_the_roots(
    allowed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from resnet_viz.app.state import Keys

    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("RESNET_VIZ_DEFAULT_DATA", "synthetic")
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    try:
        at.switch_page("app_pages/train.py").run()
        next(s for s in at.selectbox if s.label == "Data set").set_value("folder").run()
        next(t for t in at.text_input if t.label.startswith("Folder")).input("/etc").run()
        assert not at.exception, at.exception
        errors = [e.value for e in list(at.error) + list(at.sidebar.error)]
        assert any("not under an allowed data folder" in e for e in errors), errors
        assert not any("/etc/" in e or "passwd" in e for e in errors), errors
        assert at.session_state[Keys.DATA_CONFIG] == DataConfig()  # the refused folder is not taken
    finally:
        from resnet_viz.app import resources

        with contextlib.suppress(Exception):  # cleanup only
            resources.job_registry().shutdown()
        st.cache_resource.clear()
