"""Folders of image files: class discovery (torchvision's ImageFolder rules), threaded decoding
to 32x32 uint8, the seeded per-class hold-out split, and the cache key of a file list.

``data.load_folder`` puts these together with the uint8 cache; they live here so that module
stays about sources and caching.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
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

ProgressFn = Callable[[int, int], None]


class DataError(ValueError):
    """A data source cannot be used; the message says what to do about it."""


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


def scan_classes(tree: Path, root: Path) -> tuple[tuple[str, ...], list[ImageFile]]:
    """ImageFolder's discovery: sorted sub-folder names are the classes, image files under each."""
    classes = class_folders(tree)
    if not classes:
        with os.scandir(tree) as it:
            loose = sum(e.is_file() and is_image_name(e.name) for e in it)
        hint = f" (found {loose} images directly in it)" if loose else ""
        raise DataError(
            f"no class folders in {tree}{hint}; put each class's images in its own sub-folder, "
            f"e.g. {tree}/cat/0001.png and {tree}/dog/0001.png"
        )
    if len(classes) < 2:
        raise DataError(f"{tree} has only one class folder ({classes[0]}); a classifier needs at least two")
    files: list[ImageFile] = []
    for label, name in enumerate(classes):
        found: list[ImageFile] = []
        stack = [tree / name]
        while stack:  # ImageFolder also looks into nested folders of a class
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir():
                        stack.append(Path(e.path))
                    elif is_image_name(e.name):
                        st = e.stat()
                        rel = Path(e.path).relative_to(root).as_posix()
                        found.append(ImageFile(rel, st.st_size, st.st_mtime_ns, label))
        if not found:
            raise DataError(
                f"class folder {tree / name} has no images ({', '.join(IMG_EXTENSIONS)}); add some or remove it"
            )
        files.extend(sorted(found))
    return classes, files


def decode_image(path: Path) -> np.ndarray:
    """One file as a (32, 32, 3) uint8 RGB array (any size or mode in)."""
    with Image.open(path) as im:
        if im.format == "JPEG" and min(im.size) > 2 * IMAGE_SIZE:
            im.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))  # decode big JPEGs at 1/2..1/8 scale: far faster
        rgb = im.convert("RGB") if im.mode != "RGB" else im
        if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
            # A plain resize (no crop) keeps the whole picture; PIL's bilinear filter antialiases.
            rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def decode_files(root: Path, files: list[ImageFile], progress: ProgressFn | None) -> torch.Tensor:
    """Decode ``files`` in a few threads (PIL releases the GIL); returns (N, 3, 32, 32) uint8."""
    n = len(files)
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)  # (N, H, W, C) as PIL gives it

    def work(lo: int, hi: int) -> int:
        for i in range(lo, hi):
            try:
                out[i] = decode_image(root / files[i].rel)
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


def stratified_split(y: torch.Tensor, fraction: float, seed: int, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
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
