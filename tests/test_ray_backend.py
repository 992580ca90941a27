"""The worker pool on Ray (``background.cluster``): a local Ray instance (2 CPUs, no dashboard)
runs training runs and an experiment task as the app's local workers do, with the same results.
Skipped where Ray is not installed (it is the optional ``cluster`` extra)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import wait_until

from resnet_viz.background import workers
from resnet_viz.background.jobs import JobRegistry
from resnet_viz.background.tasks import Call, TaskRegistry
from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.experiments import signal as signal_exp
from resnet_viz.store.rundir import RunDir

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray instance starts in seconds, and each task in a fresh process


def config(steps: int, eval_every: int = 0, threads: int = 1, batch_size: int = 32) -> RunConfig:
    train = TrainConfig(steps=steps, epochs=None, batch_size=batch_size, lr=0.05, probe_every=5, log_every=5,
                        eval_every=eval_every, seed=3, threads=threads)
    return RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic", synthetic_train=640,
                                                                               synthetic_test=160), train=train)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # This module's task functions go by value: Ray's workers import the library, not the tests.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def on_ray(local_ray: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's setting naming a cluster: this process is already connected to the local one."""
    monkeypatch.setenv(workers.RAY_ADDRESS_ENV, "auto")


def losses(records) -> list[float]:
    return [r["loss"] for r in records if r["kind"] == "step"]


def _train(root: Path, cfg: RunConfig) -> tuple[RunDir, list[dict]]:
    reg = JobRegistry(root, isolate=True)
    try:
        job = reg.submit(cfg, name="same")
        assert job.wait(180), "the run did not end"
        snap = job.snapshot()
        assert snap.state == "finished", snap.message
        return RunDir.open(root, job.run_id), list(snap.records)
    finally:
        reg.shutdown()


def _files(run: RunDir) -> set[str]:
    return {p.name.split(".out.tfevents")[0] for p in run.path.iterdir()}  # event files: by kind


def test_a_run_on_ray_trains_bit_for_bit_like_a_local_one(tmp_path: Path, local_ray: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(steps=20, eval_every=10)
    here, here_records = _train(tmp_path / "local", cfg)
    monkeypatch.setenv(workers.RAY_ADDRESS_ENV, "auto")
    there, there_records = _train(tmp_path / "ray", cfg)

    assert losses(there_records) and losses(there_records) == losses(here_records)  # the records that arrived
    assert [r["loss"] for r in there.read_metrics() if r["kind"] == "step"] == losses(here_records)  # and the file
    assert _files(there) == _files(here)  # config, owner, status, metrics, checkpoint, events
    assert there.status()["status"] == "finished"
    a, b = here.load_checkpoint(), there.load_checkpoint()
    assert a.meta["step"] == b.meta["step"] == 20
    assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)


def test_stop_and_pause_reach_a_run_on_ray(tmp_path: Path, on_ray: None) -> None:
    reg = JobRegistry(tmp_path, isolate=True)
    try:
        job = reg.submit(config(steps=100_000, batch_size=64))
        wait_until(lambda: job.snapshot().step >= 10, "the run on Ray to train", timeout=120)
        job.pause()
        time.sleep(1.0)  # the pause arrives, and the records in flight with it
        paused_at = job.snapshot().step
        time.sleep(1.0)
        assert job.snapshot().step == paused_at, "the run trained on while paused"
        job.resume_training()
        wait_until(lambda: job.snapshot().step > paused_at + 5, "the run to train again", timeout=60)
        asked = time.monotonic()
        job.stop()
        assert job.wait(30)
        took = time.monotonic() - asked
        snap = job.snapshot()
        assert snap.state == "stopped", snap.message
        # Within about a batch: the flag is read every 0.1 s, and the records come every 0.2 s.
        assert took < 3.0, f"the stop took {took:.1f} s to end the run"
        run = RunDir.open(tmp_path, job.run_id)
        assert run.status()["status"] == "stopped" and len(run.read_metrics()) == len(snap.records)
    finally:
        reg.shutdown()


def test_a_run_whose_ray_worker_dies_is_interrupted_and_resumes(tmp_path: Path, on_ray: None) -> None:
    reg = JobRegistry(tmp_path, isolate=True)
    try:
        job = reg.submit(config(steps=100_000, eval_every=10), name="killed")
        run = RunDir.open(tmp_path, job.run_id)
        wait_until(lambda: run.has_checkpoint() and job.snapshot().step > 12, "a synced checkpoint", timeout=120)
        status = json.loads((run.path / "status.json").read_text())
        assert status["status"] == "running" and status["pid"] == os.getpid()  # the app holds it for the worker
        assert run.status()["status"] == "running"
        os.kill(status["worker"]["pid"], signal.SIGKILL)  # what a dying node does to it
        assert job.wait(60)
        snap = job.snapshot()
        assert snap.state == "interrupted" and "Ray" in snap.message and "Resume" in snap.message, snap.message
        step = int(run.load_checkpoint().meta["step"])
        again = reg.resume(job.run_id)
        wait_until(lambda: again.snapshot().step > step + 5, "the resumed run to train", timeout=120)
        again.stop()
        assert again.wait(30) and again.snapshot().state == "stopped"
        steps = [r["step"] for r in run.read_metrics() if r["kind"] == "step"]
        assert steps == sorted(set(steps)), "the resumed history repeats or skips steps"
    finally:
        reg.shutdown()


