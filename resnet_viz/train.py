"""The training loop: ``fit(config, ...)`` in plain Python, no threads, no Streamlit.

The loop owns nothing global: a caller passes a ``Control`` (stop and pause events) and
an ``on_records`` callback, and optionally a ``RunDir`` that receives metrics, checkpoints,
status and TensorBoard scalars. ``jobs.TrainingJob`` runs this in a thread; the CLI runs
it in the main thread.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .augment import BatchStream, eval_batches
from .config import RunConfig
from .data import ImageData, load_data
from .device import autocast, pick_device, resolve_precision
from .model import build_model, param_norms_finite
from .probes import probe_blocks
from .runs import RunDir
from .schedule import lr_at

Records = list[dict[str, Any]]


@dataclass
class Control:
    """How a caller steers a running ``fit``: checked once per batch."""

    stop: threading.Event = field(default_factory=threading.Event)
    pause: threading.Event = field(default_factory=threading.Event)  # set = paused
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
    tta: bool = True, channels_last: bool = True, precision: str = "fp32",
) -> tuple[float, float]:
    """(test loss, test accuracy); with ``tta`` the logits of the image and its mirror are averaged."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    try:
        for xb, yb in eval_batches(x, y, batch_size, device, channels_last):
            with autocast(device, precision):
                logits = model(xb)
                if tta:
                    logits = (logits + model(xb.flip(3))) / 2
            logits = logits.float()
            loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
    finally:
        model.train(was_training)
    n = max(len(y), 1)
    return loss_sum.item() / n, correct.item() / n


