"""Crash-safe file writes and append-only JSON-lines files (stdlib only).

A reader (the app, ``tensorboard``, a resumed run) must only ever see the old file or
the new one, never half of one: a process killed mid-write, a full disk or a power cut
would otherwise leave a truncated ``config.json`` or checkpoint behind. The recipe is
the classic one: write a temporary file in the *same* folder (``os.replace`` is only
atomic within one file system), fsync it, rename it over the target, fsync the folder
so the rename itself survives a power cut.

JSON-lines files are append-only logs written by one process while others read them:
their last line may be half-written (in flight, or cut short by a crash). Readers here
forgive a bad *last* line silently and count bad lines anywhere else.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20

# Temporary files start with a dot so run listings and TensorBoard skip them.
TEMP_PREFIX = ".tmp-"

PACKAGE_DIR = Path(__file__).resolve().parent


def _checkout_root() -> Path | None:
    root = PACKAGE_DIR.parent
    # A checkout has the project's pyproject.toml beside the package; an installed package
    # sits in site-packages, which is nobody's working folder.
    return root if (root / "pyproject.toml").is_file() else None


# The checkout this package runs from (runs/, data/ and assets/ sit beside resnet_viz/), or
# None when it runs from an installed copy.
PROJECT_ROOT: Path | None = _checkout_root()


def work_dir() -> Path:
    """Where ``runs/`` and ``data/`` are by default: the checkout, or for an installed
    package the current working directory (``$RESNET_VIZ_RUNS`` and ``$RESNET_VIZ_DATA``
    name other places)."""
    return PROJECT_ROOT if PROJECT_ROOT is not None else Path.cwd()


def fsync_dir(folder: Path) -> None:
    """Make a rename or file creation inside ``folder`` durable (a no-op off POSIX)."""
    if os.name != "posix":
        return  # Windows cannot open a folder for fsync; NTFS journals renames itself
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it replaces ``path``.

    For writers that want a file name rather than a file object (e.g.
    ``safetensors.torch.save_file``). If the block raises, or the replace fails, the
    temporary file is removed and ``path`` is left exactly as it was.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)
        try:
            if os.name == "posix":
                # mkstemp makes 0600 files; run files should be as readable as any other
                # file the user writes (tensorboard or a teammate may run as someone else).
                os.fchmod(fd, 0o644)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text_atomic(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    """Text version of :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode(encoding))


def parse_json_line(line: bytes) -> dict | None:
    """The JSON object on ``line``, or None if it is not one (garbage, torn, a list...)."""
    try:
        rec = json.loads(line)
    except ValueError:  # includes UnicodeDecodeError
        return None
    return rec if isinstance(rec, dict) else None


def as_number(v: Any, *, finite: bool = False) -> float | None:
    """A record field as a float: None when it is missing or not a number (a bool is not one).

    NaN and infinities (a diverged step) stay as they are, or with ``finite`` give None.
    ``numbers.Real``, so numpy scalars count too.
    """
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return None
    f = float(v)
    return f if not finite or math.isfinite(f) else None


def read_jsonl(path: Path | str) -> tuple[list[dict], int]:
    """All records of a JSON-lines file (none if it is missing) and the number of bad
    lines, not counting a bad last line."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], 0
    lines = [line for line in data.split(b"\n") if line.strip()]
    records, bad = [], 0
    for i, line in enumerate(lines):
        rec = parse_json_line(line)
        if rec is not None:
            records.append(rec)
        elif i < len(lines) - 1:
            bad += 1
    return records, bad


def iter_jsonl_reversed(path: Path | str, max_bytes: int = 32 << 20) -> Iterator[dict | None]:
    """Records newest first (None for a bad line, the last one excepted), reading the
    file backwards in growing chunks so a caller that needs only the tail stops early.
    Stops after about ``max_bytes``."""
    with open(path, "rb") as f:
        size = pos = f.seek(0, os.SEEK_END)
        carry, chunk, last_line = b"", 16 << 10, True
        while pos > 0 and size - pos < max_bytes:
            start = max(0, pos - chunk)
            f.seek(start)
            lines = (f.read(pos - start) + carry).split(b"\n")
            pos = start
            carry = lines.pop(0) if pos > 0 else b""  # a partial line; the next chunk completes it
            for line in reversed(lines):
                if line.strip():
                    rec = parse_json_line(line)
                    if rec is not None or not last_line:
                        yield rec
                    last_line = False
            chunk = min(chunk * 4, 4 * _CHUNK)


def count_lines(path: Path | str) -> int:
    """Complete (newline-terminated) lines; 0 for a missing file."""
    try:
        with open(path, "rb") as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(_CHUNK), b""))
    except FileNotFoundError:
        return 0


def truncate_lines(path: Path | str, keep: int | None = None) -> None:
    """Keep the first ``keep`` complete lines (all of them if None), dropping the rest
    and any unterminated fragment. A missing file stays missing."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    end = data.rfind(b"\n") + 1
    if keep is not None:
        end = 0
        for _ in range(keep):
            nl = data.find(b"\n", end)
            if nl < 0:
                break
            end = nl + 1
    if end < len(data):
        os.truncate(path, end)
