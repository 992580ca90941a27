"""``python -m resnet_viz faithfulness RUN``: deletion, insertion and ROAD scores of every
attribution method on a fixed set of test images; prints one JSON object."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

COMMAND = "faithfulness"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(COMMAND, help="how faithful each attribution method is: deletion/insertion AUC and ROAD "
                                     "on a fixed set of test images")
    p.add_argument("run", metavar="RUN", help="a run id, or an exported model file (.safetensors)")
    p.add_argument("--out", default=None, help="runs folder (default ./runs or env RESNET_VIZ_RUNS)")
    p.add_argument("--images", type=int, default=50,
                   help="test images: the first of each class, then the second of each, ... (default 50)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default: all); a random map is always added as the reference")
    p.add_argument("--no-road", action="store_true", help="skip ROAD (noisy linear imputation)")
    p.add_argument("--curves", action="store_true", help="keep the mean curves and each image's areas in the JSON")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from resnet_viz.background.progress import StderrProgress
    from resnet_viz.cli.experiments import data_for, load_model_ref
    from resnet_viz.experiments.attribution.faithfulness import check_methods, faithfulness_study, fixed_images
    from resnet_viz.experiments.attribution.removal import ROAD_FRACTIONS

    t0 = time.perf_counter()
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    check_methods(methods)  # a typo fails at once, before the model and the data are loaded
    if args.images < 1:
        raise ValueError(f"--images must be at least 1, got {args.images}")
    model, cfg, label = load_model_ref(args.run, args.out)
    data = data_for(cfg)
    x, y = fixed_images(data.test_x, data.test_y, args.images)
    res = faithfulness_study(model, x, y, methods=methods, road_fractions=None if args.no_road else ROAD_FRACTIONS,
                             seed=args.seed, label=label, progress=StderrProgress()).to_dict()
    if not args.curves:  # the scores a person reads; --curves for the plots' data
        keep = ("deletion_auc", "deletion_auc_std", "insertion_auc", "insertion_auc_std", "road_gap")
        res["methods"] = {m: {k: v for k, v in s.items() if k in keep} for m, s in res["methods"].items()}
    result: dict[str, Any] = {"experiment": COMMAND, "model": label, "data": data.name, **res,
                              "seconds": round(time.perf_counter() - t0, 2)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0
