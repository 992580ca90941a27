"""Image sources (CIFAR-10, a folder of class folders, synthetic shapes) and their uint8 cache.

Every source ends as :class:`ImageData`: uint8 tensors of shape (N, 3, 32, 32) that the
trainer moves to its device once and augments there (see ``augment.py``). Decoding files
is the slow part (60,000 JPEGs take tens of seconds), so a decoded source is saved once as
a ``.pt`` file in the cache folder and reloaded in about a second afterwards. The cache key
is built from file names, sizes and modification times, so editing the data rebuilds it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.error import URLError

import numpy as np
import torch
from PIL import Image

from .config import DataConfig
from .fsutil import atomic_path

log = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
IMAGE_SIZE = 32
# torchvision.datasets.ImageFolder's list: other files (README, .DS_Store) are skipped as it does.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_VERSION = 1  # bump when the cached payload's layout or the decoding changes
_REPO_ROOT = Path(__file__).resolve().parent.parent
_DECODE_CHUNK = 500  # images per thread-pool task: few tasks, yet frequent progress reports

ProgressFn = Callable[[int, int], None]


class DataError(ValueError):
    """A data source cannot be used; the message says what to do about it."""


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

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def default_data_dir() -> Path:
    """``$RESNET_VIZ_DATA``, else ``<repo root>/data``."""
    env = os.environ.get("RESNET_VIZ_DATA")
    return Path(env).expanduser() if env else _REPO_ROOT / "data"


def default_cache_dir() -> Path:
    """``$RESNET_VIZ_CACHE``, else ``default_data_dir()/cache``."""
    env = os.environ.get("RESNET_VIZ_CACHE")
    return Path(env).expanduser() if env else default_data_dir() / "cache"


def load_data(cfg: DataConfig, cache_dir: Path | None = None, progress: ProgressFn | None = None) -> ImageData:
    """The images ``cfg`` describes; a :class:`DataError` says why they cannot be had."""
    if cfg.source == "synthetic":
        return make_synthetic(cfg.synthetic_train, cfg.synthetic_test, cfg.seed)
    if cfg.source == "cifar10":
        root = Path(cfg.path).expanduser() if cfg.path else default_data_dir()
        return load_cifar10(root, cfg.download, cache_dir)
    if cfg.source == "folder":
        if not cfg.path:
            raise DataError("the folder data source needs a path to a folder of class folders")
        return load_folder(Path(cfg.path), cfg.holdout_fraction, cfg.seed, cache_dir, progress)
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
    cache = _cache_file(cache_dir, "cifar10", root, _stat_key(root / _CIFAR_DIR, _CIFAR_FILES))
    payload = _cache_load(cache) if cache else None
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
        _check_payload(payload)
        cache = _cache_file(cache_dir, "cifar10", root, _stat_key(root / _CIFAR_DIR, _CIFAR_FILES))
        if cache:
            _cache_save(cache, payload)
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


class _File(NamedTuple):
    rel: str  # path relative to the data folder, "/"-separated: stable across machines
    size: int
    mtime_ns: int
    label: int


def load_folder(
    path: Path,
    holdout_fraction: float,
    seed: int,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> ImageData:
    """A tree of class folders (ImageFolder layout), with or without ``train/`` + ``test/``.

    With both ``train/`` and ``test/`` they are the two splits. Otherwise the folder (or its
    lone ``train/``) is the class tree and a seeded, per-class ``holdout_fraction`` of it
    becomes the test set.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; give a folder with one sub-folder of images per class")
    if not 0.0 < holdout_fraction < 1.0:
        raise DataError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    if split:
        classes, train_files = _scan_classes(root / "train", root)
        test_classes, test_files = _scan_classes(root / "test", root)
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise DataError(
                f"{root}/train and {root}/test must have the same class folders; only in train: "
                f"{only_train or 'none'}, only in test: {only_test or 'none'}; rename or remove folders to match"
            )
    else:
        tree = root / "train" if (root / "train").is_dir() else root
        classes, train_files = _scan_classes(tree, root)
        test_files = []
    key = _files_key([("split" if split else "tree", classes)], train_files + test_files)
    cache = _cache_file(cache_dir, "folder", root, key)
    payload = _cache_load(cache) if cache else None
    if payload is None:
        everything = _decode_files(root, train_files + test_files, progress)  # (N, 3, 32, 32)
        n_train = len(train_files)
        payload = {
            "train_x": everything[:n_train],
            "train_y": torch.tensor([f.label for f in train_files], dtype=torch.int64),
            "test_x": everything[n_train:],
            "test_y": torch.tensor([f.label for f in test_files], dtype=torch.int64),
            "classes": list(classes),
        }
        _check_payload(payload)
        if cache:
            _cache_save(cache, payload)
    if not split:
        # The split is cheap and not cached, so changing the seed or fraction needs no decode.
        train_idx, test_idx = _stratified_split(payload["train_y"], holdout_fraction, seed, root)
        x, y = payload["train_x"], payload["train_y"]
        payload = {**payload, "train_x": x[train_idx], "train_y": y[train_idx],
                   "test_x": x[test_idx], "test_y": y[test_idx]}  # fmt: skip
    looks_like_cifar = (
        tuple(classes) == CIFAR10_CLASSES and len(payload["train_y"]) == 50_000 and len(payload["test_y"]) == 10_000
    )
    folder = root.resolve().name or str(root)
    name = f"CIFAR-10 (JPEG copy): {folder}" if looks_like_cifar else folder
    return _image_data(payload, name=name, source="folder")


