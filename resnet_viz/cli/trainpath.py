"""``python -m resnet_viz trainpath RUN``: the path a run's training took on its loss surface
(Li et al. 2018, Fig. 9), printed as one JSON object (``experiments.trainpath.TrainPath``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from resnet_viz.background.progress import StderrProgress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trainpath", help="a run's weight snapshots on their top-2 principal plane, over the loss "
                                         "contour there (Li et al. 2018, Fig. 9)")
    p.add_argument("run", metavar="RUN", help="a run id (trained with weight snapshots), or a run folder")
    p.add_argument("--images", type=int, default=1000, help="fixed subset of training images for the loss")
    p.add_argument("--steps", type=int, default=15, help="grid points per axis of the contour (3 to 41)")
    p.add_argument("--out", default=None, help="runs folder (default ./runs or env RESNET_VIZ_RUNS)")


def cmd_trainpath(args: argparse.Namespace) -> int:
    from resnet_viz.cli.experiments import data_for
    from resnet_viz.experiments.landscape import fixed_subset
    from resnet_viz.experiments.trainpath import training_path
    from resnet_viz.store.rundir import RunDir, default_runs_dir

    t0 = time.perf_counter()
    given = Path(args.run)
    run = RunDir(given) if (given / "config.json").is_file() else RunDir.open(
        Path(args.out) if args.out else default_runs_dir(), args.run)
    cfg = run.config()
    data = data_for(cfg)
    x, y = fixed_subset(data.train_x, data.train_y, n=min(args.images, len(data.train_y)), seed=0)
    res = training_path(run.path, x, y, steps=args.steps, label=f"{cfg.model.label} ({run.id})",
                        progress=StderrProgress())
    out = {"experiment": "trainpath", "model": res.label, "data": data.name, **res.to_dict(),
           "seconds": round(time.perf_counter() - t0, 2)}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0
