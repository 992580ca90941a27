"""Background tasks for computations longer than a second (the experiments).

A task is a function ``fn(progress, stop) -> result`` run in a worker process
(``background.workers``; a ``Call`` of a library function, so that it can be sent there),
watched by a daemon thread of the server. The UI polls ``task.snapshot()`` and can ``stop()``
it; the function checks the stop event between batches (``experiments.check``) and raises
``Cancelled``; a worker that does not stop within ``STOP_GRACE_S`` is killed. With
``isolate=False`` the function runs in the thread itself (tests whose functions are lambdas).

Tasks live in a ``TaskRegistry`` keyed by what they compute (experiment + model + data +
parameters), so a reloaded page asking for the same thing finds the running or finished task
instead of starting it again. Each task has a title (what it computed, in words);
``TaskRegistry.finished()`` lists the finished ones, for the report. No Streamlit here; the
watching thread never touches the UI.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from resnet_viz.access import OPERATOR, Visitor, check_control
from resnet_viz.background.calls import Call, Deferred
from resnet_viz.background.progress import eta
from resnet_viz.background.workers import Send, Worker, new_worker, watch_parent
from resnet_viz.config import DataConfig, ModelConfig
from resnet_viz.data.download import DownloadStopped
from resnet_viz.experiments.common import Cancelled, ProgressFn
from resnet_viz.limits import ServerLimits, server_limits
from resnet_viz.store.models import ModelRef

TaskFn = Callable[[ProgressFn, threading.Event], Any]
__all__ = ["Call", "Deferred", "Task", "TaskRegistry", "TaskSnapshot"]  # Call, Deferred: the pages' way in
_STOPPED = ("Cancelled", DownloadStopped.__name__)  # what a worker raises when its stop event is set
STOP_GRACE_S = 10.0  # an experiment checks its stop event between batches: seconds at most


def _task_in_worker(stop: Any, pause: Any, send: Send, fn: TaskFn, threads: int | None) -> Any:
    """A worker's target: ``fn`` on ``threads`` torch threads (None: torch's default), its
    progress sent to the parent as it comes."""
    watch_parent(stop.set)
    if threads is not None:
        torch.set_num_threads(threads)  # this worker's own setting: the process is its own

    def progress(fraction: float, message: str, partial: Any = None) -> None:
        send("progress", fraction, message, partial)

    return fn(progress, stop)


def model_tag(ref: ModelRef, cfg: ModelConfig) -> str:
    """What a task on model ``ref`` computes on: its run or file, or for the untrained model
    the Build page's config of now (a different build is a different model)."""
    return f"untrained {cfg}" if ref.kind == "untrained" else ref.key


def task_key(experiment: str, *parts: object) -> str:
    """The registry key of ``experiment`` on ``parts`` (a model tag, then its settings):
    two requests for the same computation get the same key, so they share one task."""
    if not experiment or "|" in experiment:
        raise ValueError(f"an experiment name must be non-empty and hold no '|', got {experiment!r}")
    return "|".join([experiment, *map(str, parts)])


def data_tag(cfg: DataConfig, name: str) -> str:
    """What an experiment evaluates on: the data set's name and the config that loaded it
    (two folders, or two synthetic sizes, give the same model different numbers)."""
    return f"{name} {cfg}"


def experiment_key(experiment: str, model: str, data: str, *settings: object) -> str:
    """The key of ``experiment`` on the model tagged ``model`` (``model_tag``), evaluated on
    the data set tagged ``data`` (``data_tag``), with ``settings``: the same model on two data
    sets is two computations, so two tasks."""
    if not data:
        raise ValueError(f"{experiment!r} evaluates on a data set: give its data_tag, got an empty one")
    return task_key(experiment, model, data, *settings)