def _scan_classes(tree: Path, root: Path) -> tuple[tuple[str, ...], list[_File]]:
    """ImageFolder's discovery: sorted sub-folder names are the classes, image files under each."""
    with os.scandir(tree) as it:
        entries = list(it)
    # Hidden folders (.ipynb_checkpoints, .git) are tool droppings, never classes.
    classes = tuple(sorted(e.name for e in entries if e.is_dir() and not e.name.startswith(".")))
    if not classes:
        loose = sum(e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in entries)
        found = f" (found {loose} images directly in it)" if loose else ""
        raise DataError(
            f"no class folders in {tree}{found}; put each class's images in its own sub-folder, "
            f"e.g. {tree}/cat/0001.png and {tree}/dog/0001.png"
        )
    if len(classes) < 2:
        raise DataError(f"{tree} has only one class folder ({classes[0]}); a classifier needs at least two")
    files: list[_File] = []
    for label, name in enumerate(classes):
        found: list[_File] = []
        stack = [tree / name]
        while stack:  # ImageFolder also looks into nested folders of a class
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir():
                        stack.append(Path(e.path))
                    elif e.name.lower().endswith(IMG_EXTENSIONS):
                        st = e.stat()
                        rel = Path(e.path).relative_to(root).as_posix()
                        found.append(_File(rel, st.st_size, st.st_mtime_ns, label))
        if not found:
            raise DataError(
                f"class folder {tree / name} has no images ({', '.join(IMG_EXTENSIONS)}); add some or remove it"
            )
        files.extend(sorted(found))
    return classes, files


