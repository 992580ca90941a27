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

import queue
import threading
import time
from pathlib import Path

from resnet_viz.access import OPERATOR, Visitor, check_control
from resnet_viz.background.job import FINAL_STATES, JobSnapshot, TrainingJob
from resnet_viz.config import DataConfig, RunConfig
from resnet_viz.data.sources import ImageData, load_data
from resnet_viz.limits import ServerLimits, server_limits
from resnet_viz.store.listing import mark_interrupted
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.memory import check_fits

__all__ = ["FINAL_STATES", "JobRegistry", "JobSnapshot", "TrainingJob"]

# Held from a submission's check to its place in the queue: a check and then a queue under
# two separate locks would let two submissions at once both see one free place.
_SUBMIT_LOCK = threading.Lock()

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

    def submit(self, config: RunConfig, name: str | None = None, data: ImageData | None = None,
               by: Visitor = OPERATOR) -> TrainingJob:
        """Create a run folder owned by ``by`` and queue its training; returns at once. A run
        the server's limits (``limits``) refuse raises a ``ValueError`` saying which limit and
        what to change, before its folder is created."""
        return self.submit_all([config], data, name, by=by)[0]

    def submit_all(self, configs: list[RunConfig], data: ImageData | None = None,
                   name: str | None = None, by: Visitor = OPERATOR) -> list[TrainingJob]:
        """Queue several runs, all or none (the degradation experiment is four runs: three of
        them would answer nothing): every run is checked against the limits first."""
        owner = None if by is OPERATOR else by.id
        with _SUBMIT_LOCK:  # two visitors submitting at once must not both take the last place
            for config in configs:
                self._check_limits(config, None if data is None else len(data.train_y), owner, adding=len(configs))
            runs = [RunDir.create(self.runs_root, c, name or c.name or None, owner=owner) for c in configs]
            jobs = [TrainingJob(c, r, isolate=self.isolate, owner=owner) for c, r in zip(configs, runs, strict=True)]
            return [self._enqueue(job, data) for job in jobs]

    def _check_limits(self, config: RunConfig, train_size: int | None, owner: str | None, adding: int = 1) -> None:
        limits = self.limits or server_limits()
        live = [j for j in self.jobs() if not j.snapshot().done]
        what = "this run" if adding == 1 else f"these {adding} runs"
        if len(live) + adding > limits.max_runs:
            raise ValueError(
                f"this server already has {len(live)} of the {limits.max_runs} training runs it queues at once: "
                f"wait for runs to finish, or stop one on the Train page, then start {what}."
            )
        mine = sum(1 for j in live if j.owner == owner)
        if owner is not None and mine + adding > limits.max_runs_per_visitor:
            raise ValueError(
                f"you already have {mine} of the {limits.max_runs_per_visitor} training runs one visitor may queue: "
                f"wait for yours to finish, or stop one on the Train page, then start {what}."
            )
        check_fits(config, limits, train_size)

    def resume(self, run_id: str, by: Visitor = OPERATOR) -> TrainingJob:
        """Continue a stopped or interrupted run from its checkpoint (its owner, or an admin)."""
        with self._lock:
            live = self._jobs.get(run_id)
        if live is not None and not live.snapshot().done:
            raise ValueError(f"run {run_id} is still {live.snapshot().state}")
        run = RunDir.open(self.runs_root, run_id)
        owner = run.owner()
        check_control(by, owner, "This run")
        if not run.has_checkpoint():
            raise ValueError(f"run {run_id} has no checkpoint to resume from")
        with _SUBMIT_LOCK:  # a resumed run takes a place in the queue like a new one
            self._check_limits(run.config(), None, owner)
            job = TrainingJob(run.config(), run, resume=True, isolate=self.isolate, owner=owner)
            return self._enqueue(job, None)

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
