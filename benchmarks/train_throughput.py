"""Trainer throughput against a bare PyTorch loop, interleaved in one process.

    python benchmarks/train_throughput.py [--depths 20 56] [--steps 60] [--rounds 3] [--snapshot-every N]

The trainer runs with everything a user gets (and "watch it learn" frames every 10th step, 8x
its default rate): its data pipeline (uint8 data, batched
crop+flip on the device, normalization), per-step records, probes every 10th step, the
metrics file and TensorBoard. The bare loop trains the same model with the same batch
size, memory format, precision (bf16 autocast where the trainer uses it) and optimizer on
one pre-made batch. Both are timed in steady
state (after their first 10 steps, and without the trainer's final test evaluation).
Rounds alternate bare, trainer, bare, trainer ... so drift in the machine's speed
affects both. The last line is ``ratio trainer/bare: X.XX`` (the worst depth).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from resnet_viz.data.sources import ImageData, default_source, load_data, make_synthetic  # noqa: E402
from resnet_viz.nets.cifar import build_model  # noqa: E402
from resnet_viz.store.rundir import RunDir  # noqa: E402
from resnet_viz.training.device import (  # noqa: E402
    autocast,
    describe_device,
    pick_device,
    resolve_precision,
)
from resnet_viz.training.loop import fit  # noqa: E402

WARMUP = 10


def bare_loop(depth: int, steps: int, batch: int, device: torch.device, precision: str) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=depth)).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    t0 = 0.0
    for i in range(steps + WARMUP):
        if i == WARMUP:
            t0 = time.perf_counter()
        with autocast(device, precision):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss.item()  # wait for the device
    return steps * batch / (time.perf_counter() - t0)


def trainer(depth: int, steps: int, batch: int, data: ImageData, src: DataConfig, root: Path,
            snapshot_every: int | None = None) -> float:
    cfg = RunConfig(
        model=ModelConfig(depth=depth, num_classes=len(data.classes)),
        data=src,
        train=TrainConfig(steps=steps + WARMUP, epochs=None, batch_size=batch, lr=0.05, probe_every=10, watch_every=10,
                          log_every=WARMUP, eval_every=10**6, snapshot_every=snapshot_every),
    )
    stamps: dict[int, float] = {}

    def on_records(records: list[dict]) -> None:
        for r in records:
            if r["kind"] == "step" and r["step"] in (WARMUP, steps + WARMUP):
                stamps[r["step"]] = time.perf_counter()

    fit(cfg, data=data, run=RunDir.create(root, cfg, f"bench-{depth}"), on_records=on_records)
    return steps * batch / (stamps[steps + WARMUP] - stamps[WARMUP])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic set even if CIFAR-10 is here")
    ap.add_argument("--snapshot-every", type=int, default=None,
                    help="the trainer's weight snapshots: steps between them (default: each epoch; 0: none)")
    args = ap.parse_args()
    device = pick_device("auto")
    precision = resolve_precision("auto", device)  # the trainer's default; the bare loop matches it
    src = DataConfig() if args.synthetic else default_source()
    data = make_synthetic(10_000, 1_000, 0) if src.source == "synthetic" else load_data(src, trusted=True)
    print(f"device: {describe_device(device)}, {precision}; data: {data.name}; batch {args.batch_size}; "
          f"{args.steps} timed steps x {args.rounds} rounds")
    worst = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for depth in args.depths:
            bare, ours = [], []
            for r in range(args.rounds):
                bare.append(bare_loop(depth, args.steps, args.batch_size, device, precision))
                ours.append(trainer(depth, args.steps, args.batch_size, data, src, Path(tmp), args.snapshot_every))
                print(f"  ResNet-{depth} round {r + 1}: bare {bare[-1]:7.0f} img/s   trainer {ours[-1]:7.0f} img/s")
            b, o = sorted(bare)[len(bare) // 2], sorted(ours)[len(ours) // 2]  # medians
            ratio = o / b
            worst = min(worst, ratio)
            print(f"ResNet-{depth}: bare {b:.0f} img/s, trainer {o:.0f} img/s, ratio {ratio:.3f}")
    print(f"ratio trainer/bare: {worst:.2f}")


if __name__ == "__main__":
    main()
