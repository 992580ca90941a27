"""The parts ``fit`` (``loop.py``) is made of, apart from the step and the evaluation:

- ``Processes``: every way several torchrun processes train differently from one;
- ``Setup`` and ``prepare``: what is built before the first step, a checkpoint restored;
- ``Meter``: training time with pauses left out, and the steady-state speed;
- ``StepLog``: per-step figures kept as tensors until a flush turns them into records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from resnet_viz.config import RunConfig, TrainConfig
from resnet_viz.data.batches import BatchStream
from resnet_viz.data.sources import ImageData, load_data, split_validation
from resnet_viz.nets.cifar import build_model
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.device import pick_device, resolve_precision
from resnet_viz.training.distributed import (
    DistContext,
    check_batch_split,
    checkpoint_from_main,
    compile_model,
    convert_sync_bn,
    wrap_model,
)
from resnet_viz.training.records import Records, RecordSink

if TYPE_CHECKING:
    from resnet_viz.training.loop import Control


@dataclass
class Processes:
    """Where ``fit`` under torchrun's several processes differs from a lone process, and why.

    - Stopping: a lone process stops before its next batch. Several must stop after the same
      step, or one would wait forever in a collective (DDP's gradient all-reduce) that the
      others never join; so every flush's all-reduce also carries each rank's stop request
      (``DistContext.agree``) and all ranks stop after the flush where any of them asked.
    - Pausing: never under several processes: they would have to agree on it at every step,
      and the CLI that starts them has no pause.
    - Writing: only rank 0 writes the run folder (metrics, checkpoints, status); the other
      ranks get no ``RunDir``, and on resume rank 0's checkpoint is sent to them.
    - Probes: rank 0's hooks on rank 0's modules, on eagerly run steps, since a compiled graph
      would skip the hooks. A compiled DDP run probes nothing: all ranks must run one graph.
    - Data: each rank trains on its contiguous share of the rows of every global batch.
    """

    ctx: DistContext
    agreed_stop: str | None = None  # several processes: the stop they agreed on at the last flush

    def rows(self, batch_size: int) -> tuple[int, int] | None:
        shard = check_batch_split(batch_size, self.ctx.world_size)
        return (self.ctx.rank * shard, (self.ctx.rank + 1) * shard) if self.ctx.is_distributed else None

    def writer(self, run: RunDir | None) -> RunDir | None:
        return run if self.ctx.is_main else None

    def stop_before_step(self, control: Control) -> str | None:
        """The status to stop with now, or None to take the next step."""
        if self.ctx.is_distributed:
            return self.agreed_stop
        return control.stop_status if control.stop.is_set() else None

    def may_pause(self, control: Control) -> bool:
        return control.pause.is_set() and not self.ctx.is_distributed

    def agree(self, stats: torch.Tensor, control: Control) -> torch.Tensor:
        """Per-step (loss, correct) of this rank as global figures; notes any rank's stop request."""
        stop = control.stop.is_set()
        stats, (any_stop, any_interrupt) = self.ctx.agree(stats, (stop, stop and control.stop_status == "interrupted"))
        if self.ctx.is_distributed and any_stop:
            self.agreed_stop = "interrupted" if any_interrupt else "stopped"
        return stats

    def probes(self, step: int, tc: TrainConfig) -> bool:
        return (tc.probe_every > 0 and step % tc.probe_every == 0 and self.ctx.is_main
                and not (tc.compile and self.ctx.is_distributed))


@dataclass
class Setup:
    """What ``fit`` builds before its first step."""

    config: RunConfig
    device: torch.device
    precision: str
    data: ImageData
    model: nn.Module  # what is checkpointed, evaluated and probed
    ddp: nn.Module  # ``model`` as this process trains it (DDP under several processes)
    net: Any  # ``ddp``, compiled if asked
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    stream: BatchStream
    rows: tuple[int, int] | None  # this rank's rows of each batch; None: all of them
    writer: RunDir | None  # the run folder, on the one process that writes it
    total: int
    per_epoch: int
    eval_every: int
    start_step: int = 0  # > 0 when resumed from a checkpoint
    elapsed_before: float = 0.0  # training seconds before the checkpoint

    @property
    def tc(self) -> TrainConfig:
        return self.config.train


def prepare(
    config: RunConfig, data: ImageData | None, procs: Processes, run: RunDir | None, resume: bool
) -> Setup:
    """Device, data, model and optimizer for ``config``, restored from ``run``'s checkpoint if ``resume``."""
    tc, ctx = config.train, procs.ctx
    rows = procs.rows(tc.batch_size)
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
    # The same seed gives the same initial weights on every rank, whatever other threads do
    # with torch's global RNG meanwhile (pages and experiments seed it); the data's randomness
    # comes from the BatchStream's own generators.
    model: nn.Module = build_model(config.model, generator=torch.Generator().manual_seed(tc.seed))
    if tc.sync_bn and ctx.is_distributed:
        model = convert_sync_bn(model, device)
    model = model.to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov, weight_decay=tc.weight_decay
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
    stream = BatchStream(data.train_x, data.train_y, tc.batch_size, tc.seed, tc.augment, device, tc.channels_last)
    per_epoch = stream.steps_per_epoch()
    writer = procs.writer(run)
    step, elapsed_before = restore(model, optimizer, writer, ctx) if resume else (0, 0.0)
    ddp = wrap_model(model, ctx, device, tc.sync_bn)  # after loading: DDP starts from rank 0's weights
    return Setup(
        config=config, device=device, precision=precision, data=data, model=model, ddp=ddp,
        net=compile_model(ddp, device) if tc.compile else ddp, optimizer=optimizer, criterion=criterion,
        stream=stream, rows=rows, writer=writer, total=tc.total_steps(len(data.train_y)), per_epoch=per_epoch,
        eval_every=tc.eval_every or per_epoch, start_step=step, elapsed_before=elapsed_before,
    )


def restore(
    model: nn.Module, optimizer: torch.optim.Optimizer, writer: RunDir | None, ctx: DistContext
) -> tuple[int, float]:
    """Load the run's checkpoint (read on rank 0, sent to all) and rewind its metrics file to
    what the checkpoint had seen; (step, elapsed seconds) to continue from, (0, 0.0) without one."""
    ckpt = checkpoint_from_main(ctx, writer)
    if ckpt is None:
        return 0, 0.0
    model.load_state_dict(ckpt.model_state)
    if ckpt.optimizer_state:
        optimizer.load_state_dict(ckpt.optimizer_state)
    if writer is not None:
        writer.truncate_metrics(int(ckpt.meta.get("metrics_lines", 0)))
    return int(ckpt.meta.get("step", 0)), float(ckpt.meta.get("elapsed", 0.0))


class Meter:
    """Training time and speed. Elapsed time leaves out pauses. Speed is measured per logging
    window (the steps between two flushes); the steady-state images/s leaves out a fresh run's
    first window, which holds the warm-up costs (allocation, cuDNN autotuning, compilation),
    and evaluations, which are not training."""

    def __init__(self, elapsed_before: float) -> None:
        self.elapsed_before = elapsed_before
        self.t_start = time.perf_counter()
        self.paused_s, self.eval_s = 0.0, 0.0
        self.window_t = time.perf_counter()
        self.steady_images, self.steady_s = 0, 0.0

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start - self.paused_s

    def close_window(self, images: int, steady: bool) -> float:
        """Images/s over the window now ending; ``steady`` counts it in the run's figure."""
        dt = time.perf_counter() - self.window_t
        if steady:
            self.steady_images += images
            self.steady_s += dt
        return images / dt if dt > 0 else 0.0

    def restart_window(self) -> None:
        self.window_t = time.perf_counter()

    @contextmanager
    def paused(self) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        paused = time.perf_counter() - t0
        self.paused_s += paused
        self.window_t += paused  # a pause mid-window: the steps before it keep their time

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.eval_s += time.perf_counter() - t0

    def images_per_second(self, steps: int, batch_size: int) -> float:
        if self.steady_s:
            return self.steady_images / self.steady_s
        return steps * batch_size / max(self.elapsed() - self.eval_s, 1e-9)


class StepLog:
    """Each step's loss and correct count stay device tensors until a flush, every
    ``log_every`` steps: reading a GPU tensor waits for the GPU, so it is done once per window."""

    def __init__(self, sink: RecordSink, meter: Meter, procs: Processes, control: Control, s: Setup) -> None:
        self.sink, self.meter, self.procs, self.control = sink, meter, procs, control
        self.batch_size, self.log_every, self.per_epoch = s.tc.batch_size, s.tc.log_every, s.per_epoch
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []  # (step, loss, correct, lr)

    def add(self, step: int, loss: torch.Tensor, correct: torch.Tensor, lr: float) -> None:
        self.pending.append((step, loss, correct, lr))

    def emit(self, records: Records) -> None:
        self.sink.emit(records)

    def flush(self) -> bool:
        """Turn the pending steps into "step" records; False if a loss went non-finite."""
        if not self.pending:
            return True
        stats = torch.stack([torch.stack((l_, c_)) for _, l_, c_, _ in self.pending])  # (P, 2): loss, correct
        vals = self.procs.agree(stats, self.control).tolist()
        first_window = self.pending[0][0] < self.log_every and not self.meter.elapsed_before
        ips = self.meter.close_window(len(self.pending) * self.batch_size, steady=not first_window)
        t = self.meter.elapsed()
        recs = [
            {"kind": "step", "step": s + 1, "epoch": (s + 1) / self.per_epoch, "loss": lv,
             "acc": cv / self.batch_size, "lr": lr, "ips": ips, "elapsed": t}
            for (s, _, _, lr), (lv, cv) in zip(self.pending, vals, strict=True)
        ]
        self.pending.clear()
        finite = all(math.isfinite(r["loss"]) for r in recs)
        self.sink.emit(recs)
        self.meter.restart_window()
        return finite
