"""Experiment subcommands of ``python -m resnet_viz``; each prints one JSON object.

``RUN`` is a run id (in the runs folder) or the path of an exported model file (e.g.
``assets/resnet20.safetensors``). Experiments on data use the data set the model was
trained on when it is reachable here, else the app's default data set (when its number of
classes fits), so a shipped model works on any machine with CIFAR-10 or its JPEG copy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from resnet_viz.background.progress import StderrProgress
from resnet_viz.config import SHORTCUTS, RunConfig

EXPERIMENTS = ("lesion", "landscape", "signal", "sanity", "report", "paths")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    def model_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("run", metavar="RUN", help="a run id, or an exported model file (.safetensors)")
        p.add_argument("--out", default=None, help="runs folder (default ./runs or env RESNET_VIZ_RUNS)")

    p = sub.add_parser("lesion", help="delete blocks one at a time and k at random; test accuracy after each")
    model_arg(p)
    p.add_argument("--images", type=int, default=2000, help="test images to evaluate on")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--max-k", type=int, default=None)
    p = sub.add_parser("landscape", help="loss along filter-normalized random directions (Li et al. 2018)")
    model_arg(p)
    p.add_argument("--kind", choices=("surface", "random", "interpolation"), default="random")
    p.add_argument("--images", type=int, default=2000, help="fixed subset of training images")
    p.add_argument("--steps", type=int, default=None, help="grid points (21; 25 for interpolation, so that "
                   "the initial and trained weights lie on the grid)")
    p.add_argument("--span", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="direction seed: the same for compared runs")
    p = sub.add_parser("signal", help="signal propagation and shattered gradients at initialization")
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--shortcut", choices=SHORTCUTS, default="A")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("sanity", help="saliency of the trained model against cascading randomized copies")
    model_arg(p)
    p.add_argument("image", metavar="IMAGE", help="an image file (PNG, JPEG, WebP, GIF or BMP)")
    p.add_argument("--method", default="saliency")
    p = sub.add_parser("report", help="write a self-contained HTML comparison of runs and experiment results")
    p.add_argument("runs", metavar="RUN", nargs="*", help="run ids (none: a report of experiments alone)")
    p.add_argument("--experiment", metavar="[TITLE=]FILE", action="append", default=[],
                   help="a JSON result printed by lesion, landscape, signal or sanity (repeatable)")
    p.add_argument("--out", default=None, help="runs folder")
    p.add_argument("--html", default="report.html", help="where to write the report")
    p = sub.add_parser("paths", help="gradient reaching the input through paths of each length (Veit et al. 2016)")
    model_arg(p)
    p.add_argument("--images", type=int, default=64, help="fixed subset of training images (at most 1024)")
    p.add_argument("--samples", type=int, default=8, help="random sets of k branches per length k (at most 1000)")
    p.add_argument("--seed", type=int, default=0)


def load_model_ref(ref: str, runs_out: str | None) -> tuple[torch.nn.Module, RunConfig, str]:
    """(model in eval mode, its run config, a label) for a run id or a model file."""
    from resnet_viz.store.models import load_model_file, load_run_model
    from resnet_viz.store.rundir import RunDir, default_runs_dir

    path = Path(ref)
    if path.suffix == ".safetensors" or path.is_file():
        model, cfg, _ = load_model_file(path)
        return model, cfg, f"{cfg.model.label} ({path.name})"
    run = RunDir.open(Path(runs_out) if runs_out else default_runs_dir(), ref)
    model, cfg = load_run_model(run)
    return model, cfg, f"{cfg.model.label} ({run.id})"


def data_for(cfg: RunConfig):
    """The data set ``cfg`` was trained on if reachable, else the default one if it fits."""
    from resnet_viz.data.sources import default_source, load_data

    try:
        data = load_data(cfg.data, trusted=True)  # the CLI's operator may read any folder
    except ValueError:
        data = load_data(default_source())
    if len(data.classes) != cfg.model.num_classes:
        raise ValueError(f"no data set with {cfg.model.num_classes} classes is reachable here ({data.name} has "
                         f"{len(data.classes)}); use --data on the run's machine")
    return data


def read_experiment(arg: str) -> tuple[str, Any]:
    """(title, result) from ``[TITLE=]FILE``; the title defaults to "<experiment>: <model>"
    from the JSON, else the file's name."""
    title, _, path = arg.partition("=") if "=" in arg and not Path(arg).exists() else ("", "", arg)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a JSON result ({e.msg} at line {e.lineno})") from None
    if not title and isinstance(data, dict) and data.get("experiment"):
        title = str(data["experiment"]) + (f": {data['model']}" if data.get("model") else "")
    return title or Path(path).stem, data


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    result: dict[str, Any] = {"experiment": args.command}
    if args.command == "signal":
        from resnet_viz.experiments.signal import (
            shattered_gradients,
            signal_propagation,
        )

        result["signal"] = signal_propagation(args.depth, args.shortcut, seed=args.seed,
                                              progress=StderrProgress()).to_dict()
        from resnet_viz.config import ModelConfig

        result["shattered"] = shattered_gradients(ModelConfig(depth=args.depth, shortcut=args.shortcut),
                                                  seed=args.seed, progress=StderrProgress()).to_dict()
    elif args.command == "report":
        from resnet_viz.report.html import build_report
        from resnet_viz.store.rundir import default_runs_dir

        exps = [read_experiment(e) for e in args.experiment]
        page = build_report(Path(args.out) if args.out else default_runs_dir(), args.runs, exps)
        Path(args.html).write_text(page, encoding="utf-8")
        result.update(path=str(Path(args.html).resolve()), bytes=len(page.encode()), runs=args.runs,
                      experiments=[t for t, _ in exps])
    else:
        model, cfg, label = load_model_ref(args.run, args.out)
        result["model"] = label
        if args.command == "sanity":
            from resnet_viz.data.batches import normalize
            from resnet_viz.data.uploads import open_upload, to_input_tensor
            from resnet_viz.experiments.sanity import sanity_check

            x = normalize(to_input_tensor(open_upload(Path(args.image).read_bytes()))[None], channels_last=False)
            result.update(sanity_check(model, x, args.method, progress=StderrProgress()).to_dict())
        else:
            data = data_for(cfg)
            result["data"] = data.name
            if args.command == "lesion":
                from resnet_viz.experiments.common import evaluation_subset
                from resnet_viz.experiments.lesion import lesion_study

                x, y = evaluation_subset(data.test_x, data.test_y, args.images)
                result.update(lesion_study(model, x, y, trials=args.trials, max_k=args.max_k, label=label,
                                           progress=StderrProgress()).to_dict())
            elif args.command == "paths":
                result.update(_paths(args, model, data, label))
            else:
                result.update(_landscape(args, model, cfg, data, label))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _landscape(args: argparse.Namespace, model, cfg: RunConfig, data, label: str) -> dict[str, Any]:
    from resnet_viz.experiments.landscape import (
        fixed_subset,
        interpolation_slice,
        random_slice,
        surface_2d,
    )
    from resnet_viz.nets.cifar import build_model

    x, y = fixed_subset(data.train_x, data.train_y, n=args.images, seed=0)
    if args.steps is None:
        args.steps = 25 if args.kind == "interpolation" else 21
    progress = StderrProgress()
    if args.kind == "surface":
        return surface_2d(model, x, y, seed=args.seed, steps=args.steps, span=args.span, label=label,
                          progress=progress).to_dict()
    if args.kind == "random":
        return random_slice(model, x, y, seed=args.seed, steps=args.steps, span=args.span,
                            progress=progress).to_dict()
    # The run's initial weights: fit() builds from a generator seeded with the run's seed.
    initial = build_model(cfg.model, generator=torch.Generator().manual_seed(cfg.train.seed)).state_dict()
    return interpolation_slice(initial, model, x, y, steps=args.steps, progress=progress).to_dict()


def _paths(args: argparse.Namespace, model, data, label: str) -> dict[str, Any]:
    from resnet_viz.experiments.landscape import fixed_subset
    from resnet_viz.experiments.paths import MAX_IMAGES, paths_study

    if not 1 <= args.images <= MAX_IMAGES:  # before fixed_subset, whose limit is the data set's size
        raise ValueError(f"--images must be from 1 to {MAX_IMAGES}, got {args.images}")
    # Training images, as Veit et al. (and the loss landscape's subset: the app's images too).
    x, y = fixed_subset(data.train_x, data.train_y, n=min(args.images, len(data.train_y)), seed=0)
    return paths_study(model, x, y, images=args.images, samples=args.samples, seed=args.seed, label=label,
                       progress=StderrProgress()).to_dict()
