"""The training loop: ``fit(config, ...)`` in plain Python, no threads, no Streamlit.

The loop owns nothing global: a caller passes a ``Control`` (stop and pause events) and
an ``on_records`` callback, and optionally a ``RunDir`` that receives metrics, checkpoints,
status and TensorBoard scalars. ``jobs.TrainingJob`` runs this in a thread; the CLI runs
it in the main thread, or in each of torchrun's processes with a ``DistContext``
(``distributed.py``: each rank trains on its shard of every batch, rank 0 writes the run).

``fit`` reads top to bottom: setup (``state.prepare``), then per step: stop or pause, one
step (``_train_step``), logging (``StepLog.flush``), evaluation (``_evaluate``) and
checkpointing (``_checkpoint``); then the end record. What differs under several
processes is in one place, ``state.Processes``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from resnet_viz.config import RunConfig
from resnet_viz.data.batches import eval_batches
from resnet_viz.data.sources import ImageData
from resnet_viz.nets.cifar import eval_mode, param_norms_finite
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.device import autocast
from resnet_viz.training.distributed import CompileError, DistContext, compile_failure
from resnet_viz.training.probes import probe_blocks
from resnet_viz.training.records import Records, RecordSink
from resnet_viz.training.schedule import lr_at
from resnet_viz.training.snapshots import Snapshots
from resnet_viz.training.state import Meter, Processes, Setup, StepLog, prepare
from resnet_viz.training.watch import Watcher


class Flag(Protocol):
    """An event ``fit`` looks at: a ``threading.Event``, or a ``multiprocessing`` one when the
    caller steers a worker process."""

    def is_set(self) -> bool: ...
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class Control:
    """How a caller steers a running ``fit``: checked once per batch."""

    stop: Flag = field(default_factory=threading.Event)
    pause: Flag = field(default_factory=threading.Event)  # set = paused
    stop_status: str = "stopped"  # "interrupted" for Ctrl-C / SIGTERM

    def request_stop(self, status: str = "stopped") -> None:
        self.stop_status = status
        self.stop.set()


@dataclass(frozen=True)
class FitResult:
    status: str  # finished, stopped, interrupted, diverged
    message: str
    steps: int
    total_steps: int
    elapsed: float  # seconds of training wall time (pauses excluded)
    images_per_second: float  # steady state: first logging window and evaluations excluded
    test_acc: float | None
    test_loss: float | None
    run_id: str | None = None


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500,
    tta: bool = True, channels_last: bool = True, precision: str = "fp32", dist: DistContext | None = None,
) -> tuple[float, float]:
    """(test loss, test accuracy); with ``tta`` the logits of the image and its mirror are averaged.

    With a ``dist`` context every rank must call this: each scores its share of ``x`` and the
    sums are added up, so N processes evaluate N times faster and all get the same figures.
    """
    ctx = dist or DistContext()
    lo, hi = ctx.shard(len(y))
    device = next(model.parameters()).device
    sums = torch.zeros(2, device=device)  # (loss sum, correct count)
    with eval_mode(model):
        for xb, yb in eval_batches(x[lo:hi], y[lo:hi], batch_size, device, channels_last):
            with autocast(device, precision):
                logits = model(xb)
                if tta:
                    logits = (logits + model(xb.flip(3))) / 2
            logits = logits.float()
            sums[0] += nn.functional.cross_entropy(logits, yb, reduction="sum")
            sums[1] += (logits.argmax(1) == yb).sum()
    loss_sum, correct = ctx.all_reduce_sum(sums).tolist()
    n = max(len(y), 1)
    return loss_sum / n, correct / n


def fit(
    config: RunConfig,
    *,
    data: ImageData | None = None,
    run: RunDir | None = None,
    control: Control | None = None,
    on_records: Callable[[Records], None] | None = None,
    resume: bool = False,
    dist: DistContext | None = None,
) -> FitResult:
    """Train ``config`` to its budget, or until ``control`` stops it or the loss diverges.

    Under torchrun every rank calls this with its ``dist`` context; only rank 0's ``run`` is
    written (pass None elsewhere), and a resumed run's checkpoint is read on rank 0 and sent
    to the others, so machines need no shared disk.
    """
    control = control or Control()
    procs = Processes(dist or DistContext())  # all that differs under torchrun, and why
    s = prepare(config, data, procs, run, resume)
    sink = RecordSink(s.writer, on_records)
    if s.writer is not None:
        s.writer.set_status("running", f"step {s.start_step} of {s.total}")
    meter = Meter(s.elapsed_before)
    log, watch = StepLog(sink, meter, procs, control, s), Watcher(s, sink)  # watch: "watch it learn" frames
    step, status, message = s.start_step, "finished", ""
    last_eval: tuple[float, float] | None = None  # (test loss, test accuracy)

    s.model.train()
    try:
        snaps = Snapshots.begin(s)  # the weights along the way (the path training took), on the writing rank
        while step < s.total:
            stop = procs.stop_before_step(control)
            if stop:
                status, message = stop, f"{stop} at step {step} of {s.total}"
                break
            if procs.may_pause(control):
                _hold_while_paused(s, control, meter, step)
                continue
            probe = _train_step(s, procs, log, step, watch)
            step += 1
            snaps.at(s.model, step)
            if probe is not None:
                log.emit([{"kind": "probe", "step": step, "blocks": probe}])
            if (step % s.tc.log_every == 0 or step == s.total) and not log.flush():
                status = "diverged"
                message = (f"the loss became non-finite near step {step}; lower the learning rate "
                           "(the last good checkpoint was kept)")
                break
            if step % s.eval_every == 0 or step == s.total:
                log.flush()
                last_eval = _evaluate(s, procs, log, step)
                _checkpoint(s, log, step)
                meter.restart_window()  # the evaluation and the save are not in the next window
        if status != "diverged":
            log.flush()
            if status != "finished":
                _checkpoint(s, log, step)
            snaps.at(s.model, step, end=True)  # where a stopped run stopped
    except BaseException as e:
        # KeyboardInterrupt included: keep what was learned, say what happened, re-raise.
        compile_error = _record_failure(e, s, log, step)
        if compile_error is not None:
            raise compile_error from e
        raise
    return _finish(s, run, log, step, status, message, last_eval)


def _train_step(
    s: Setup, procs: Processes, log: StepLog, step: int, watch: Watcher
) -> dict[str, dict[str, float]] | None:
    """One optimizer step on this rank's rows of batch ``step``; the per-block figures if probed."""
    lr = lr_at(step, s.tc.schedule_steps or s.total, s.tc, s.config.model.depth)
    for g in s.optimizer.param_groups:
        g["lr"] = lr
    xb, yb = s.stream.batch(step, s.rows)
    # The probe hooks ``s.model``'s blocks, which a compiled graph would skip: a probed step
    # runs the uncompiled module (``s.ddp``).
    probing = procs.probes(step, s.tc)
    with probe_blocks(s.model) if probing else nullcontext() as probe:
        with autocast(s.device, s.precision):
            logits = (s.ddp if probing else s.net)(xb)
            loss = s.criterion(logits.float(), yb)
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
    watch.after_backward(step)  # this step's gradients, before the optimizer applies them
    s.optimizer.step()
    log.add(step, loss.detach(), (logits.argmax(1) == yb).sum(), lr)
    return probe.results() if probe is not None else None