def test_an_experiment_on_ray_gives_the_local_result(on_ray: None, monkeypatch: pytest.MonkeyPatch) -> None:
    call = Call(signal_exp.signal_sweep, depths=(8,), batch=8)
    there = TaskRegistry(isolate=True).start("signal on ray", call, threads=1)
    assert there.wait(120)
    snap = there.snapshot()
    assert snap.state == "done", snap.error
    assert there._worker.__class__.__name__ == "RayWorker"
    monkeypatch.delenv(workers.RAY_ADDRESS_ENV)
    here = TaskRegistry(isolate=True).start("signal here", call, threads=1)
    assert here.wait(120) and here.snapshot().state == "done"
    assert json.dumps(snap.result, sort_keys=True) == json.dumps(here.snapshot().result, sort_keys=True)


def slow_steps(*, progress, stop) -> list[float]:
    """Steps of 0.05 s until stopped: when each began (``time.monotonic``, one clock on this machine)."""
    began: list[float] = []
    while len(began) < 10_000 and not stop.is_set():
        began.append(time.monotonic())
        progress(len(began) / 10_000, f"step {len(began)}")
        time.sleep(0.05)
    return began


def test_a_task_on_ray_reports_progress_and_stops(on_ray: None) -> None:
    task = TaskRegistry(isolate=True).start("slow", Call(slow_steps), threads=1)
    wait_until(lambda: task.snapshot().fraction > 0 or task.snapshot().done, "progress from Ray", timeout=60)
    assert not task.snapshot().done, task.snapshot().error
    task.stop()
    assert task.wait(10)
    snap = task.snapshot()
    assert snap.state == "done" and 0 < len(snap.result) < 10_000, snap  # it saw the stop and returned


def _started_slow_steps():
    task = TaskRegistry(isolate=True).start("timed", Call(slow_steps), threads=1)
    wait_until(lambda: task.snapshot().fraction > 0 or task.snapshot().done, "progress from Ray", timeout=60)
    assert not task.snapshot().done, task.snapshot().error
    return task


def test_stop_reaches_a_ray_task_within_one_step(on_ray: None) -> None:
    """The worker waits on its channel for a change of the flags (a long poll), so Stop is there
    in the time of one actor call: at most one more 0.05 s step begins after it (the one that
    may have begun as it was sent). Read every 0.1 s, as before, two or more often began."""
    for _ in range(5):  # five stops, each in a fresh task, would show a poll's delay
        task = _started_slow_steps()
        time.sleep(0.3)
        sent = time.monotonic()
        task.stop()
        assert task.wait(10)
        began = task.snapshot().result
        assert len([t for t in began if t > sent]) <= 1, [round(t - sent, 3) for t in began[-4:]]


def test_a_cluster_that_does_not_answer_fails_a_task_in_bounded_time(tmp_path: Path) -> None:
    """``ray.init`` retries an address that does not answer for minutes (and a cluster that
    refuses the token likewise): a task gives up after RESNET_VIZ_RAY_CONNECT_S with a message
    naming the setting, and the next one does too, instead of waiting on Ray. In a process of its
    own: the hanging ``ray.init`` goes on in its thread, and would spoil this one's Ray."""
    script = (
        "import os, sys\n"
        "from resnet_viz.background.tasks import Call, TaskRegistry\n"
        "from resnet_viz.experiments import signal as signal_exp\n"
        "for n in range(2):\n"
        "    call = Call(signal_exp.signal_sweep, depths=(8,), batch=n + 8)\n"
        "    task = TaskRegistry(isolate=True).start(f'lost {n}', call, threads=1)\n"
        "    done = task.wait(60)\n"
        "    print(done, task.snapshot().state, task.snapshot().error, flush=True)\n"
        "os._exit(0)  # not the interpreter's exit: Ray's threads would wait for the cluster\n")
    env = {**os.environ, workers.RAY_ADDRESS_ENV: "127.0.0.1:9", "RESNET_VIZ_RAY_CONNECT_S": "3",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240,
                         cwd=tmp_path)
    lines = [line for line in out.stdout.splitlines() if line.startswith(("True", "False"))]
    assert len(lines) == 2, out.stdout + out.stderr[-3000:]
    for line in lines:
        assert line.startswith("True failed") and "did not answer within 3 s" in line, line
        assert "RESNET_VIZ_RAY_ADDRESS" in line and "token" in line, line


def test_a_task_that_fills_this_machines_folders_stays_here(on_ray: None) -> None:
    """The CIFAR-10 download fills the app's data folder: on a Ray worker it would fill that one's."""
    from resnet_viz.background.workers import WorkerProcess

    task = TaskRegistry(isolate=True, here=True).start("here", Call(slow_steps), threads=1)
    try:
        assert isinstance(task._worker, WorkerProcess)
    finally:
        task.stop()
        assert task.wait(30)
