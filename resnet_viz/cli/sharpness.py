"""``python -m resnet_viz sharpness``: top Hessian eigenvalues and trace of the training loss, as one JSON object.

``RUN`` is a run id or a model file (as for the other experiments); ``--untrained`` measures a
freshly built net instead (``--depth``, ``--shortcut``, ``--seed``), on the default data set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

from resnet_viz.config import SHORTCUTS, ModelConfig, RunConfig

NAME = "sharpness"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from resnet_viz.experiments.sharpness import MAX_IMAGES, MAX_ITERATIONS, MAX_TOP, MAX_TRACE_SAMPLES

    p = sub.add_parser(NAME, help="top Hessian eigenvalues and trace of the training loss (PyHessian's sharpness)")
    p.add_argument("run", metavar="RUN", nargs="?", default=None,
                   help="a run id, or an exported model file (.safetensors); omit with --untrained")
    p.add_argument("--out", default=None, help="runs folder (default ./runs or env RESNET_VIZ_RUNS)")
    p.add_argument("--images", type=int, default=128, help=f"fixed, class-balanced training images (<= {MAX_IMAGES})")
    p.add_argument("--top", type=int, default=3, help=f"eigenvalues to find (<= {MAX_TOP})")
    p.add_argument("--max-iter", type=int, default=20, help=f"products per eigenvalue at most (<= {MAX_ITERATIONS})")
    p.add_argument("--tol", type=float, default=1e-3, help="relative change at which an eigenvalue has converged")
    p.add_argument("--trace-samples", type=int, default=20,
                   help=f"Hutchinson samples for the trace (0: none; <= {MAX_TRACE_SAMPLES})")
    p.add_argument("--seed", type=int, default=0, help="random vectors' seed; with --untrained also the weights'")
    p.add_argument("--untrained", action="store_true", help="a freshly initialized net instead of RUN "
                   "(BN's running statistics are then set from the images: see --recalibrate-bn)")
    p.add_argument("--recalibrate-bn", action="store_true",
                   help="set BN's running statistics from the images first (always with --untrained)")
    p.add_argument("--depth", type=int, default=20, help="with --untrained: 6n+2")
    p.add_argument("--shortcut", choices=SHORTCUTS, default="A", help="with --untrained: none is a plain net")


def _model(args: argparse.Namespace) -> tuple[torch.nn.Module, RunConfig, str]:
    from resnet_viz.cli.experiments import load_model_ref
    from resnet_viz.nets.cifar import build_model

    if args.untrained == (args.run is not None):
        raise ValueError("name a RUN (a run id or a model file) or pass --untrained, not both or neither")
    if args.run is not None:
        return load_model_ref(args.run, args.out)
    from resnet_viz.data.sources import default_source

    # The app's default data set (CIFAR-10 where it is here), not RunConfig's synthetic one.
    cfg = RunConfig(model=ModelConfig(depth=args.depth, shortcut=args.shortcut), data=default_source())
    model = build_model(cfg.model, generator=torch.Generator().manual_seed(args.seed))
    return model, cfg, f"{cfg.model.label} (untrained, seed {args.seed})"


def run(args: argparse.Namespace) -> int:
    from resnet_viz.background.progress import StderrProgress
    from resnet_viz.cli.experiments import data_for
    from resnet_viz.experiments.landscape import fixed_subset
    from resnet_viz.experiments.sharpness import sharpness

    t0 = time.perf_counter()
    model, cfg, label = _model(args)
    data = data_for(cfg)
    x, y = fixed_subset(data.train_x, data.train_y, n=min(args.images, len(data.train_y)), seed=0)
    result: dict[str, Any] = {"experiment": NAME, "model": label, "data": data.name}
    result.update(sharpness(model, x, y, top=args.top, max_iter=args.max_iter, tol=args.tol,
                            trace_samples=args.trace_samples, seed=args.seed, label=label,
                            recalibrate=args.untrained or args.recalibrate_bn,
                            progress=StderrProgress()).to_dict())
    result["seconds"] = round(time.perf_counter() - t0, 2)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


__all__ = ["NAME", "add_parser", "run"]
