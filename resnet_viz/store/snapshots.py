"""Weight snapshots along a run: the path training took (Li et al. 2018, section 7).

``runs/<run-id>/snapshots/step-000390.safetensors`` holds the model's ``state_dict`` at step
390 in the checkpoint format (``checkpoint.py``, no optimizer: about 1 MB for ResNet-20),
written atomically. A run snapshots at step 0 (the initialization), every ``every`` steps and
at its last step; ``snapshot_steps`` bounds their number by thinning the schedule (every 2nd,
4th, ... multiple of ``every``), so a long run's folder stays small and the path stays evenly
sampled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_viz.store.checkpoint import CheckpointError, load_checkpoint_file, save_checkpoint_file

if TYPE_CHECKING:
    import torch

SNAPSHOT_DIR = "snapshots"
# 100 points draw a path well; 100 MB of ResNet-56 snapshots is what one run may keep.
MAX_SNAPSHOTS = 100
_NAME = re.compile(r"^step-(\d{6,9})\.safetensors$")


def snapshot_steps(total: int, every: int, cap: int = MAX_SNAPSHOTS) -> list[int]:
    """The steps a run of ``total`` steps snapshots at: 0, each multiple of the interval, and
    ``total``. The interval is ``every``, doubled until they number at most ``cap``; [] when
    ``every`` is 0 (snapshots off)."""
    if every < 0 or total < 0:
        raise ValueError(f"snapshot interval and steps must be >= 0, got every={every}, total={total}")
    if cap < 3:
        raise ValueError(f"keep at least 3 snapshots (start, one between, end), got a cap of {cap}")
    if every == 0:
        return []
    while total // every + 1 + (total % every > 0) > cap:  # 0, the multiples, an end off the grid
        every *= 2
    return sorted({0, *range(every, total + 1, every), total})


def snapshot_path(run_path: Path, step: int) -> Path:
    return Path(run_path) / SNAPSHOT_DIR / f"step-{step:06d}.safetensors"


def list_snapshots(run_path: Path) -> list[tuple[int, Path]]:
    """(step, file) of every snapshot of the run, by step; [] for a run without any."""
    folder = Path(run_path) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_snapshot(run_path: Path, step: int, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write the snapshot of ``step`` atomically (a reader never sees half a file)."""
    path = snapshot_path(run_path, step)
    path.parent.mkdir(exist_ok=True)
    save_checkpoint_file(path, state, None, {**meta, "step": step})
    return path


def load_snapshot(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict on the CPU, meta) of one snapshot file; a damaged one is a ValueError naming it."""
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointError as e:
        raise ValueError(f"snapshot {Path(path).name} is damaged: {e}") from None
    return ckpt.model_state, ckpt.meta


def remove_snapshots(run_path: Path, steps: set[int]) -> None:
    """Delete the snapshots of ``steps`` (those that exist)."""
    for step, path in list_snapshots(run_path):
        if step in steps:
            path.unlink(missing_ok=True)


def thin_extras(run_path: Path, schedule: list[int], keep: int, cap: int = MAX_SNAPSHOTS) -> None:
    """Keep at most ``cap`` snapshots: the schedule's (which fit by construction) stay, and the
    oldest off-schedule ones (where a run was stopped, then resumed) go first, ``keep`` never."""
    found = list_snapshots(run_path)
    on = set(schedule)
    extras = [s for s, _ in found if s not in on and s != keep]
    remove_snapshots(run_path, set(extras[: max(0, len(found) - cap)]))
