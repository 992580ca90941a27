"""``python -m resnet_viz``: summary, train and runs over the same functions the app uses.

Bad arguments give one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from resnet_viz.cli import train
from resnet_viz.config import (
    ModelConfig,
)

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line instead of usage + error
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    # Usage lines name the command the person typed: the console script, or python -m.
    prog = "resnet-viz" if Path(sys.argv[0]).name == "resnet-viz" else "python -m resnet_viz"
    p = _Parser(prog=prog, description="ResNet Lab: CIFAR ResNets you can train and look inside.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("summary", help="parameters, FLOPs and per-block shapes of a model")
    train.model_args(s)
    s.add_argument("--json", action="store_true", help="print one JSON object")

    train.add_parser(sub)

    e = sub.add_parser("export", help="write a run's trained model (weights only) to a safetensors file")
    e.add_argument("run_id")
    e.add_argument("path")
    e.add_argument("--out", default=None, help="runs folder")
    e.add_argument("--note", default="", help="stored in the file, e.g. the command that trained it")

    from resnet_viz.cli.experiments import add_parsers

    add_parsers(sub)
    from resnet_viz.cli import faithfulness, responses, sharpness, trainpath

    for module in (trainpath, sharpness, responses, faithfulness):  # the analyses of issue 13
        module.add_parser(sub)

    m = sub.add_parser("speed", help="this machine's measured training and inference speed (the app's time estimates)")
    m.add_argument("--measure", action="store_true", help="measure again (a few seconds), e.g. after a busy first try")

    g = sub.add_parser("published", help="published CIFAR ResNets (akamaster's ResNet-20/32/44/56): list, or get one")
    g.add_argument("--get", metavar="NAME", default=None,
                   help="download NAME (resnet20, resnet32, resnet44, resnet56, or all) where the app finds models")

    d = sub.add_parser("download", help="download CIFAR-10 (torchvision's archive, 170 MB, md5-checked) where the app "
                       "looks for it")
    d.add_argument("--root", default=None, help="data folder (default: the app's, ./data or env RESNET_VIZ_DATA)")

    from resnet_viz.cli import cam

    cam.add_parser(sub)

    r = sub.add_parser("runs", help="list runs with status and final figures")
    r.add_argument("--out", default=None, help="runs folder")
    r.add_argument("--json", action="store_true")
    from resnet_viz.cli import watch

    watch.add_parser(sub)
    return p


def cmd_summary(args: argparse.Namespace) -> int:
    from resnet_viz.nets.summary import format_summary, summarize

    s = summarize(ModelConfig(depth=args.depth, shortcut=args.shortcut, block=args.block, width=args.width))
    print(json.dumps(s.to_dict()) if args.json else format_summary(s))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from resnet_viz.store.listing import list_runs
    from resnet_viz.store.rundir import default_runs_dir

    runs = list_runs(Path(args.out) if args.out else default_runs_dir())
    if args.json:
        print(json.dumps([{"id": r.id, "status": r.status, "label": r.label, "steps": r.steps,
                           "test_accuracy": r.test_accuracy, "damaged": r.damaged} for r in runs]))
        return 0
    if not runs:
        print("no runs yet: python -m resnet_viz train --steps 200")
    for r in runs:
        fig = "" if r.test_accuracy is None else f" test acc {r.test_accuracy:.2%}"
        dmg = f"  DAMAGED: {r.damaged}" if r.damaged else ""
        print(f"{r.id:<44} {r.status:<12} {r.label:<16} steps {r.steps or 0:>6}{fig}{dmg}")
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    from resnet_viz.training import speed

    found = None if args.measure else speed.cached()
    if found is None:
        found = speed.measure()
        speed.save(found)
    print(json.dumps({**found.to_dict(), "file": str(speed.speed_file())}))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from resnet_viz.store.models import export_model
    from resnet_viz.store.rundir import RunDir, default_runs_dir

    run = RunDir.open(Path(args.out) if args.out else default_runs_dir(), args.run_id)
    path = export_model(run, Path(args.path), {"note": args.note} if args.note else None)
    print(json.dumps({"path": str(path), "bytes": path.stat().st_size, "run_id": run.id}))
    return 0


def cmd_published(args: argparse.Namespace) -> int:
    from resnet_viz.store import published

    names = list(published.PUBLISHED) if args.get == "all" else [args.get] if args.get else []
    for name in names:
        published.net(name)  # an unknown name is refused before anything is fetched
    got = [published.download(name) for name in names]
    print(json.dumps({"folder": str(published.published_dir()), "got": got, "nets": published.listing()}))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from resnet_viz.background.progress import StderrProgress
    from resnet_viz.data import download
    from resnet_viz.data.sources import default_data_dir

    root = Path(args.root) if args.root else default_data_dir()
    print(json.dumps(download.download_cifar10(root, progress=StderrProgress())))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from resnet_viz.cli import cam, faithfulness, responses, sharpness, trainpath, watch
    from resnet_viz.cli.experiments import EXPERIMENTS
    from resnet_viz.cli.experiments import run as run_experiment

    commands = {"summary": cmd_summary, "train": train.cmd_train, "export": cmd_export, "runs": cmd_runs,
                "speed": cmd_speed, "published": cmd_published, "download": cmd_download}
    commands.update({name: run_experiment for name in EXPERIMENTS})
    commands.update({"cam": cam.cmd_cam, "trainpath": trainpath.cmd_trainpath, sharpness.NAME: sharpness.run,
                     "watch": watch.cmd_watch, responses.COMMAND: responses.cmd,
                     faithfulness.COMMAND: faithfulness.run})
    try:
        return commands[args.command](args)
    except ValueError as e:  # config, data and run errors are ValueErrors with a message for a person
        print(f"python -m resnet_viz {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a file named on the command line that cannot be read or written
        where = f": {e.filename}" if e.filename else ""
        print(f"python -m resnet_viz {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130


def console(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -m resnet_viz`` and the ``resnet-viz`` command: :func:`main`, then exit with its code."""
    code = main(argv)
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # A torchrun rank whose work is done (process group destroyed, run folder closed) leaves
        # without the interpreter's teardown: there, C++ objects of the gloo backend that are
        # freed late can destroy a still-running std::thread and abort the process ("terminate
        # called without an active exception"), which makes torchrun report the whole run as
        # failed. Flush what Python would have flushed.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
