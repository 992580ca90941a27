"""Listing run folders: one row per run with its status and final figures.

A damaged run (corrupt config, garbage metrics, a missing or truncated checkpoint) is
listed with the reason and never breaks the listing of the runs next to it.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_viz.config import RunConfig
from resnet_viz.fsutil import as_number, iter_jsonl_reversed
from resnet_viz.store import holder
from resnet_viz.store.checkpoint import checkpoint_problem
from resnet_viz.store.rundir import CHECKPOINT_FILE, METRICS_FILE, RunDir
from resnet_viz.store.runids import ID_RE, STAMP_RE, RunError

_FINAL_STEPS = 50  # final train loss/acc average this many step records


def _mean(values: Sequence[Any]) -> float | None:
    nums = [v for v in map(as_number, values) if v is not None]
    return sum(nums) / len(nums) if nums else None  # NaN stays NaN: a diverged run shows it


@dataclass(frozen=True)
class RunInfo:
    """One row of a run listing. ``status`` is "unknown" when status.json is unreadable."""

    id: str
    path: Path
    status: str
    message: str = ""
    name: str = ""
    label: str = ""
    config: RunConfig | None = None
    steps: int | None = None
    final_train_loss: float | None = None
    final_train_acc: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    elapsed_s: float | None = None
    images_per_second: float | None = None
    damaged: str | None = None  # why the run is damaged, or None
    owner: str | None = None  # the visitor who started it in the app; None: the command line

    @property
    def learned_nothing(self) -> str | None:
        """For a finished run that learned nothing, what happened and what to change; else None."""
        if self.status != "finished" or self.config is None:
            return None
        return no_learning(self.test_accuracy, self.final_train_loss, self.config.model.num_classes)


def no_learning_so_far(records: Sequence[dict[str, Any]], num_classes: int) -> str | None:
    """``no_learning`` of a live run, once it has been evaluated: its last test accuracy and
    the mean loss of its last logged steps."""
    evals = [r for r in records if r.get("kind") == "eval" and as_number(r.get("test_acc")) is not None]
    if not evals:
        return None
    losses = [r.get("loss") for r in records if r.get("kind") == "step"][-_FINAL_STEPS:]
    return no_learning(as_number(evals[-1]["test_acc"]), _mean(losses), num_classes,
                       lead="So far this run has learned nothing")


def no_learning(test_acc: float | None, train_loss: float | None, num_classes: int, *,
                lead: str = "This run learned nothing") -> str | None:
    """Why a run learned nothing, in words with what to change, or None when it learned (or
    there is nothing to judge yet). Chance is 1/C accuracy and a loss of ln C: a net that
    stays there moved its weights without finding anything, most often at a wrong learning rate."""
    if num_classes < 2:
        return None
    chance_acc, chance_loss = 1.0 / num_classes, math.log(num_classes)
    # The accuracy decides when there is one: the loss is averaged over the last logged steps,
    # which in a short run reach back to its start (a 40-step run at twice chance, its loss
    # falling, averaged 2.29 against chance's 2.30 and was wrongly called a run that learned nothing).
    signs = []
    if test_acc is not None and test_acc <= chance_acc + 0.05:  # within 5 points of guessing
        signs.append(f"its test accuracy ({test_acc:.1%}) is chance for {num_classes} classes ({chance_acc:.0%})")
    if train_loss is not None and train_loss >= 0.9 * chance_loss and (test_acc is None or signs):
        signs.append(f"its training loss ({train_loss:.2f}) never fell from chance ({chance_loss:.2f})")
    if not signs:
        return None
    return (f"{lead}: " + " and ".join(signs) + ". Most often the learning rate is wrong "
            "(too high leaves a net stuck at chance, too low barely moves it): try 0.1 at batch 128, "
            "or give it more steps.")


@dataclass
class _Tail:
    steps: list[dict] = dataclasses.field(default_factory=list)  # newest first
    last_eval: dict | None = None
    end: dict | None = None
    elapsed: float | None = None
    bad: int = 0


def _scan_tail(path: Path) -> _Tail:
    """Final figures from the end of metrics.jsonl: listing 100 runs with long
    histories then reads kilobytes per run, not whole files."""
    tail = _Tail()
    if not path.is_file():
        return tail
    for rec in iter_jsonl_reversed(path):
        if rec is None:
            tail.bad += 1
            continue
        kind = rec.get("kind")
        if kind == "step" and len(tail.steps) < _FINAL_STEPS:
            tail.steps.append(rec)
        elif kind == "eval" and tail.last_eval is None:
            tail.last_eval = rec
        elif kind == "end" and tail.end is None:
            tail.end = rec
        if tail.elapsed is None:
            tail.elapsed = as_number(rec.get("elapsed"))
        if len(tail.steps) >= _FINAL_STEPS and (tail.last_eval or tail.end):
            break
    return tail


def run_info(path: Path) -> RunInfo:
    """The listing row of the run folder at ``path``."""
    run = RunDir(path)
    reasons: list[str] = []
    config = status = None
    try:
        config = run.config()
    except RunError as e:
        reasons.append(str(e).replace(f" of run {run.id}", ""))
    try:
        status = run.status()
    except RunError as e:
        reasons.append(str(e).replace(f" of run {run.id}", ""))
    ckpt = path / CHECKPOINT_FILE
    if ckpt.exists():
        problem = checkpoint_problem(ckpt)
        if problem:
            reasons.append(problem)
    elif status is not None and status["status"] == "finished":
        reasons.append(f"status is finished but {CHECKPOINT_FILE} is missing")
    tail = _scan_tail(path / METRICS_FILE)
    if tail.bad:
        reasons.append(f"{METRICS_FILE} has {tail.bad} unreadable line(s), skipped")
    end, last_eval = tail.end or {}, tail.last_eval or {}
    steps = end.get("steps", tail.steps[0].get("step") if tail.steps else None)
    return RunInfo(
        id=run.id,
        path=path,
        status=status["status"] if status else "unknown",
        message=str(status.get("message", "")) if status else "",
        name=config.name if config else "",
        label=config.model.label if config else "",
        config=config,
        steps=int(n_steps) if (n_steps := as_number(steps, finite=True)) is not None else None,
        final_train_loss=_mean([r.get("loss") for r in tail.steps]),
        final_train_acc=_mean([r.get("acc") for r in tail.steps]),
        test_accuracy=as_number(last_eval.get("test_acc", end.get("test_acc"))),
        test_loss=as_number(last_eval.get("test_loss", end.get("test_loss"))),
        elapsed_s=as_number(end.get("elapsed", tail.elapsed)),
        images_per_second=as_number(end.get("images_per_second")) or _mean([r.get("ips") for r in tail.steps]),
        damaged="; ".join(reasons) or None,
        owner=run.owner(),
    )


def _sort_key(info: RunInfo) -> tuple[float, str]:
    m = STAMP_RE.match(info.id)
    if m:
        stamp = _dt.datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=_dt.timezone.utc)
        return stamp.timestamp(), info.id
    try:
        return info.path.stat().st_mtime, info.id  # a hand-named folder: its age is the best guess
    except OSError:
        return 0.0, info.id


def list_runs(root: Path) -> list[RunInfo]:
    """Every run under ``root``, newest first. A damaged run is listed with the reason
    rather than raising; hidden entries, files and folders not named like a run id are
    not runs and are skipped. A missing ``root`` has no runs."""
    root = Path(root)
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise RunError(f"cannot read the runs folder {root}: {e.strerror or e}") from None
    infos = []
    for entry in entries:
        try:
            if not ID_RE.fullmatch(entry.name) or not entry.is_dir():
                continue
        except OSError:
            continue
        path = Path(entry.path)
        try:
            infos.append(run_info(path))
        except Exception as e:  # noqa: BLE001 - one unreadable run must never hide the others
            infos.append(RunInfo(id=entry.name, path=path, status="unknown", damaged=f"cannot be read: {e!r}"))
    return sorted(infos, key=_sort_key, reverse=True)


def metrics_csv(records: list[dict[str, Any]]) -> bytes:
    """Step and eval records as CSV (probe records are nested and left out)."""
    cols = ["kind", "step", "epoch", "loss", "acc", "lr", "ips", "test_loss", "test_acc", "elapsed"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(r for r in records if r.get("kind") in ("step", "eval"))
    return buf.getvalue().encode()


def mark_interrupted(runs_root: Path) -> list[str]:
    """Record "interrupted" for every run under ``runs_root`` whose live status no process of
    this machine holds any more (see ``store.holder``), so it offers Resume; returns their ids.
    Runs that another live process trains (the CLI in a terminal) are left alone, and so are
    the files of runs written on another host (they already read as interrupted): on a shared
    disk that host may still be writing them."""
    marked = []
    for info in list_runs(runs_root):
        try:
            run = RunDir.open(runs_root, info.id)
            st = run.status()
            if st["status"] == "interrupted" and "recorded_status" in st and holder.this_host(st):
                run.set_status("interrupted", st["message"], recorded_status=st["recorded_status"])
                marked.append(info.id)
        except RunError:
            continue  # a damaged run stays as it is; the listing says what is wrong with it
    return marked
