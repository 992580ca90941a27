"""Worker processes: training runs and experiment tasks run outside the page process.

Why processes: page scripts, a training run and experiments in one process share its GIL and
torch's process-wide state (the RNG, the thread count, autocast), and a run that runs out of
memory takes the whole server, with every visitor's session, down with it. In its own process
a run is killed alone; the parent notices and marks it, and the app keeps serving.

Why a fork server: forking the server itself is unsafe (other threads hold locks; torch's
thread pools do not survive a fork), and spawning re-imports torch for every task (about 2 s
on these machines). A fork server is started once, single-threaded, imports torch and the
library, and forks each worker from that clean state (about 30 ms here).

A worker talks to its parent through one queue of messages ``(kind, *values)`` and two events
(stop, pause) the parent sets; nothing else is shared. The child's last message is
``("end", value)`` or ``("error", message, detail)``; a child that dies without one (killed,
out of memory) is reported by ``WorkerProcess.messages`` as ``("died", why)``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, Protocol

import torch

# What the fork server imports once, so that a worker starts with them already loaded.
PRELOAD = [
    "torch",
    "resnet_viz.training.loop",
    "resnet_viz.experiments.lesion",
    "resnet_viz.experiments.landscape",
    "resnet_viz.experiments.sanity",
    "resnet_viz.experiments.signal",
]
SETTINGS_PREFIX = "RESNET_VIZ_"
RAY_ADDRESS_ENV = "RESNET_VIZ_RAY_ADDRESS"  # set: workers run on that Ray cluster (``cluster``)

_context: BaseContext | None = None
_context_lock = threading.Lock()

Send = Callable[..., None]  # send(kind, *values): one message to the parent
Target = Callable[..., Any]  # target(stop, pause, send, *args) -> the result sent as ("end", result)


def context() -> BaseContext:
    """This process's fork-server context, made on first use."""
    global _context
    with _context_lock:
        if _context is None:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _context = ctx
        return _context


def settings() -> dict[str, str]:
    """The server's settings (its ``RESNET_VIZ_*`` variables) as they are now: the fork server
    keeps the environment it started with, so each worker is handed the current one."""
    return {k: v for k, v in os.environ.items() if k.startswith(SETTINGS_PREFIX)}


def adopt_settings(env: dict[str, str]) -> None:
    """In a worker: take the server's settings ``env`` (``settings()``) as this process's."""
    for k in [k for k in os.environ if k.startswith(SETTINGS_PREFIX) and k not in env]:
        del os.environ[k]
    os.environ.update(env)


def watch_parent(on_parent_exit: Callable[[], None]) -> None:
    """In a worker: call ``on_parent_exit`` when the server process ends. A worker must not
    train on for nobody (a restarted server would find its run held by a process it cannot
    reach), so each target asks to be stopped, in its own words, when that happens."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        mp.connection.wait([parent.sentinel])
        on_parent_exit()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _ByValue:
    """A tensor sent by value. A tensor put on the queue as it is goes by torch's shared-memory
    file descriptors, which the parent fetches from the child: a child that ends right after
    its last message ("end" with a Score-CAM map) is gone by then, and the parent read
    "Connection reset by peer" instead of the result."""

    def __init__(self, t: torch.Tensor) -> None:
        t = t.detach().cpu()
        self.dtype = t.dtype  # numpy has no bfloat16: such a tensor travels as float32
        self.array = (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()

    def tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.array).to(self.dtype)


def _by_value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return _ByValue(v)
    if type(v) in (list, tuple):
        return type(v)(_by_value(x) for x in v)
    return {k: _by_value(x) for k, x in v.items()} if type(v) is dict else v


def _restored(v: Any) -> Any:
    if isinstance(v, _ByValue):
        return v.tensor()
    if type(v) in (list, tuple):
        return type(v)(_restored(x) for x in v)
    return {k: _restored(x) for k, x in v.items()} if type(v) is dict else v


def _child_main(target: Target, env: dict[str, str], stop: Any, pause: Any, outbox: Any, args: tuple) -> None:
    adopt_settings(env)
    # The server's Ctrl-C reaches its whole process group; the parent ends its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send(kind: str, *values: Any) -> None:
        outbox.put((kind, *_by_value(values)))

    try:
        send("end", target(stop, pause, send, *args))
    except BaseException as e:  # noqa: BLE001 - whatever broke, the parent gets a message
        send("error", str(e) or type(e).__name__, traceback.format_exc(limit=8), type(e).__name__)
    finally:
        outbox.close()
        outbox.join_thread()  # the last message leaves before the process does


def describe_exit(code: int | None) -> str:
    """A person's words for a worker's exit code."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the system may have run out of memory)" if -code == signal.SIGKILL else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process ended with exit code {code} before it reported a result"


class Worker(Protocol):
    """What jobs and tasks need of a worker: a ``WorkerProcess``, or a ``cluster.RayWorker``."""

    stop: Any  # an event: is_set, set, clear, wait
    pause: Any

    def start(self, *args: Any) -> None: ...

    def messages(self, poll: float = 0.2) -> Iterator[tuple[Any, ...]]: ...

    def kill(self) -> None: ...


class WorkerProcess:
    """One worker process running ``target(stop, pause, send, *args)``; the parent's thread
    reads its messages with ``messages()`` and steers it with ``stop``/``pause``, which exist
    (and may be set) before the process starts."""

    def __init__(self, target: Target, name: str = "resnet-viz-worker") -> None:
        ctx = context()
        self.target, self.name = target, name
        self.stop, self.pause = ctx.Event(), ctx.Event()
        self._outbox = ctx.Queue()
        self.process: Any = None

    def start(self, *args: Any) -> None:
        """Start the process on ``args`` (pickled across; tensors go through shared memory)."""
        self.process = context().Process(  # type: ignore[attr-defined]
            target=_child_main, args=(self.target, settings(), self.stop, self.pause, self._outbox, args),
            name=self.name, daemon=True,
        )
        self.process.start()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def messages(self, poll: float = 0.2) -> Iterator[tuple[Any, ...]]:
        """The worker's messages in order, until its last (``end``/``error``) or ``("died", why)``."""
        while True:
            try:
                msg = self._outbox.get(timeout=poll)
            except queue.Empty:
                if self.process.is_alive():
                    continue
                try:  # it may have put its last message just before it ended
                    msg = self._outbox.get(timeout=1.0)
                except queue.Empty:
                    self.process.join(5)
                    yield ("died", describe_exit(self.process.exitcode))
                    return
            yield _restored(msg)
            if msg[0] in ("end", "error"):
                self.process.join(10)
                return

    def kill(self) -> None:
        """End the worker now (a stop it did not answer in time)."""
        if self.process is not None and self.process.is_alive():
            self.process.kill()


def new_worker(target: Target, name: str, threads: int | None = None, run_folder: Path | None = None,
               here: bool = False) -> Worker:
    """A worker for ``target``, not started: a ``WorkerProcess``, or with ``RESNET_VIZ_RAY_ADDRESS``
    set a ``cluster.RayWorker`` with the same interface (``threads``: the torch threads it will
    use, what it asks the cluster for; ``run_folder``: the run it trains, copied to and from the
    worker's machine; ``here``: a local process whatever the setting, for work that fills this
    machine's folders, such as a data set download). Ray is imported only with a cluster named:
    it is an optional extra, and heavy."""
    address = os.environ.get(RAY_ADDRESS_ENV, "").strip()
    if not address or here:
        return WorkerProcess(target, name)
    from resnet_viz.background.cluster import RayWorker  # only with a cluster named

    return RayWorker(target, name, address, threads=threads, run_folder=run_folder)
