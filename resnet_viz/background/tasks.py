"""Background tasks for computations longer than a second (the experiments).

A task is a function ``fn(progress, stop) -> result`` run in a daemon thread. The UI polls
``task.snapshot()`` and can ``stop()`` it; the function checks the stop event between
batches (``experiments.check``) and raises ``Cancelled``. Tasks live in a ``TaskRegistry``
keyed by what they compute (experiment + model + parameters), so a reloaded page asking
for the same thing finds the running or finished task instead of starting it again. Each
task has a title (what it computed, in words); ``TaskRegistry.finished()`` lists the
finished ones, for the report.
No Streamlit here; the worker thread never touches the UI.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from resnet_viz.background.progress import eta
from resnet_viz.config import DataConfig, ModelConfig
from resnet_viz.experiments.common import Cancelled, ProgressFn
from resnet_viz.limits import ServerLimits, server_limits
from resnet_viz.store.models import ModelRef

TaskFn = Callable[[ProgressFn, threading.Event], Any]


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
    def __init__(self, key: str, fn: TaskFn, title: str = "") -> None:
        self.key, self._fn, self.title = key, fn, title or key
        self._stop = threading.Event()
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
            result = self._fn(self._progress, self._stop)
            outcome = ("done", result, "", 1.0, "done")
        except Cancelled:
            outcome = ("stopped", None, "", self._fraction, "stopped")
        except Exception as e:  # noqa: BLE001 - a task ends with a message, whatever broke
            outcome = ("failed", None, str(e) or type(e).__name__, self._fraction, "failed")
        with self._lock:
            self._state, self._result, self._error, self._fraction, self._message = outcome
            self._t1 = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self) -> TaskSnapshot:
        with self._lock:
            end = self._t1 if self._t1 is not None else time.monotonic()
            return TaskSnapshot(self.key, self._state, self._fraction, self._message, self._result,
                                self._error, end - self._t0, self.title, self._partial)


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

    def __init__(self, keep: int = 50) -> None:
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self.keep = keep

    def start(self, key: str, fn: TaskFn, title: str = "") -> Task:
        """The task for ``key``: the existing one if it runs or succeeded, else a new one
        (``title`` says what it computes, in words; the key by default). A new one past the
        server's limit of running tasks raises a ``ValueError`` before its thread starts."""
        with self._lock:
            task = self._tasks.get(key)
            if task is not None and task.snapshot().state in ("running", "done"):
                return task
            self._check_room()
            task = Task(key, fn, title)
            self._tasks[key] = task
            done = [k for k, t in self._tasks.items() if t.snapshot().done]
            for k in done[: max(0, len(self._tasks) - self.keep)]:
                del self._tasks[k]
            return task

    def _check_room(self) -> None:
        """Refuse a new task when the server runs as many as it allows (under ``_lock``)."""
        limit = (self.limits or server_limits()).max_tasks
        running = sum(1 for t in self._tasks.values() if not t.snapshot().done)
        if running >= limit:
            raise ValueError(
                f"this server is already running {running} of the {limit} experiments it runs at once: "
                "wait for one to finish, or stop one, then press Run again."
            )

    def get(self, key: str) -> Task | None:
        with self._lock:
            return self._tasks.get(key)

    def finished(self) -> list[TaskSnapshot]:
        """Snapshots of the tasks that succeeded, in the order their keys were first started
        (stopped and failed ones are left out)."""
        with self._lock:
            tasks = list(self._tasks.values())
        return [s for s in (t.snapshot() for t in tasks) if s.state == "done"]


_shared: TaskRegistry | None = None
_shared_lock = threading.Lock()