def _decode_image(path: Path) -> np.ndarray:
    """One file as a (32, 32, 3) uint8 RGB array (any size or mode in)."""
    with Image.open(path) as im:
        if im.format == "JPEG" and min(im.size) > 2 * IMAGE_SIZE:
            im.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))  # decode big JPEGs at 1/2..1/8 scale: far faster
        rgb = im.convert("RGB") if im.mode != "RGB" else im
        if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
            # A plain resize (no crop) keeps the whole picture; PIL's bilinear filter antialiases.
            rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def _decode_files(root: Path, files: list[_File], progress: ProgressFn | None) -> torch.Tensor:
    """Decode ``files`` in a few threads (PIL releases the GIL); returns (N, 3, 32, 32) uint8."""
    n = len(files)
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)  # (N, H, W, C) as PIL gives it

    def work(lo: int, hi: int) -> int:
        for i in range(lo, hi):
            try:
                out[i] = _decode_image(root / files[i].rel)
            except Exception as exc:  # any failure here is the file's fault, whatever PIL raises
                raise DataError(
                    f"cannot read {files[i].rel} in {root} as an image ({type(exc).__name__}: {exc}); "
                    "delete or replace that file"
                ) from exc
        return hi - lo

    threads = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        futures = [pool.submit(work, lo, min(lo + _DECODE_CHUNK, n)) for lo in range(0, n, _DECODE_CHUNK)]
        done = 0
        try:
            for fut in as_completed(futures):
                done += fut.result()  # re-raises a worker's DataError here
                if progress is not None:
                    progress(done, n)  # from the caller's thread: Streamlit widgets need that
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _stratified_split(y: torch.Tensor, fraction: float, seed: int, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, a seeded ``fraction`` of the indices (at least one when the class has two)."""
    gen = torch.Generator().manual_seed(seed)
    train_parts, test_parts = [], []
    for c in range(int(y.max()) + 1 if len(y) else 0):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = min(max(round(len(idx) * fraction), 1 if len(idx) >= 2 else 0), len(idx) - 1)
        test_parts.append(idx[:n_test])
        train_parts.append(idx[n_test:])
    train_idx, test_idx = torch.cat(train_parts).sort().values, torch.cat(test_parts).sort().values
    if len(test_idx) == 0:
        raise DataError(f"{root} has too few images to hold out a test set; add images or a test/ folder")
    return train_idx, test_idx


# ---------------------------------------------------------------------------- synthetic


SYNTHETIC_CLASSES: tuple[str, ...] = (
    "disc", "square", "triangle", "ring", "cross", "h-stripes", "v-stripes", "d-stripes", "checkerboard", "dots",
)
_SYNTH_CHUNK = 2048  # images generated per vectorized pass: bounds memory for big sets


def _frac(a: np.ndarray) -> np.ndarray:
    return a - np.floor(a)


# Each shape gets (u, v): pixel offsets from the shape's centre, rotated and divided by its
# half-size (so the shape spans [-1, 1]), p: texture period in those units, ph: phase.
_SHAPES: tuple[Callable[..., np.ndarray], ...] = (
    lambda u, v, p, ph: u * u + v * v < 1.0,  # disc
    lambda u, v, p, ph: np.maximum(abs(u), abs(v)) < 0.85,  # square
    lambda u, v, p, ph: (v < 0.75) & (abs(u) < (v + 0.95) * 0.6),  # triangle, apex up
    lambda u, v, p, ph: (u * u + v * v < 1.0) & (u * u + v * v > 0.36),  # ring
    lambda u, v, p, ph: ((abs(u) < 0.3) & (abs(v) < 1)) | ((abs(v) < 0.3) & (abs(u) < 1)),  # cross
    lambda u, v, p, ph: _frac(v / p + ph) < 0.5,  # horizontal stripes
    lambda u, v, p, ph: _frac(u / p + ph) < 0.5,  # vertical stripes
    lambda u, v, p, ph: _frac((u + v) / (p * 1.4142) + ph) < 0.5,  # diagonal stripes
    lambda u, v, p, ph: (np.floor(u / p + ph) + np.floor(v / p + ph)) % 2 == 0,  # checkerboard
    lambda u, v, p, ph: (_frac(u / p + ph) - 0.5) ** 2 + (_frac(v / p + ph) - 0.5) ** 2 < 0.09,  # dots
)
_TEXTURES = frozenset(range(5, 10))  # confined to a square patch so their extent varies too


def _shape_masks(kind: np.ndarray, rng: np.random.Generator, scale: tuple[float, float]) -> np.ndarray:
    """(n, H, W) bool: one shape of class ``kind[i]`` per image, at a random place, size and tilt."""
    n, s = len(kind), IMAGE_SIZE
    centre = rng.uniform(0.3 * s, 0.7 * s, (n, 2)).astype(np.float32)
    half = (rng.uniform(*scale, n) * s).astype(np.float32)  # half the shape's width, in pixels
    angle = rng.uniform(-0.35, 0.35, n).astype(np.float32)  # +-20 degrees: stripes keep their class
    period = (rng.uniform(2.5, 6.0, n) / half).astype(np.float32)  # texture period in pixels / half
    phase = rng.uniform(0.0, 1.0, n).astype(np.float32)
    grid = np.arange(s, dtype=np.float32) + 0.5
    mask = np.empty((n, s, s), dtype=bool)
    for c in np.unique(kind):
        i = np.flatnonzero(kind == c)
        dx = grid[None, None, :] - centre[i, 0, None, None]  # (k, 1, W)
        dy = grid[None, :, None] - centre[i, 1, None, None]  # (k, H, 1)
        cos, sin, h = np.cos(angle[i])[:, None, None], np.sin(angle[i])[:, None, None], half[i, None, None]
        u, v = (cos * dx + sin * dy) / h, (cos * dy - sin * dx) / h  # (k, H, W)
        m = _SHAPES[c](u, v, period[i, None, None], phase[i, None, None])
        if c in _TEXTURES:
            m &= (abs(u) < 1) & (abs(v) < 1)
        mask[i] = m
    return mask


def _synthetic_chunk(y: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Images of labels ``y`` as (n, 3, 32, 32) uint8.

    The labelled shape is drawn over a smaller distractor of a random class, on a background
    with a light gradient and pixel noise, all in random colours: a net must look at shape,
    not colour or position. A ResNet-20 passes 50% within a minute of CPU training and ~90%
    after five epochs; faint shapes and distractors keep the last few percent hard.
    """
    n, s = len(y), IMAGE_SIZE
    main = torch.from_numpy(_shape_masks(y, rng, (0.16, 0.38)))[:, None]  # (n, 1, H, W)
    other = torch.from_numpy(_shape_masks(rng.integers(0, len(_SHAPES), n), rng, (0.08, 0.16)))[:, None]
    bg = torch.from_numpy(rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32))
    # Shape and distractor differ from the background by 0.12 to 0.42 per channel, up or down
    # (whichever stays in [0, 1]): sometimes faint under the noise, never invisible.
    step = rng.uniform(0.12, 0.42, (2, n, 3)) * rng.choice([-1.0, 1.0], (2, n, 3))
    step = torch.from_numpy(step.astype(np.float32))  # (2, n, 3): shape, distractor
    fg, dc = torch.where(((bg + step) >= 0) & ((bg + step) <= 1), bg + step, bg - step)  # (n, 3) each
    tilt = torch.from_numpy(rng.uniform(-0.25, 0.25, (n, 2)).astype(np.float32))  # uneven lighting
    noise_gen = torch.Generator().manual_seed(int(rng.integers(2**62)))  # torch's rand is much faster

    ramp = (torch.arange(s, dtype=torch.float32) + 0.5 - s / 2) / (s / 2)  # (W,) in [-1, 1]
    light = tilt[:, 0, None, None] * ramp[None, None, :] + tilt[:, 1, None, None] * ramp[None, :, None]
    bg, fg, dc = (c[:, :, None, None] for c in (bg, fg, dc))  # (n, 3, 1, 1) each
    img = torch.where(main, fg, torch.where(other, dc, bg))  # (n, 3, H, W)
    noise = torch.rand((n, 3, s, s), generator=noise_gen).sub_(0.5).mul_(0.4)  # +-0.2 per pixel
    img = (img + light[:, None] + noise).mul_(255.0).add_(0.5)
    return img.clamp_(0, 255).to(torch.uint8)


