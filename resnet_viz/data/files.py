"""Folders of image files: class discovery (torchvision's ImageFolder rules), threaded decoding
to 32x32 uint8, the seeded per-class hold-out split, and the cache key of a file list.

``data.load_folder`` puts these together with the uint8 cache; they live here so that module
stays about sources and caching. A scan is bounded (image, entry, class and nesting counts,
file bytes, pixels) and, when the folder has an allowed root (``roots.py``), never follows a
link out of it; messages name paths by the folder's label, never by where a link points.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from resnet_viz.config import IMAGE_SIZE
from resnet_viz.data.cache import digest

# torchvision.datasets.ImageFolder's list: other files (README, .DS_Store) are skipped as it does.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_DECODE_CHUNK = 500  # images per thread-pool task: few tasks, yet frequent progress reports
# Bounds on one load, so a mistyped folder fails in seconds instead of decoding for hours.
MAX_IMAGES = 100_000  # CIFAR-10 is 60,000
MAX_ENTRIES = 500_000  # everything a scan looks at: bounds a tree full of files that are not images
MAX_CLASSES = 1_000  # ImageNet's count
MAX_NESTING = 4  # folders inside a class folder (ImageFolder allows any depth; a loop of links never ends)
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 40_000_000  # read from the header, before the pixels are decoded (as uploads.MAX_PIXELS)
# The formats of ImageFolder's extensions (and GIF, often misnamed) only: a renamed EPS would start Ghostscript.
_FORMATS = ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP", "GIF")

ProgressFn = Callable[[int, int], None]


class DataError(ValueError):
    """A data source cannot be used; the message says what to do about it."""


@dataclass
class DataFolder:
    """A data folder being scanned: ``path`` resolved, the ``root`` it must stay inside (None
    trusts its links wherever they go: the CLI's operator's own paths), the ``label`` messages
    call it by, and the counts the scan has used up."""

    path: Path
    root: Path | None
    label: str
    images: int = 0
    entries: int = 0

    @classmethod
    def trusted(cls, path: Path) -> DataFolder:
        return cls(Path(path).expanduser().resolve(), None, str(Path(path).expanduser()))

    def show(self, p: Path) -> str:
        """``p`` (under ``path``) as messages name it: the folder's label and the relative rest."""
        rel = Path(p).relative_to(self.path).as_posix()
        return self.label if rel == "." else f"{self.label.rstrip('/')}/{rel}"

    def check_link(self, p: Path) -> None:
        """DataError if ``p``, with its links followed, lies outside the root."""
        if self.root is None:
            return
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links
            raise DataError(f"cannot read {self.show(p)} ({why(exc)})") from None
        if not real.is_relative_to(self.root):
            raise DataError(
                f"{self.show(p)} is a link to a place outside the allowed data folders; links are not "
                "followed out of them: copy the files in instead"
            )

    def entries_of(self, d: Path) -> Iterator[os.DirEntry[str]]:
        """The entries of folder ``d``, counted against MAX_ENTRIES; DataError if it cannot be read."""
        try:
            with os.scandir(d) as it:
                for e in it:
                    self.entries += 1
                    if self.entries > MAX_ENTRIES:
                        raise DataError(
                            f"{self.label} holds more than {MAX_ENTRIES:,} files and folders; "
                            "give a folder with just the data set"
                        )
                    yield e
        except OSError as exc:
            raise DataError(f"cannot read {self.show(d)} ({why(exc)})") from None


def why(exc: BaseException) -> str:
    """An OSError's reason without its file name (which may be a path the user must not see)."""
    return getattr(exc, "strerror", None) or type(exc).__name__


class ImageFile(NamedTuple):
    rel: str  # path relative to the data folder, "/"-separated: stable across machines
    size: int
    mtime_ns: int
    label: int


def is_image_name(name: str) -> bool:
    """Whether a file called ``name`` counts as an image (ImageFolder's extensions, any case)."""
    return name.lower().endswith(IMG_EXTENSIONS)


def class_tree(root: Path) -> Path:
    """The folder whose sub-folders are the classes: ``root/train`` when there is one, else ``root``."""
    return root / "train" if (root / "train").is_dir() else root


def class_folders(tree: Path) -> tuple[str, ...]:
    """ImageFolder's classes: the sorted names of the sub-folders of ``tree``, hidden ones
    (.ipynb_checkpoints, .git: tool droppings) left out. OSError if ``tree`` cannot be read."""
    with os.scandir(tree) as it:
        return tuple(sorted(e.name for e in it if e.is_dir() and not e.name.startswith(".")))


