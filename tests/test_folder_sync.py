"""A run folder copied to a worker on another machine and back (``background.folder_sync``,
what the Ray backend sends): plain file work, no Ray needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from resnet_viz.background.folder_sync import FolderWatch, apply_change, pack, unpack
from resnet_viz.store import holder
from resnet_viz.store.rundir import METRICS_FILE, STATUS_FILE


def _sync(watch: FolderWatch, there: Path) -> list[tuple]:
    changes = watch.changes()
    for _kind, rel, offset, data in changes:
        apply_change(there, rel, offset, data)
    return changes


def test_a_folder_comes_back_whole_and_appends_go_by_their_new_bytes(tmp_path: Path) -> None:
    app, worker = tmp_path / "app" / "run-1", tmp_path / "worker" / "run-1"
    app.mkdir(parents=True)
    (app / "config.json").write_text("{}\n")
    (app / METRICS_FILE).write_text('{"step":1}\n')
    (app / "events.out.tfevents.1.host").write_bytes(b"old events")
    files = pack(app)
    assert set(files) == {"config.json", METRICS_FILE}  # the worker starts its own event file
    unpack(worker, files)
    watch = FolderWatch(worker)
    assert watch.changes() == []  # what came from the app is not sent back

    with open(worker / METRICS_FILE, "a") as f:
        f.write('{"step":2}\n')
    (worker / "checkpoint.safetensors").write_bytes(b"weights 1")
    (worker / "events.out.tfevents.2.worker").write_bytes(b"new")
    changes = _sync(watch, app)
    assert ("file", METRICS_FILE, len('{"step":1}\n'), b'{"step":2}\n') in changes
    assert ("file", "checkpoint.safetensors", None, b"weights 1") in changes
    os.utime(worker / "checkpoint.safetensors", ns=(1, 1))  # a rewrite of the same size
    (worker / "checkpoint.safetensors").write_bytes(b"weights 2")
    with open(worker / "events.out.tfevents.2.worker", "ab") as f:
        f.write(b" more")
    changes = _sync(watch, app)
    assert ("file", "events.out.tfevents.2.worker", 3, b" more") in changes
    assert (app / "checkpoint.safetensors").read_bytes() == b"weights 2"
    assert (app / METRICS_FILE).read_text() == '{"step":1}\n{"step":2}\n'
    assert (app / "events.out.tfevents.2.worker").read_bytes() == b"new more"
    assert (app / "events.out.tfevents.1.host").read_bytes() == b"old events"  # the app's own stays

    (worker / METRICS_FILE).write_text('{"step":1}\n')  # a resumed run rewinds its history
    assert _sync(watch, app) == [("file", METRICS_FILE, None, b'{"step":1}\n')]
    assert (app / METRICS_FILE).read_text() == '{"step":1}\n'
    assert _sync(watch, app) == []


def test_an_append_sent_twice_is_written_once(tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).write_text("a\n")
    apply_change(tmp_path, METRICS_FILE, 2, b"b\n")
    apply_change(tmp_path, METRICS_FILE, 2, b"b\n")
    assert (tmp_path / METRICS_FILE).read_text() == "a\nb\n"


def test_an_append_after_a_lost_one_is_refused_not_padded(tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).write_text("a\n")
    with pytest.raises(ValueError, match="bytes from 5 on"):
        apply_change(tmp_path, METRICS_FILE, 5, b"c\n")
    assert (tmp_path / METRICS_FILE).read_text() == "a\n"


@pytest.mark.parametrize("rel", ["../outside", "/etc/passwd", "a/../../b", ""])
def test_a_worker_cannot_write_outside_its_run_folder(tmp_path: Path, rel: str) -> None:
    with pytest.raises(ValueError, match="inside its run folder"):
        apply_change(tmp_path / "run", rel, None, b"x")
    assert not (tmp_path / "outside").exists()


def test_a_live_status_from_another_machine_reads_as_held_by_the_app(tmp_path: Path) -> None:
    """Written as it came, a status naming a pid on another host reads "interrupted" here."""
    remote = {"status": "running", "message": "training", "pid": 4242, "pid_start": 1,
              "process_token": "x", "hostname": "worker-node-7"}
    apply_change(tmp_path, STATUS_FILE, None, json.dumps(remote).encode())
    st = json.loads((tmp_path / STATUS_FILE).read_text())
    assert holder.gone(st) is None and st["worker"] == {"pid": 4242, "hostname": "worker-node-7"}
    done = {**remote, "status": "finished"}  # a final status names no holder that matters
    apply_change(tmp_path, STATUS_FILE, None, json.dumps(done).encode())
    assert json.loads((tmp_path / STATUS_FILE).read_text()) == done
