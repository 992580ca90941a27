"""The Ray side of a worker (``cluster.RayWorker``): the mailbox actor and the task's function.

A worker on another machine shares neither memory nor disk with the app. Each worker gets one
small actor, its ``Channel``, placed on the app's node: the app sets stop and pause there and
takes the worker's messages from it; the worker puts its messages there and reads the flags
every ``FLAG_POLL_S`` into two local events, so that ``fit``'s per-batch check stays a plain
``Event.is_set`` (no network call per batch) and Stop still arrives within one batch.

A training run trains into a temporary copy of its run folder (the app sent its files along);
a thread sends what changed every ``SYNC_EVERY_S`` (``folder_sync``), and once more before
the last message, so that the app's folder is complete when it reads "end". Ray is imported
by the app only through ``cluster``; this module is imported in Ray's worker processes.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnet_viz.background.folder_sync import FolderWatch, unpack
from resnet_viz.background.workers import Target, adopt_settings

FLAG_POLL_S = 0.1  # how often a worker reads stop/pause from its channel
SYNC_EVERY_S = 1.0  # how often a worker sends its run folder's changes
RUNS_ROOT = "<the worker's runs folder>"  # stands, in a task's arguments, for the worker's own copy
_LOST_AFTER_S = 60.0  # a channel that does not answer this long: the app is gone


class Channel:
    """One worker's mailbox (a Ray actor): flags the app sets, messages the worker puts. A
    plain actor runs one call at a time in the order each caller sent them, so a worker's
    messages arrive in the order it sent them."""

    def __init__(self, stop: bool, pause: bool) -> None:
        self._flags = (stop, pause)
        self._box: list[tuple[Any, ...]] = []  # messages the app has not yet taken for good
        self._base = 0  # how many came before the first in _box

    def set_flags(self, stop: bool, pause: bool) -> None:
        self._flags = (stop, pause)

    def flags(self) -> tuple[bool, bool]:
        return self._flags

    def put(self, msg: tuple[Any, ...]) -> None:
        self._box.append(msg)

    def take(self, seen: int) -> list[tuple[Any, ...]]:
        """The messages after the first ``seen`` (those the app has read are dropped). A call
        whose answer was lost on the way (Ray's "actor unavailable") can be made again: the
        same ``seen`` gets the same messages, and more."""
        del self._box[: max(0, seen - self._base)]
        self._base = max(self._base, seen)
        return list(self._box)


def _mirror(channel: Any, stop: threading.Event, pause: threading.Event, done: threading.Event) -> None:
    """Keep the worker's events equal to the channel's flags until ``done``. Stop is only ever
    set (a worker's own stop, or a stop already read, is never taken back); a channel that stops
    answering for ``_LOST_AFTER_S`` means the app is gone, and a worker must not train on for
    nobody. Ray's "actor unavailable" (a moment's network trouble, another node going away) is
    asked again until then."""
    import ray

    lost_since: float | None = None
    while not done.is_set():
        try:
            want_stop, want_pause = ray.get(channel.flags.remote(), timeout=_LOST_AFTER_S)
        except Exception as e:  # noqa: BLE001 - whatever Ray raised, the app cannot be reached now
            lost_since = lost_since if lost_since is not None else time.monotonic()
            if type(e).__name__ != "ActorUnavailableError" or time.monotonic() - lost_since > _LOST_AFTER_S:
                stop.set()
                return
            done.wait(0.5)
            continue
        lost_since = None
        if want_stop:
            stop.set()
        if want_pause:
            pause.set()
        else:
            pause.clear()
        done.wait(FLAG_POLL_S)


def _sync(watch: FolderWatch, send: Callable[..., None], done: threading.Event) -> None:
    while not done.wait(SYNC_EVERY_S):
        for change in watch.changes():
            send(*change)


def ray_main(channel: Any, target: Target, env: dict[str, str], args: tuple,
             run_id: str | None, files: dict[str, bytes]) -> None:
    """What the Ray task runs: ``target(stop, pause, send, *args)`` with ``RUNS_ROOT`` in
    ``args`` standing for a temporary runs folder holding run ``run_id`` made of ``files``;
    every message, the folder's changes and the last word go to ``channel``."""
    import ray

    adopt_settings(env)
    root = Path(tempfile.mkdtemp(prefix="resnet-viz-ray-"))
    try:
        watch = None
        if run_id is not None:
            unpack(root / run_id, files)
            watch = FolderWatch(root / run_id)
        args = tuple(root if a == RUNS_ROOT else a for a in args)
        stop, pause, done = threading.Event(), threading.Event(), threading.Event()

        def send(kind: str, *values: Any) -> None:
            channel.put.remote((kind, *values))

        helpers = [threading.Thread(target=_mirror, args=(channel, stop, pause, done), daemon=True)]
        if watch is not None:
            helpers.append(threading.Thread(target=_sync, args=(watch, send, done), daemon=True))
        for t in helpers:
            t.start()
        try:
            last: tuple[Any, ...] = ("end", target(stop, pause, send, *args))
        except BaseException as e:  # noqa: BLE001 - whatever broke, the app gets a message
            last = ("error", str(e) or type(e).__name__, traceback.format_exc(limit=8), type(e).__name__)
        done.set()
        for t in helpers:
            t.join()
        for change in watch.changes() if watch is not None else ():
            send(*change)  # the folder is complete before the app reads the last word
        ray.get(channel.put.remote(last))  # and that word is there before the task ends
    finally:
        shutil.rmtree(root, ignore_errors=True)
