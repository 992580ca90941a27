"""The machine's speed, measured once and kept, and the times estimated from it."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import fake_speed

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.store.rundir import RunDir
from resnet_viz.training import speed
from resnet_viz.training.loop import fit


def test_the_probe_nets_get_their_measured_speed_and_others_lie_on_the_line() -> None:
    s = fake_speed()
    assert 1 / s.train_seconds_per_image(ModelConfig(depth=20)) == pytest.approx(1000.0)
    assert 1 / s.train_seconds_per_image(ModelConfig(depth=56)) == pytest.approx(400.0)
    assert 400.0 < 1 / s.train_seconds_per_image(ModelConfig(depth=32)) < 1000.0
    assert 1 / s.train_seconds_per_image(ModelConfig(depth=110)) < 400.0
    assert 1 / s.eval_seconds_per_image(ModelConfig(depth=20)) == pytest.approx(4000.0)


def test_training_seconds_counts_steps_and_evaluations() -> None:
    s = fake_speed()
    cfg = RunConfig(train=TrainConfig(epochs=None, steps=100, batch_size=100, eval_every=50, eval_tta=False))
    t = speed.training_seconds(cfg, train_size=10_000, test_size=2_000, speed=s)
    expected = speed.STARTUP_S + 100 * 100 / 1000 * speed.TRAINER_OVERHEAD + 2 * 2_000 / 4000
    assert t == pytest.approx(expected)
    flips = replace(cfg, train=replace(cfg.train, eval_tta=True))
    assert speed.training_seconds(flips, 10_000, 2_000, s) == pytest.approx(expected + 2 * 2_000 / 4000)


def test_epochs_for_a_time_budget_fit_that_budget() -> None:
    s = fake_speed()
    cfg = RunConfig(train=TrainConfig.recipe("quick"))
    n = speed.epochs_for(300, cfg, 50_000, 10_000, s)
    assert n >= 1
    fitted = replace(cfg, train=replace(cfg.train, epochs=float(n)))
    assert speed.training_seconds(fitted, 50_000, 10_000, s) == pytest.approx(300, rel=0.25)
    assert speed.epochs_for(1, cfg, 50_000, 10_000, s) == 1  # never zero


def test_the_figures_are_kept_per_machine_and_a_damaged_file_means_measure_again(tmp_path: Path) -> None:
    file = tmp_path / "speed.json"
    assert speed.cached(device="cpu", path=file) is None
    s = fake_speed()
    speed.save(s, file)
    other = replace(s, machine="another machine")
    speed.save(other, file)  # a shared cache folder keeps both
    assert speed.cached(device="cpu", path=file) == s
    assert set(json.loads(file.read_text())) == {s.machine, "another machine"}
    file.write_text("{not json")
    assert speed.cached(device="cpu", path=file) is None


@pytest.mark.parametrize("seconds, words", [(3, "about 5 seconds"), (42, "about 40 seconds"),
                                            (61, "about 1 minute"), (545, "about 9 minutes"),
                                            (3 * 3600, "about 3.0 hours")])
def test_about_rounds_as_a_person_says_it(seconds: float, words: str) -> None:
    assert speed.about(seconds) == words


@pytest.mark.slow
def test_the_estimate_is_within_a_quarter_of_a_real_run_here(tmp_path: Path) -> None:
    """Measure this machine, estimate a short ResNet-20 run with two evaluations, train it.
    Measured twice, the faster kept, as the app keeps its figures: a measurement is only ever
    slowed by other work (in CI once: 588 images/s, an estimate 1.55x the run)."""
    file = tmp_path / "speed.json"
    speed.save(speed.measure(device="cpu"), file)
    s = speed.save(speed.measure(device="cpu"), file)
    data = make_synthetic(4_000, 1_000, seed=0)
    cfg = RunConfig(model=ModelConfig(depth=20), data=DataConfig(synthetic_train=4_000, synthetic_test=1_000),
                    train=TrainConfig(epochs=None, steps=120, eval_every=60, device="cpu"))
    estimate = speed.training_seconds(cfg, len(data.train_y), len(data.test_y), s) - speed.STARTUP_S
    t0 = time.perf_counter()
    fit(cfg, data=data, run=RunDir.create(tmp_path, cfg, "speed"))
    took = time.perf_counter() - t0
    assert estimate == pytest.approx(took, rel=0.25), f"estimated {estimate:.1f} s, took {took:.1f} s ({s.describe()})"


def test_the_quick_replay_fits_about_fourteen_minutes_on_slow_and_fast_machines() -> None:
    from resnet_viz.experiments import degradation, estimates

    base = RunConfig(train=degradation.default_train_config())
    slow = fake_speed(train=(260.0, 95.0), evals=(900.0, 330.0))  # an AVX2 EPYC in fp32
    steps = estimates.quick_steps(base, 50_000, 10_000, slow)
    assert estimates.MIN_QUICK_STEPS <= steps < degradation.DEFAULT_STEPS and steps % 50 == 0
    took = estimates.replay_seconds(base, 50_000, 10_000, slow, estimates.quick_config(steps))
    assert took <= 15.5 * 60  # "within about 15 minutes" on the slowest CPU the issue names
    xeon = fake_speed(train=(1130.0, 420.0), evals=(3900.0, 1450.0))  # AVX-512, fp32
    steps = estimates.quick_steps(base, 50_000, 10_000, xeon)
    took = estimates.replay_seconds(base, 50_000, 10_000, xeon, estimates.quick_config(steps))
    assert estimates.MIN_QUICK_STEPS < steps < degradation.DEFAULT_STEPS
    assert 0.9 * estimates.QUICK_SECONDS <= took <= estimates.QUICK_SECONDS
    fast = fake_speed(train=(5000.0, 2000.0), evals=(20000.0, 8000.0))
    assert estimates.quick_steps(base, 50_000, 10_000, fast) == degradation.DEFAULT_STEPS  # never more than full
    crawl = fake_speed(train=(20.0, 8.0), evals=(60.0, 25.0))
    assert estimates.quick_steps(base, 50_000, 10_000, crawl) == estimates.MIN_QUICK_STEPS  # never too few to show


def test_experiment_estimates_grow_with_their_work_and_with_one_thread() -> None:
    from resnet_viz.experiments import estimates

    s, r20, r56 = fake_speed(), ModelConfig(depth=20), ModelConfig(depth=56)
    assert estimates.surface_seconds(r20, 1000, 21, s) == pytest.approx(21 * estimates.slice_seconds(r20, 1000, 21, s))
    assert estimates.lesion_seconds(r56, 1000, s) > estimates.lesion_seconds(r20, 1000, s)
    # ResNet-8 has 3 blocks: k stops there, as lesion.max_k_for does; a pass with k blocks
    # deleted costs 0.1 (stem, head, shortcuts) + 0.9 (3 - k) / 3 of the intact net's
    assert estimates.lesion_seconds(ModelConfig(depth=8), 1000, s) == pytest.approx(
        (1 + 3 * 0.7 + 3 * 0.4 + 1 * 0.1) * 1000 * s.fp32_seconds_per_image(ModelConfig(depth=8)))
    assert estimates.signal_seconds([20, 56], s, threads=1) == pytest.approx(
        estimates.signal_seconds([20, 56], s) * s.threads)
    assert estimates.shattered_seconds(56, s) > estimates.shattered_seconds(20, s) > 0
    assert estimates.sanity_seconds(r56, s) > estimates.sanity_seconds(r20, s) > 0


@pytest.mark.slow
def test_the_cli_measures_once_keeps_the_figures_and_prints_the_estimate(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    file = tmp_path / "speed.json"
    env = {**os.environ, "PYTHONPATH": str(root), "RESNET_VIZ_SPEED_FILE": str(file)}
    args = [sys.executable, "-m", "resnet_viz", "train", "--depth", "8", "--data", "synthetic", "--steps", "5",
            "--batch-size", "32", "--out", str(tmp_path / "runs")]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "measuring this machine's speed once" in first.stderr and "estimated time: about" in first.stderr
    assert len(json.loads(file.read_text())) == 1
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert "measuring" not in again.stderr and "estimated time: about" in again.stderr


def test_the_speed_command_prints_the_kept_figures(capsys: pytest.CaptureFixture[str]) -> None:
    from resnet_viz.cli.main import main

    assert main(["speed"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["train_ips"] == list(speed.cached().train_ips) and shown["file"] == str(speed.speed_file())


def test_the_quick_replay_follows_the_full_replays_schedule_cut_short() -> None:
    """Its learning rates are the full replay's first steps, not a whole schedule squeezed in."""
    from resnet_viz.experiments import degradation, estimates
    from resnet_viz.training.schedule import lr_at

    quick, full = estimates.quick_config(200), degradation.default_train_config()
    assert quick.steps == 200 and quick.schedule_steps == full.steps == 1000
    assert [lr_at(s, quick.schedule_steps, quick) for s in range(200)] == [lr_at(s, 1000, full) for s in range(200)]
    with pytest.raises(ValueError, match="schedule_steps"):
        TrainConfig(epochs=None, steps=300, schedule_steps=200)


