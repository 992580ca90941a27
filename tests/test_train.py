"""The trainer and background jobs on tiny synthetic runs (a few seconds each on 2 cores)."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import wait_until

import resnet_viz.training.loop as train_mod
import resnet_viz.training.state as state_mod
from resnet_viz.background.jobs import JobRegistry, JobSnapshot, TrainingJob
from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.nets.cifar import build_model
from resnet_viz.store.listing import list_runs
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.loop import Control, evaluate, fit


@pytest.fixture(scope="module")
def tiny_data():
    return make_synthetic(640, 160, seed=0)


def tiny_config(steps: int = 30, **train) -> RunConfig:
    t = dict(steps=steps, epochs=None, batch_size=32, lr=0.05, probe_every=5, log_every=5, eval_every=0)
    t.update(train)
    return RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic"),
                     train=TrainConfig(**t))


def step_losses(records) -> list[float]:
    return [r["loss"] for r in records if r["kind"] == "step"]


@pytest.mark.slow
def test_fit_records_evaluates_and_writes_the_run(tmp_path: Path, tiny_data) -> None:
    cfg = tiny_config(steps=40)
    run = RunDir.create(tmp_path, cfg, "tiny")
    seen: list[dict] = []
    result = fit(cfg, data=tiny_data, run=run, on_records=seen.extend)
    assert result.status == "finished" and result.steps == 40
    steps = [r for r in seen if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 41))
    assert all(set(r) >= {"loss", "acc", "lr", "ips", "elapsed", "epoch"} for r in steps)
    probes = [r for r in seen if r["kind"] == "probe"]
    assert [p["step"] for p in probes] == [1, 6, 11, 16, 21, 26, 31, 36]
    assert set(probes[0]["blocks"]) == {"stage1.block0", "stage2.block0", "stage3.block0"}
    evals = [r for r in seen if r["kind"] == "eval"]
    assert evals and 0 <= evals[-1]["test_acc"] <= 1 and result.test_acc == evals[-1]["test_acc"]
    assert seen[-1]["kind"] == "end"
    # Everything the callback saw is on disk, and the run lists as finished with its figures.
    assert RunDir.open(tmp_path, run.id).read_metrics() == seen
    info = list_runs(tmp_path)[0]
    assert info.status == "finished" and info.test_accuracy == pytest.approx(result.test_acc)
    assert any(p.name.startswith("events.out.tfevents") for p in run.path.iterdir())
    ckpt = run.load_checkpoint()
    model = build_model(cfg.model)
    model.load_state_dict(ckpt.model_state)
    assert evaluate(model, tiny_data.test_x, tiny_data.test_y, tta=True)[1] == pytest.approx(result.test_acc)


@pytest.mark.slow
def test_same_seed_same_losses_different_seed_differs(tiny_data) -> None:
    runs = []
    for seed in (0, 0, 1):
        recs: list[dict] = []
        fit(tiny_config(steps=50, seed=seed), data=tiny_data, on_records=recs.extend)
        runs.append(step_losses(recs))
    assert len(runs[0]) == 50 and runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.slow
def test_stop_within_one_batch_then_resume_matches_an_uninterrupted_run(tmp_path: Path, tiny_data) -> None:
    cfg = tiny_config(steps=40, eval_every=1000)
    full: list[dict] = []
    fit(cfg, data=tiny_data, on_records=full.extend)

    control = Control()

    def stop_at_20(records):
        if any(r["kind"] == "step" and r["step"] == 20 for r in records):
            control.request_stop()

    run = RunDir.create(tmp_path, cfg, "stopped")
    first = fit(cfg, data=tiny_data, run=run, control=control, on_records=stop_at_20)
    assert first.status == "stopped" and first.steps == 20  # the stop took effect before batch 21
    assert run.status()["status"] == "stopped" and run.has_checkpoint()

    rest: list[dict] = []
    second = fit(cfg, data=tiny_data, run=RunDir.open(tmp_path, run.id), on_records=rest.extend, resume=True)
    assert second.status == "finished" and second.steps == 40
    assert [r["step"] for r in rest if r["kind"] == "step"] == list(range(21, 41))
    # Data order and augmentation depend only on (seed, step), so the resumed run is exact.
    assert step_losses(rest) == pytest.approx(step_losses(full)[20:], rel=1e-5)
    on_disk = [r["step"] for r in RunDir.open(tmp_path, run.id).read_metrics() if r["kind"] == "step"]
    assert on_disk == list(range(1, 41))  # no duplicated or missing steps


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, tiny_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_lr_at = train_mod.lr_at
    monkeypatch.setattr(train_mod, "lr_at", lambda step, *a: 1e30 if step >= 12 else real_lr_at(step, *a))
    cfg = tiny_config(steps=40, eval_every=10)
    run = RunDir.create(tmp_path, cfg, "diverges")
    result = fit(cfg, data=tiny_data, run=run)
    assert result.status == "diverged" and "learning rate" in result.message
    assert run.status()["status"] == "diverged"
    ckpt = run.load_checkpoint()  # raises if any tensor is non-finite
    assert ckpt.meta["step"] == 10
    assert all(torch.isfinite(t).all() for t in ckpt.model_state.values())


class _CountingEvent(threading.Event):
    """A stop event that counts ``wait`` calls: a paused ``fit`` polls its stop event, so each
    call is one look at the pause after which the loop could have taken a step."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def test_pause_holds_training_and_resume_continues(tmp_path: Path, tiny_data) -> None:
    """No step is taken while paused, however long the pause holds; training continues after
    it, and the paused time is not training time."""
    cfg = tiny_config(steps=20, log_every=1)  # a record per step: any step taken shows at once
    run = RunDir.create(tmp_path, cfg, "paused")
    stop = _CountingEvent()
    control = Control(stop=stop)
    steps: list[dict] = []

    def pause_at_10(records: list[dict]) -> None:
        for r in records:
            if r["kind"] == "step":
                steps.append(r)
                if r["step"] == 10:
                    control.pause.set()

    out: dict = {}

    def train() -> None:
        try:
            out["result"] = fit(cfg, data=tiny_data, run=run, control=control, on_records=pause_at_10)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread below
            out["error"] = e

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    held_from = time.perf_counter()  # reset once the pause shows
    try:
        wait_until(lambda: run.status()["status"] == "paused", "the run to show as paused")
        held_from, polls = time.perf_counter(), stop.waits
        wait_until(lambda: stop.waits >= polls + 15, "the paused loop to poll its events 15 more times")
        assert [r["step"] for r in steps] == list(range(1, 11))  # still step 10, 15 polls later
        assert trainer.is_alive()
    finally:
        held = time.perf_counter() - held_from
        control.pause.clear()  # a real UI un-pauses from another thread, as here
        trainer.join(60)
    assert not trainer.is_alive(), "training did not end within 60 s of lifting the pause"
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert result.status == "finished" and result.steps == 20 and run.status()["status"] == "finished"
    assert [r["step"] for r in steps] == list(range(1, 21))
    # The loop was paused longer than ``held`` (over 14 polls of 0.1 s), yet step 11 took less.
    assert held > 1.0 and steps[10]["elapsed"] - steps[9]["elapsed"] < held


