"""How fast this machine trains and runs CIFAR ResNets, and what that makes of a budget.

CPUs differ 4-6x in training speed (AVX2 against AVX-512 or native bf16), so no time is written
into the code: a few seconds of ResNet-20 and ResNet-56 steps, in the trainer's own settings
(memory format, precision, optimizer, batch 128), give images/s for training and for inference.
Another net sits on the line through those two points by its forward FLOPs: within one kind of
layer the time per image grows about linearly with the work. The figures are kept per machine
(CPU model, cores, torch version, device, precision, threads) in the cache folder, so a server
measures once.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_viz.config import ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import ImageData, default_cache_dir
from resnet_viz.nets.cifar import build_model
from resnet_viz.nets.summary import summarize
from resnet_viz.training.device import autocast, pick_device, resolve_precision

PROBE_DEPTHS = (20, 56)
PROBE_BATCH = 128  # the trainer's default batch; smaller batches run somewhat slower per image
EVAL_BATCH = 500  # the batch ``loop.evaluate`` scores with
# The trainer does more per step than the bare step measured here: per-step records, a probe
# of every block each 10th step, the batched crop and flip. Measured against fit() here:
# 1.05-1.15x the bare time for ResNet-20 and -56.
TRAINER_OVERHEAD = 1.1
STARTUP_S = 3.0  # a worker's start, the data set from its cache, the model built
SPEED_FILE = "machine-speed.json"
BRIEF_SECONDS = 5 * 60  # the Train page's first offer: a run a person waits for


@functools.lru_cache(maxsize=256)
def model_flops(config: ModelConfig) -> int:
    """Forward FLOPs per image of ``config``'s net (built on a private generator: the
    process's random stream is left alone)."""
    return summarize(build_model(config, generator=torch.Generator().manual_seed(0))).flops


@functools.cache
def _processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor() or platform.machine()


def machine_key(device: str, precision: str, threads: int) -> str:
    """What the figures depend on: the processor, its cores, torch, and how it is used."""
    chip = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else _processor()
    return f"{chip} | {os.cpu_count()} cores | torch {torch.__version__} | {device} {precision} | {threads} threads"


