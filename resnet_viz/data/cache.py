"""The on-disk cache of decoded data sets: one ``.pt`` file of uint8 tensors per source.

Keys come from file names, sizes and modification times, so changed data gets a new key.
Writes are atomic; a damaged or foreign cache file is ignored (and rebuilt), never fatal.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from resnet_viz.config import IMAGE_SIZE
from resnet_viz.fsutil import atomic_path

log = logging.getLogger(__name__)
CACHE_VERSION = 1  # bump when the cached payload's layout or the decoding changes


def stat_key(folder: Path, names: tuple[str, ...]) -> str | None:
    try:
        stats = [(n, (folder / n).stat()) for n in names]
    except OSError:
        return None  # not all there (yet): nothing to key a cache on
    return digest([("files", [(n, s.st_size, s.st_mtime_ns) for n, s in stats])])


def digest(items: list[Any]) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}/{IMAGE_SIZE}".encode())
    for item in items:
        h.update(repr(item).encode())
        h.update(b"\n")
    return h.hexdigest()


def cache_file(cache_dir: Path, kind: str, root: Path, key: str | None) -> Path | None:
    if key is None:
        return None
    # One file per data folder: the path hash tells two folders of the same name apart.
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in root.resolve().name)[:40] or "root"
    return cache_dir / f"{kind}-{slug}-{where}-{key[:20]}.pt"


def check_payload(p: dict[str, Any]) -> None:
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
        if len(y) and not (int(y.min()) >= 0 and int(y.max()) < len(classes)):
            raise ValueError(f"{split} labels out of range")


def cache_load(path: Path) -> dict[str, Any] | None:
    """The payload in ``path``, or None when it is missing or damaged (then it gets rebuilt)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("version") != CACHE_VERSION:
            raise ValueError("unexpected content")
        check_payload(payload)
        return payload
    except Exception as exc:  # a truncated or foreign file must never stop training
        log.warning("ignoring damaged data cache %s (%s); decoding the images again", path, exc)
        return None


def cache_save(path: Path, payload: dict[str, Any]) -> None:
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
            with contextlib.suppress(OSError):  # another process removed it, or it is read-only: harmless
                old.unlink()
