"""One training run in the background: ``TrainingJob`` and the ``JobSnapshot`` a page draws.

A job trains in a worker process (``background.trainer``), or with ``isolate=False`` in the
calling thread (tests that patch the loop). Its records are kept under a lock for the UI;
``fit`` writes them to the run folder as it goes. A job belongs to the visitor who started
it (``owner``, None for the operator): only they, or an admin, may pause, stop or resume it.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resnet_viz.access import OPERATOR, Visitor, check_control
from resnet_viz.background.trainer import WorkerFailed, fit_in_worker, new_worker
from resnet_viz.config import DataConfig, RunConfig
from resnet_viz.data.sources import ImageData
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.loop import Control, FitResult, fit

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

    def __init__(self, config: RunConfig, run: RunDir, resume: bool = False, isolate: bool = True,
                 owner: str | None = None) -> None:
        self.config, self.run, self.resume, self.owner = config, run, resume, owner
        self._worker = new_worker(run, config.train.threads) if isolate else None
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

    # -- control, from any thread; ``by`` must own the job or be an admin ------------------
    def stop(self, by: Visitor = OPERATOR) -> None:
        check_control(by, self.owner, "This run")
        with self._lock:
            if self._state == "queued":
                self._state, self._message = "cancelled", "cancelled before it started"
                self.run.set_status("stopped", "cancelled before it started")
                self._done.set()
        self.control.request_stop("stopped")
        self.control.pause.clear()

    def pause(self, by: Visitor = OPERATOR) -> None:
        check_control(by, self.owner, "This run")
        self.control.pause.set()
        self._set_state_if("running", "paused", "paused")

    def resume_training(self, by: Visitor = OPERATOR) -> None:
        check_control(by, self.owner, "This run")
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
            if self.resume:  # what the checkpoint had seen; fit() drops the rest from the file too
                kept = int(self.run.load_checkpoint().meta.get("metrics_lines", 0))
                with self._lock:
                    self._records = self.run.read_metrics()[:kept]
            result = self._fit(get_data)
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

    def _fit(self, get_data: Callable[[DataConfig], ImageData]) -> FitResult:
        if self._worker is None:
            data = get_data(self.config.data)
            self._loaded(self.config.train.total_steps(len(data.train_y)))
            return fit(self.config, data=data, run=self.run, control=self.control,
                       on_records=self._on_records, resume=self.resume)
        # The worker loads the data set itself (from its uint8 cache, about a second): sending
        # 150 MB through shared memory would fail where /dev/shm is small (a container's 64 MB).
        return fit_in_worker(self._worker, self.config, self.run, self.resume, self._on_records, self._loaded)

    def _loaded(self, total_steps: int) -> None:
        """The data set is in: the run's length is known, and training starts."""
        self._total_steps = total_steps
        self._set_state_if("loading", "paused" if self.control.pause.is_set() else "running", "training")

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
