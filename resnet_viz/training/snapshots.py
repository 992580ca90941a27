"""The trainer's weight snapshots (``store.snapshots``): what ``fit`` calls, and when.

A snapshot is the model's ``state_dict`` copied to the CPU and written to the run folder:
about 1 MB and a few milliseconds for ResNet-20, once per epoch by default, so the trainer's
speed does not change (README: the throughput benchmark with snapshots on and off). Only the
process that writes the run (rank 0 under torchrun) has a writer; the others snapshot nothing.
"""

from __future__ import annotations

from torch import nn

from resnet_viz.nets.cifar import param_norms_finite
from resnet_viz.store.rundir import RunDir
from resnet_viz.store.snapshots import (
    MAX_SNAPSHOTS,
    list_snapshots,
    remove_snapshots,
    save_snapshot,
    snapshot_steps,
    thin_extras,
)
from resnet_viz.training.state import Setup


class Snapshots:
    """Snapshots of one ``fit``: at step 0, on ``snapshot_steps``' schedule, and where it ends."""

    def __init__(self, writer: RunDir | None, total: int, every: int | None, per_epoch: int, start_step: int,
                 cap: int = MAX_SNAPSHOTS) -> None:
        self.writer, self.per_epoch, self.cap = writer, per_epoch, cap
        # None: once per epoch, as Li et al. saved theirs.
        interval = per_epoch if every is None else every
        self.schedule = snapshot_steps(total, interval, cap) if writer is not None else []
        self.due = set(self.schedule)
        self.last: int | None = None
        if self.schedule and writer is not None and start_step > 0:
            # A resumed run continues from its checkpoint: snapshots written after it (by a
            # process that died before its next checkpoint) belong to a path not taken now.
            remove_snapshots(writer.path, {s for s, _ in list_snapshots(writer.path) if s > start_step})

    @classmethod
    def begin(cls, s: Setup) -> Snapshots:
        """The snapshots of the ``fit`` that ``s`` sets up, the initialization written for a fresh
        run (a resumed one has it already)."""
        snaps = cls(s.writer, s.total, s.tc.snapshot_every, s.per_epoch, s.start_step)
        if s.start_step == 0:
            snaps.at(s.model, 0)
        return snaps

    def at(self, model: nn.Module, step: int, end: bool = False) -> None:
        """Write the snapshot of ``step`` if the schedule has it (or ``end``: where a stopped run
        stopped), unless the weights are not finite (a diverging run's are no point on a path)."""
        if self.writer is None or not self.schedule or step == self.last:
            return
        if not (end or step in self.due) or not param_norms_finite(model):
            return
        save_snapshot(self.writer.path, step, model.state_dict(), {"epoch": step / max(1, self.per_epoch)})
        self.last = step
        if end and step not in self.due:
            thin_extras(self.writer.path, self.schedule, keep=step, cap=self.cap)
