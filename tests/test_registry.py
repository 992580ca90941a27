"""The job and task registries are the process's own: a client clearing Streamlit's caches
cannot drop them, and making one marks the runs a restart stranded as interrupted."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from resnet_viz.background.jobs import JobRegistry
from resnet_viz.background.tasks import TaskRegistry
from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.fsutil import write_text_atomic
from resnet_viz.store.listing import list_runs
from resnet_viz.store.rundir import STATUS_FILE, RunDir


def tiny_config(steps: int = 5) -> RunConfig:
    return RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic"),
                     train=TrainConfig(steps=steps, epochs=None, batch_size=32, eval_every=0))


@pytest.fixture(autouse=True)
def fresh_registries() -> Iterator[None]:
    yield
    JobRegistry.reset_shared()
    TaskRegistry.reset_shared()


def test_clearing_the_cache_keeps_the_registries_and_their_work(tmp_path: Path, monkeypatch, threaded_tasks) -> None:
    import streamlit as st

    from resnet_viz.app import resources

    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path / "runs"))
    jobs, tasks = resources.job_registry(), resources.task_registry()
    job = jobs.submit(tiny_config(), name="before", data=make_synthetic(640, 160, seed=0))
    task = tasks.start("before", lambda progress, stop: 42)
    st.cache_resource.clear()  # what any client's clear-cache message does
    try:
        assert resources.job_registry() is jobs and resources.task_registry() is tasks
        assert resources.job_registry().get(job.run_id) is job
        assert resources.task_registry().get("before") is task
    finally:
        job.stop()
        job.wait(30)


def test_one_shared_registry_per_runs_folder(tmp_path: Path) -> None:
    a = JobRegistry.shared(tmp_path / "a")
    assert JobRegistry.shared(tmp_path / "a") is a
    assert JobRegistry.shared(tmp_path / "b") is not a
    a.shutdown()
    again = JobRegistry.shared(tmp_path / "a")  # a registry shut down is replaced, not handed out
    assert again is not a and again.runs_root == tmp_path / "a"
    assert TaskRegistry.shared() is TaskRegistry.shared()


def _rewrite_status(run: RunDir, **changes: object) -> None:
    status = json.loads((run.path / STATUS_FILE).read_text())
    write_text_atomic(run.path / STATUS_FILE, json.dumps({**status, **changes}))


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (None without /proc), as a status records it."""
    stat = Path(f"/proc/{pid}/stat")
    return int(stat.read_bytes().rsplit(b")", 1)[1].split()[19]) if stat.exists() else None


def test_a_new_registry_marks_stranded_runs_interrupted(tmp_path: Path) -> None:
    stranded = RunDir.create(tmp_path, tiny_config(), "stranded")  # queued by a process that restarted
    stranded.set_status("running", "training")
    _rewrite_status(stranded, process_token="an earlier process under our pid")
    elsewhere = RunDir.create(tmp_path, tiny_config(), "elsewhere")  # its host's to rewrite
    _rewrite_status(elsewhere, hostname="another-machine")
    held = RunDir.create(tmp_path, tiny_config(), "held")  # the CLI training in a terminal
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as cli:
        try:
            held.set_status("running", "training")
            _rewrite_status(held, pid=cli.pid, pid_start=start_time(cli.pid), process_token="the CLI's")
            JobRegistry.shared(tmp_path)
            on_disk = json.loads((stranded.path / STATUS_FILE).read_text())
            assert (on_disk["status"], on_disk["recorded_status"]) == ("interrupted", "running")
            assert json.loads((held.path / STATUS_FILE).read_text())["status"] == "running"
            assert json.loads((elsewhere.path / STATUS_FILE).read_text())["status"] == "queued"
            assert {i.name: i.status for i in list_runs(tmp_path)} == {
                "stranded": "interrupted", "elsewhere": "interrupted", "held": "running"}
        finally:
            cli.kill()
