"""The worker pool on a Ray cluster: ``RayWorker``, a ``workers.WorkerProcess`` that runs as a Ray task.

Chosen by ``workers.new_worker`` when ``RESNET_VIZ_RAY_ADDRESS`` names a cluster (``ray://head:10001``,
or ``auto`` on one of its nodes); only then is this module, and Ray, imported. The jobs and tasks
above see the same interface as with a local process: ``start(*args)``, ``messages()``, ``stop``
and ``pause`` (events that exist, and may be set, before the start) and ``kill()``.

How it talks to its task: through a ``cluster_worker.Channel`` actor on the app's node (flags one
way, messages the other). A training run's folder goes to the task as bytes and comes back as
``("file", ...)`` messages, which ``messages()`` writes into the app's run folder before it yields
what follows them, so the job reads a complete folder when it reads "end". A task whose node or
process dies reads as ``("died", why)``, as a killed local process does: the job marks the run
interrupted at its last synced checkpoint, and Resume starts it again wherever the cluster has room.

Resources: one GPU (and one CPU) per task where the cluster has GPUs, else the CPUs for the
torch threads it will use; ``RESNET_VIZ_RAY_RESOURCES`` (a JSON object, e.g. ``{"node2": 1}``)
adds custom resources, to place work on chosen nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from resnet_viz.background import cluster_worker
from resnet_viz.background.folder_sync import apply_change, pack
from resnet_viz.background.workers import Target, settings

RESOURCES_ENV = "RESNET_VIZ_RAY_RESOURCES"
_TAKE_TIMEOUT_S = 60.0  # a channel on the app's own node that does not answer this long is lost
CONNECT_ENV = "RESNET_VIZ_RAY_CONNECT_S"
_CONNECT_S = 30.0  # a cluster that has not answered this long is not there, or refuses the token
_connect_lock = threading.Lock()
_attempt: _Attempt | None = None  # this process's connection to the cluster, made or being made


def connect(address: str) -> Any:
    """The ``ray`` module, connected to the cluster at ``address`` (once per process; a process
    that is already connected, such as a test's local instance, keeps its connection).

    ``ray.init`` retries an address that does not answer, or refuses the token, for minutes and
    cannot be interrupted; it runs in a thread of its own, and a caller waits ``connect_seconds()``
    at most, then gets a RuntimeError that says what to check (one attempt at a time: callers
    meanwhile wait on it; a failed one is tried afresh by the next caller)."""
    import ray

    global _attempt
    with _connect_lock:
        if ray.is_initialized() and (_attempt is None or _attempt.done.is_set()):
            return ray
        if _attempt is None or _attempt.done.is_set():  # none yet, or the last failed or was shut down
            _attempt = _Attempt(ray, address)
        attempt = _attempt
    wait_s = connect_seconds()
    if not attempt.done.wait(wait_s):
        raise RuntimeError(f"the Ray cluster at {address!r} (RESNET_VIZ_RAY_ADDRESS) did not answer within "
                           f"{wait_s:g} s ({CONNECT_ENV}): is it running there, and does this machine have its "
                           "token (ray get-auth-token)? On a node of the cluster, 'auto' finds both.")
    if attempt.error is not None:
        raise RuntimeError(f"cannot reach the Ray cluster at {address!r} (RESNET_VIZ_RAY_ADDRESS): "
                           f"{attempt.error}") from attempt.error
    return ray


def connect_seconds() -> float:
    """``RESNET_VIZ_RAY_CONNECT_S``: how long a task waits for the cluster's first answer."""
    text = os.environ.get(CONNECT_ENV, "").strip()
    try:
        value = float(text) if text else _CONNECT_S
    except ValueError:
        raise ValueError(f"{CONNECT_ENV} must be a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise ValueError(f"{CONNECT_ENV} must be between 0 and 3600 seconds, got {text!r}")
    return value


class _Attempt:
    """One ``ray.init`` in a thread of its own: ``done`` once it returned or raised ``error``."""

    def __init__(self, ray: Any, address: str) -> None:
        self.done = threading.Event()
        self.error: Exception | None = None
        threading.Thread(target=self._run, args=(ray, address), name="ray-connect", daemon=True).start()

    def _run(self, ray: Any, address: str) -> None:
        try:
            ray.init(address=address, log_to_driver=False)
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the setting is what to fix
            self.error = e
        finally:
            self.done.set()


def extra_resources() -> dict[str, float]:
    """``RESNET_VIZ_RAY_RESOURCES`` as custom resources every task asks for."""
    text = os.environ.get(RESOURCES_ENV, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{RESOURCES_ENV} must be a JSON object such as {{\"node2\": 1}}: {e}") from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and v > 0 for k, v in value.items()):
        raise ValueError(f"{RESOURCES_ENV} must map resource names to positive amounts, got {text!r}")
    return {k: float(v) for k, v in value.items()}


def task_options(ray: Any, threads: int | None) -> dict[str, Any]:
    """What one task asks the cluster for: a GPU where it has any, else ``threads`` CPUs (None:
    as many as a local worker would use, capped at the largest node, or it could never start)."""
    options: dict[str, Any] = {"resources": extra_resources()}
    if ray.cluster_resources().get("GPU", 0) >= 1:
        return {**options, "num_gpus": 1, "num_cpus": 1}
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    want = threads if threads is not None else os.cpu_count() or 1
    return {**options, "num_cpus": max(1, min(want, int(largest)))}


def _channel_options(ray: Any) -> dict[str, Any]:
    """The channel lives on the app's node: a worker node that dies must not take it along."""
    with contextlib.suppress(Exception):  # a client connection may not know its node: Ray's default then
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                      soft=True)}
    return {}


def _why_died(error: BaseException) -> str:
    """A person's words for the error a lost Ray task raised."""
    name = type(error).__name__
    first = (str(error).strip().splitlines() or [""])[0][:300]
    if "NodeDied" in name or "node" in first.lower() and "died" in first.lower():
        return f"the Ray node running it died ({name})"
    if "WorkerCrashed" in name or "ActorDied" in name or "ActorError" in name:
        return f"the Ray worker process running it died, or its node did ({name}: {first})"
    if "Cancelled" in name:
        return "the Ray task was cancelled"
    return f"Ray lost the task ({name}: {first})"


class _Flag:
    """An event of the app's side (stop or pause) that tells the worker's channel when it changes."""

    def __init__(self, owner: RayWorker) -> None:
        self._event, self._owner = threading.Event(), owner

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()
        self._owner._forward()

    def clear(self) -> None:
        self._event.clear()
        self._owner._forward()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


class RayWorker:
    """``target(stop, pause, send, *args)`` as a Ray task, with ``WorkerProcess``'s interface."""

    def __init__(self, target: Target, name: str, address: str, threads: int | None = None,
                 run_folder: Path | None = None) -> None:
        self.target, self.name, self.address = target, name, address
        self.threads, self.run_folder = threads, run_folder
        self.stop, self.pause = _Flag(self), _Flag(self)
        self._lock = threading.Lock()  # the channel, made at start, and the flags sent to it
        self._channel: Any = None
        self._ref: Any = None
        self._ray: Any = None

    pid = None  # no process of this machine's: the task runs wherever the cluster put it

    def _forward(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.set_flags.remote(self.stop.is_set(), self.pause.is_set())

    def start(self, *args: Any) -> None:
        """Submit the task on ``args``; with a run folder, its files go along and the argument
        equal to the folder's parent (the runs root) stands for the worker's own copy."""
        ray = self._ray = connect(self.address)
        run_id, files = None, {}
        if self.run_folder is not None:
            run_id, files = self.run_folder.name, pack(self.run_folder)
            root = self.run_folder.parent
            args = tuple(cluster_worker.RUNS_ROOT if isinstance(a, Path) and a == root else a for a in args)
        options = task_options(ray, self.threads)
        channel_cls = ray.remote(num_cpus=0, max_restarts=0,
                                 concurrency_groups={cluster_worker.FLAGS_GROUP: 1})(cluster_worker.Channel)
        # One process per task (max_calls=1), as a local worker is: torch's process-wide state
        # (threads, RNG, autocast, a GPU's memory) is not handed from one task to the next.
        task = ray.remote(max_retries=0, max_calls=1)(cluster_worker.ray_main)
        with self._lock:
            self._channel = channel_cls.options(**_channel_options(ray)).remote(self.stop.is_set(), self.pause.is_set())
            self._ref = task.options(name=self.name[:100], **options).remote(
                self._channel, self.target, settings(), args, run_id, files)

    def messages(self, poll: float = 0.2) -> Iterator[tuple[Any, ...]]:
        """The task's messages in order, until its last (``end``/``error``) or ``("died", why)``;
        its folder's changes are written into the run folder on the way, not yielded."""
        try:
            seen, finished = 0, False
            while True:
                try:
                    box = self._take(seen)
                except Exception as e:  # noqa: BLE001 - the channel is lost: so is the task's word
                    why = self._task_error(e)
                    self.kill()  # it would stop by itself, having no channel: sooner this way
                    yield ("died", why)
                    return
                seen += len(box)
                for msg in box:
                    if msg[0] == "file":
                        try:
                            self._write(*msg[1:])
                        except (ValueError, OSError) as e:  # the app's copy of the folder is not the worker's
                            self.kill()
                            yield ("died", f"the run folder could not be kept in step with the Ray worker ({e})")
                            return
                        continue
                    yield msg
                    if msg[0] in ("end", "error"):
                        return
                if finished:  # the task ended, its channel is empty, and no last word came
                    yield ("died", self._task_error(None))
                    return
                if not box:
                    finished = bool(self._ray.wait([self._ref], timeout=poll)[0])
        finally:
            self._close()

    def _take(self, seen: int) -> list[tuple[Any, ...]]:
        """The channel's messages after ``seen``, asked again while Ray calls the channel
        unavailable for a moment (a node of the cluster going away can cause that)."""
        deadline = time.monotonic() + _TAKE_TIMEOUT_S
        while True:
            try:
                return list(self._ray.get(self._channel.take.remote(seen), timeout=_TAKE_TIMEOUT_S))
            except Exception as e:
                if type(e).__name__ != "ActorUnavailableError" or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _write(self, rel: str, offset: int | None, data: bytes) -> None:
        if self.run_folder is None:
            raise RuntimeError(f"the Ray task {self.name} sent a file, but it has no run folder")
        apply_change(self.run_folder, rel, offset, data)

    def _task_error(self, lost: BaseException | None) -> str:
        """Why the task ended without a last word: its own error where Ray has one (a dead
        node says so there), else what broke the channel (``lost``)."""
        try:
            ready = self._ray.wait([self._ref], timeout=10)[0]
            if ready:
                self._ray.get(self._ref, timeout=10)
        except Exception as e:  # noqa: BLE001 - what Ray raised is the cause
            return _why_died(e)
        return _why_died(lost) if lost is not None else "the Ray task ended without a word"

    def _close(self) -> None:
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                self._ray.kill(channel)

    def kill(self) -> None:
        """End the task now (a stop it did not answer in time)."""
        if self._ref is not None:
            with contextlib.suppress(Exception):
                self._ray.cancel(self._ref, force=True)
