"""Background training: a job is ``fit`` in a worker process (``background.trainer``) with
stop/pause events, and a lock-guarded copy of its records that a UI polls.

No Streamlit here: the app keeps one ``JobRegistry.shared`` per runs folder and reads
``job.snapshot()`` from its script thread. The registry's thread starts each job's worker and
relays its records; ``fit`` writes them to the run folder as it goes, so a page reload (or a
second tab) re-attaches through the registry, and a server restart still finds every run on
disk. ``isolate=False`` trains in the registry's thread instead (tests that patch the loop).

The registry trains one job at a time (two trainings on two cores would each run at
half speed and finish no sooner); later submissions wait in a queue.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_viz.background.trainer import WorkerFailed, fit_in_worker, new_worker
from resnet_viz.config import DataConfig, RunConfig
from resnet_viz.data.sources import ImageData, load_data
from resnet_viz.limits import ServerLimits, server_limits
from resnet_viz.store.listing import mark_interrupted
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.loop import Control, FitResult, fit
from resnet_viz.training.memory import check_fits

# Held from a submission's check to its place in the queue: a check and then a queue under
# two separate locks would let two submissions at once both see one free place.
_SUBMIT_LOCK = threading.Lock()

FINAL_STATES = ("finished", "stopped", "interrupted", "diverged", "failed", "cancelled")


@dataclass(frozen=True)
class JobSnapshot:
    run_id: str
    label: str
    state: str  # queued, loading, running, paused, or one of FINAL_STATES
    message: str
    step: int
    total_steps: int
    elapsed: float
    images_per_second: float
    eta_s: float | None
    records: tuple[dict[str, Any], ...]

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


class TrainingJob:
    """One training run in the background; create through ``JobRegistry.submit``."""

    def __init__(self, config: RunConfig, run: RunDir, resume: bool = False, isolate: bool = True) -> None:
        self.config, self.run, self.resume = config, run, resume
        self._worker = new_worker(run) if isolate else None
        # In a worker, stop and pause are the worker's events: setting them here reaches it.
        self.control = Control() if self._worker is None else Control(self._worker.stop, self._worker.pause)
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._state, self._message = "queued", "waiting for the trainer"
        self._total_steps = 0
        self.result: FitResult | None = None
        self._done = threading.Event()

    @property
    def run_id(self) -> str:
        return self.run.id

    # -- control, from any thread ------------------------------------------------------
    def stop(self) -> None:
        with self._lock:
            if self._state == "queued":
                self._state, self._message = "cancelled", "cancelled before it started"
                self.run.set_status("stopped", "cancelled before it started")
                self._done.set()
        self.control.request_stop("stopped")
        self.control.pause.clear()

    def pause(self) -> None:
        self.control.pause.set()
        self._set_state_if("running", "paused", "paused")

    def resume_training(self) -> None:
        self.control.pause.clear()
        self._set_state_if("paused", "running", "training")

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _set_state_if(self, current: str, new: str, message: str) -> None:
        with self._lock:
            if self._state == current:
                self._state, self._message = new, message

    # -- the worker thread -----------------------------------------------------------
    def _on_records(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self._records.extend(records)

    def execute(self, get_data: Callable[[DataConfig], ImageData]) -> None:
        """Run the job to its end in the calling thread (the registry's worker)."""
        with self._lock:
            if self._state == "cancelled":
                return
            self._state, self._message = "loading", "loading the data set"
        try:
            data = get_data(self.config.data)
            self._total_steps = self.config.train.total_steps(len(data.train_y))
            if self.resume:  # what the checkpoint had seen; fit() drops the rest from the file too
                kept = int(self.run.load_checkpoint().meta.get("metrics_lines", 0))
                with self._lock:
                    self._records = self.run.read_metrics()[:kept]
            self._set_state_if("loading", "paused" if self.control.pause.is_set() else "running", "training")
            result = self._fit(data)
            with self._lock:
                self.result = result
                self._state, self._message = result.status, result.message
        except WorkerFailed as e:  # the worker recorded it in the run folder, or its parent did
            with self._lock:
                self._state, self._message = e.status, str(e)
        except Exception as e:  # noqa: BLE001 - a job must end with a message, whatever broke
            msg = str(e) or type(e).__name__
            with self._lock:
                self._state, self._message = "failed", msg
            with contextlib.suppress(OSError):  # the folder may be what broke; the job still ends
                self.run.set_status("failed", msg, detail=traceback.format_exc(limit=5))
        finally:
            self._done.set()

    def _fit(self, data: ImageData) -> FitResult:
        if self._worker is None:
            return fit(self.config, data=data, run=self.run, control=self.control,
                       on_records=self._on_records, resume=self.resume)
        return fit_in_worker(self._worker, self.config, self.run, self.resume, data, self._on_records)

    # -- for the UI --------------------------------------------------------------------
    def snapshot(self) -> JobSnapshot:
        with self._lock:
            records = tuple(self._records)
            state, message = self._state, self._message
        steps = [r for r in records if r.get("kind") == "step"]
        last = steps[-1] if steps else {}
        step = int(last.get("step", 0))
        ips = float(last.get("ips", 0.0))
        total = self._total_steps
        eta = (total - step) * self.config.train.batch_size / ips if ips > 0 and total else None
        return JobSnapshot(
            run_id=self.run_id, label=self.config.model.label, state=state, message=message, step=step,
            total_steps=total, elapsed=float(last.get("elapsed", 0.0)), images_per_second=ips,
            eta_s=eta if state in ("running", "paused") else None, records=records,
        )


# The registries of this process, one per runs folder. Kept here, not in Streamlit's
# cache_resource: any client may clear that cache, and a registry dropped from it keeps its
# worker training while a new one would start a second trainer beside it.
_shared: dict[Path, JobRegistry] = {}
_shared_lock = threading.Lock()


class JobRegistry:
    """Owns the training queue and its single worker thread. One per runs folder and
    process: get it with ``JobRegistry.shared``."""

    @classmethod
    def shared(cls, runs_root: Path) -> JobRegistry:
        """This process's registry for ``runs_root``, made on first use; making it marks the
        runs that no process holds any more as interrupted (a restart left them)."""
        key = Path(runs_root).expanduser().resolve()
        with _shared_lock:
            registry = _shared.get(key)
            if registry is None or not registry._worker.is_alive():  # shut down: start afresh
                mark_interrupted(key)
                registry = _shared[key] = cls(runs_root)
            return registry

    @staticmethod
    def reset_shared() -> None:
        """Shut down and forget every shared registry: for tests, which each want their own."""
        with _shared_lock:
            registries = list(_shared.values())
            _shared.clear()
        for registry in registries:
            registry.shutdown()

    limits: ServerLimits | None = None  # None: the environment's, read at each submission

    def __init__(self, runs_root: Path, isolate: bool = True) -> None:
        self.runs_root, self.isolate = Path(runs_root), isolate
        self._jobs: dict[str, TrainingJob] = {}
        self._queue: queue.Queue[TrainingJob | None] = queue.Queue()
        self._lock = threading.Lock()
        self._data_lock = threading.Lock()
        self._data: tuple[DataConfig, ImageData] | None = None  # the last data set, reused
        self._worker = threading.Thread(target=self._work, name="resnet-viz-trainer", daemon=True)
        self._worker.start()

    def submit(self, config: RunConfig, name: str | None = None, data: ImageData | None = None) -> TrainingJob:
        """Create a run folder and queue its training; returns at once. A run the server's
        limits (``limits``) refuse raises a ``ValueError`` saying which limit and what to
        change, before its folder is created."""
        return self.submit_all([config], data, name)[0]

    def submit_all(self, configs: list[RunConfig], data: ImageData | None = None,
                   name: str | None = None) -> list[TrainingJob]:
        """Queue several runs, all or none (the degradation experiment is four runs: three of
        them would answer nothing): every run is checked against the limits first."""
        with _SUBMIT_LOCK:  # two visitors submitting at once must not both take the last place
            for config in configs:
                self._check_limits(config, None if data is None else len(data.train_y), adding=len(configs))
            runs = [RunDir.create(self.runs_root, c, name or c.name or None) for c in configs]
            jobs = [TrainingJob(c, run, isolate=self.isolate) for c, run in zip(configs, runs, strict=True)]
            return [self._enqueue(job, data) for job in jobs]

    def _check_limits(self, config: RunConfig, train_size: int | None, adding: int = 1) -> None:
        limits = self.limits or server_limits()
        live = sum(1 for j in self.jobs() if not j.snapshot().done)
        if live + adding > limits.max_runs:
            what = "this run" if adding == 1 else f"these {adding} runs"
            raise ValueError(
                f"this server already has {live} of the {limits.max_runs} training runs it queues at once: "
                f"wait for runs to finish, or stop one on the Train page, then start {what}."
            )
        check_fits(config, limits, train_size)

    def resume(self, run_id: str) -> TrainingJob:
        """Continue a stopped or interrupted run from its checkpoint."""
        with self._lock:
            live = self._jobs.get(run_id)
        if live is not None and not live.snapshot().done:
            raise ValueError(f"run {run_id} is still {live.snapshot().state}")
        run = RunDir.open(self.runs_root, run_id)
        if not run.has_checkpoint():
            raise ValueError(f"run {run_id} has no checkpoint to resume from")
        with _SUBMIT_LOCK:  # a resumed run takes a place in the queue like a new one
            self._check_limits(run.config(), None)
            return self._enqueue(TrainingJob(run.config(), run, resume=True, isolate=self.isolate), None)

    def _enqueue(self, job: TrainingJob, data: ImageData | None) -> TrainingJob:
        if data is not None:
            with self._data_lock:
                self._data = (job.config.data, data)
        with self._lock:
            self._jobs[job.run_id] = job
        self._queue.put(job)
        return job

    def get(self, run_id: str) -> TrainingJob | None:
        with self._lock:
            return self._jobs.get(run_id)

    def jobs(self) -> list[TrainingJob]:
        with self._lock:
            return list(self._jobs.values())

    def active(self) -> TrainingJob | None:
        """The job training now, or the next queued one."""
        live = [j for j in self.jobs() if not j.snapshot().done]
        return live[0] if live else None

    def load_data(self, cfg: DataConfig) -> ImageData:
        with self._data_lock:
            if self._data is not None and self._data[0] == cfg:
                return self._data[1]
            data = load_data(cfg)
            self._data = (cfg, data)
            return data

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.execute(self.load_data)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every job and the worker (for tests and clean exits)."""
        for job in self.jobs():
            job.stop()
        self._queue.put(None)
        deadline = time.monotonic() + timeout
        self._worker.join(max(0.0, deadline - time.monotonic()))