@dataclass(frozen=True)
class Speed:
    """Measured images/s of ResNet-20 and ResNet-56 on one machine, and estimates from them."""

    machine: str
    device: str
    precision: str
    threads: int
    flops: tuple[int, int]  # forward FLOPs per image of the two probe nets
    train_ips: tuple[float, float]  # training images/s at batch PROBE_BATCH
    eval_ips: tuple[float, float]  # inference images/s at batch EVAL_BATCH, no test-time flips
    # inference images/s in fp32 at batch 64, channels first: how the lesion study and the
    # attribution methods run a net
    fp32_ips: tuple[float, float]
    measured_at: float  # time.time()

    def _seconds_per_image(self, ips: tuple[float, float], model: ModelConfig) -> float:
        (f0, f1), (t0, t1) = self.flops, (1.0 / ips[0], 1.0 / ips[1])
        f = model_flops(model)
        slope = (t1 - t0) / (f1 - f0) if f1 != f0 else t0 / f0
        # A net smaller than ResNet-20 does not get faster without bound: fixed costs remain.
        return max(t0 + slope * (f - f0), 0.5 * t0 * f / f0, 0.25 * t0)

    def train_seconds_per_image(self, model: ModelConfig) -> float:
        return self._seconds_per_image(self.train_ips, model)

    def eval_seconds_per_image(self, model: ModelConfig) -> float:
        return self._seconds_per_image(self.eval_ips, model)

    def fp32_seconds_per_image(self, model: ModelConfig) -> float:
        return self._seconds_per_image(self.fp32_ips, model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Speed:
        return cls(machine=str(d["machine"]), device=str(d["device"]), precision=str(d["precision"]),
                   threads=int(d["threads"]), flops=(int(d["flops"][0]), int(d["flops"][1])),
                   train_ips=(float(d["train_ips"][0]), float(d["train_ips"][1])),
                   eval_ips=(float(d["eval_ips"][0]), float(d["eval_ips"][1])),
                   fp32_ips=(float(d["fp32_ips"][0]), float(d["fp32_ips"][1])),
                   measured_at=float(d["measured_at"]))  # fmt: skip

    def describe(self) -> str:
        """One line for a person: what was measured, on what."""
        return (f"ResNet-20 trains at {self.train_ips[0]:,.0f} images/s here, ResNet-56 at {self.train_ips[1]:,.0f}; "
                f"{self.device}, {self.precision}, {self.threads} threads")


def _timed_steps(step: Callable[[], None], min_steps: int, min_seconds: float) -> float:
    """Seconds per call of ``step`` in steady state: two calls to warm up (oneDNN builds its
    kernels on the first), then at least ``min_steps`` and ``min_seconds``."""
    for _ in range(2):
        step()
    n, t0 = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - t0 < min_seconds:
        step()
        n += 1
    return (time.perf_counter() - t0) / n


def _probe(depth: int, device: torch.device, precision: str, min_seconds: float) -> tuple[float, float, float]:
    """(training, inference, fp32 inference) images/s of a CIFAR ResNet of ``depth``, as the
    trainer and the experiments run it."""
    model = build_model(ModelConfig(depth=depth), generator=torch.Generator().manual_seed(0))
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(PROBE_BATCH, 3, 32, 32, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (PROBE_BATCH,), generator=gen).to(device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def train_step() -> None:
        with autocast(device, precision):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # waits for the device

    xe = torch.randn(EVAL_BATCH, 3, 32, 32, generator=gen).to(device).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def eval_step() -> None:
        with autocast(device, precision):
            model(xe).float().sum().item()

    x64 = xe[:64].contiguous()

    @torch.no_grad()
    def fp32_step() -> None:
        model(x64).sum().item()

    model.train()
    train_s = _timed_steps(train_step, 3, min_seconds)
    model.eval()
    eval_s = _timed_steps(eval_step, 2, min_seconds / 2)
    model.to(memory_format=torch.contiguous_format)
    fp32_s = _timed_steps(fp32_step, 3, min_seconds / 2)
    return PROBE_BATCH / train_s, EVAL_BATCH / eval_s, 64 / fp32_s


def measure(device: str = "auto", precision: str = "auto", *, min_seconds: float = 1.0,
            progress: Callable[[float, str], None] | None = None, stop: Any = None) -> Speed:
    """Time ResNet-20 and ResNet-56 on this machine (about 2 x 1.5 ``min_seconds`` each, plus
    warm-up): a few seconds. Uses torch's thread count as it stands, as a training worker does."""
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    figures = []
    for i, depth in enumerate(PROBE_DEPTHS):
        if stop is not None and stop.is_set():
            raise InterruptedError("measuring was stopped")
        if progress is not None:
            progress(i / len(PROBE_DEPTHS), f"timing ResNet-{depth}")
        figures.append(_probe(depth, dev, prec, min_seconds))
    (t0, e0, p0), (t1, e1, p1) = figures
    flops = tuple(model_flops(ModelConfig(depth=d)) for d in PROBE_DEPTHS)
    threads = torch.get_num_threads()
    return Speed(machine=machine_key(dev.type, prec, threads), device=dev.type, precision=prec, threads=threads,
                 flops=(flops[0], flops[1]), train_ips=(t0, t1), eval_ips=(e0, e1), fp32_ips=(p0, p1),
                 measured_at=time.time())


# ---------------------------------------------------------------------------- the cache


def speed_file(path: Path | None = None) -> Path:
    """``path``, else ``$RESNET_VIZ_SPEED_FILE``, else the cache folder's ``machine-speed.json``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("RESNET_VIZ_SPEED_FILE")
    return Path(env).expanduser() if env else default_cache_dir() / SPEED_FILE


# torch's thread count when this process began, read at import (before any page work). A worker
# started without a thread setting measures with this count; inside ``device.one_cpu_thread`` a
# server's script thread can stay at one (OpenMP keeps a count per thread), and looking the
# figures up under that count found none: pages showed no times and measured again.
_START_THREADS = torch.get_num_threads()


def start_threads() -> int:
    """The thread count figures are kept under unless a caller names one (see ``_START_THREADS``)."""
    return _START_THREADS


def cached(device: str = "auto", precision: str = "auto", threads: int | None = None,
           path: Path | None = None) -> Speed | None:
    """The figures measured before on this machine in these settings (``threads``: torch's
    thread count when the process began, unless given), or None."""
    dev = pick_device(device)
    key = machine_key(dev.type, resolve_precision(precision, dev), threads or start_threads())
    try:
        entry = json.loads(speed_file(path).read_text(encoding="utf-8")).get(key)
        return Speed.from_dict(entry) if isinstance(entry, dict) else None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # none yet, or a damaged file: measure again


def save(speed: Speed, path: Path | None = None) -> Speed:
    """Keep ``speed``, other machines' entries too (a shared cache folder), and return what is
    kept. A measurement is only ever slowed by other work on the machine (a run, a visitor's
    experiment, CI), never sped up, so each figure keeps the fastest seen here."""
    file = speed_file(path)
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
        entries = entries if isinstance(entries, dict) else {}
        before = Speed.from_dict(entries[speed.machine]) if speed.machine in entries else None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        entries, before = {}, None
    if before is not None:
        speed = replace(speed, train_ips=_faster(speed.train_ips, before.train_ips),
                        eval_ips=_faster(speed.eval_ips, before.eval_ips),
                        fp32_ips=_faster(speed.fp32_ips, before.fp32_ips))
    entries[speed.machine] = speed.to_dict()
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    os.replace(tmp, file)
    return speed


def _faster(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return (max(a[0], b[0]), max(a[1], b[1]))


def measure_and_save(path: Path | None = None, *, progress: Callable[[float, str], None] | None = None,
                     stop: Any = None) -> dict[str, Any]:
    """Measure, keep the figures, return them as plain data (a background task's result)."""
    return save(measure(progress=progress, stop=stop), path).to_dict()


def known_speed(path: Path | None = None) -> Speed:
    """The cached figures, or a fresh measurement kept for next time (the command line's way)."""
    return cached(path=path) or _measure_kept(path)


def _measure_kept(path: Path | None) -> Speed:
    return save(measure(), path)


# ---------------------------------------------------------------------------- estimates


def training_seconds(config: RunConfig, train_size: int, test_size: int, speed: Speed, *,
                     steps: int | None = None) -> float:
    """Wall seconds a run of ``config`` takes here: its steps, its evaluations (with flips if
    asked; the validation split is part of ``test_size`` when given) and a start-up."""
    tc = config.train
    total = steps if steps is not None else tc.total_steps(train_size)
    per_epoch = max(1, train_size // tc.batch_size)
    eval_every = tc.eval_every or per_epoch
    evals = total // eval_every + (1 if total % eval_every else 0)
    train_s = total * tc.batch_size * speed.train_seconds_per_image(config.model) * TRAINER_OVERHEAD
    eval_s = evals * test_size * (2 if tc.eval_tta else 1) * speed.eval_seconds_per_image(config.model)
    return STARTUP_S + train_s + eval_s


def epochs_for(seconds: float, config: RunConfig, train_size: int, test_size: int, speed: Speed) -> int:
    """Whole epochs of ``config`` that fit in about ``seconds`` here (at least one)."""
    one = replace(config, train=replace(config.train, epochs=1.0, steps=None))
    per_epoch = training_seconds(one, train_size, test_size, speed) - STARTUP_S
    return max(1, int((seconds - STARTUP_S) / per_epoch + 0.5))


def about(seconds: float) -> str:
    """"about 40 seconds", "about 9 minutes", "about 2.5 hours": rounded as a person says it."""
    if seconds < 55:
        return f"about {max(5, round(seconds / 5) * 5):.0f} seconds"
    minutes = seconds / 60
    if minutes < 90:
        return f"about {max(1, round(minutes)):.0f} minute{'s' if round(minutes) != 1 else ''}"
    return f"about {minutes / 60:.1f} hours"


def data_sizes(data: ImageData) -> tuple[int, int]:
    """(training images, images scored at each evaluation: the test set and any validation split)."""
    return len(data.train_y), len(data.test_y) + (len(data.val_y) if data.val_y is not None else 0)


def run_seconds(config: RunConfig, data: ImageData, speed: Speed) -> float:
    """``training_seconds`` of ``config`` on ``data``."""
    return training_seconds(config, *data_sizes(data), speed)


def brief_epochs(config: RunConfig, data: ImageData, speed: Speed, seconds: float = BRIEF_SECONDS) -> int:
    """Epochs of ``config`` on ``data`` for a brief run of about ``seconds`` here; no more than
    the brief recipe's epochs, past which a brief run gains little (a small data set on a fast
    machine would otherwise get dozens)."""
    cap = int(TrainConfig().epochs or 1)
    return min(cap, epochs_for(seconds, config, *data_sizes(data), speed))