def fit(
    config: RunConfig,
    *,
    data: ImageData | None = None,
    run: RunDir | None = None,
    control: Control | None = None,
    on_records: Callable[[Records], None] | None = None,
    resume: bool = False,
) -> FitResult:
    """Train ``config`` to its budget, or until ``control`` stops it or the loss diverges."""
    tc = config.train
    control = control or Control()
    device = pick_device(tc.device)
    precision = resolve_precision(tc.precision, device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if data is None:
        data = load_data(config.data)
    if config.model.num_classes != len(data.classes):
        raise ValueError(
            f"the model has {config.model.num_classes} classes but {data.name} has {len(data.classes)}"
        )
    torch.manual_seed(tc.seed)  # the same seed gives the same initial weights
    model = build_model(config.model).to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov, weight_decay=tc.weight_decay
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
    stream = BatchStream(data.train_x, data.train_y, tc.batch_size, tc.seed, tc.augment, device, tc.channels_last)
    total = tc.total_steps(len(data.train_y))
    per_epoch = stream.steps_per_epoch()
    eval_every = tc.eval_every or per_epoch

    step, elapsed_before = 0, 0.0
    if resume and run is not None and run.has_checkpoint():
        ckpt = run.load_checkpoint(map_location=device)
        model.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state:
            optimizer.load_state_dict(ckpt.optimizer_state)
        step = int(ckpt.meta.get("step", 0))
        elapsed_before = float(ckpt.meta.get("elapsed", 0.0))
        run.truncate_metrics(int(ckpt.meta.get("metrics_lines", 0)))

    sink = _Sink(run, on_records)
    if run is not None:
        run.set_status("running", f"step {step} of {total}")
    t_start = time.perf_counter()
    paused_s, eval_s = 0.0, 0.0
    pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []  # (step, loss, correct, lr)
    window_t, window_steps = time.perf_counter(), 0
    steady_images, steady_s = 0, 0.0
    last_eval: tuple[float, float] | None = None
    status, message = "finished", ""

    def now() -> float:
        return elapsed_before + time.perf_counter() - t_start - paused_s

    def flush() -> bool:
        """Turn pending per-step tensors into records; False if the loss went non-finite."""
        nonlocal window_t, window_steps, steady_images, steady_s
        if not pending:
            return True
        vals = torch.stack([torch.stack((l_, c_)) for _, l_, c_, _ in pending]).tolist()
        dt = time.perf_counter() - window_t
        ips = window_steps * tc.batch_size / dt if dt > 0 else 0.0
        if pending[0][0] >= tc.log_every or elapsed_before:  # first window holds warm-up costs
            steady_images += window_steps * tc.batch_size
            steady_s += dt
        t = now()
        recs = [
            {"kind": "step", "step": s + 1, "epoch": (s + 1) / per_epoch, "loss": lv, "acc": cv / tc.batch_size,
             "lr": lr, "ips": ips, "elapsed": t}
            for (s, _, _, lr), (lv, cv) in zip(pending, vals)
        ]
        pending.clear()
        finite = all(math.isfinite(r["loss"]) for r in recs)
        sink.emit(recs)
        window_t, window_steps = time.perf_counter(), 0
        return finite

    def save() -> None:
        if run is not None and param_norms_finite(model):
            meta = {"step": step, "elapsed": now(), "metrics_lines": sink.lines, "total_steps": total}
            run.save_checkpoint(model.state_dict(), optimizer.state_dict(), meta)

    model.train()
    try:
        while step < total:
            if control.stop.is_set():
                status, message = control.stop_status, f"{control.stop_status} at step {step} of {total}"
                break
            if control.pause.is_set():
                t0 = time.perf_counter()
                if run is not None:
                    run.set_status("paused", f"paused at step {step} of {total}")
                while control.pause.is_set() and not control.stop.is_set():
                    control.stop.wait(0.1)
                paused_s += time.perf_counter() - t0
                window_t = time.perf_counter()
                if run is not None and not control.stop.is_set():
                    run.set_status("running", f"step {step} of {total}")
                continue
            lr = lr_at(step, total, tc, config.model.depth)
            for g in optimizer.param_groups:
                g["lr"] = lr
            xb, yb = stream.batch(step)
            probing = tc.probe_every > 0 and step % tc.probe_every == 0
            with probe_blocks(model) if probing else nullcontext() as probe:
                with autocast(device, precision):
                    logits = model(xb)
                    loss = criterion(logits.float(), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            pending.append((step, loss.detach(), (logits.argmax(1) == yb).sum(), lr))
            step += 1
            window_steps += 1
            if probe is not None:
                sink.emit([{"kind": "probe", "step": step, "blocks": probe.results()}])
            if step % tc.log_every == 0 or step == total:
                if not flush():
                    status = "diverged"
                    message = (f"the loss became non-finite near step {step}; lower the learning rate "
                               "(the last good checkpoint was kept)")
                    break
            if step % eval_every == 0 or step == total:
                flush()
                t0 = time.perf_counter()
                last_eval = evaluate(model, data.test_x, data.test_y, tta=tc.eval_tta,
                                     channels_last=tc.channels_last, precision=precision)
                eval_s += time.perf_counter() - t0
                sink.emit([{"kind": "eval", "step": step, "epoch": step / per_epoch, "test_loss": last_eval[0],
                            "test_acc": last_eval[1], "elapsed": now()}])
                save()
                window_t = time.perf_counter()
        if status != "diverged":
            flush()
            if status != "finished":
                save()
    except BaseException as e:
        # KeyboardInterrupt included: keep what was learned, say what happened, re-raise.
        status, message = ("interrupted", "interrupted") if isinstance(e, KeyboardInterrupt) else ("failed", str(e))
        if run is not None:
            if status == "interrupted":
                save()
            run.set_status(status, message)
            run.close()
        raise
    ips = steady_images / steady_s if steady_s else (step * tc.batch_size / max(now() - eval_s, 1e-9))
    result = FitResult(
        status=status, message=message or f"trained {step} steps", steps=step, total_steps=total,
        elapsed=now(), images_per_second=ips,
        test_acc=last_eval[1] if last_eval else None, test_loss=last_eval[0] if last_eval else None,
        run_id=run.id if run is not None else None,
    )
    sink.emit([{"kind": "end", "status": status, "message": result.message, "steps": step, "elapsed": result.elapsed,
                "images_per_second": ips, "test_acc": result.test_acc, "test_loss": result.test_loss}])
    if run is not None:
        run.set_status(status, result.message)
        run.close()
    return result


class _Sink:
    """Fans records out to the caller's callback, the run's metrics file and TensorBoard."""

    def __init__(self, run: RunDir | None, on_records: Callable[[Records], None] | None) -> None:
        self.run, self.on_records = run, on_records
        self.lines = run.metrics_line_count() if run is not None else 0

    def emit(self, records: Records) -> None:
        if self.run is not None:
            self.run.append_metrics(records)
            self.lines += len(records)
            tb = self.run.tensorboard()
            for r in records:
                if r["kind"] == "step" and r["step"] % 10 == 0:
                    tb.add_scalar("train/loss", r["loss"], r["step"])
                    tb.add_scalar("train/accuracy", r["acc"], r["step"])
                    tb.add_scalar("train/lr", r["lr"], r["step"])
                elif r["kind"] == "eval":
                    tb.add_scalar("test/loss", r["test_loss"], r["step"])
                    tb.add_scalar("test/accuracy", r["test_acc"], r["step"])
        if self.on_records is not None:
            self.on_records(records)
