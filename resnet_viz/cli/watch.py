"""``python -m resnet_viz watch RUN``: what a run recorded to watch it learn, as one JSON object."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from resnet_viz.store import watchfile
from resnet_viz.store.rundir import RunDir, default_runs_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help="a run's recorded frames: feature maps of one test image and per-block "
                                     "weight and gradient histograms over training")
    p.add_argument("run", metavar="RUN", help="a run id")
    p.add_argument("--step", type=int, default=None, help="the frame at or before this step (default: the last)")
    p.add_argument("--out", default=None, help="runs folder (default ./runs or env RESNET_VIZ_RUNS)")


def summary(run: RunDir, step: int | None = None) -> dict[str, Any]:
    """The run's frames in brief: steps, the file's size, and at ``step`` each block's maps (channels, mean
    activation) and each group's median |weight| and |gradient| with the histogram counts."""
    w = watchfile.read_watch(run.path)
    if w is None or not w.frames:
        raise ValueError(f"run {run.id} recorded no frames (it predates them, or ran with watch_every=0)")
    f = w.at(w.steps[-1] if step is None else step)
    hist = {g: {"median_abs_weight": watchfile.median_magnitude(f.weights[g]),
                "median_abs_grad": watchfile.median_magnitude(f.grads[g]) if g in f.grads else None,
                "weights": f.weights[g].tolist(), "grads": f.grads[g].tolist() if g in f.grads else None}
            for g in w.groups if g in f.weights}
    return {
        "run": run.id, "label": run.config().model.label, "frames": len(w.frames), "steps": w.steps,
        "bytes": (run.path / watchfile.WATCH_FILE).stat().st_size,
        "image": {"label": w.label, "class": w.class_name}, "step": f.step,
        "maps": {b: {"channels": m.channels, "mean_activation": float(m.values[0].mean()),
                     "shape": list(m.values.shape)} for b, m in f.maps.items()},
        "histograms": hist, "bin_edges": w.edges.tolist(),
    }


def cmd_watch(args: argparse.Namespace) -> int:
    run = RunDir.open(Path(args.out) if args.out else default_runs_dir(), args.run)
    print(json.dumps(summary(run, args.step)))
    return 0