def _synthetic_split(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = rng.permutation(np.arange(n) % len(SYNTHETIC_CLASSES))  # balanced to within one image
    x = torch.cat([_synthetic_chunk(y[lo : lo + _SYNTH_CHUNK], rng) for lo in range(0, n, _SYNTH_CHUNK)])
    return x, torch.from_numpy(y.astype(np.int64))


def make_synthetic(n_train: int, n_test: int, seed: int) -> ImageData:
    """Ten classes of random coloured shapes and textures; the same seed gives the same tensors."""
    if n_train < 1 or n_test < 1:
        raise DataError(f"the synthetic set needs at least one training and one test image, got {n_train}/{n_test}")
    # Independent streams: the test set does not change when n_train does.
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed & (2**64 - 1)).spawn(2))
    train_x, train_y = _synthetic_split(n_train, train_rng)
    test_x, test_y = _synthetic_split(n_test, test_rng)
    payload = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y,
               "classes": list(SYNTHETIC_CLASSES)}  # fmt: skip
    return _image_data(payload, name="Synthetic shapes (not CIFAR-10)", source="synthetic")


# ---------------------------------------------------------------------------- defaults


def _default() -> tuple[DataConfig, str]:
    data_dir = default_data_dir()
    if _official_cifar_present(data_dir):
        return DataConfig(source="cifar10", download=False), f"CIFAR-10 (official files in {data_dir})"
    env = os.environ.get("RESNET_VIZ_CIFAR_FOLDER")
    for folder in ([Path(env).expanduser()] if env else []) + [_REPO_ROOT.parent / "shared" / "data" / "cifar10-jpg"]:
        if folder.is_dir():
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