def content_tag(x: torch.Tensor) -> str:
    """A short digest of ``x``'s values, for keying a task by an image: two uploads may
    share a file name, and one name may be uploaded again with other pixels."""
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class TaskSnapshot:
    key: str
    state: str  # running, done, stopped, failed
    fraction: float
    message: str
    result: Any
    error: str
    elapsed: float
    title: str = ""
    partial: Any = None  # the latest partial result the task published (e.g. a coarse preview)

    @property
    def done(self) -> bool:
        return self.state != "running"

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far; None until there is a pace to go by."""
        return None if self.done else eta(self.elapsed, self.fraction)


class Task:
    def __init__(self, key: str, fn: TaskFn, title: str = "", isolate: bool = True,
                 threads: int | None = None, owner: str | None = None, here: bool = False) -> None:
        self.key, self._fn, self.title, self._threads = key, fn, title or key, threads
        self.owner = owner  # who started it (None: the operator); only they or an admin stop it
        self.askers = {owner}  # everyone who asked for this computation: it is in their report
        name = f"resnet-viz-task-{key[:40]}"
        self._worker = new_worker(_task_in_worker, name, threads, here=here) if isolate else None
        self._stop: Any = threading.Event() if self._worker is None else self._worker.stop
        self._lock = threading.Lock()
        self._state, self._fraction, self._message = "running", 0.0, "starting"
        self._result: Any = None
        self._partial: Any = None
        self._error = ""
        self._t0 = time.monotonic()
        self._t1: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"task-{key[:40]}", daemon=True)
        self._thread.start()

    def _progress(self, fraction: float, message: str, partial: Any = None) -> None:
        with self._lock:
            self._fraction, self._message = fraction, message
            if partial is not None:
                self._partial = partial

    def _run(self) -> None:
        try:
            result = self._fn(self._progress, self._stop) if self._worker is None else self._run_in(self._worker)
            outcome = ("done", result, "", 1.0, "done")
        except (Cancelled, DownloadStopped):
            outcome = ("stopped", None, "", self._fraction, "stopped")
        except Exception as e:  # noqa: BLE001 - a task ends with a message, whatever broke
            outcome = ("failed", None, str(e) or type(e).__name__, self._fraction, "failed")
        with self._lock:
            self._state, self._result, self._error, self._fraction, self._message = outcome
            self._t1 = time.monotonic()

    def _run_in(self, worker: Worker) -> Any:
        try:
            worker.start(self._fn, self._threads)
        except (pickle.PicklingError, AttributeError, TypeError) as e:  # what pickle raises for a lambda
            raise TaskError(f"this computation cannot be sent to a worker process ({e}); a task is a "
                            "Call of a library function and its arguments") from None
        threading.Thread(target=self._kill_if_stuck, name=f"task-stop-{self.key[:40]}", daemon=True).start()
        for msg in worker.messages():
            if msg[0] == "progress":
                self._progress(*msg[1:])
            elif msg[0] == "end":
                return msg[1]
            elif msg[0] == "error":
                raise Cancelled(msg[1]) if msg[3] in _STOPPED else TaskError(msg[1])
            elif self._stop.is_set():  # died: killed after a stop it did not answer
                raise Cancelled("stopped by the user")
            else:
                raise TaskError(msg[1])
        raise TaskError("the worker ended without a word")

    def _kill_if_stuck(self) -> None:
        """Once stop is asked, give the worker ``STOP_GRACE_S`` to answer, then end it."""
        while self._thread.is_alive():
            if self._stop.wait(0.5):
                self._thread.join(STOP_GRACE_S)
                if self._thread.is_alive() and self._worker is not None:
                    self._worker.kill()
                return

    def stop(self, by: Visitor = OPERATOR) -> None:
        check_control(by, self.owner, "This computation")
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self) -> TaskSnapshot:
        with self._lock:
            end = self._t1 if self._t1 is not None else time.monotonic()
            return TaskSnapshot(self.key, self._state, self._fraction, self._message, self._result,
                                self._error, end - self._t0, self.title, self._partial)


class TaskError(Exception):
    """A task's worker raised or died; the message says what happened."""


