"""``python -m resnet_viz train``: its arguments, the run config they make, and the run itself.

A recipe (``--recipe``) gives the defaults and every flag given on the command line wins over
it; under torchrun every process runs this, and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_viz.background.progress import ProgressLine, bar, clock
from resnet_viz.config import (
    BLOCKS,
    RECIPES,
    SCHEDULES,
    SHORTCUTS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

if TYPE_CHECKING:  # torch is imported only when a run starts
    from resnet_viz.training.distributed import DistContext

_T = TrainConfig()  # CLI defaults are the library's (the brief recipe)
# Flags a recipe sets: their parser default is None so that only flags given win over it.
_RECIPE_FLAGS = {"batch_size": "batch_size", "lr": "lr", "momentum": "momentum", "nesterov": "nesterov",
                 "weight_decay": "weight_decay", "schedule": "schedule", "label_smoothing": "label_smoothing",
                 "tta": "eval_tta"}


def model_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--depth", type=int, default=20, help="6n+2 for basic blocks, 9n+2 for bottleneck")
    sp.add_argument("--shortcut", default="A", choices=SHORTCUTS)
    sp.add_argument("--block", default="basic", choices=BLOCKS)
    sp.add_argument("--width", type=int, default=1, help="multiplies the 16/32/64 filters")


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model and save the run folder")
    model_args(t)
    t.add_argument("--zero-init-residual", action="store_true")
    t.add_argument("--data", default="synthetic", help="cifar10, synthetic, or a folder of class folders")
    t.add_argument("--data-dir", default=None, help="where cifar10 is downloaded/cached (env RESNET_VIZ_DATA)")
    t.add_argument("--no-download", action="store_true", help="never download CIFAR-10")
    t.add_argument("--recipe", default="brief", choices=tuple(RECIPES),
                   help="brief: the defaults (14 epochs one-cycle); quick: 5 epochs of it (the app's default); "
                        "paper: He et al.'s 64k iterations, LR 0.1 /10 at 32k and 48k, weight decay 1e-4. "
                        "Flags given here override it")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, default=None,
                        help=f"default {_T.epochs:g} (brief); the paper recipe runs 64,000 steps")
    budget.add_argument("--steps", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None,
                   help=f"global batch, split over torchrun's processes (default {_T.batch_size})")
    t.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {_T.lr})")
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--schedule", default=None, choices=SCHEDULES)
    t.add_argument("--label-smoothing", type=float, default=None)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluate with flip test-time augmentation (brief: on, paper: off)")
    t.add_argument("--val-split", type=int, default=0, metavar="N",
                   help="hold out N training images as a validation set (5000: the paper's 45k/5k)")
    t.add_argument("--sync-bn", action="store_true", help="under torchrun: batch norm over the global batch")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (CPU: needs a C++ compiler)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-every", type=int, default=0, help="steps between test evaluations (0: each epoch)")
    t.add_argument("--probe-every", type=int, default=10)
    t.add_argument("--snapshot-every", type=int, default=None,
                   help="steps between weight snapshots for the training path (default: each epoch; 0: none)")
    t.add_argument("--watch-every", type=int, default=None,
                   help="steps between 'watch it learn' frames (default: ~64 a run; 0: off)")
    t.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    t.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--out", default=None, help="runs folder (default ./runs or env RESNET_VIZ_RUNS)")
    t.add_argument("--name", default=None)
    t.add_argument("--resume", default=None, metavar="RUN_ID", help="continue a run from its checkpoint")



def _data_config(args: argparse.Namespace) -> DataConfig:
    if args.data in ("synthetic", "cifar10"):
        return DataConfig(source=args.data, path=args.data_dir, download=not args.no_download, seed=args.seed,
                          validation=args.val_split)
    path = Path(args.data).expanduser()
    if not path.is_dir():
        raise ValueError(f"--data {args.data}: not cifar10, synthetic, or an existing folder")
    return DataConfig(source="folder", path=str(path.resolve()), seed=args.seed, validation=args.val_split)


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe's TrainConfig with every flag the user gave on top of it."""
    given = {field: getattr(args, flag) for flag, field in _RECIPE_FLAGS.items() if getattr(args, flag) is not None}
    if args.steps is not None:
        given["steps"] = args.steps
    elif args.epochs is not None:
        given["epochs"] = args.epochs
    momentum = given.get("momentum", RECIPES[args.recipe].get("momentum", _T.momentum))
    if momentum == 0 and args.nesterov is None:
        given["nesterov"] = False  # plain SGD asked for: Nesterov would need momentum
    return TrainConfig.recipe(
        args.recipe, **given, augment=not args.no_augment, seed=args.seed, eval_every=args.eval_every,
        probe_every=args.probe_every, watch_every=args.watch_every, device=args.device, precision=args.precision,
        threads=args.threads, sync_bn=args.sync_bn, compile=args.compile, snapshot_every=args.snapshot_every,
    )


def run_config(args: argparse.Namespace, num_classes: int) -> RunConfig:
    return RunConfig(
        model=ModelConfig(depth=args.depth, shortcut=args.shortcut, block=args.block, width=args.width,
                          num_classes=num_classes, zero_init_residual=args.zero_init_residual),
        data=_data_config(args), train=_train_config(args), name=args.name or "",
    )


