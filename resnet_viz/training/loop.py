"""The training loop: ``fit(config, ...)`` in plain Python, no threads, no Streamlit.

The loop owns nothing global: a caller passes a ``Control`` (stop and pause events) and
an ``on_records`` callback, and optionally a ``RunDir`` that receives metrics, checkpoints,
status and TensorBoard scalars. ``jobs.TrainingJob`` runs this in a thread; the CLI runs
it in the main thread, or in each of torchrun's processes with a ``DistContext``
(``distributed.py``: each rank trains on its shard of every batch, rank 0 writes the run).
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from resnet_viz.config import RunConfig
from resnet_viz.data.batches import BatchStream, eval_batches
from resnet_viz.data.sources import ImageData, load_data, split_validation
from resnet_viz.nets.cifar import build_model, param_norms_finite
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.device import autocast, pick_device, resolve_precision
from resnet_viz.training.distributed import (
    DistContext,
    check_batch_split,
    checkpoint_from_main,
    compile_failure,
    compile_model,
    convert_sync_bn,
    wrap_model,
)
from resnet_viz.training.probes import probe_blocks
from resnet_viz.training.records import Records, RecordSink
from resnet_viz.training.schedule import lr_at


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
    tta: bool = True, channels_last: bool = True, precision: str = "fp32", dist: DistContext | None = None,
) -> tuple[float, float]:
    """(test loss, test accuracy); with ``tta`` the logits of the image and its mirror are averaged.

    With a ``dist`` context every rank must call this: each scores its share of ``x`` and the
    sums are added up, so N processes evaluate N times faster and all get the same figures.
    """
    ctx = dist or DistContext()
    lo, hi = ctx.shard(len(y))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(2, device=device)  # (loss sum, correct count)
    try:
        for xb, yb in eval_batches(x[lo:hi], y[lo:hi], batch_size, device, channels_last):
            with autocast(device, precision):
                logits = model(xb)
                if tta:
                    logits = (logits + model(xb.flip(3))) / 2
            logits = logits.float()
            sums[0] += nn.functional.cross_entropy(logits, yb, reduction="sum")
            sums[1] += (logits.argmax(1) == yb).sum()
    finally:
        model.train(was_training)
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
    tc = config.train
    control = control or Control()
    ctx = dist or DistContext()
    shard = check_batch_split(tc.batch_size, ctx.world_size)
    rows = (ctx.rank * shard, (ctx.rank + 1) * shard) if ctx.is_distributed else None
    device = ctx.device(pick_device(tc.device))
    precision = resolve_precision(tc.precision, device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN times its conv algorithms once
    if data is None:
        data = load_data(config.data)
    elif config.data.validation and data.val_y is None:
        data = split_validation(data, config.data.validation, config.data.seed)
    if config.model.num_classes != len(data.classes):
        raise ValueError(
            f"the model has {config.model.num_classes} classes but {data.name} has {len(data.classes)}"
        )
    torch.manual_seed(tc.seed)  # the same seed gives the same initial weights (on every rank)
    model = build_model(config.model)
    if tc.sync_bn and ctx.is_distributed:
        model = convert_sync_bn(model, device)
    model = model.to(device, memory_format=torch.channels_last if tc.channels_last else torch.preserve_format)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov, weight_decay=tc.weight_decay
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
    stream = BatchStream(data.train_x, data.train_y, tc.batch_size, tc.seed, tc.augment, device, tc.channels_last)
    total = tc.total_steps(len(data.train_y))
    per_epoch = stream.steps_per_epoch()
    eval_every = tc.eval_every or per_epoch
    writer = run if ctx.is_main else None  # the one process that writes the run folder

    step, elapsed_before = 0, 0.0
    if resume and (ckpt := checkpoint_from_main(ctx, writer)) is not None:
        model.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state:
            optimizer.load_state_dict(ckpt.optimizer_state)
        step, elapsed_before = int(ckpt.meta.get("step", 0)), float(ckpt.meta.get("elapsed", 0.0))
        if writer is not None:
            writer.truncate_metrics(int(ckpt.meta.get("metrics_lines", 0)))
    ddp = wrap_model(model, ctx, device, tc.sync_bn)  # after loading: DDP starts from rank 0's weights
    net = compile_model(ddp, device) if tc.compile else ddp

    sink = RecordSink(writer, on_records)
    if writer is not None:
        writer.set_status("running", f"step {step} of {total}")
    t_start = time.perf_counter()
    paused_s, eval_s = 0.0, 0.0
    pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []  # (step, loss, correct, lr)
    window_t, window_steps = time.perf_counter(), 0
    steady_images, steady_s = 0, 0.0
    last_eval: tuple[float, float] | None = None
    status, message = "finished", ""
    agreed_stop: str | None = None  # several processes: a stop they agreed on at the last flush

    def now() -> float:
        return elapsed_before + time.perf_counter() - t_start - paused_s

    def flush() -> bool:
        """Turn pending per-step tensors into records; False if the loss went non-finite."""
        nonlocal window_t, window_steps, steady_images, steady_s
        if not pending:
            return True
        stats = torch.stack([torch.stack((l_, c_)) for _, l_, c_, _ in pending])  # (P, 2): loss, correct
        stop = control.stop.is_set()
        stats, (any_stop, any_interrupt) = ctx.agree(stats, (stop, stop and control.stop_status == "interrupted"))
        if ctx.is_distributed and any_stop:
            nonlocal agreed_stop
            agreed_stop = "interrupted" if any_interrupt else "stopped"
        vals = stats.tolist()
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
        if writer is not None and param_norms_finite(model):
            meta = {"step": step, "elapsed": now(), "metrics_lines": sink.lines, "total_steps": total}
            writer.save_checkpoint(model.state_dict(), optimizer.state_dict(), meta)

    def score(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        ctx.sync_buffers(model)
        return evaluate(model, x, y, tta=tc.eval_tta, channels_last=tc.channels_last, precision=precision, dist=ctx)

    model.train()
    try:
        while step < total:
            # One process stops as soon as asked; several only at a flush, where they agree.
            stop = agreed_stop if ctx.is_distributed else control.stop_status if control.stop.is_set() else None
            if stop:
                status, message = stop, f"{stop} at step {step} of {total}"
                break
            # Several processes never pause: each would have to agree on it at every step,
            # and the CLI that starts them has no pause.
            if control.pause.is_set() and not ctx.is_distributed:
                t0 = time.perf_counter()
                if writer is not None:
                    writer.set_status("paused", f"paused at step {step} of {total}")
                while control.pause.is_set() and not control.stop.is_set():
                    control.stop.wait(0.1)
                paused_s += time.perf_counter() - t0
                window_t = time.perf_counter()
                if writer is not None and not control.stop.is_set():
                    writer.set_status("running", f"step {step} of {total}")
                continue
            lr = lr_at(step, total, tc, config.model.depth)
            for g in optimizer.param_groups:
                g["lr"] = lr
            xb, yb = stream.batch(step, rows)  # this rank's rows of the global batch
            # Probes hook rank 0's modules; a compiled graph would skip the hooks, so probed
            # steps run eagerly (not under DDP, where all ranks must run the same graph).
            probing = (tc.probe_every > 0 and step % tc.probe_every == 0 and ctx.is_main
                       and not (tc.compile and ctx.is_distributed))
            with probe_blocks(model) if probing else nullcontext() as probe:
                with autocast(device, precision):
                    logits = (ddp if probing else net)(xb)
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
                last_eval = score(data.test_x, data.test_y)
                rec = {"kind": "eval", "step": step, "epoch": step / per_epoch, "test_loss": last_eval[0],
                       "test_acc": last_eval[1]}
                if data.val_y is not None:
                    rec["val_loss"], rec["val_acc"] = score(data.val_x, data.val_y)
                eval_s += time.perf_counter() - t0
                sink.emit([{**rec, "elapsed": now()}])
                save()
                window_t = time.perf_counter()
        if status != "diverged":
            flush()
            if status != "finished":
                save()
    except BaseException as e:
        # KeyboardInterrupt included: keep what was learned, say what happened, re-raise.
        status, message = ("interrupted", "interrupted") if isinstance(e, KeyboardInterrupt) else ("failed", str(e))
        failed_compile = compile_failure(e) if tc.compile else None
        if failed_compile is not None:
            message = str(failed_compile)
        if writer is not None:
            if status == "interrupted":
                save()
            writer.set_status(status, message)
            writer.close()
        if failed_compile is not None:
            raise failed_compile from e
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
    if writer is not None:
        writer.set_status(status, result.message)
        writer.close()
    return result

