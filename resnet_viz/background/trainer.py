"""One training run in a worker process (``workers.WorkerProcess``), and the parent's side of it.

The worker loads the data set itself, opens the run folder the parent created, trains with
``fit`` and sends each batch of records as it writes them; stop and pause are the worker's two
events, which ``fit`` looks at once per batch. A worker that dies without a last word (killed, out of memory) leaves the
run's status "running" under its dead pid; the parent then records what happened, so the run
offers Resume from its last checkpoint, or reads failed when it never wrote one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnet_viz.background import workers
from resnet_viz.background.workers import Send, Worker, watch_parent
from resnet_viz.config import RunConfig
from resnet_viz.data.sources import load_data
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.loop import Control, FitResult, fit


class WorkerFailed(Exception):
    """The training worker raised or died; the message says what happened."""

    def __init__(self, message: str, status: str = "failed") -> None:
        super().__init__(message)
        self.status = status  # "failed", or "interrupted" when a checkpoint allows Resume


def train_in_worker(stop: Any, pause: Any, send: Send, config: RunConfig, runs_root: Path, run_id: str,
                    resume: bool) -> FitResult:
    """The worker's target: load the data set (under the server's allowed folders, as the page
    did), then ``fit`` on the parent's run folder, steered by the parent's events."""
    control = Control(stop=stop, pause=pause)
    watch_parent(lambda: control.request_stop("interrupted"))
    data = load_data(config.data)
    send("loaded", config.train.total_steps(len(data.train_y)))
    return fit(config, data=data, run=RunDir.open(runs_root, run_id), control=control,
               on_records=lambda records: send("records", records), resume=resume)


def new_worker(run: RunDir, threads: int | None = None) -> Worker:
    """A worker for ``run`` (a local process, or a Ray task: ``workers.new_worker``) on
    ``threads`` torch threads, not started: its events are the job's stop and pause from now on."""
    return workers.new_worker(train_in_worker, f"resnet-viz-train-{run.id}", threads=threads, run_folder=run.path)


def fit_in_worker(worker: Worker, config: RunConfig, run: RunDir, resume: bool,
                  on_records: Callable[[list[dict[str, Any]]], None],
                  on_loaded: Callable[[int], None]) -> FitResult:
    """Start ``worker`` training ``run`` and relay its records until it ends; its result, or
    ``WorkerFailed`` after recording in the run folder what went wrong."""
    worker.start(config, run.path.parent, run.id, resume)
    for msg in worker.messages():
        kind = msg[0]
        if kind == "loaded":
            on_loaded(msg[1])
        elif kind == "records":
            on_records(msg[1])
        elif kind == "end":
            return msg[1]
        elif kind == "error":
            _record(run, "failed", msg[1], detail=msg[2])
            raise WorkerFailed(msg[1])
        elif kind == "died":
            raise _died(run, msg[1])
    raise WorkerFailed("the training worker ended without a word")  # messages() always ends with one of the above


def _died(run: RunDir, why: str) -> WorkerFailed:
    """Record a worker that died mid-run: interrupted (Resume goes on from the checkpoint) when
    it left one, else failed."""
    if run.has_checkpoint():
        with contextlib.suppress(Exception):
            step = int(run.load_checkpoint().meta.get("step", 0))
            message = f"{why}; Resume goes on from the last checkpoint (step {step})"
            _record(run, "interrupted", message)
            return WorkerFailed(message, "interrupted")
    message = f"{why}, before its first checkpoint"
    _record(run, "failed", message)
    return WorkerFailed(message)


def _record(run: RunDir, status: str, message: str, **extra: Any) -> None:
    with contextlib.suppress(OSError):  # the folder may be what broke; the job still ends
        run.set_status(status, message, **extra)
