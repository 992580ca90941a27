"""How well the synthetic set teaches: ResNet-20 with the app's defaults, several seeds.

    python benchmarks/synthetic_quality.py [--seeds 3] [--epochs 3] [--degradation 400] [--curve]

Trains ResNet-20 with ``TrainConfig.recipe("brief", epochs=3)`` on ``DataConfig()`` (the
synthetic set at its default sizes) once per seed (the seed is both the data's and the
training's) and prints the test accuracy after each epoch, then the worst and mean final
accuracy. ``--degradation STEPS`` also runs the degradation replay's four nets (plain-20,
plain-56, ResNet-20, ResNet-56, option A) for STEPS steps on seed 0's set and prints their
final training errors and the verdict. ``--curve`` prints the training loss every 10 steps
(to see whether brief training is stable). Nothing is written to the runs folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from resnet_viz.data.sources import load_data  # noqa: E402
from resnet_viz.experiments import degradation  # noqa: E402
from resnet_viz.training.loop import fit  # noqa: E402


def brief_run(seed: int, epochs: float, curve: bool) -> list[float]:
    """Test accuracy after each epoch of ResNet-20 on the default synthetic set with ``seed``."""
    src = dataclasses.replace(DataConfig(), seed=seed)
    t0 = time.perf_counter()
    data = load_data(src)
    made = time.perf_counter() - t0
    cfg = RunConfig(model=ModelConfig(num_classes=len(data.classes)), data=src,
                    train=TrainConfig.recipe("brief", epochs=epochs, seed=seed, probe_every=0))
    records: list[dict] = []
    res = fit(cfg, data=data, on_records=records.extend)
    accs = [float(r["test_acc"]) for r in records if r.get("kind") == "eval"]
    print(f"seed {seed}: data {made:.1f} s; test accuracy by epoch "
          + " ".join(f"{a:.3f}" for a in accs)
          + f"; {res.elapsed:.0f} s, {res.images_per_second:.0f} img/s", flush=True)
    if curve:
        losses = [(r["step"], r["loss"], r.get("acc")) for r in records if r.get("kind") == "step"]
        print("  step loss acc: " + "  ".join(f"{s}:{v:.2f}/{a:.2f}" for s, v, a in losses if s % 10 == 0))
    return accs


def replay(steps: int) -> None:
    """The degradation replay's four runs on the default synthetic set, ``steps`` each."""
    src = DataConfig()
    data = load_data(src)
    train = dataclasses.replace(degradation.default_train_config(), steps=steps, probe_every=0)
    base = RunConfig(model=ModelConfig(num_classes=len(data.classes)), data=src, train=train)
    results = {}
    for cfg in degradation.degradation_configs(base):
        key = degradation.run_key(cfg.model.depth, cfg.model.shortcut)
        t0 = time.perf_counter()
        records: list[dict] = []
        fit(cfg, data=data, on_records=records.extend)
        results[key] = records
        err = degradation.final_errors(records)
        print(f"{key:>10}: {time.perf_counter() - t0:5.0f} s, train error {err['train_error']:.3f}, "
              f"test error {err['test_error']:.3f}, train loss {err['train_loss']:.3f}", flush=True)
    print(degradation.degradation_verdict(results).text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (data and training)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--degradation", type=int, default=0, metavar="STEPS",
                    help="also run the degradation replay with this many steps per net (0: skip)")
    ap.add_argument("--curve", action="store_true", help="print the training loss every 10 steps")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    finals = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        accs = brief_run(seed, args.epochs, args.curve)
        finals.append(accs[-1] if accs else float("nan"))
    if finals:
        print(f"final test accuracy: worst {min(finals):.3f}, mean {sum(finals) / len(finals):.3f} "
              f"over {len(finals)} seeds")
    if args.degradation:
        replay(args.degradation)


if __name__ == "__main__":
    main()
