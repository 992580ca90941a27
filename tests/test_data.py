"""Data sources, the decode cache, augmentation and batching (no Streamlit, no network)."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from conftest import CIFAR_JPEG
from PIL import Image

from resnet_viz.config import DataConfig
from resnet_viz.data import batches, sources
from resnet_viz.data import files as imagefiles
from resnet_viz.data.batches import (
    BatchStream,
    eval_batches,
    normalize,
    random_crop,
    random_flip,
)
from resnet_viz.data.sources import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DataError,
    ImageData,
)

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- real CIFAR-10 (JPEG copy)


@pytest.fixture(scope="session")
def cifar_jpeg() -> ImageData:
    if not CIFAR_JPEG.is_dir():
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {CIFAR_JPEG}")
    # The default cache on purpose: the first run on a machine decodes 60,000 JPEGs
    # (tens of seconds), every later run reads the cache in about a second.
    return sources.load_folder(CIFAR_JPEG, 0.1, 0)


def test_cifar_jpeg_folder(cifar_jpeg: ImageData) -> None:
    d = cifar_jpeg
    assert d.classes == CIFAR10_CLASSES  # sorted folder names are the official order
    assert d.train_x.shape == (50_000, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (10_000, 3, 32, 32) and d.test_x.dtype == torch.uint8
    assert d.train_x.is_contiguous() and d.train_y.dtype == d.test_y.dtype == torch.int64
    assert torch.bincount(d.train_y).tolist() == [5_000] * 10
    assert torch.bincount(d.test_y).tolist() == [1_000] * 10
    assert d.name == "CIFAR-10 (JPEG copy): cifar10-jpg" and d.source == "folder" and not d.synthetic
    mean = d.train_x.float().mean(dim=(0, 2, 3)) / 255  # close to the official statistics
    assert torch.allclose(mean, torch.tensor(CIFAR10_MEAN), atol=0.01)


def test_cifar_jpeg_second_load_uses_cache(cifar_jpeg: ImageData, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagefiles, "decode_image", _no_decode)
    again = sources.load_folder(CIFAR_JPEG, 0.1, 0)  # _no_decode fails it if any image is decoded again
    assert torch.equal(again.test_x, cifar_jpeg.test_x) and torch.equal(again.train_y, cifar_jpeg.train_y)


def _no_decode(path: Path) -> np.ndarray:
    raise AssertionError(f"decoded {path} although the cache should have been used")


# ---------------------------------------------------------------------------- small folders

_SHADES = {"apple": 30, "banana": 120, "cherry": 220}
_VARIANTS = [((32, 32), "RGB", "png"), ((50, 40), "L", "png"), ((20, 20), "RGBA", "png"),
             ((64, 64), "P", "png"), ((100, 80), "RGB", "jpg")]  # fmt: skip


def _write_tree(root: Path, per_class: int = 10) -> int:
    """Class folders of flat grey images in assorted sizes/modes; returns the image count."""
    for name, shade in _SHADES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size, mode, ext = _VARIANTS[i % len(_VARIANTS)]
            img = Image.new("RGB", size, (shade,) * 3).convert(mode, palette=Image.Palette.ADAPTIVE)
            img.save(root / name / f"{i:03d}.{ext}")
    return per_class * len(_SHADES)


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    _write_tree(tmp_path / "fruit")
    (tmp_path / "fruit" / "apple" / "notes.txt").write_text("not an image: skipped as ImageFolder does")
    return tmp_path / "fruit"


def test_folder_holdout_is_stratified_and_seeded(tree: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    d = sources.load_folder(tree, 0.2, seed=0, cache_dir=tmp_path / "cache", progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (30, 30)
    assert d.classes == ("apple", "banana", "cherry") and d.name == "fruit" and d.source == "folder"
    assert torch.bincount(d.train_y).tolist() == [8, 8, 8] and torch.bincount(d.test_y).tolist() == [2, 2, 2]
    assert d.train_x.shape == (24, 3, 32, 32) and d.train_x.dtype == torch.uint8
    # Every image, whatever its size or mode, became a flat 32x32 RGB of its class's shade
    # (+-3 for JPEG and resampling).
    for x, y in ((d.train_x, d.train_y), (d.test_x, d.test_y)):
        shade = torch.tensor(list(_SHADES.values()))[y].view(-1, 1, 1, 1)
        assert (x.int() - shade).abs().max() <= 3
    same = sources.load_folder(tree, 0.2, seed=0, cache_dir=tmp_path / "cache")
    other = sources.load_folder(tree, 0.2, seed=1, cache_dir=tmp_path / "cache")
    assert torch.equal(same.test_x, d.test_x) and torch.equal(same.train_y, d.train_y)
    assert torch.bincount(other.test_y).tolist() == [2, 2, 2]
    assert _held_out_files(tree, 0.2, 0) != _held_out_files(tree, 0.2, 1)


def _held_out_files(tree: Path, fraction: float, seed: int) -> list[int]:
    _, files = imagefiles.scan_classes(tree, tree)
    y = torch.tensor([f.label for f in files])
    return imagefiles.stratified_split(y, fraction, seed, tree)[1].tolist()


def test_folder_uses_train_and_test_subfolders(tmp_path: Path) -> None:
    _write_tree(tmp_path / "set" / "train", per_class=6)
    _write_tree(tmp_path / "set" / "test", per_class=2)
    d = sources.load_folder(tmp_path / "set", 0.5, 0, cache_dir=tmp_path / "cache")
    assert len(d.train_y) == 18 and len(d.test_y) == 6
    assert torch.bincount(d.test_y).tolist() == [2, 2, 2]
    (tmp_path / "set" / "test" / "durian").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "set" / "test" / "durian" / "0.png")
    with pytest.raises(DataError, match="only in test: \\['durian'\\]"):
        sources.load_folder(tmp_path / "set", 0.5, 0, cache_dir=tmp_path / "cache")


def test_folder_errors_are_actionable(tree: Path, tmp_path: Path) -> None:
    (tree / "banana" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    with pytest.raises(DataError, match="banana/broken.jpg"):
        sources.load_folder(tree, 0.2, 0, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="does not exist"):
        sources.load_folder(tmp_path / "nowhere", 0.2, 0, cache_dir=tmp_path / "cache")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (32, 32)).save(flat / "a.png")
    with pytest.raises(DataError, match="no class folders .*found 1 images"):
        sources.load_folder(flat, 0.2, 0, cache_dir=tmp_path / "cache")
    (flat / "only").mkdir()
    with pytest.raises(DataError, match="only one class folder"):
        sources.load_folder(flat, 0.2, 0, cache_dir=tmp_path / "cache")
    (flat / "second").mkdir()
    with pytest.raises(DataError, match="has no images"):
        sources.load_folder(flat, 0.2, 0, cache_dir=tmp_path / "cache")


def test_folder_cache_reused_then_invalidated(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = sources.load_folder(tree, 0.2, 0, cache_dir=cache)
    monkeypatch.setattr(imagefiles, "decode_image", _no_decode)
    again = sources.load_folder(tree, 0.2, 0, cache_dir=cache)
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_y, first.test_y)
    monkeypatch.undo()

    decoded: list[Path] = []
    real = imagefiles.decode_image
    monkeypatch.setattr(imagefiles, "decode_image", lambda p: decoded.append(p) or real(p))
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tree / "cherry" / "000.png")
    stat = (tree / "cherry" / "000.png").stat()
    os.utime(tree / "cherry" / "000.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = sources.load_folder(tree, 0.2, 0, cache_dir=cache)
    assert len(decoded) == 30  # the change invalidated the cache: everything decoded again
    red = [(x[:, 0] == 255).flatten(1).all(1).sum() for x in (changed.train_x, changed.test_x)]
    assert int(sum(red)) == 1  # the new red picture is in
    assert len(list(cache.glob("*.pt"))) == 1  # the stale cache file was removed


def test_damaged_cache_is_rebuilt(tree: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    first = sources.load_folder(tree, 0.2, 0, cache_dir=cache)
    (cache_file,) = cache.glob("*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:1000])  # truncated, as by a crash or full disk
    with caplog.at_level(logging.WARNING, logger="resnet_viz.data.sources"):
        again = sources.load_folder(tree, 0.2, 0, cache_dir=cache)
    assert "damaged data cache" in caplog.text
    assert torch.equal(again.train_x, first.train_x)
    assert sources.cache_load(cache_file) is not None  # rewritten whole


# ---------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_determinism_and_balance() -> None:
    a = sources.make_synthetic(500, 200, seed=3)
    b = sources.make_synthetic(500, 200, seed=3)
    c = sources.make_synthetic(500, 200, seed=4)
    assert a.train_x.shape == (500, 3, 32, 32) and a.test_x.shape == (200, 3, 32, 32)
    assert a.train_x.dtype == torch.uint8 and a.train_y.dtype == torch.int64 and a.train_x.is_contiguous()
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert torch.bincount(a.train_y, minlength=10).tolist() == [50] * 10
    assert torch.bincount(a.test_y, minlength=10).tolist() == [20] * 10
    assert a.synthetic and a.source == "synthetic" and len(a.classes) == 10 and "not CIFAR-10" in a.name
    assert a.train_x.float().std() > 30  # real pictures, not a constant
    # The test set does not depend on the size of the training set.
    assert torch.equal(sources.make_synthetic(100, 200, seed=3).test_x, a.test_x)


def test_load_data_dispatch() -> None:
    d = sources.load_data(DataConfig(source="synthetic", synthetic_train=40, synthetic_test=20, seed=1))
    assert len(d.train_y) == 40 and len(d.test_y) == 20


# ---------------------------------------------------------------------------- augmentation


def test_random_crop_is_a_shifted_zero_padded_window() -> None:
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(200, 1, 1, 1) + 1  # no zeros inside
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x[0], (1, 1, 1, 1))  # (1, 6, 6)
    windows = {(dy, dx): padded[:, dy : dy + 4, dx : dx + 4] for dy in range(3) for dx in range(3)}
    seen = set()
    for img in out:
        match = [k for k, w in windows.items() if torch.equal(img, w)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == set(windows)  # all nine offsets occur
    assert torch.equal(random_crop(x, 0, torch.Generator()), x)


def test_random_flip_flips_about_half() -> None:
    x = torch.randint(0, 256, (400, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each image is exactly one of the two
    assert 150 < sum(flipped) < 250


def test_fused_crop_flip_matches_crop_then_flip() -> None:
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    fused = batches._crop_flip(x, 2, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    assert torch.equal(fused, random_flip(random_crop(x, 2, g), g))


def test_normalize() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    y = normalize(x)
    mean, std = torch.tensor(CIFAR10_MEAN).view(3, 1, 1), torch.tensor(CIFAR10_STD).view(3, 1, 1)
    assert y.dtype == torch.float32 and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y[0], (-mean / std).expand(3, 2, 2), atol=1e-5)
    assert torch.allclose(y[1], ((1 - mean) / std).expand(3, 2, 2), atol=1e-5)
    assert normalize(x, channels_last=False).is_contiguous()


def test_batch_stream_is_a_function_of_seed_and_step() -> None:
    d = sources.make_synthetic(300, 20, seed=0)
    a = BatchStream(d.train_x, d.train_y, 64, seed=7, augment=True, device="cpu")
    b = BatchStream(d.train_x, d.train_y, 64, seed=7, augment=True, device="cpu")
    assert a.steps_per_epoch() == 4  # 300 // 64: the last partial batch is dropped
    steps = list(range(10))
    first = [a.batch(s) for s in steps]
    for s in reversed(steps):  # another instance, another order, jumping across epochs: same batches
        xb, yb = b.batch(s)
        assert torch.equal(xb, first[s][0]) and torch.equal(yb, first[s][1])
    assert first[0][0].shape == (64, 3, 32, 32) and first[0][0].dtype == torch.float32
    assert not torch.equal(first[0][0], first[1][0])
    assert not torch.equal(first[0][1], first[4][1])  # epoch 1 is shuffled differently
    epoch0 = torch.cat([first[s][1] for s in range(4)])
    assert len(epoch0) == 256  # no image twice within an epoch
    perm = a.epoch_permutation(0)[:256]
    assert len(set(perm.tolist())) == 256 and torch.equal(d.train_y[perm], epoch0)
    other = BatchStream(d.train_x, d.train_y, 64, seed=8, augment=True, device="cpu")
    assert not torch.equal(other.batch(0)[1], first[0][1])
    plain = BatchStream(d.train_x, d.train_y, 64, seed=7, augment=False, device="cpu")
    assert torch.equal(plain.batch(3)[0], normalize(d.train_x[a.epoch_permutation(0)[192:256]]))
    with pytest.raises(DataError, match="larger than the training set"):
        BatchStream(d.train_x, d.train_y, 301, seed=0, augment=True, device="cpu")


def test_eval_batches_cover_everything_in_order() -> None:
    d = sources.make_synthetic(20, 25, seed=0)
    batches = list(eval_batches(d.test_x, d.test_y, 10, "cpu"))
    assert [len(y) for _, y in batches] == [10, 10, 5]
    assert torch.equal(torch.cat([y for _, y in batches]), d.test_y)
    assert torch.equal(torch.cat([x for x, _ in batches]), normalize(d.test_x))


def test_mix_spreads_seeds() -> None:
    seeds = {batches._mix(0, 2, s) for s in range(1000)} | {batches._mix(1, 2, s) for s in range(1000)}
    assert len(seeds) == 2000 and all(0 <= s < 2**63 for s in seeds)


# ---------------------------------------------------------------------------- CIFAR-10 via torchvision


def _fake_cifar(root: Path, per_batch: int = 4) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    """A tiny cifar-10-batches-py in the official layout.

    The official files are Python 2 pickles whose keys torchvision reads back as str
    (``encoding="latin1"``); Python 3 str keys give the same dicts.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_rows, train_labels = [], []
    for i in range(1, 6):
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # (N, 3*32*32) channel-major
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps({"data": rows, "labels": labels}))
        train_rows.append(rows)
        train_labels += labels
    test_rows = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    test_labels = [1, 2, 3]
    (folder / "test_batch").write_bytes(pickle.dumps({"data": test_rows, "labels": test_labels}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES)}))
    return np.concatenate(train_rows), train_labels, test_rows, test_labels


