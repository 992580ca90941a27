"""The Ray side of a worker (``cluster.RayWorker``): the mailbox actor and the task's function.

A worker on another machine shares neither memory nor disk with the app. Each worker gets one
small actor, its ``Channel``, placed on the app's node: the app sets stop and pause there and
takes the worker's messages from it; the worker puts its messages there and mirrors the flags
into two local events, so that ``fit``'s per-batch check stays a plain ``Event.is_set`` (no
network call per batch). The mirror is a long poll (``Channel.flags`` answers when the flags
change), so Stop reaches the worker in the time of one actor call, within the batch it lands in.

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

FLAG_WAIT_S = 5.0  # a long poll for the flags answers at once on a change, else after this
FLAGS_GROUP = "flags"  # the channel's concurrency group for that poll: it must not hold up put/take
SYNC_EVERY_S = 1.0  # how often a worker sends its run folder's changes
RUNS_ROOT = "<the worker's runs folder>"  # stands, in a task's arguments, for the worker's own copy
_LOST_AFTER_S = 60.0  # a channel that does not answer this long: the app is gone


class Channel:
    """One worker's mailbox (a Ray actor): flags the app sets, messages the worker puts. Made
    with a concurrency group ``FLAGS_GROUP`` whose thread waits in ``flags`` while the default
    thread serves the rest. A threaded actor need not run calls in the order they were sent, so
    each message carries its number and ``take`` gives them in that order, without gaps."""

    def __init__(self, stop: bool, pause: bool) -> None:
        self._flags = (stop, pause)
        self._changed = threading.Condition()
        self._box: list[tuple[Any, ...]] = []  # in order, after the first _base: not yet taken for good
        self._base = 0  # how many came before the first in _box
        self._early: dict[int, tuple[Any, ...]] = {}  # messages that came before one sent earlier

    def set_flags(self, stop: bool, pause: bool) -> None:
        with self._changed:
            self._flags = (stop, pause)
            self._changed.notify_all()

    def flags(self, known: tuple[bool, bool] | None = None, wait_s: float = 0.0) -> tuple[bool, bool]:
        """(stop, pause); with ``known``, as soon as they differ from it, or after ``wait_s``."""
        with self._changed:
            self._changed.wait_for(lambda: self._flags != known, timeout=wait_s if known is not None else 0)
            return self._flags

    def put(self, number: int, msg: tuple[Any, ...]) -> None:
        """Keep message ``number`` (0, 1, ...), in its place."""
        self._early[number] = msg
        while self.received() in self._early:
            self._box.append(self._early.pop(self.received()))

    def received(self) -> int:
        """How many messages have come, with none missing before them."""
        return self._base + len(self._box)

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
    known: tuple[bool, bool] | None = None
    ask = channel.flags.options(concurrency_group=FLAGS_GROUP)
    while not done.is_set():
        try:
            want_stop, want_pause = known = ray.get(ask.remote(known, FLAG_WAIT_S), timeout=_LOST_AFTER_S)
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


def _sync(watch: FolderWatch, send: Callable[..., None], done: threading.Event) -> None:
    while not done.wait(SYNC_EVERY_S):
        for change in watch.changes():
            send(*change)


class _Outbox:
    """The worker's side of the messages: numbered as sent, from any of its threads."""

    def __init__(self, channel: Any) -> None:
        self._channel, self._lock, self._sent = channel, threading.Lock(), 0

    def send(self, kind: str, *values: Any) -> None:
        with self._lock:
            self._channel.put.remote(self._sent, (kind, *values))
            self._sent += 1

    def last(self, msg: tuple[Any, ...]) -> None:
        """Send ``msg`` and return once the channel holds it and everything sent before it."""
        import ray

        self.send(*msg)
        deadline = time.monotonic() + _LOST_AFTER_S
        while ray.get(self._channel.received.remote()) < self._sent and time.monotonic() < deadline:
            time.sleep(0.05)


def ray_main(channel: Any, target: Target, env: dict[str, str], args: tuple,
             run_id: str | None, files: dict[str, bytes]) -> None:
    """What the Ray task runs: ``target(stop, pause, send, *args)`` with ``RUNS_ROOT`` in
    ``args`` standing for a temporary runs folder holding run ``run_id`` made of ``files``;
    every message, the folder's changes and the last word go to ``channel``."""
    adopt_settings(env)
    root = Path(tempfile.mkdtemp(prefix="resnet-viz-ray-"))
    try:
        watch = None
        if run_id is not None:
            unpack(root / run_id, files)
            watch = FolderWatch(root / run_id)
        args = tuple(root if a == RUNS_ROOT else a for a in args)
        stop, pause, done = threading.Event(), threading.Event(), threading.Event()
        out = _Outbox(channel)
        # The mirror may be waiting in its long poll when the task ends: it is not waited for.
        threading.Thread(target=_mirror, args=(channel, stop, pause, done), daemon=True).start()
        syncing = threading.Thread(target=_sync, args=(watch, out.send, done), daemon=True)
        if watch is not None:
            syncing.start()
        try:
            last: tuple[Any, ...] = ("end", target(stop, pause, out.send, *args))
        except BaseException as e:  # noqa: BLE001 - whatever broke, the app gets a message
            last = ("error", str(e) or type(e).__name__, traceback.format_exc(limit=8), type(e).__name__)
        done.set()
        if watch is not None:
            syncing.join()
            for change in watch.changes():
                out.send(*change)  # the folder is complete before the app reads the last word
        out.last(last)  # and that word is there before the task ends
    finally:
        shutil.rmtree(root, ignore_errors=True)