class _FakeClock:
    """``time`` for the trainer's meter: seconds pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def test_a_pause_mid_window_leaves_the_speed_and_elapsed_time_right(
    tiny_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step takes 1 s and a pause 300 s of a fake clock. Paused after step 6 of a
    10-step logging window, the window still took 10 s of training for its 10 steps."""
    clock = _FakeClock()
    monkeypatch.setattr(state_mod, "time", clock)
    real_lr_at = train_mod.lr_at

    def one_second_per_step(step: int, *a):
        clock.now += 1.0
        return real_lr_at(step, *a)

    monkeypatch.setattr(train_mod, "lr_at", one_second_per_step)

    class PauseClock(threading.Event):
        polls = 0

        def wait(self, timeout: float | None = None) -> bool:  # the paused loop's poll
            clock.now += 100.0
            self.polls += 1
            if self.polls == 3:
                control.pause.clear()
            return False

    control = Control(stop=PauseClock())
    recs: list[dict] = []

    def pause_after_step_6(records: list[dict]) -> None:
        recs.extend(records)
        if any(r["kind"] == "probe" and r["step"] == 6 for r in records):
            control.pause.set()  # between flushes: steps 1..6 are still pending

    cfg = tiny_config(steps=20, log_every=10, probe_every=5)
    result = fit(cfg, data=tiny_data, control=control, on_records=pause_after_step_6)
    steps = [r for r in recs if r["kind"] == "step"]
    assert result.status == "finished" and control.stop.polls == 3
    assert [r["ips"] for r in steps] == pytest.approx([32.0] * 20)  # 10 steps of 32 images in 10 s
    assert steps[9]["elapsed"] == pytest.approx(10.0) and steps[19]["elapsed"] == pytest.approx(20.0)
    assert result.elapsed == pytest.approx(20.0) and result.images_per_second == pytest.approx(32.0)