@pytest.fixture()
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accept the fake files: torchvision checks every file against the official MD5 sums."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)


def test_load_cifar10_from_official_pickles(tmp_path: Path, no_md5: None, monkeypatch: pytest.MonkeyPatch) -> None:
    train_rows, train_labels, test_rows, test_labels = _fake_cifar(tmp_path / "data")
    d = sources.load_cifar10(tmp_path / "data", download=False, cache_dir=tmp_path / "cache")
    assert d.name == "CIFAR-10" and d.source == "cifar10" and d.classes == CIFAR10_CLASSES
    assert torch.equal(d.train_x, torch.from_numpy(train_rows).view(20, 3, 32, 32))
    assert d.train_y.tolist() == train_labels and d.test_y.tolist() == test_labels
    assert torch.equal(d.test_x, torch.from_numpy(test_rows).view(3, 3, 32, 32)) and d.test_x.is_contiguous()
    def no_torchvision(*args: object, **kwargs: object) -> None:
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", no_torchvision)
    again = sources.load_data(DataConfig(source="cifar10", path=str(tmp_path / "data")), cache_dir=tmp_path / "cache")
    assert torch.equal(again.train_x, d.train_x)


def test_cifar10_offline_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as cifar

    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="could not download") as err:
        sources.load_cifar10(tmp_path, download=True, cache_dir=tmp_path / "cache")
    for hint in ("cifar-10-python.tar.gz", "cifar-10-batches-py", "--data", "synthetic", str(tmp_path)):
        assert hint in str(err.value)
    with pytest.raises(DataError, match="downloading is off"):
        sources.load_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")


