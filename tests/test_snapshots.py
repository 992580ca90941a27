"""Weight snapshots along a run (store.snapshots, training.snapshots): the schedule, the files
a tiny synthetic run writes, and a resumed run continuing them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.store.rundir import RunDir
from resnet_viz.store.snapshots import list_snapshots, load_snapshot, save_snapshot, snapshot_steps, thin_extras
from resnet_viz.training.loop import Control, fit


@pytest.fixture(scope="module")
def tiny_data():
    return make_synthetic(320, 40, seed=0)


def tiny_config(steps: int = 24, **train) -> RunConfig:
    # 320 images in batches of 32: 10 steps per epoch.
    t = dict(steps=steps, epochs=None, batch_size=32, lr=0.05, probe_every=0, log_every=4, eval_every=1000,
             threads=1)
    t.update(train)
    return RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic"),
                     train=TrainConfig(**t))


def test_the_schedule_has_the_start_each_interval_and_the_end() -> None:
    assert snapshot_steps(24, 10) == [0, 10, 20, 24]
    assert snapshot_steps(30, 10) == [0, 10, 20, 30]  # the end on the grid is not written twice
    assert snapshot_steps(30, 0) == []
    assert snapshot_steps(5, 10) == [0, 5]


def test_a_long_run_is_thinned_to_the_cap_evenly() -> None:
    steps = snapshot_steps(1000, 1, cap=100)
    assert len(steps) <= 100 and steps[0] == 0 and steps[-1] == 1000
    gaps = {b - a for a, b in zip(steps[:-1], steps[1:], strict=True)}
    assert gaps == {16, 1000 - 992}  # every 1 -> 2 -> 4 -> 8 -> 16: 63 points + the end
    assert len(snapshot_steps(500, 5, cap=101)) == 101  # 0..500 by 5 fits exactly: not thinned
    assert snapshot_steps(505, 5, cap=101)[:3] == [0, 10, 20]  # one more does not fit
    with pytest.raises(ValueError, match="at least 3"):
        snapshot_steps(10, 1, cap=2)


def test_the_config_takes_an_interval_none_or_zero_and_refuses_the_rest() -> None:
    assert TrainConfig().snapshot_every is None
    assert TrainConfig(snapshot_every=0).snapshot_every == 0
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="snapshot_every"):
            TrainConfig(snapshot_every=bad)  # type: ignore[arg-type]
    cfg = RunConfig(train=TrainConfig(snapshot_every=7))
    assert RunConfig.from_dict(cfg.to_dict()).train.snapshot_every == 7


def test_off_schedule_extras_are_thinned_oldest_first(tmp_path: Path) -> None:
    state = {"w": torch.zeros(2)}
    for s in (0, 3, 5, 7, 10):
        save_snapshot(tmp_path, s, state, {})
    thin_extras(tmp_path, [0, 10], keep=7, cap=3)
    assert [s for s, _ in list_snapshots(tmp_path)] == [0, 7, 10]


def test_a_run_snapshots_the_init_each_epoch_and_the_end(tmp_path: Path, tiny_data) -> None:
    cfg = tiny_config(steps=24)
    run = RunDir.create(tmp_path, cfg, "snap")
    fit(cfg, data=tiny_data, run=run)
    found = list_snapshots(run.path)
    assert [s for s, _ in found] == [0, 10, 20, 24]
    init, meta0 = load_snapshot(found[0][1])
    end, meta = load_snapshot(found[-1][1])
    assert meta0["step"] == 0 and meta["step"] == 24 and meta["epoch"] == pytest.approx(2.4)
    # The end snapshot is the trained model (the checkpoint's weights); the first is the seeded init.
    ckpt = run.load_checkpoint().model_state
    assert set(end) == set(ckpt) and all(torch.equal(end[k], ckpt[k]) for k in ckpt)
    from resnet_viz.nets.cifar import build_model

    fresh = build_model(cfg.model, generator=torch.Generator().manual_seed(cfg.train.seed)).state_dict()
    assert all(torch.equal(init[k], fresh[k]) for k in fresh)
    assert not torch.equal(init["fc.weight"], end["fc.weight"])


def test_snapshots_off_writes_none(tmp_path: Path, tiny_data) -> None:
    cfg = tiny_config(steps=8, snapshot_every=0)
    run = RunDir.create(tmp_path, cfg, "off")
    fit(cfg, data=tiny_data, run=run)
    assert list_snapshots(run.path) == []


def test_a_stopped_then_resumed_run_continues_the_snapshots(tmp_path: Path, tiny_data) -> None:
    cfg = tiny_config(steps=24, snapshot_every=6)
    control = Control()

    def stop_at_8(records):
        if any(r["kind"] == "step" and r["step"] == 8 for r in records):
            control.request_stop()

    run = RunDir.create(tmp_path, cfg, "resumed")
    first = fit(cfg, data=tiny_data, run=run, control=control, on_records=stop_at_8)
    assert first.status == "stopped" and first.steps == 8
    assert [s for s, _ in list_snapshots(run.path)] == [0, 6, 8]  # where it stopped, too
    # A snapshot from beyond the checkpoint (a process that died before its next save) is dropped.
    save_snapshot(run.path, 12, {"w": torch.zeros(1)}, {})
    second = fit(cfg, data=tiny_data, run=RunDir.open(tmp_path, run.id), resume=True)
    assert second.status == "finished"
    assert [s for s, _ in list_snapshots(run.path)] == [0, 6, 8, 12, 18, 24]
    twelve, _ = load_snapshot(list_snapshots(run.path)[3][1])
    assert "fc.weight" in twelve  # rewritten by the resumed run, not the stale stand-in


def test_a_process_without_the_run_folder_snapshots_nothing() -> None:
    # Under torchrun only rank 0 gets the RunDir: the other ranks' Snapshots hold no schedule.
    from resnet_viz.nets.cifar import build_model
    from resnet_viz.training.snapshots import Snapshots

    snaps = Snapshots(None, total=20, every=5, per_epoch=10, start_step=0)
    assert snaps.schedule == []
    snaps.at(build_model(ModelConfig(depth=8)), 5, end=True)  # no folder to write to, no error
    assert snaps.last is None