@pytest.mark.slow
def test_job_registry_queues_runs_and_snapshots(tmp_path: Path, tiny_data) -> None:
    reg = JobRegistry(tmp_path)
    try:
        a = reg.submit(tiny_config(steps=60), name="a", data=tiny_data)
        b = reg.submit(tiny_config(steps=20), name="b", data=tiny_data)
        assert b.snapshot().state == "queued"  # one training at a time
        assert a.wait(60) and b.wait(60)
        sa, sb = a.snapshot(), b.snapshot()
        assert sa.state == sb.state == "finished"
        assert sa.step == 60 and sa.progress == 1.0 and sa.done
        assert len([r for r in sb.records if r["kind"] == "step"]) == 20
        statuses = {i.name: i.status for i in list_runs(tmp_path)}
        assert statuses == {"a": "finished", "b": "finished"}
    finally:
        reg.shutdown()


def test_job_stop_saves_and_a_failing_job_reports(tmp_path: Path, tiny_data) -> None:
    reg = JobRegistry(tmp_path)
    try:
        job = reg.submit(tiny_config(steps=100_000), name="long", data=tiny_data)
        wait_until(lambda: job.snapshot().step >= 10, "the long job to reach step 10")
        job.stop()
        assert job.wait(30), "the job did not stop within 30 s"
        snap = job.snapshot()
        assert snap.state == "stopped" and 10 <= snap.step < 100_000
        ckpt = RunDir.open(tmp_path, job.run_id).load_checkpoint()
        assert ckpt.meta["step"] == snap.step  # saved where it stopped
        # A data set whose classes do not fit the model: the job fails with a message, no traceback.
        bad = RunConfig(model=ModelConfig(depth=8, num_classes=5), train=TrainConfig(steps=5, epochs=None))
        failed = reg.submit(bad, data=tiny_data)
        assert failed.wait(30)
        assert failed.snapshot().state == "failed" and "classes" in failed.snapshot().message
    finally:
        reg.shutdown()


