"""Where a training run's records go: the caller's callback, the metrics file, TensorBoard.

A record is a plain dict with a ``kind``: "step" (loss, acc, lr, ips per optimizer step),
"probe" (per-block statistics), "eval" (test_loss/test_acc, and val_loss/val_acc with a
validation set) or "end". ``metrics.jsonl`` holds them in order, one per line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resnet_viz.store import watchfile
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.watch import to_tensorboard

Records = list[dict[str, Any]]


class RecordSink:
    """Fans records out to the caller's callback, the run's metrics file and TensorBoard."""

    def __init__(self, run: RunDir | None, on_records: Callable[[Records], None] | None) -> None:
        self.run, self.on_records = run, on_records
        # The metrics file's length: a checkpoint stores it so a resumed run can rewind to it.
        self.lines = run.metrics_line_count() if run is not None else 0

    def emit(self, records: Records) -> None:
        if self.run is not None:
            self.run.append_metrics(records)
            self.lines += len(records)
            tb = self.run.tensorboard()
            for r in records:
                if r["kind"] == "step" and r["step"] % 10 == 0:
                    tb.add_scalar("train/loss", r["loss"], r["step"])
                    tb.add_scalar("train/accuracy", r["acc"], r["step"])
                    tb.add_scalar("train/lr", r["lr"], r["step"])
                elif r["kind"] == "eval":
                    tb.add_scalar("test/loss", r["test_loss"], r["step"])
                    tb.add_scalar("test/accuracy", r["test_acc"], r["step"])
                    if "val_acc" in r:
                        tb.add_scalar("val/loss", r["val_loss"], r["step"])
                        tb.add_scalar("val/accuracy", r["val_acc"], r["step"])
        if self.on_records is not None:
            self.on_records(records)

    def watch(self, records: Records) -> None:
        """"Watch it learn" records (``training.watch``): to ``watch.jsonl`` and TensorBoard, not to
        the callback or the metrics file (a frame's maps would swell both)."""
        if self.run is None:
            return
        watchfile.append(self.run.path, records)
        tb = self.run.tensorboard()
        for r in records:
            to_tensorboard(tb, r)