def scan_classes(tree: Path, root: Path | DataFolder) -> tuple[tuple[str, ...], list[ImageFile]]:
    """ImageFolder's discovery: sorted sub-folder names are the classes, image files under each.
    ``root`` is the data folder (a plain path is trusted, as the CLI's); the scan stays in its limits."""
    if isinstance(root, DataFolder):
        folder = root
    else:  # a plain path, trusted: re-based on the resolved folder, which messages are relative to
        folder = DataFolder.trusted(root)
        tree = folder.path / Path(tree).relative_to(root)
    where = folder.show(tree)
    folder.check_link(tree)
    try:
        classes = class_folders(tree)
    except OSError as exc:
        raise DataError(f"cannot read {where} ({why(exc)})") from None
    if not classes:
        loose = sum(e.is_file() and is_image_name(e.name) for e in folder.entries_of(tree))
        hint = f" (found {loose} images directly in it)" if loose else ""
        raise DataError(
            f"no class folders in {where}{hint}; put each class's images in its own sub-folder, "
            f"e.g. {where}/cat/0001.png and {where}/dog/0001.png"
        )
    if len(classes) < 2:
        raise DataError(f"{where} has only one class folder ({classes[0]}); a classifier needs at least two")
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{where} has {len(classes):,} class folders, more than the limit of {MAX_CLASSES:,}")
    files: list[ImageFile] = []
    for label, name in enumerate(classes):
        found = _scan_class(folder, tree / name, label)
        if not found:
            raise DataError(
                f"class folder {folder.show(tree / name)} has no images ({', '.join(IMG_EXTENSIONS)}); "
                "add some or remove it"
            )
        files.extend(sorted(found))
    return classes, files


def _scan_class(folder: DataFolder, top: Path, label: int) -> list[ImageFile]:
    found: list[ImageFile] = []
    stack = [(top, 0)]
    while stack:  # ImageFolder also looks into nested folders of a class
        d, depth = stack.pop()
        if depth > MAX_NESTING:
            raise DataError(f"{folder.show(d)} is more than {MAX_NESTING} folders deep inside its class folder")
        if d.is_symlink():
            folder.check_link(d)
        for e in folder.entries_of(d):
            if e.name.startswith("."):
                continue
            if e.is_dir():
                stack.append((Path(e.path), depth + 1))
            elif is_image_name(e.name):
                found.append(_image_file(folder, e, label))
    return found


def _image_file(folder: DataFolder, e: os.DirEntry[str], label: int) -> ImageFile:
    path = Path(e.path)
    if e.is_symlink():
        folder.check_link(path)
    try:
        st = e.stat()
    except OSError as exc:
        raise DataError(f"cannot read {folder.show(path)} ({why(exc)})") from None
    if st.st_size > MAX_FILE_BYTES:
        raise DataError(
            f"{folder.show(path)} is {st.st_size:,} bytes, over the limit of {MAX_FILE_BYTES:,} for one image; "
            "scale it down or remove it"
        )
    folder.images += 1
    if folder.images > MAX_IMAGES:
        raise DataError(
            f"{folder.label} has more than {MAX_IMAGES:,} images, the limit of one data set; "
            "give a smaller folder"
        )
    return ImageFile(path.relative_to(folder.path).as_posix(), st.st_size, st.st_mtime_ns, label)


def decode_image(path: Path) -> np.ndarray:
    """One file as a (32, 32, 3) uint8 RGB array (any size or mode in)."""
    with Image.open(path, formats=_FORMATS) as im:
        if im.size[0] * im.size[1] > MAX_PIXELS:  # before decoding: a small file can claim huge pixels
            raise DataError(f"{im.size[0]}x{im.size[1]} pixels is over the limit of {MAX_PIXELS:,} pixels")
        if im.format == "JPEG" and min(im.size) > 2 * IMAGE_SIZE:
            im.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))  # decode big JPEGs at 1/2..1/8 scale: far faster
        rgb = im.convert("RGB") if im.mode != "RGB" else im
        if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
            # A plain resize (no crop) keeps the whole picture; PIL's bilinear filter antialiases.
            rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def decode_files(
    root: Path, files: list[ImageFile], progress: ProgressFn | None, label: str | None = None
) -> torch.Tensor:
    """Decode ``files`` in a few threads (PIL releases the GIL); returns (N, 3, 32, 32) uint8.
    ``label`` names ``root`` in messages (default: the path itself)."""
    where = str(root) if label is None else label
    n = len(files)
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)  # (N, H, W, C) as PIL gives it

    def work(lo: int, hi: int) -> int:
        for i in range(lo, hi):
            try:
                out[i] = decode_image(root / files[i].rel)
            except Exception as exc:  # any failure here is the file's fault, whatever PIL raises
                # PIL's messages hold the full path; the file's relative name says the same to the user.
                msg = str(exc).replace(str(root / files[i].rel), files[i].rel)
                raise DataError(
                    f"cannot read {files[i].rel} in {where} as an image ({type(exc).__name__}: {msg}); "
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


def stratified_split(
    y: torch.Tensor, fraction: float, seed: int, root: Path | str
) -> tuple[torch.Tensor, torch.Tensor]:
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


def files_key(extra: list[Any], files: list[ImageFile]) -> str:
    return digest(extra + [(f.rel, f.size, f.mtime_ns, f.label) for f in files])