def _evaluate(s: Setup, procs: Processes, log: StepLog, step: int) -> tuple[float, float]:
    """Score the test set (and the validation split, if any) and emit an "eval" record;
    (test loss, test accuracy). Every rank takes part (``evaluate`` shards the images)."""
    with log.meter.evaluating():
        test = _score(s, procs.ctx, s.data.test_x, s.data.test_y)
        rec = {"kind": "eval", "step": step, "epoch": step / s.per_epoch, "test_loss": test[0], "test_acc": test[1]}
        if s.data.val_x is not None and s.data.val_y is not None:
            rec["val_loss"], rec["val_acc"] = _score(s, procs.ctx, s.data.val_x, s.data.val_y)
    log.emit([{**rec, "elapsed": log.meter.elapsed()}])
    return test


def _score(s: Setup, ctx: DistContext, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    ctx.sync_buffers(s.model)
    return evaluate(s.model, x, y, tta=s.tc.eval_tta, channels_last=s.tc.channels_last, precision=s.precision,
                    dist=ctx)


def _checkpoint(s: Setup, log: StepLog, step: int) -> None:
    """Save the model and optimizer on the writing rank, unless the weights went non-finite:
    then the last good checkpoint stays."""
    if s.writer is not None and param_norms_finite(s.model):
        meta = {"step": step, "elapsed": log.meter.elapsed(), "metrics_lines": log.sink.lines, "total_steps": s.total}
        s.writer.save_checkpoint(s.model.state_dict(), s.optimizer.state_dict(), meta)


def _hold_while_paused(s: Setup, control: Control, meter: Meter, step: int) -> None:
    """Wait until the pause ends or a stop comes; the time waited is not training time."""
    with meter.paused():
        if s.writer is not None:
            s.writer.set_status("paused", f"paused at step {step} of {s.total}")
        while control.pause.is_set() and not control.stop.is_set():
            control.stop.wait(0.1)
    if s.writer is not None and not control.stop.is_set():
        s.writer.set_status("running", f"step {step} of {s.total}")


def _record_failure(e: BaseException, s: Setup, log: StepLog, step: int) -> CompileError | None:
    """Write on the run what ended it (an interrupted run keeps a checkpoint); returns the
    CompileError to raise in place of ``e`` when it was torch.compile that failed."""
    status, message = ("interrupted", "interrupted") if isinstance(e, KeyboardInterrupt) else ("failed", str(e))
    failed_compile = compile_failure(e) if s.tc.compile else None
    if failed_compile is not None:
        message = str(failed_compile)
    if s.writer is not None:
        if status == "interrupted":
            _checkpoint(s, log, step)
        s.writer.set_status(status, message)
        s.writer.close()
    return failed_compile


def _finish(
    s: Setup, run: RunDir | None, log: StepLog, step: int, status: str, message: str,
    last_eval: tuple[float, float] | None,
) -> FitResult:
    """The result, its "end" record, and the run's final status."""
    ips = log.meter.images_per_second(step, s.tc.batch_size)
    result = FitResult(
        status=status, message=message or f"trained {step} steps", steps=step, total_steps=s.total,
        elapsed=log.meter.elapsed(), images_per_second=ips,
        test_acc=last_eval[1] if last_eval else None, test_loss=last_eval[0] if last_eval else None,
        run_id=run.id if run is not None else None,
    )
    log.emit([{"kind": "end", "status": status, "message": result.message, "steps": step, "elapsed": result.elapsed,
               "images_per_second": ips, "test_acc": result.test_acc, "test_loss": result.test_loss}])
    if s.writer is not None:
        s.writer.set_status(status, result.message)
        s.writer.close()
    return result
