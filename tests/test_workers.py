"""Training runs and experiment tasks in worker processes: the server keeps serving whatever
happens to a worker, and a worker shares none of the server's process state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import wait_until

from resnet_viz.background.jobs import JobRegistry
from resnet_viz.background.tasks import Call, TaskRegistry
from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.experiments import signal as signal_exp
from resnet_viz.store.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def config(steps: int, eval_every: int = 0, seed: int = 0) -> RunConfig:
    train = TrainConfig(steps=steps, epochs=None, batch_size=32, lr=0.05, probe_every=5, log_every=5,
                        eval_every=eval_every, seed=seed)
    return RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic"), train=train)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(640, 160, seed=0)


def losses(records) -> list[float]:
    return [r["loss"] for r in records if r["kind"] == "step"]


# -- what a task does to its process: module-level, so that a worker gets them by reference


def mess_with_torch(*, progress, stop) -> int:
    torch.manual_seed(1234)
    torch.set_num_threads(1)
    return os.getpid()


def thread_count(*, progress, stop) -> int:
    return torch.get_num_threads()


def ignore_stop(*, progress, stop) -> None:
    progress(0.1, "busy, not looking at stop")
    time.sleep(60)


def tensors(*, progress, stop) -> dict:
    return {"map": torch.arange(6.0).reshape(2, 3), "more": [torch.ones(2, dtype=torch.bfloat16)]}


def test_a_task_returns_tensors_after_its_worker_has_ended() -> None:
    """Tensors crossed as shared-memory handles the parent fetched from the child, which had
    already ended: "Connection reset by peer" instead of a Score-CAM map."""
    task = TaskRegistry(isolate=True).start("tensors", Call(tensors))
    assert task.wait(60)
    snap = task.snapshot()
    assert snap.state == "done", snap.error
    assert torch.equal(snap.result["map"], torch.arange(6.0).reshape(2, 3))
    assert snap.result["more"][0].dtype == torch.bfloat16 and snap.result["more"][0].sum().item() == 2


def test_a_task_leaves_the_servers_torch_state_alone() -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    task = TaskRegistry(isolate=True).start("mess", Call(mess_with_torch))
    assert task.wait(30) and task.snapshot().state == "done"
    assert task.snapshot().result != os.getpid()  # it ran elsewhere
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads


def test_a_task_beside_a_training_run_gets_the_threads_it_is_given() -> None:
    reg = TaskRegistry(isolate=True)
    one = reg.start("one", Call(thread_count), threads=1)
    assert one.wait(30) and one.snapshot().result == 1


def test_a_killed_task_fails_with_a_message_and_the_next_one_runs() -> None:
    reg = TaskRegistry(isolate=True)
    task = reg.start("victim", Call(ignore_stop))
    wait_until(lambda: task.snapshot().fraction > 0, "the task to start", timeout=30)
    os.kill(task._worker.pid, signal.SIGKILL)  # what the kernel's out-of-memory killer does
    assert task.wait(10)
    snap = task.snapshot()
    assert snap.state == "failed" and "killed by SIGKILL" in snap.error and "memory" in snap.error, snap.error
    after = reg.start("after", Call(signal_exp.signal_sweep, depths=(8,), batch=8))
    assert after.wait(60) and after.snapshot().state == "done"


def test_a_task_that_does_not_answer_stop_is_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_viz.background import tasks

    monkeypatch.setattr(tasks, "STOP_GRACE_S", 1.0)
    task = TaskRegistry(isolate=True).start("deaf", Call(ignore_stop))
    wait_until(lambda: task.snapshot().fraction > 0, "the task to start", timeout=30)
    task.stop()
    assert task.wait(10), "the worker was not ended after its grace"
    assert task.snapshot().state == "stopped"


def test_a_lambda_task_fails_with_words_not_a_pickle_traceback() -> None:
    task = TaskRegistry(isolate=True).start("lambda", lambda p, s: 42)
    assert task.wait(10)
    assert task.snapshot().state == "failed" and "Call of a library function" in task.snapshot().error


@pytest.mark.slow
def test_a_killed_training_worker_leaves_its_run_resumable(tmp_path: Path, data) -> None:
    reg = JobRegistry(tmp_path, isolate=True)
    try:
        job = reg.submit(config(steps=100_000, eval_every=10), name="killed", data=data)
        run = RunDir.open(tmp_path, job.run_id)
        wait_until(lambda: run.has_checkpoint() and job.snapshot().step > 10, "a checkpoint", timeout=60)
        os.kill(job._worker.pid, signal.SIGKILL)
        assert job.wait(15)
        snap = job.snapshot()
        assert snap.state == "interrupted" and "killed by SIGKILL" in snap.message and "Resume" in snap.message
        assert run.status()["status"] == "interrupted"
        step = int(run.load_checkpoint().meta["step"])
        again = reg.resume(job.run_id)  # the server still trains: the run goes on from its checkpoint
        wait_until(lambda: again.snapshot().step > step, "the resumed run to train", timeout=60)
        again.stop()
        assert again.wait(30) and again.snapshot().state == "stopped"
    finally:
        reg.shutdown()


@pytest.mark.slow
def test_pause_and_stop_reach_the_worker(tmp_path: Path, data) -> None:
    reg = JobRegistry(tmp_path, isolate=True)
    try:
        job = reg.submit(config(steps=100_000), name="steered", data=data)
        run = RunDir.open(tmp_path, job.run_id)
        wait_until(lambda: job.snapshot().step > 5, "the run to train", timeout=60)
        job.pause()
        wait_until(lambda: run.status()["status"] == "paused", "the worker to pause", timeout=10)
        held = job.snapshot().step
        time.sleep(1.0)
        assert job.snapshot().step <= held + 5  # at most the records it had not yet sent
        job.resume_training()
        wait_until(lambda: run.status()["status"] == "running", "the worker to go on", timeout=10)
        job.stop()
        assert job.wait(15)
        assert job.snapshot().state == "stopped" and run.status()["status"] == "stopped" and run.has_checkpoint()
    finally:
        reg.shutdown()


@pytest.mark.slow
def test_a_seeded_run_starts_the_same_while_the_server_is_busy(tmp_path: Path, data) -> None:
    """The first ten losses of a seeded run, alone and while the server's threads reseed torch
    and change its thread count and an experiment runs beside it: equal."""
    def first_ten(sub: str) -> list[float]:
        reg = JobRegistry(tmp_path / sub, isolate=True)
        try:
            job = reg.submit(config(steps=10, seed=7), data=data)
            assert job.wait(60) and job.snapshot().state == "finished"
            return losses(job.snapshot().records)
        finally:
            reg.shutdown()

    alone = first_ten("alone")
    stop = threading.Event()

    def page() -> None:  # what page scripts did to the process: reseed, one thread and back
        i = 0
        while not stop.is_set():
            torch.manual_seed(i)
            torch.set_num_threads(1 + i % 2)
            i += 1
            time.sleep(0.001)

    threads = torch.get_num_threads()
    other = threading.Thread(target=page, daemon=True)
    experiment = TaskRegistry(isolate=True).start("beside", Call(signal_exp.signal_sweep, depths=(8, 14), batch=8))
    other.start()
    try:
        busy = first_ten("busy")
    finally:
        stop.set()
        other.join(10)
        torch.set_num_threads(threads)
        experiment.stop()
    assert len(alone) == 10 and busy == alone


PARENT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from resnet_viz.background.jobs import JobRegistry
    from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    if __name__ == "__main__":
        cfg = RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic"),
                        train=TrainConfig(steps=100_000, epochs=None, batch_size=32, eval_every=0))
        job = JobRegistry(Path(sys.argv[1])).submit(cfg, name="orphan")
        while job.snapshot().step < 5:
            time.sleep(0.05)
        print(job.run_id, job._worker.pid, flush=True)
        time.sleep(600)
""")


@pytest.mark.slow
def test_a_worker_whose_server_dies_stops_and_reads_interrupted(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(PARENT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs")], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        run_id, pid = server.stdout.readline().split()
    finally:
        server.kill()  # as an out-of-memory kill or a crash would end the server
        server.wait(10)

    def worker_gone() -> bool:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(worker_gone, "the orphaned worker to end", timeout=30)
    status = RunDir.open(tmp_path / "runs", run_id).status()
    assert status["status"] == "interrupted", status