def test_a_run_cut_short_trains_on_the_longer_schedules_learning_rates(tmp_path: Path) -> None:
    from resnet_viz.training.schedule import lr_at

    data = make_synthetic(320, 40, seed=0)
    tc = TrainConfig(epochs=None, steps=12, schedule_steps=100, batch_size=32, log_every=1, probe_every=0,
                     eval_tta=False)
    cfg = RunConfig(model=ModelConfig(depth=8), data=DataConfig(synthetic_train=320, synthetic_test=40), train=tc)
    records: list[dict] = []
    result = fit(cfg, data=data, on_records=records.extend)
    assert result.status == "finished" and result.steps == 12
    lrs = [r["lr"] for r in records if r["kind"] == "step"]
    assert lrs == pytest.approx([lr_at(s, 100, tc) for s in range(12)])


def test_figures_are_found_from_a_thread_left_at_one_torch_thread(tmp_path: Path) -> None:
    """A server's script thread can stay at one torch thread after ``device.one_cpu_thread``
    (OpenMP keeps a count per thread); the figures a worker measured under the count the
    process started with must still be found there, or every page shows no times and measures
    again (it took a task slot from a visitor's experiment)."""
    import threading

    import torch

    file = tmp_path / "speed.json"
    # As a worker without a thread setting keys them: under the count the process started with
    # (torch.get_num_threads() here may already be lower: earlier tests in this process lower it).
    measured = speed.save(fake_speed(threads=speed.start_threads()), file)
    found: list[speed.Speed | None] = []

    def script_run() -> None:
        torch.set_num_threads(1)  # this thread only
        found.append(speed.cached(path=file))

    t = threading.Thread(target=script_run)
    t.start()
    t.join()
    assert found == [measured]
    assert speed.cached(path=file) == measured