class _Progress:
    """Training progress on stderr: bar, loss, accuracy, images/s and ETA; evaluations on lines of their own."""

    def __init__(self, total: int, batch_size: int) -> None:
        self.total, self.batch_size = total, batch_size
        self.line = ProgressLine()

    def __call__(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            if r["kind"] == "eval":
                self.line.print(f"step {r['step']}: test accuracy {r['test_acc']:.2%}, test loss {r['test_loss']:.3f}",
                                True)
        steps = [r for r in records if r["kind"] == "step"]
        if not steps or not self.line.due(steps[-1]["step"] == self.total):
            return
        r = steps[-1]
        left = (self.total - r["step"]) * self.batch_size / r["ips"] if r["ips"] > 0 else 0
        self.line.print(f"{bar(r['step'] / self.total)} step {r['step']}/{self.total} loss {r['loss']:.3f} "
                        f"acc {r['acc']:.2f} {r['ips']:,.0f} img/s ETA {clock(left)}")


def _estimate(config: RunConfig, data: Any) -> str:
    """How long the run takes here, from this machine's measured speed (measured now, once, if
    it never was: a few seconds)."""
    import torch

    from resnet_viz.training import speed

    tc = config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)  # as fit() will: the figures depend on it
    found = speed.cached(tc.device, tc.precision, tc.threads)
    if found is None:
        print("measuring this machine's speed once (a few seconds; kept for next time)...", file=sys.stderr)
        found = speed.measure(tc.device, tc.precision)
        speed.save(found)
    return f"estimated time: {speed.about(speed.run_seconds(config, data, found))} on this machine ({found.describe()})"


def cmd_train(args: argparse.Namespace) -> int:
    from resnet_viz.training.distributed import session

    # torchrun's processes join one group; a lone process joins nothing. Every rank prints its
    # own errors (a data folder missing on one machine must say so); only rank 0 prints the rest.
    with session() as ctx:
        return _train(args, ctx)


def _train(args: argparse.Namespace, ctx: DistContext) -> int:
    from resnet_viz.data.sources import load_data
    from resnet_viz.store.listing import run_info
    from resnet_viz.store.rundir import RunDir, default_runs_dir
    from resnet_viz.training.distributed import check_batch_split
    from resnet_viz.training.loop import Control, fit

    root = Path(args.out) if args.out else default_runs_dir()
    run = None
    if args.resume:
        # Rank 0 reads the run; the others get its config, so no machine but rank 0's needs the folder.
        run = RunDir.open(root, args.resume) if ctx.is_main else None
        sent = ctx.broadcast_object(run.config().to_dict() if run is not None else None)
        if sent is None:  # rank 0 always sends one; the check is for the type checker's None
            raise ValueError(f"no config for run {args.resume!r} came from rank 0")
        config = RunConfig.from_dict(sent)
    else:
        config = run_config(args, 10)  # validate every argument before the (slow) data load
    check_batch_split(config.train.batch_size, ctx.world_size)
    # The CLI runs as the server's operator: --data (or a resumed run's folder) may be anywhere,
    # not only under the app's allowed roots; the scan's limits still apply.
    data = load_data(config.data if args.resume else _data_config(args), trusted=True)
    if not args.resume:
        config = run_config(args, len(data.classes))
        run = RunDir.create(root, config, args.name) if ctx.is_main else None
    control = Control()

    def on_signal(signum: int, frame: Any) -> None:
        if control.stop.is_set():  # a second Ctrl-C: give up on a clean stop
            raise KeyboardInterrupt
        control.request_stop("interrupted")
        if ctx.is_main:  # several processes agree on a stop when they next log, every log_every steps
            when = f"within {config.train.log_every} steps" if ctx.is_distributed else "after this batch"
            sys.stderr.write(f"\nstopping {when} (Ctrl-C again to abort)...\n")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    total = config.train.total_steps(len(data.train_y))
    if run is not None:
        procs = f" in {ctx.world_size} processes" if ctx.is_distributed else ""
        print(f"training {config.model.label} on {data.name} ({len(data.train_y):,} images) for {total} steps"
              f"{procs} -> {run.path}", file=sys.stderr)
        if not ctx.is_distributed and not args.resume:  # one process's speed says little of several
            print(_estimate(config, data), file=sys.stderr)
    result = fit(config, data=data, run=run, control=control, resume=bool(args.resume), dist=ctx,
                 on_records=_Progress(total, config.train.batch_size) if run is not None else None)
    if run is not None:
        if (why := run_info(run.path).learned_nothing) is not None:
            print(f"warning: {why}", file=sys.stderr)
        print(json.dumps({"run_dir": str(run.path), "run_id": run.id, "status": result.status,
                          "message": result.message, "steps": result.steps, "test_accuracy": result.test_acc,
                          "test_loss": result.test_loss, "images_per_second": round(result.images_per_second, 1),
                          "elapsed_s": round(result.elapsed, 1), "data": data.name, "processes": ctx.world_size}))
    return 0 if result.status in ("finished", "stopped", "interrupted") else 1