class TaskRegistry:
    """Tasks by key; finished tasks are kept up to ``keep``. The app uses ``TaskRegistry.shared``."""

    @classmethod
    def shared(cls) -> TaskRegistry:
        """This process's registry, made on first use. Kept here, not in Streamlit's
        cache_resource, which any client may clear: a dropped registry would lose its finished
        results and let a page start again a task that is still running."""
        global _shared
        with _shared_lock:
            if _shared is None:
                _shared = cls()
            return _shared

    @staticmethod
    def reset_shared() -> None:
        """Stop and forget the shared registry's tasks: for tests, which each want their own."""
        global _shared
        with _shared_lock:
            registry, _shared = _shared, None
        for task in registry._tasks.values() if registry is not None else ():
            task.stop()

    limits: ServerLimits | None = None  # None: the environment's, read at each start
    isolate: bool = True  # each task in a worker process; False: in a thread (for lambdas in tests)
    here: bool = False  # True: on this machine even with a Ray cluster set (tasks that fill its folders)

    def __init__(self, keep: int = 50, isolate: bool | None = None, here: bool = False) -> None:
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self.keep, self.here = keep, here
        if isolate is not None:
            self.isolate = isolate

    def start(self, key: str, fn: TaskFn, title: str = "", threads: int | None = None,
              by: Visitor = OPERATOR, here: bool = False) -> Task:
        """The task for ``key``: the existing one if it runs or succeeded (the same computation
        asked by two visitors is done once), else a new one started by ``by`` (``title`` says
        what it computes, in words; the key by default) on ``threads`` torch threads in its
        worker (None: torch's default). A new one past the server's limits of running tasks
        raises a ``ValueError`` before anything starts. ``here``: on this machine even with a
        Ray cluster set (work that reads or fills this machine's folders)."""
        owner = None if by is OPERATOR else by.id
        with self._lock:
            task = self._tasks.get(key)
            if task is not None and task.snapshot().state in ("running", "done"):
                task.askers.add(owner)
                return task
            self._check_room(owner)
            task = Task(key, fn, title, isolate=self.isolate, threads=threads, owner=owner, here=here or self.here)
            self._tasks[key] = task
            done = [k for k, t in self._tasks.items() if t.snapshot().done]
            for k in done[: max(0, len(self._tasks) - self.keep)]:
                del self._tasks[k]
            return task

    def _check_room(self, owner: str | None) -> None:
        """Refuse a new task when the server, or this visitor, runs as many as allowed (under ``_lock``)."""
        limits = self.limits or server_limits()
        running = [t for t in self._tasks.values() if not t.snapshot().done]
        if len(running) >= limits.max_tasks:
            raise ValueError(
                f"this server is already running {len(running)} of the {limits.max_tasks} experiments it runs at "
                "once: wait for one to finish, or stop one, then press Run again."
            )
        mine = sum(1 for t in running if t.owner == owner)
        if owner is not None and mine >= limits.max_tasks_per_visitor:
            raise ValueError(
                f"you are already running {mine} of the {limits.max_tasks_per_visitor} experiments one visitor may "
                "run at once: wait for yours to finish, or stop it, then press Run again."
            )

    def get(self, key: str) -> Task | None:
        with self._lock:
            return self._tasks.get(key)

    def finished(self, by: Visitor = OPERATOR) -> list[TaskSnapshot]:
        """Snapshots of the tasks that succeeded and that ``by`` asked for (an admin: all), in
        the order their keys were first started (stopped and failed ones are left out)."""
        with self._lock:
            tasks = [t for t in self._tasks.values() if by.admin or by.id in t.askers]
        return [s for s in (t.snapshot() for t in tasks) if s.state == "done"]


_shared: TaskRegistry | None = None
_shared_lock = threading.Lock()
