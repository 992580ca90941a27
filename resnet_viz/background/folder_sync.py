"""A run folder copied between machines that share no disk (the Ray backend, ``cluster``).

The app ships a run folder's files to a worker (``pack``/``unpack``); the worker trains into
its local copy, and a ``FolderWatch`` there turns what changed into ``("file", path, offset,
data)`` messages, which the app writes into its own folder with ``apply_change``. Append-only
files (the metrics, TensorBoard's event files) go by their new bytes only: a checkpoint is
sent whole when it changes, but a run's history would otherwise be sent again every second.
No Ray here: this is plain file work, tested on its own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from resnet_viz.fsutil import TEMP_PREFIX, write_bytes_atomic
from resnet_viz.store import holder
from resnet_viz.store.rundir import METRICS_FILE, STATUS_FILE

_EVENTS_PREFIX = "events.out.tfevents"  # TensorBoard's files: appended to, like the metrics
_LIVE = ("queued", "running", "paused")


def _append_only(rel: str) -> bool:
    name = PurePosixPath(rel).name
    return name == METRICS_FILE or name.startswith(_EVENTS_PREFIX)


def _files(root: Path) -> dict[str, os.stat_result]:
    """The folder's files by path relative to it (posix), without atomic writes in flight."""
    out: dict[str, os.stat_result] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.startswith(TEMP_PREFIX):
                continue
            path = Path(dirpath) / name
            try:
                out[path.relative_to(root).as_posix()] = path.stat()
            except FileNotFoundError:  # replaced or removed while we looked
                continue
    return out


def pack(folder: Path) -> dict[str, bytes]:
    """The files a worker needs to train in a copy of ``folder``: all but TensorBoard's event
    files (the worker starts a new one; the old stay with the app)."""
    return {rel: (folder / rel).read_bytes() for rel in _files(folder)
            if not PurePosixPath(rel).name.startswith(_EVENTS_PREFIX)}


def unpack(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = _inside(folder, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@dataclass
class _Sent:
    size: int
    mtime_ns: int


class FolderWatch:
    """What changed in ``root`` since the last look (``changes``); the files there now are taken
    as already known to the other side (they came from it, by ``unpack``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._sent = {rel: _Sent(st.st_size, st.st_mtime_ns) for rel, st in _files(root).items()}

    def changes(self) -> list[tuple[str, str, int | None, bytes]]:
        """``("file", path, offset, data)`` for each new or changed file: ``offset`` None means
        the whole file (written atomically there), else the bytes from ``offset`` on."""
        out: list[tuple[str, str, int | None, bytes]] = []
        for rel, st in sorted(_files(self.root).items()):
            sent = self._sent.get(rel)
            if sent is not None and (sent.size, sent.mtime_ns) == (st.st_size, st.st_mtime_ns):
                continue
            try:
                data = (self.root / rel).read_bytes()
            except FileNotFoundError:
                continue
            if sent is not None and _append_only(rel) and len(data) >= sent.size:
                out.append(("file", rel, sent.size, data[sent.size:]))
            else:  # new, rewritten, or cut back (a resumed run rewinds its metrics): whole
                out.append(("file", rel, None, data))
            # What was read, not what was statted: a write between the two is sent next time.
            self._sent[rel] = _Sent(len(data), st.st_mtime_ns)
        return out


def _inside(folder: Path, rel: str) -> Path:
    """``folder / rel``, refusing a path that would leave the folder (a worker's message names it)."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise ValueError(f"a synced file must lie inside its run folder, got {rel!r}")
    return folder.joinpath(*parts)


def apply_change(folder: Path, rel: str, offset: int | None, data: bytes) -> None:
    """Write one ``FolderWatch`` change into ``folder``: a whole file atomically (a page reading
    it sees the old or the new one), an append at ``offset`` (cut there first, so that a change
    sent twice does not double the lines)."""
    path = _inside(folder, rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    if offset is None:
        if rel == STATUS_FILE:
            data = held_here(data)
        write_bytes_atomic(path, data)
        return
    if offset < 0:
        raise ValueError(f"an append offset must be >= 0, got {offset} for {rel!r}")
    have = path.stat().st_size if path.exists() else 0
    if offset > have:  # a change before this one never arrived: a hole of zeros would be worse
        raise ValueError(f"{rel!r} has {have} bytes here, and the worker sent bytes from {offset} on")
    with open(path, "ab") as f:  # creates it; append mode cannot seek for writing, so cut first
        f.truncate(offset)
        f.write(data)
        f.flush()


def held_here(status: bytes) -> bytes:
    """A worker's live status as held by this process. The worker's pid is on another machine:
    read here as it is, the run would show "interrupted" (it was running on another host). The
    app's process holds the run for the worker instead (it marks it when the worker dies, and a
    restarted app must see it interrupted); the worker's own identity is kept beside it."""
    try:
        st: Any = json.loads(status)
    except ValueError:
        return status  # damaged: the pages report it as such
    if not isinstance(st, dict) or st.get("status") not in _LIVE:
        return status
    worker = {k: st.get(k) for k in ("pid", "hostname")}
    st.update(holder.identity())
    st["worker"] = worker
    return (json.dumps(st, indent=2) + "\n").encode("utf-8")
