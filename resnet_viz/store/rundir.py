"""Run folders: the files on disk are the whole truth about a run.

``runs/<run-id>/`` holds ``config.json`` (``RunConfig.to_dict()``), ``metrics.jsonl``
(append-only, one JSON object per line), ``checkpoint.safetensors`` (written
atomically), ``status.json`` and TensorBoard event files (written into the run folder
itself so ``tensorboard --logdir runs`` shows every run). Nothing is cached in memory
across calls, so the app, the CLI and a trainer in another process always agree.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_viz.config import RunConfig
from resnet_viz.fsutil import (
    count_lines,
    read_jsonl,
    truncate_lines,
    work_dir,
    write_text_atomic,
)
from resnet_viz.store import holder
from resnet_viz.store.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint_file,
    save_checkpoint_file,
)
from resnet_viz.store.runids import RunError, make_run_id, validate_run_id

if TYPE_CHECKING:  # torch is only needed once a checkpoint or TensorBoard is touched
    import torch
    from torch.utils.tensorboard import SummaryWriter

STATUSES = ("queued", "running", "paused", "finished", "stopped", "diverged", "failed", "interrupted")
# Statuses only a live process may hold; if that process is gone the run was interrupted.
_LIVE = ("queued", "running", "paused")
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.safetensors"
STATUS_FILE = "status.json"
OWNER_FILE = "owner.json"  # who started the run in the app (``access.Visitor.id``); none: the CLI
def default_runs_dir() -> Path:
    """``$RESNET_VIZ_RUNS`` if set, else ``runs/`` at the repository root (or, for an
    installed package, in the current working directory)."""
    env = os.environ.get("RESNET_VIZ_RUNS")
    if env:
        return Path(env).expanduser()
    return work_dir() / "runs"


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RunError(f"{what} is missing") from None
    except OSError as e:
        raise RunError(f"{what} cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        raise RunError(f"{what} is damaged: not valid JSON ({e})") from None


class RunDir:
    """One run folder. Cheap to construct; holds open files only while writing."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.id = validate_run_id(self.path.name)
        # Per instance, not per module: the app serves many users from one process.
        self._lock = threading.Lock()
        self._metrics_fh: Any = None
        self._writer: Any = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def create(cls, root: Path, config: RunConfig, name: str | None = None, owner: str | None = None) -> RunDir:
        """Make a new run folder with ``config.json``, its ``owner`` (a visitor id, if any)
        and status "queued".

        ``name`` (else ``config.name``, else the model label) names the id; a given
        ``name`` is also stored as the config's name so listings show it.
        """
        if not isinstance(config, RunConfig):
            raise RunError(f"config must be a RunConfig, got {type(config).__name__}")
        if name:
            config = dataclasses.replace(config, name=name)
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        for _ in range(1000):
            run_id = make_run_id(config.name or config.model.label, root=root)
            try:
                (root / run_id).mkdir()  # exclusive: the id is ours only if we created it
            except FileExistsError:
                continue
            break
        else:
            raise RunError(f"could not find a free run id in {root}; remove old runs or retry")
        run = cls(root / run_id)
        if owner is not None:  # before the config: a listing never sees an owned run without its owner
            write_text_atomic(run.path / OWNER_FILE, json.dumps({"owner": str(owner)}) + "\n")
        write_text_atomic(run.path / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
        run.set_status("queued")
        return run

    def owner(self) -> str | None:
        """The visitor who started the run, or None (the command line, or a run from before
        runs had owners). An unreadable owner file reads as an owner no visitor is: such a run
        is nobody's to control but an admin's."""
        try:
            owner = json.loads((self.path / OWNER_FILE).read_text(encoding="utf-8")).get("owner")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError):
            return "unreadable"
        return str(owner) if owner else "unreadable"

    @classmethod
    def open(cls, root: Path, run_id: str) -> RunDir:
        """Open an existing run. Only checks that the folder exists: a damaged run can
        still be opened (to show or delete it); reading a damaged file raises RunError."""
        path = Path(root) / validate_run_id(run_id)
        if not path.is_dir():
            raise RunError(f"there is no run {run_id!r} in {root}")
        return cls(path)

    def config(self) -> RunConfig:
        data = _read_json(self.path / CONFIG_FILE, f"{CONFIG_FILE} of run {self.id}")
        try:
            if not isinstance(data, dict):
                raise ValueError("it is not a JSON object")
            return RunConfig.from_dict(data)
        except (ValueError, TypeError, AttributeError) as e:
            # TypeError/AttributeError: a field of the wrong JSON type (e.g. "depth": "x").
            raise RunError(f"{CONFIG_FILE} of run {self.id} is damaged: {e}") from None

    def append_metrics(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records as JSON lines and flush, so readers see them right away."""
        lines = []
        for rec in records:
            if not isinstance(rec, Mapping):
                raise RunError(f"a metrics record must be a dict, got {type(rec).__name__}")
            try:
                lines.append(json.dumps(dict(rec), separators=(",", ":")) + "\n")
            except (TypeError, ValueError) as e:
                raise RunError(f"metrics record is not JSON-serialisable ({e}); convert tensors with .item()") from None
        if not lines:
            return
        blob = "".join(lines).encode("utf-8")  # one write per batch: fewer torn lines on a crash
        with self._lock:
            if self._metrics_fh is None or self._metrics_fh.closed:
                self._metrics_fh = self._open_metrics()
            self._metrics_fh.write(blob)
            self._metrics_fh.flush()

    def _open_metrics(self) -> Any:
        # A writer that died mid-line left a fragment with no newline; cut it off, or
        # our first record would be glued onto it and both lost. Only one process
        # appends to a run, so a fragment found at open time is not still growing.
        truncate_lines(self.path / METRICS_FILE)
        return open(self.path / METRICS_FILE, "ab")

    def metrics_line_count(self) -> int:
        """Complete lines in metrics.jsonl: the position to store in a checkpoint's meta."""
        return count_lines(self.path / METRICS_FILE)

    def truncate_metrics(self, n_lines: int) -> None:
        """Keep the first ``n_lines`` lines: a resumed run rewinds its history to the
        checkpoint, or the records written after it would appear twice."""
        if n_lines < 0:
            raise RunError(f"cannot keep {n_lines} metrics lines; give a count >= 0")
        with self._lock:
            if self._metrics_fh is not None:
                self._metrics_fh.close()
                self._metrics_fh = None
            truncate_lines(self.path / METRICS_FILE, n_lines)

    def read_metrics(self) -> list[dict]:
        return self.read_metrics_report()[0]

    def read_metrics_report(self) -> tuple[list[dict], int]:
        """All readable records and the number of bad lines. A bad *last* line is a
        write cut short by a crash (or in flight) and is dropped without being counted."""
        try:
            return read_jsonl(self.path / METRICS_FILE)
        except OSError as e:
            raise RunError(f"{METRICS_FILE} of run {self.id} cannot be read ({e.strerror or e})") from None

    def save_checkpoint(
        self,
        model_state: Mapping[str, torch.Tensor],
        optimizer_state: Mapping[str, Any] | None,
        meta: Mapping[str, Any],
    ) -> None:
        """Atomically replace the checkpoint (see ``resnet_viz.store.checkpoint`` for the layout)."""
        try:
            save_checkpoint_file(self.path / CHECKPOINT_FILE, model_state, optimizer_state, meta)
        except CheckpointError as e:
            raise RunError(f"cannot save the checkpoint of run {self.id}: {e}") from None

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> Checkpoint:
        try:
            return load_checkpoint_file(self.path / CHECKPOINT_FILE, map_location)
        except CheckpointError as e:
            raise RunError(f"checkpoint of run {self.id} is damaged: {e}") from None

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT_FILE).is_file()

    def set_status(self, status: str, message: str = "", **extra: Any) -> None:
        """Atomically record the status, with the time and who wrote it (``holder.identity``)."""
        if status not in STATUSES:
            raise RunError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
        now = time.time()
        payload = {
            "status": status,
            "message": str(message),
            "time": _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(timespec="seconds"),
            "unix_time": now,
            **holder.identity(),
        }
        clash = sorted(payload.keys() & extra.keys())
        if clash:
            raise RunError(f"status extras may not override {', '.join(clash)}")
        try:
            text = json.dumps({**payload, **extra}, indent=2)
        except (TypeError, ValueError) as e:
            raise RunError(f"status extras must be JSON-serialisable ({e})") from None
        write_text_atomic(self.path / STATUS_FILE, text + "\n")

    def status(self) -> dict:
        """The recorded status. A queued/running/paused run whose writing process no longer
        runs (see ``holder_gone``) reads as "interrupted": it crashed, was killed or restarted."""
        st = _read_json(self.path / STATUS_FILE, f"{STATUS_FILE} of run {self.id}")
        if not isinstance(st, dict) or st.get("status") not in STATUSES:
            raise RunError(f"{STATUS_FILE} of run {self.id} is damaged: no valid 'status' field")
        gone = holder.gone(st) if st["status"] in _LIVE else None
        if gone is not None:
            st = {
                **st,
                "status": "interrupted",
                "message": gone,
                "recorded_status": st["status"],
                "recorded_message": st.get("message", ""),
            }
        return st

    def tensorboard(self) -> SummaryWriter:
        """A SummaryWriter logging into the run folder, created on first use."""
        with self._lock:
            if self._writer is None:
                # Imported lazily: it pulls in tensorboard, which listings never need.
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.path))
            return self._writer

    def close(self) -> None:
        with self._lock:
            if self._metrics_fh is not None:
                self._metrics_fh.close()
                self._metrics_fh = None
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
