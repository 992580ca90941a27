"""ResNet-20 on a GPU: images/s and time to 91% test accuracy; on a CPU, what the GPU path's
options do to throughput, as ratios against a plain reference in the same process.

    python benchmarks/gpu_train.py [--data PATH] [--compile] [--epochs 60] [--batch-size 128]
    python benchmarks/gpu_train.py --cpu-steps 30 --rounds 2 [--no-compile]    # what runs without a GPU

With CUDA: trains ResNet-20 (shortcut A) through the trainer, channels_last and bf16 autocast
(the defaults on CUDA), optionally torch.compile, evaluating once per epoch. The recipe is the
brief one run longer: SGD + Nesterov, one-cycle to 0.2, label smoothing 0.1, weight decay 5e-4,
crop + flip, flip test-time augmentation. It prints the GPU, steady-state images/s and the wall
time from the start of training to the first evaluation at >= 91% test accuracy (or the best
accuracy, if it never got there).

Without CUDA: says so, then times the trainer on ResNet-20 in four settings, interleaved in
rounds so drift in a shared machine's speed hits them all: fp32 + NCHW (the reference),
channels_last fp32, channels_last + bf16 autocast, and channels_last + bf16 + torch.compile
(compilation time reported apart; it needs a C++ compiler). The best of the rounds (other work
on the machine only ever slows a round down), as ratios to the reference.

Data: ``--data PATH``, else ``../shared/data/cifar10-jpg`` when present, else the synthetic set.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from resnet_viz.data.sources import ImageData, load_data  # noqa: E402
from resnet_viz.training.device import cpu_has_native_bf16  # noqa: E402
from resnet_viz.training.distributed import CompileError  # noqa: E402
from resnet_viz.training.loop import fit  # noqa: E402

TARGET = 0.91
WARMUP = 10  # steps before the clock starts: the first window holds allocation and compilation


def data_source(arg: str | None) -> DataConfig:
    if arg == "synthetic":
        return DataConfig()
    folder = Path(arg).expanduser() if arg else ROOT.parent / "shared" / "data" / "cifar10-jpg"
    if folder.is_dir():
        return DataConfig(source="folder", path=str(folder.resolve()))
    if arg:
        raise SystemExit(f"--data {arg}: no such folder")
    return DataConfig()


def gpu_run(args: argparse.Namespace, src: DataConfig, data: ImageData) -> None:
    cfg = RunConfig(
        model=ModelConfig(depth=20, shortcut="A", num_classes=len(data.classes)), data=src,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device="cuda",
                          precision=args.precision, probe_every=0, log_every=50, compile=args.compile),
    )
    reached: list[float] = []
    best = [0.0]

    def on_records(records: list[dict]) -> None:
        for r in records:
            if r["kind"] == "eval":
                best[0] = max(best[0], r["test_acc"])
                if r["test_acc"] >= TARGET and not reached:
                    reached.append(r["elapsed"])
                print(f"  epoch {r['epoch']:5.1f}: test accuracy {r['test_acc']:.2%} at {r['elapsed']:.0f} s",
                      flush=True)

    result = fit(cfg, data=data, on_records=on_records)
    print(f"ResNet-20, batch {args.batch_size}, {args.epochs:g} epochs, {args.precision}, "
          f"{'torch.compile' if args.compile else 'eager'}: {result.images_per_second:,.0f} img/s steady state; "
          f"final test accuracy {result.test_acc:.2%} after {result.elapsed:.0f} s")
    if reached:
        print(f"time to {TARGET:.0%} test accuracy: {reached[0]:.0f} s (wall time from the start of training)")
    else:
        print(f"did not reach {TARGET:.0%} test accuracy (best {best[0]:.2%}); try more --epochs")


VARIANTS = {  # name: (channels_last, precision, compile)
    "fp32, NCHW (reference)": (False, "fp32", False),
    "fp32, channels_last": (True, "fp32", False),
    "bf16 autocast, channels_last": (True, "bf16", False),
    "bf16, channels_last, torch.compile": (True, "bf16", True),
}


def cpu_throughput(steps: int, batch: int, channels_last: bool, precision: str, compiled: bool,
                   src: DataConfig, data: ImageData) -> tuple[float, float]:
    """(steady images/s, seconds to the end of the warm-up steps) of the trainer in one setting."""
    cfg = RunConfig(
        model=ModelConfig(depth=20, num_classes=len(data.classes)), data=src,
        train=TrainConfig(steps=WARMUP + steps, epochs=None, batch_size=batch, probe_every=0, log_every=WARMUP,
                          eval_every=10**6, device="cpu", precision=precision, channels_last=channels_last,
                          compile=compiled),
    )
    stamps: dict[int, float] = {}

    def on_records(records: list[dict]) -> None:
        for r in records:
            if r["kind"] == "step" and r["step"] in (WARMUP, WARMUP + steps):
                stamps[r["step"]] = time.perf_counter()

    t0 = time.perf_counter()
    fit(cfg, data=data, on_records=on_records)
    return steps * batch / (stamps[WARMUP + steps] - stamps[WARMUP]), stamps[WARMUP] - t0


def cpu_comparison(args: argparse.Namespace, src: DataConfig, data: ImageData) -> None:
    # fit() evaluates once at its end; 200 test images keep that from costing more than the timing.
    data = dataclasses.replace(data, test_x=data.test_x[:200], test_y=data.test_y[:200])
    variants = {k: v for k, v in VARIANTS.items() if args.compile_cpu or not v[2]}
    print(f"CPU comparison: ResNet-20 training, batch {args.batch_size}, {args.cpu_steps} timed steps after "
          f"{WARMUP} warm-up steps, {args.rounds} interleaved rounds; {torch.get_num_threads()} threads; "
          f"native bf16: {'yes' if cpu_has_native_bf16() else 'no (bf16 is emulated and slow)'}")
    ips: dict[str, list[float]] = {k: [] for k in variants}
    warm: dict[str, float] = {}
    for r in range(args.rounds):
        for name, (cl, prec, comp) in list(variants.items()):
            try:
                speed, startup = cpu_throughput(args.cpu_steps, args.batch_size, cl, prec, comp, src, data)
            except CompileError as e:
                print(f"  {name}: skipped: {e}")
                del variants[name], ips[name]
                continue
            ips[name].append(speed)
            if r == 0:
                warm[name] = startup
            print(f"  round {r + 1}: {name:<36} {speed:7.0f} img/s", flush=True)
    ref_name = next(iter(VARIANTS))
    ref = max(ips[ref_name])
    print(f"best of {args.rounds} rounds, images/s, and the ratio to the reference:")
    for name, vals in ips.items():
        note = f"   (first {WARMUP} steps incl. compilation: {warm[name]:.0f} s)" if variants[name][2] else ""
        print(f"  {name:<36} {max(vals):7.0f} img/s   x{max(vals) / ref:.2f}{note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="a CIFAR-10 folder copy, or 'synthetic'")
    ap.add_argument("--epochs", type=float, default=60.0, help="GPU run length")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.2, help="GPU run: one-cycle peak")
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"), help="GPU run")
    ap.add_argument("--compile", action="store_true", help="GPU run: torch.compile the model")
    ap.add_argument("--cpu-steps", type=int, default=30, help="CPU comparison: timed steps per setting")
    ap.add_argument("--rounds", type=int, default=2, help="CPU comparison: rounds")
    ap.add_argument("--no-compile", dest="compile_cpu", action="store_false",
                    help="CPU comparison: leave out the torch.compile setting (its compilation takes minutes)")
    args = ap.parse_args()
    src = data_source(args.data)
    data = load_data(src, trusted=True)  # the operator's own folder
    where = "synthetic shapes (not CIFAR-10: accuracy figures do not compare)" if data.synthetic else src.path
    print(f"data: {data.name} ({len(data.train_y):,} training images) from {where}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
        gpu_run(args, src, data)
    else:
        print("no GPU is present (torch.cuda.is_available() is False): the GPU run is skipped; "
              "running the CPU throughput comparison instead")
        cpu_comparison(args, src, data)


if __name__ == "__main__":
    main()
