"""Image sources (CIFAR-10, a folder of class folders, synthetic shapes) and their uint8 cache.
(Scanning and decoding a folder of files is in ``files.py``.)

Every source ends as :class:`ImageData`: uint8 tensors of shape (N, 3, 32, 32) that the
trainer moves to its device once and augments there (see ``batches.py``). Decoding files
is the slow part (60,000 JPEGs take tens of seconds), so a decoded source is saved once as
a ``.pt`` file in the cache folder and reloaded in about a second afterwards. The cache key
is built from file names, sizes and modification times, so editing the data rebuilds it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch

from resnet_viz.config import DataConfig
from resnet_viz.data.cache import (
    cache_file,
    cache_load,
    cache_save,
    check_payload,
    stat_key,
)
from resnet_viz.data.files import (
    DataError,
    ProgressFn,
    class_tree,
    decode_files,
    files_key,
    scan_classes,
    stratified_split,
)
from resnet_viz.data.roots import allowed_roots_for, locate
from resnet_viz.data.synthetic import generate
from resnet_viz.fsutil import PROJECT_ROOT, work_dir

log = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
_REPO_ROOT = PROJECT_ROOT


@dataclass(frozen=True)
class ImageData:
    train_x: torch.Tensor  # (N, 3, 32, 32) uint8, contiguous
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor  # (M, 3, 32, 32) uint8, contiguous
    test_y: torch.Tensor  # (M,) int64
    classes: tuple[str, ...]
    name: str  # shown in the UI
    synthetic: bool
    source: str  # "cifar10" | "folder" | "synthetic"
    val_x: torch.Tensor | None = None  # (V, 3, 32, 32) uint8: held out of the training images
    val_y: torch.Tensor | None = None  # (V,) int64

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def default_data_dir() -> Path:
    """``$RESNET_VIZ_DATA``, else ``<repo root>/data`` (for an installed package: ``./data``)."""
    env = os.environ.get("RESNET_VIZ_DATA")
    if env:
        return Path(env).expanduser()
    return (_REPO_ROOT if _REPO_ROOT is not None else work_dir()) / "data"


def default_cache_dir() -> Path:
    """``$RESNET_VIZ_CACHE``, else ``default_data_dir()/cache``."""
    env = os.environ.get("RESNET_VIZ_CACHE")
    return Path(env).expanduser() if env else default_data_dir() / "cache"


def allowed_roots() -> tuple[Path, ...]:
    """Where a folder data set may be read from unless trusted (see ``roots.py``)."""
    return allowed_roots_for(default_data_dir())


def load_data(cfg: DataConfig, cache_dir: Path | None = None, progress: ProgressFn | None = None, *,
              trusted: bool = False) -> ImageData:
    """The images ``cfg`` describes, ``cfg.validation`` training images held out as a validation set;
    a :class:`DataError` says why not. A folder must be under :func:`allowed_roots` unless ``trusted``."""
    data = _load_source(cfg, cache_dir, progress, trusted)
    return split_validation(data, cfg.validation, cfg.seed) if cfg.validation else data


def split_validation(data: ImageData, n: int, seed: int) -> ImageData:
    """Hold out a seeded random ``n`` of the training images as ``val_x``/``val_y``.

    The split depends only on ``(seed, n, training set)``, so every process of a distributed
    run, and a resumed run, holds out the same images. Training images keep their order.
    """
    if data.val_y is not None:
        raise DataError(f"{data.name} already has a validation set of {len(data.val_y)} images")
    if not 0 < n <= len(data.train_y) - 1:
        raise DataError(
            f"a validation set of {n} images needs more than {n} training images, but {data.name} has "
            f"{len(data.train_y)}; use a smaller --val-split"
        )
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data.train_y), generator=gen)
    val_idx, train_idx = perm[:n].sort().values, perm[n:].sort().values
    return dataclasses.replace(
        data, train_x=data.train_x[train_idx].contiguous(), train_y=data.train_y[train_idx],
        val_x=data.train_x[val_idx].contiguous(), val_y=data.train_y[val_idx],
    )


def _load_source(cfg: DataConfig, cache_dir: Path | None, progress: ProgressFn | None, trusted: bool) -> ImageData:
    if cfg.source == "synthetic":
        return make_synthetic(cfg.synthetic_train, cfg.synthetic_test, cfg.seed)
    if cfg.source == "cifar10":
        root = Path(cfg.path).expanduser() if cfg.path else default_data_dir()
        return load_cifar10(root, cfg.download, cache_dir)
    if cfg.source == "folder":
        if not cfg.path:
            raise DataError("the folder data source needs a path to a folder of class folders")
        roots = None if trusted else allowed_roots()
        return load_folder(Path(cfg.path), cfg.holdout_fraction, cfg.seed, cache_dir, progress, roots)
    raise DataError(f"unknown data source {cfg.source!r}; choose cifar10, folder or synthetic")


# ---------------------------------------------------------------------------- CIFAR-10

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


def load_cifar10(root: Path, download: bool, cache_dir: Path | None = None) -> ImageData:
    """Official CIFAR-10 through ``torchvision.datasets.CIFAR10``, downloading into ``root`` if asked."""
    from torchvision.datasets import CIFAR10  # lazy: importing torchvision costs ~1 s
    from torchvision.datasets.utils import check_integrity, extract_archive

    root = Path(root).expanduser()
    cache = _cache_file(cache_dir, "cifar10", root, stat_key(root / _CIFAR_DIR, _CIFAR_FILES))
    payload = cache_load(cache) if cache else None
    if payload is None:
        try:
            archive = root / _CIFAR_ARCHIVE
            if not download and not (root / _CIFAR_DIR).is_dir() and archive.is_file():
                # torchvision only extracts as part of a download; do it for an archive the user placed.
                if not check_integrity(str(archive), CIFAR10.tgz_md5):
                    raise DataError(f"{archive} is damaged (wrong checksum); delete it and download it again")
                extract_archive(str(archive), str(root))
            train = CIFAR10(str(root), train=True, download=download)
            test = CIFAR10(str(root), train=False, download=False)
        except DataError:
            raise
        except (URLError, OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
            raise DataError(_cifar_help(root, download, exc)) from exc
        payload = {
            # .data is (N, 32, 32, 3) uint8 HWC; the trainer wants (N, 3, 32, 32)
            "train_x": torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous(),
            "train_y": torch.tensor(train.targets, dtype=torch.int64),
            "test_x": torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous(),
            "test_y": torch.tensor(test.targets, dtype=torch.int64),
            "classes": [str(c) for c in train.classes],
        }
        check_payload(payload)
        cache = _cache_file(cache_dir, "cifar10", root, stat_key(root / _CIFAR_DIR, _CIFAR_FILES))
        if cache:
            cache_save(cache, payload)
    return _image_data(payload, name="CIFAR-10", source="cifar10")


def _cifar_help(root: Path, download: bool, exc: BaseException) -> str:
    what = "could not download CIFAR-10" if download else f"CIFAR-10 is not in {root} and downloading is off"
    return (
        f"{what} ({type(exc).__name__}: {exc}). Without internet: put {_CIFAR_ARCHIVE} "
        f"(from https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted folder {_CIFAR_DIR} "
        f"in {root}; or use a folder copy of CIFAR-10 (one sub-folder per class) with --data PATH; "
        "or use the synthetic data set."
    )


def _official_cifar_present(root: Path) -> bool:
    return all((root / _CIFAR_DIR / f).is_file() for f in _CIFAR_FILES) or (root / _CIFAR_ARCHIVE).is_file()


# ---------------------------------------------------------------------------- folders


def load_folder(
    path: Path,
    holdout_fraction: float,
    seed: int,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    roots: tuple[Path, ...] | None = None,
) -> ImageData:
    """A tree of class folders (ImageFolder layout), with or without ``train/`` + ``test/``.

    With both ``train/`` and ``test/`` they are the two splits. Otherwise the folder (or its
    lone ``train/``) is the class tree and a seeded, per-class ``holdout_fraction`` of it
    becomes the test set. The folder must lie in one of ``roots`` (None: trusted, anywhere).
    """
    folder = locate(path, roots)
    root, where = folder.path, folder.label
    if not root.is_dir():
        raise DataError(f"data folder {where} does not exist; give a folder with one sub-folder of images per class")
    if not 0.0 < holdout_fraction < 1.0:
        raise DataError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    if split:
        classes, train_files = scan_classes(root / "train", folder)
        test_classes, test_files = scan_classes(root / "test", folder)
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise DataError(
                f"{where}/train and {where}/test must have the same class folders; only in train: "
                f"{only_train or 'none'}, only in test: {only_test or 'none'}; rename or remove folders to match"
            )
    else:
        classes, train_files = scan_classes(class_tree(root), folder)
        test_files = []
    key = files_key([("split" if split else "tree", classes)], train_files + test_files)
    cache = _cache_file(cache_dir, "folder", root, key)
    payload = cache_load(cache) if cache else None
    if payload is None:
        everything = decode_files(root, train_files + test_files, progress, where)  # (N, 3, 32, 32)
        n_train = len(train_files)
        payload = {
            "train_x": everything[:n_train],
            "train_y": torch.tensor([f.label for f in train_files], dtype=torch.int64),
            "test_x": everything[n_train:],
            "test_y": torch.tensor([f.label for f in test_files], dtype=torch.int64),
            "classes": list(classes),
        }
        check_payload(payload)
        if cache:
            cache_save(cache, payload)
    if not split:
        # The split is cheap and not cached, so changing the seed or fraction needs no decode.
        train_idx, test_idx = stratified_split(payload["train_y"], holdout_fraction, seed, where)
        x, y = payload["train_x"], payload["train_y"]
        payload = {**payload, "train_x": x[train_idx], "train_y": y[train_idx],
                   "test_x": x[test_idx], "test_y": y[test_idx]}  # fmt: skip
    looks_like_cifar = (
        tuple(classes) == CIFAR10_CLASSES and len(payload["train_y"]) == 50_000 and len(payload["test_y"]) == 10_000
    )
    short = root.name or where
    name = f"CIFAR-10 (JPEG copy): {short}" if looks_like_cifar else short
    return _image_data(payload, name=name, source="folder")


# ---------------------------------------------------------------------------- synthetic


def make_synthetic(n_train: int, n_test: int, seed: int) -> ImageData:
    """Ten classes of random coloured shapes and textures; the same seed gives the same tensors."""
    if n_train < 1 or n_test < 1:
        raise DataError(f"the synthetic set needs at least one training and one test image, got {n_train}/{n_test}")
    return _image_data(generate(n_train, n_test, seed), name="Synthetic shapes (not CIFAR-10)", source="synthetic")


# ---------------------------------------------------------------------------- defaults


def _default() -> tuple[DataConfig, str]:
    if os.environ.get("RESNET_VIZ_DEFAULT_DATA") == "synthetic":  # e.g. to try the offline fallback
        return DataConfig(), "Synthetic shapes (not CIFAR-10): chosen by RESNET_VIZ_DEFAULT_DATA"
    data_dir = default_data_dir()
    if _official_cifar_present(data_dir):
        return DataConfig(source="cifar10", download=False), f"CIFAR-10 (official files in {data_dir})"
    env = os.environ.get("RESNET_VIZ_CIFAR_FOLDER")
    candidates = [Path(env).expanduser()] if env else []
    if _REPO_ROOT is not None:  # a checkout may have the team's shared copy beside it
        candidates.append(_REPO_ROOT.parent / "shared" / "data" / "cifar10-jpg")
    for folder in candidates:
        if folder.is_dir() and any(folder.resolve().is_relative_to(r) for r in allowed_roots()):
            folder = folder.resolve()
            return DataConfig(source="folder", path=str(folder)), f"CIFAR-10 (JPEG copy) from {folder}"
    return DataConfig(), (
        f"Synthetic shapes (not CIFAR-10): no CIFAR-10 in {data_dir} and no JPEG copy found "
        "(set RESNET_VIZ_CIFAR_FOLDER to one)"
    )


def default_source() -> DataConfig:
    """What the app uses when the user picks nothing: CIFAR-10 already on disk, a JPEG copy, or synthetic.

    Never downloads: the official files count only if they are already in ``default_data_dir()``.
    """
    return _default()[0]


def describe_default_source() -> str:
    """One line for the UI saying what :func:`default_source` picked and from where."""
    return _default()[1]


# ---------------------------------------------------------------------------- cache keys


def _cache_file(cache_dir: Path | None, kind: str, root: Path, key: str | None) -> Path | None:
    return cache_file(Path(cache_dir) if cache_dir is not None else default_cache_dir(), kind, root, key)


def _image_data(p: dict[str, Any], name: str, source: str) -> ImageData:
    return ImageData(
        train_x=p["train_x"].contiguous(), train_y=p["train_y"], test_x=p["test_x"].contiguous(),
        test_y=p["test_y"], classes=tuple(p["classes"]), name=name,
        synthetic=source == "synthetic", source=source,
    )  # fmt: skip
