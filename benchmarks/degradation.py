"""The degradation experiment from the command line, as the Compare page runs it.

    python benchmarks/degradation.py [--steps 1000] [--quick] [--synthetic] [--depths 20 56] [--out DIR] [--export F]

Trains plain-20, plain-56, ResNet-20 and ResNet-56 (shortcut A; other depths with ``--depths``)
one after another with the same seed, data order and budget on the default data set (CIFAR-10 when it is here),
writes them to the runs folder under the names the Compare page groups, and prints each
run's time and final errors, then the verdict in words and the total time. The reference
it prints beside them is the bare-loop measurement quoted in the issue (600 steps).
``--export`` writes the four runs' compact records and where they were measured: the file
the Compare page shows until a person has run the experiment themselves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

import torch  # noqa: E402

from resnet_viz.config import DataConfig, ModelConfig, RunConfig  # noqa: E402
from resnet_viz.data.sources import default_source, load_data  # noqa: E402
from resnet_viz.experiments import degradation, estimates  # noqa: E402
from resnet_viz.store.rundir import RunDir, default_runs_dir  # noqa: E402
from resnet_viz.training import speed  # noqa: E402
from resnet_viz.training.loop import fit  # noqa: E402

REFERENCE = {"plain-20": 0.43, "plain-56": 0.72, "resnet-20": 0.36, "resnet-56": 0.38}  # bare loop, 600 steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=degradation.DEFAULT_STEPS)
    ap.add_argument("--out", default=None)
    ap.add_argument("--export", default=None, help="write the result for the Compare page (assets/degradation.json)")
    ap.add_argument("--quick", action="store_true", help="the quick replay: the full schedule cut short after --steps")
    ap.add_argument("--synthetic", action="store_true", help="the embedded synthetic set, not the default data")
    ap.add_argument("--depths", type=int, nargs=2, default=list(degradation.DEGRADATION_DEPTHS),
                    metavar=("SHALLOW", "DEEP"), help="the two depths, e.g. 20 110 for the paper's Fig. 7 depth")
    args = ap.parse_args()
    if args.export and tuple(args.depths) != degradation.DEGRADATION_DEPTHS:
        ap.error("--export is the Compare page's 20/56 experiment; leave --depths out")
    src = DataConfig() if args.synthetic else default_source()
    data = load_data(src, trusted=True)  # the operator's own folder
    train = estimates.quick_config(args.steps) if args.quick else degradation.train_config(args.steps)
    base = RunConfig(model=ModelConfig(num_classes=len(data.classes)), data=src, train=train)
    measured = speed.known_speed()  # the app's estimate, printed beside each run's time
    print(measured.describe())
    root = Path(args.out) if args.out else default_runs_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(f"data: {data.name}; {args.steps} steps of batch {train.batch_size} per run; runs in {root}")
    results, seconds, t_all = {}, {}, time.perf_counter()
    for cfg in degradation.degradation_configs(base, args.depths):
        cfg = dataclasses.replace(cfg, name=f"{cfg.name} #{stamp}")
        key = degradation.run_key(cfg.model.depth, cfg.model.shortcut)
        guess = speed.run_seconds(cfg, data, measured)
        t0 = time.perf_counter()
        records: list[dict] = []
        res = fit(cfg, data=data, run=RunDir.create(root, cfg, cfg.name), on_records=records.extend)
        results[key] = records
        seconds[key] = round(time.perf_counter() - t0)
        err = degradation.final_errors(records)
        print(f"{key:>10}: {time.perf_counter() - t0:6.0f} s, {res.images_per_second:5.0f} img/s, "
              f"train error {err['train_error']:.3f}, test error {err['test_error']:.3f}, "
              f"train loss {err['train_loss']:.3f}  (reference train error {_ref(key)}); "
              f"estimated {guess:.0f} s: ratio took/estimate {(time.perf_counter() - t0) / guess:.2f}", flush=True)
    print(degradation.degradation_verdict(results, args.depths).text)
    print(f"total: {time.perf_counter() - t_all:.0f} s")
    if args.export:
        about = {"data": data.name, "steps": args.steps, "batch_size": train.batch_size, "seed": train.seed,
                 "machine": _machine(), "torch": torch.__version__, "seconds": seconds,
                 "date": time.strftime("%Y-%m-%d"),
                 "command": "python benchmarks/degradation.py " + " ".join(sys.argv[1:])}
        exported = degradation.export_result(results, about)
        Path(args.export).write_text(json.dumps(exported, separators=(",", ":")) + "\n")
        print(f"wrote {args.export}")


def _ref(key: str) -> str:
    return f"{REFERENCE[key]:.2f}" if key in REFERENCE else "none measured"


def _machine() -> str:
    """E.g. "2-core Intel(R) Xeon(R) Processor, CPU": what the times were measured on."""
    cpu = platform.processor() or "CPU"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core {cpu}, {gpu}"


if __name__ == "__main__":
    main()