# ---------------------------------------------------------------------------- cache


def _stat_key(folder: Path, names: tuple[str, ...]) -> str | None:
    try:
        stats = [(n, (folder / n).stat()) for n in names]
    except OSError:
        return None  # not all there (yet): nothing to key a cache on
    return _digest([("files", [(n, s.st_size, s.st_mtime_ns) for n, s in stats])])


def _files_key(extra: list[Any], files: list[_File]) -> str:
    return _digest(extra + [(f.rel, f.size, f.mtime_ns, f.label) for f in files])


def _digest(items: list[Any]) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}/{IMAGE_SIZE}".encode())
    for item in items:
        h.update(repr(item).encode())
        h.update(b"\n")
    return h.hexdigest()


def _cache_file(cache_dir: Path | None, kind: str, root: Path, key: str | None) -> Path | None:
    if key is None:
        return None
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # One file per data folder: the path hash tells two folders of the same name apart.
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in root.resolve().name)[:40] or "root"
    return cache_dir / f"{kind}-{slug}-{where}-{key[:20]}.pt"


def _check_payload(p: dict[str, Any]) -> None:
    """Raise ValueError unless ``p`` is a well-formed set of tensors (guards against damaged caches)."""
    classes = p["classes"]
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise ValueError("bad class list")
    for split in ("train", "test"):
        x, y = p[f"{split}_x"], p[f"{split}_y"]
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)):
            raise ValueError(f"bad {split} images")
        if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.shape == (len(x),)):
            raise ValueError(f"bad {split} labels")
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < len(classes)):
            raise ValueError(f"{split} labels out of range")


def _cache_load(path: Path) -> dict[str, Any] | None:
    """The payload in ``path``, or None when it is missing or damaged (then it gets rebuilt)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("version") != CACHE_VERSION:
            raise ValueError("unexpected content")
        _check_payload(payload)
        return payload
    except Exception as exc:  # a truncated or foreign file must never stop training
        log.warning("ignoring damaged data cache %s (%s); decoding the images again", path, exc)
        return None


def _cache_save(path: Path, payload: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({**payload, "version": CACHE_VERSION}, tmp)
    except OSError as exc:  # read-only or full disk: training still works, only slower next time
        log.warning("could not write the data cache %s (%s); images will be decoded again next time", path, exc)
        return
    # Earlier versions of the same folder's cache are dead weight (hundreds of MB each).
    for old in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.pt"):
        if old != path:
            try:
                old.unlink()
            except OSError:
                pass


def _image_data(p: dict[str, Any], name: str, source: str) -> ImageData:
    return ImageData(
        train_x=p["train_x"].contiguous(), train_y=p["train_y"], test_x=p["test_x"].contiguous(),
        test_y=p["test_y"], classes=tuple(p["classes"]), name=name,
        synthetic=source == "synthetic", source=source,
    )  # fmt: skip
