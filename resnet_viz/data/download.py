"""Download the official CIFAR-10 archive into the data folder, safely and stoppably.

``download_cifar10`` fetches torchvision's archive (the same address and md5 sum as
``torchvision.datasets.CIFAR10``) in chunks into a hidden temporary file in the data folder,
reports bytes, speed and time left, honours a stop event between chunks, checks the md5 sum,
extracts into a hidden temporary folder and only then renames ``cifar-10-batches-py`` into
place. So a stopped, damaged or half-finished download never leaves anything that
``sources`` would take for data: it looks for that folder or the archive by their own names.

``reachability`` tells, quickly and from a cache, whether the download's server answers, so a
page can say "offline" without waiting on the network. ``$RESNET_VIZ_CIFAR_URL`` and
``$RESNET_VIZ_CIFAR_MD5`` replace the address and sum (a mirror, or a local stand-in in tests).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from resnet_viz.data.files import DataError

# torchvision.datasets.CIFAR10.url and .tgz_md5 (a test checks they still agree); the size is
# the archive's Content-Length, stated before anyone starts a download.
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_BYTES = 170_498_071
URL_ENV, MD5_ENV = "RESNET_VIZ_CIFAR_URL", "RESNET_VIZ_CIFAR_MD5"
FOLDER = "cifar-10-batches-py"
FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
TEMP = ".cifar-10-download-"  # a dot: hidden, and never a name the loaders look for
MAX_BYTES = 2 * CIFAR_BYTES  # a server that sends more is not sending CIFAR-10
EXTRACTED_BYTES = 178_000_000  # the six batches and the meta file
_CHUNK = 256 << 10  # read1 returns what has arrived, up to this: a stop is seen within one

ProgressFn = Callable[..., None]  # (fraction, message)


class DownloadStopped(Exception):
    """The stop event was set: the download ended and left nothing behind."""


def cifar_url() -> str:
    return os.environ.get(URL_ENV) or CIFAR_URL


def cifar_md5() -> str:
    return (os.environ.get(MD5_ENV) or CIFAR_MD5).strip().lower()


def cifar10_present(root: Path) -> bool:
    """Whether ``root`` holds every file of the official ``cifar-10-batches-py``."""
    return all((Path(root) / FOLDER / f).is_file() for f in FILES)


def download_cifar10(root: Path, url: str | None = None, md5: str | None = None, *,
                     progress: ProgressFn | None = None, stop: threading.Event | None = None) -> dict[str, object]:
    """Fetch, check and extract CIFAR-10 into ``root/cifar-10-batches-py``; what it did, as a dict.

    ``url`` and ``md5`` default to :func:`cifar_url` and :func:`cifar_md5`. Raises
    :class:`DownloadStopped` when ``stop`` is set and :class:`DataError` (a sentence for a person)
    when the server cannot be reached, the archive is damaged or the disk is full; in every case
    the temporary files are removed first. Writes nothing outside ``root``.
    """
    root = Path(root).expanduser()
    url, md5 = url or cifar_url(), (md5 or cifar_md5()).lower()
    if cifar10_present(root):
        return {"root": str(root), "bytes": 0, "seconds": 0.0, "already": True}
    if (root / FOLDER).exists():
        raise DataError(f"{root / FOLDER} exists but lacks some of its files: delete that folder, then download again")
    root.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(root)
    _check_space(root)
    fd, name = tempfile.mkstemp(prefix=TEMP, suffix=".tar.gz.part", dir=root)
    archive = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            size, seconds, digest = _fetch(url, out, progress, stop)
        if digest != md5:
            raise DataError(f"the downloaded archive is damaged (md5 {digest}, expected {md5}); it was deleted. "
                            "Download it again; if this repeats, the server sends something else")
        _report(progress, 0.96, "Extracting CIFAR-10...")
        _extract(archive, root, stop)
    finally:
        archive.unlink(missing_ok=True)
    _report(progress, 1.0, f"CIFAR-10 is in {root / FOLDER}")
    return {"root": str(root), "bytes": size, "seconds": seconds, "already": False}


def _fetch(url: str, out: BinaryIO, progress: ProgressFn | None,
           stop: threading.Event | None) -> tuple[int, float, str]:
    """Stream ``url`` into the open file ``out``; (bytes, seconds, md5 hex digest)."""
    h, done, t0 = hashlib.md5(usedforsecurity=False), 0, time.monotonic()
    shown = t0
    try:
        with urllib.request.urlopen(_request(url), timeout=10) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            if total is not None and total > MAX_BYTES:
                raise DataError(f"{host(url)} offers {total:,} bytes, not CIFAR-10's {CIFAR_BYTES:,}: nothing was kept")
            while chunk := resp.read1(_CHUNK):
                if stop is not None and stop.is_set():
                    raise DownloadStopped("stopped by the user; the partial download was deleted")
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if done > MAX_BYTES:
                    raise DataError(f"{host(url)} sent more than {MAX_BYTES:,} bytes, too much for CIFAR-10")
                if time.monotonic() - shown > 0.2 or done == total:  # a slow link reads small chunks: a few a second
                    shown = time.monotonic()
                    _report(progress, 0.95 * done / total if total else 0.0, _rate_line(done, total, shown - t0))
    except (URLError, OSError) as e:  # HTTPError is a URLError; a dropped connection an OSError
        raise DataError(f"could not download CIFAR-10 from {host(url)} ({_why(e)}); the partial download was "
                        "deleted. Try again when online, or put cifar-10-python.tar.gz in the data folder") from e
    if total is not None and done != total:
        raise DataError(f"the download from {host(url)} ended after {done:,} of {total:,} bytes; try again")
    return done, time.monotonic() - t0, h.hexdigest()


def _extract(archive: Path, root: Path, stop: threading.Event | None) -> None:
    """Unpack ``cifar-10-batches-py`` from ``archive`` into a hidden folder of ``root``, then
    rename it into place: the folder appears whole or not at all."""
    scratch = Path(tempfile.mkdtemp(prefix=TEMP, dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.isfile() and _inside(m.name)]
                for m in members:
                    if stop is not None and stop.is_set():
                        raise DownloadStopped("stopped by the user; the partial download was deleted")
                    tar.extract(m, scratch, filter="data")  # "data": no links out, no absolute paths
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"the downloaded archive cannot be unpacked ({_why(e)}); it was deleted") from e
        missing = [f for f in FILES if not (scratch / FOLDER / f).is_file()]
        if missing:
            raise DataError(f"the downloaded archive lacks {', '.join(missing)} of {FOLDER}; it was deleted")
        os.rename(scratch / FOLDER, root / FOLDER)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _inside(name: str) -> bool:
    parts = Path(name).parts
    return len(parts) == 2 and parts[0] == FOLDER and parts[1] in FILES


def _clear_leftovers(root: Path, older_than_s: float = 60.0) -> None:
    """Remove what a killed download left (a worker that ignored its stop is killed): its hidden
    temporaries, once untouched for a minute: a download going on writes every chunk, and a read
    waits at most 10 s."""
    now = time.time()
    for p in root.glob(TEMP + "*"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
        except OSError:
            pass


def _check_space(root: Path) -> None:
    need = CIFAR_BYTES + EXTRACTED_BYTES
    free = shutil.disk_usage(root).free
    if free < need:
        raise DataError(f"downloading CIFAR-10 needs about {need / 1e6:.0f} MB free in {root}, "
                        f"but only {free / 1e6:.0f} MB are")


def _rate_line(done: int, total: int | None, seconds: float) -> str:
    rate = done / seconds if seconds > 0 else 0.0
    line = f"Downloading CIFAR-10: {done / 1e6:.1f}" + (f" of {total / 1e6:.1f} MB" if total else " MB")
    line += f" · {rate / 1e6:.1f} MB/s"
    if total and rate > 0:
        left = (total - done) / rate
        line += f" · about {int(left) // 60}:{int(left) % 60:02d} left"
    return line


def _report(progress: ProgressFn | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(min(1.0, max(0.0, fraction)), message)


def _request(url: str, method: str = "GET") -> urllib.request.Request:
    if urlsplit(url).scheme not in ("http", "https"):
        raise DataError(f"the CIFAR-10 address must be http or https, got {url!r} (check {URL_ENV})")
    return urllib.request.Request(url, method=method, headers={"User-Agent": "resnet-viz"})


def host(url: str) -> str:
    return urlsplit(url).netloc or url


def _why(e: BaseException) -> str:
    if isinstance(e, HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = getattr(e, "reason", None)
    text = str(reason if reason is not None else e) or type(e).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", text)  # "Connection refused", not "[Errno 111] Connection refused"


# ---------------------------------------------------------------------------- reachability


@dataclass(frozen=True)
class Reach:
    """Whether the download answered: ``ok`` None while the check is still under way."""

    ok: bool | None
    why: str = ""  # what went wrong, when not ok
    size: int | None = None  # the archive's Content-Length, when the server said
    at: float = 0.0  # time.monotonic() of the answer


_reach: dict[str, Reach] = {}
_checking: dict[str, threading.Thread] = {}
_reach_lock = threading.Lock()


def reachability(url: str | None = None, *, wait_s: float = 1.5, max_age_s: float = 300.0) -> Reach:
    """Whether ``url`` (default :func:`cifar_url`) answers a HEAD request, from a cache of
    ``max_age_s`` seconds. A fresh check runs in a thread of its own; the call that starts it
    waits for it at most ``wait_s`` seconds (a name lookup can hang longer than any socket
    timeout), any other returns at once: the last answer, or ``Reach(None)`` until there is one."""
    url = url or cifar_url()
    with _reach_lock:
        known = _reach.get(url)
        # An answer of "unreachable" is kept a minute only: someone who comes online sees it soon.
        if known is not None and time.monotonic() - known.at < (max_age_s if known.ok else min(max_age_s, 60.0)):
            return known
        thread = _checking.get(url)
        started = thread is None or not thread.is_alive()
        if started:
            thread = threading.Thread(target=_check, args=(url,), name="cifar-reach", daemon=True)
            _checking[url] = thread
            thread.start()
    if started and thread is not None:  # only the run that started it waits: the others go on at once
        thread.join(wait_s)
    with _reach_lock:
        now = _reach.get(url)
        return now if now is not None and (known is None or now.at > known.at) else (known or Reach(None))


def _check(url: str) -> None:
    try:
        with urllib.request.urlopen(_request(url, "HEAD"), timeout=5) as resp:
            size = int(resp.headers.get("Content-Length") or 0) or None
            result = Reach(True, size=size, at=time.monotonic())
    except (URLError, OSError, ValueError, DataError) as e:
        result = Reach(False, _why(e), at=time.monotonic())
    with _reach_lock:
        _reach[url] = result


def forget_reachability() -> None:
    """Drop the cached answers (tests; a page after a failed download asks again)."""
    with _reach_lock:
        _reach.clear()