def test_a_resumed_job_continues_from_its_checkpoint_and_finishes(
    tmp_path: Path, tiny_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_on_records = TrainingJob._on_records
    first_resumed_step: list[int] = []

    def stop_at_20(job: TrainingJob, records: list[dict]) -> None:
        real_on_records(job, records)
        steps = [r["step"] for r in records if r["kind"] == "step"]
        if job.resume and steps and not first_resumed_step:
            first_resumed_step.append(steps[0])
        if not job.resume and 20 in steps:
            job.stop()  # as the Stop button does, at a known step

    monkeypatch.setattr(TrainingJob, "_on_records", stop_at_20)
    reg = JobRegistry(tmp_path, isolate=False)  # the stop must come at step 20 exactly: in the trainer's thread
    try:
        job = reg.submit(tiny_config(steps=40), name="resumable", data=tiny_data)
        assert job.wait(60), "the first job did not stop within 60 s"
        assert (job.snapshot().state, job.snapshot().step) == ("stopped", 20)
        assert RunDir.open(tmp_path, job.run_id).load_checkpoint().meta["step"] == 20
        resumed = reg.resume(job.run_id)
        assert resumed.wait(60), "the resumed job did not finish within 60 s"
        snap = resumed.snapshot()
        assert (snap.state, snap.step, snap.total_steps) == ("finished", 40, 40)
        assert resumed.result is not None and (resumed.result.status, resumed.result.steps) == ("finished", 40)
        assert first_resumed_step == [21]  # it went on from the checkpoint, not from step 1
        assert [r["step"] for r in snap.records if r["kind"] == "step"] == list(range(1, 41))
        run = RunDir.open(tmp_path, job.run_id)
        assert [r["step"] for r in run.read_metrics() if r["kind"] == "step"] == list(range(1, 41))
        assert run.status()["status"] == "finished" and run.load_checkpoint().meta["step"] == 40
    finally:
        reg.shutdown()


def test_eta_and_ips_are_finite_while_running(tmp_path: Path, tiny_data) -> None:
    """A running job's ETA is its remaining steps at the last measured speed: finite and
    positive until the last step, and gone once the job has ended."""
    snaps: list[JobSnapshot] = []

    class Watched(TrainingJob):
        def _on_records(self, records: list[dict]) -> None:
            super()._on_records(records)
            if any(r["kind"] == "step" for r in records):
                snaps.append(self.snapshot())  # as a UI polling at that moment would see it

    cfg = tiny_config(steps=20)
    job = Watched(cfg, RunDir.create(tmp_path, cfg, "eta"))
    job.execute(lambda _: tiny_data)
    assert [s.step for s in snaps] == [5, 10, 15, 20]
    for s in snaps:
        assert s.state == "running" and s.total_steps == 20
        last = [r for r in s.records if r["kind"] == "step"][-1]
        assert s.images_per_second == last["ips"] and s.images_per_second > 0
        assert s.eta_s is not None and math.isfinite(s.eta_s)
        assert s.eta_s == pytest.approx((20 - s.step) * cfg.train.batch_size / s.images_per_second, rel=1e-9)
    assert all(s.eta_s > 0 for s in snaps[:-1]) and snaps[-1].eta_s == 0
    # Steps left at the measured speed: shrinks with every flush whatever the speed did.
    left = [s.eta_s * s.images_per_second / cfg.train.batch_size for s in snaps]
    assert left == pytest.approx([15, 10, 5, 0])
    end = job.snapshot()
    assert end.state == "finished" and end.eta_s is None
    result = job.result
    assert result is not None and result.images_per_second > 0 and math.isfinite(result.images_per_second)
    assert all(r["ips"] > 0 for r in end.records if r["kind"] == "step")


def test_a_validation_split_is_held_out_and_evaluated(tiny_data) -> None:
    cfg = RunConfig(model=ModelConfig(depth=8), data=DataConfig(validation=64),
                    train=TrainConfig(steps=6, epochs=None, batch_size=32, probe_every=0, eval_every=3))
    recs: list[dict] = []
    result = fit(cfg, data=tiny_data, on_records=recs.extend)
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6]
    assert all(0 <= e["val_acc"] <= 1 and e["val_loss"] > 0 and "test_acc" in e for e in evals)
    assert result.test_acc == evals[-1]["test_acc"]  # test figures keep their meaning
    with pytest.raises(ValueError, match="use a smaller --val-split"):
        fit(dataclasses.replace(cfg, data=DataConfig(validation=640)), data=tiny_data)


@pytest.mark.slow
def test_a_seeded_run_ignores_other_threads_seeding_the_global_rng(
    tiny_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages and experiment threads seed and draw from torch's global RNG at any moment; a run
    with a given seed still starts from the same weights and takes the same first steps."""
    cfg = tiny_config(steps=10, probe_every=0, eval_every=1000)  # augmented: the data's randomness too
    alone: list[dict] = []
    fit(cfg, data=tiny_data, on_records=alone.extend)

    stop, reseeded = threading.Event(), threading.Event()

    def page() -> None:
        i = 0
        while not stop.is_set():
            torch.manual_seed(1000 + i)
            torch.rand(64)
            reseeded.set()
            i += 1
            time.sleep(0.001)

    build = state_mod.build_model

    def build_after_a_reseed(*args, **kwargs):
        # Make sure the page gets a turn between the trainer's seeding and its build, which a
        # thread switch may otherwise give it or not.
        reseeded.clear()
        assert reseeded.wait(10)
        return build(*args, **kwargs)

    monkeypatch.setattr(state_mod, "build_model", build_after_a_reseed)
    other = threading.Thread(target=page, daemon=True)
    other.start()
    busy: list[dict] = []
    try:
        fit(cfg, data=tiny_data, on_records=busy.extend)
    finally:
        stop.set()
        other.join(10)
    assert len(step_losses(alone)) == 10
    assert step_losses(busy) == step_losses(alone)