def test_default_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_REPO_ROOT", tmp_path / "repo")  # no ../shared copy next to it
    monkeypatch.setenv("RESNET_VIZ_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("RESNET_VIZ_CIFAR_FOLDER", raising=False)
    monkeypatch.delenv("RESNET_VIZ_CACHE", raising=False)
    assert sources.default_cache_dir() == tmp_path / "data" / "cache"
    assert sources.default_source().source == "synthetic" and "Synthetic" in sources.describe_default_source()
    _write_tree(tmp_path / "jpegs", per_class=1)
    monkeypatch.setenv("RESNET_VIZ_CIFAR_FOLDER", str(tmp_path / "jpegs"))
    assert sources.default_source() == DataConfig(source="folder", path=str(tmp_path / "jpegs"))
    _fake_cifar(tmp_path / "data")
    assert sources.default_source() == DataConfig(source="cifar10", download=False)  # present: no download
    assert str(tmp_path / "data") in sources.describe_default_source()


@pytest.mark.parametrize("layout", ["tree", "train-only", "train-and-test"])
def test_a_models_class_names_are_the_classes_it_was_trained_on(tmp_path: Path, layout: str) -> None:
    """store.models.class_names reads the class folders by the rules load_folder trains with
    (train/ when there is one, hidden folders and files skipped), so labels never shift."""
    from resnet_viz.config import ModelConfig, RunConfig
    from resnet_viz.store.models import class_names

    root = tmp_path / "set"
    tree = {"tree": root, "train-only": root / "train", "train-and-test": root / "train"}[layout]
    _write_tree(tree, per_class=4)
    if layout == "train-and-test":
        _write_tree(root / "test", per_class=2)
    for where in {tree, root}:
        (where / ".ipynb_checkpoints").mkdir(exist_ok=True)  # hidden: a tool's, never a class
        (where / "README.txt").write_text("a file, not a class")
    data = sources.load_folder(root, 0.25, 0, cache_dir=tmp_path / "cache")
    config = RunConfig(model=ModelConfig(depth=8, num_classes=data.num_classes),
                       data=DataConfig(source="folder", path=str(root)))
    assert class_names(config) == data.classes == tuple(sorted(_SHADES))
