"""``python -m resnet_viz responses RUN [RUN ...]``: Fig. 7 of He et al. 2015 for the nets given,
as one JSON object: the std of every 3x3 layer's response of each, on the same test images."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from resnet_viz.background.progress import StderrProgress

COMMAND = "responses"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(COMMAND, help="std of each 3x3 layer's response, per net (He et al. 2015, Fig. 7)")
    p.add_argument("runs", metavar="RUN", nargs="+", help="run ids or exported model files (.safetensors)")
    p.add_argument("--images", type=int, default=1000, help="test images (a fixed seeded subset; at most 10000)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", default=None, help="runs folder (default ./runs or env RESNET_VIZ_RUNS)")


def cmd(args: argparse.Namespace) -> int:
    from resnet_viz.cli.experiments import data_for, load_model_ref
    from resnet_viz.experiments.common import evaluation_subset
    from resnet_viz.experiments.responses import MAX_IMAGES, layer_responses, reading

    t0 = time.perf_counter()
    if not 1 <= args.images <= MAX_IMAGES:
        raise ValueError(f"--images must be from 1 to {MAX_IMAGES}, got {args.images}")
    models = [load_model_ref(ref, args.out) for ref in args.runs]  # every name checked before any work
    data = data_for(models[0][1])  # every net sees the same images: the first one's test set
    x, _ = evaluation_subset(data.test_x, data.test_y, args.images)
    nets: list[dict[str, Any]] = []
    for model, _, label in models:
        started = time.perf_counter()
        r = layer_responses(model, x, batch_size=args.batch_size, label=label, progress=StderrProgress())
        nets.append({**r.to_dict(), "seconds": round(time.perf_counter() - started, 2)})
    result = {"experiment": COMMAND, "data": data.name, "images": len(x), "nets": nets, "reading": reading(nets),
              "seconds": round(time.perf_counter() - t0, 2)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0
