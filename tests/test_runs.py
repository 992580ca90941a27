"""Run folders: round trips, crash safety, damaged runs and id validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from resnet_viz.config import ModelConfig, RunConfig, TrainConfig
from resnet_viz.fsutil import write_text_atomic
from resnet_viz.store.listing import list_runs
from resnet_viz.store.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    RunDir,
    RunError,
    default_runs_dir,
)
from resnet_viz.store.runids import make_run_id, validate_run_id


def small_config(name: str = "") -> RunConfig:
    return RunConfig(model=ModelConfig(depth=20, shortcut="B"), train=TrainConfig(epochs=None, steps=30), name=name)


def small_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    return model.to(memory_format=torch.channels_last)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (8,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def steps(n: int, start: int = 1) -> list[dict]:
    return [
        {"kind": "step", "step": s, "epoch": s / 10, "loss": 1.0 / s, "acc": 0.5, "lr": 0.1, "ips": 100.0,
         "elapsed": s / 10}
        for s in range(start, start + n)
    ]


def test_config_and_metrics_round_trip(tmp_path: Path) -> None:
    cfg = small_config("My ResNet (A)")
    run = RunDir.create(tmp_path, cfg)
    assert run.id.endswith("-my-resnet-a") and run.path == tmp_path / run.id
    assert RunDir.open(tmp_path, run.id).config() == cfg
    assert run.status()["status"] == "queued"

    recs = steps(3) + [{"kind": "eval", "step": 3, "test_loss": 0.9, "test_acc": 0.7, "elapsed": 0.4}]
    run.append_metrics(recs[:2])
    assert run.read_metrics() == recs[:2]  # flushed while the file is still open
    run.append_metrics(recs[2:])
    run.close()
    assert RunDir.open(tmp_path, run.id).read_metrics_report() == (recs, 0)
    assert run.metrics_line_count() == 4


def test_run_ids(tmp_path: Path) -> None:
    for bad in ("../x", "a/b", "", "..", ".hidden", "A B", "x\n"):
        with pytest.raises(RunError):
            validate_run_id(bad)
        with pytest.raises(RunError):
            RunDir.open(tmp_path, bad)
    with pytest.raises(RunError, match="no run"):
        RunDir.open(tmp_path, "20260101-000000-missing")
    rid = make_run_id("ResNet-110 / Ünïcode" + "x" * 80)
    assert validate_run_id(rid) == rid and "/" not in rid and len(rid) <= 60
    assert make_run_id(None).endswith("-run")
    a, b = RunDir.create(tmp_path, small_config("same")), RunDir.create(tmp_path, small_config("same"))
    assert a.id != b.id  # same second, same name: the second gets a suffix (or a later stamp)


def test_default_runs_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path))
    assert default_runs_dir() == tmp_path
    monkeypatch.delenv("RESNET_VIZ_RUNS")
    assert default_runs_dir() == Path(__file__).resolve().parent.parent / "runs"


def test_checkpoint_resume_matches_continuing(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, small_config())
    model = small_model(0)
    opt = sgd(model)
    for s in range(2):
        train_step(model, opt, s)
    assert not model[0].weight.is_contiguous()  # channels_last: covers the .contiguous() path
    run.save_checkpoint(model.state_dict(), opt.state_dict(), {"step": 2, "elapsed": 1.5})
    assert run.has_checkpoint()

    ckpt = RunDir.open(tmp_path, run.id).load_checkpoint()
    assert ckpt.meta == {"step": 2, "elapsed": 1.5}
    fresh = small_model(1)
    fresh_opt = sgd(fresh)
    fresh.load_state_dict(ckpt.model_state)
    fresh_opt.load_state_dict(ckpt.optimizer_state)
    train_step(model, opt, 2)
    train_step(fresh, fresh_opt, 2)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_checkpoint_crash_mid_write_keeps_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir.create(tmp_path, small_config())
    model = small_model(0)
    run.save_checkpoint(model.state_dict(), None, {"step": 1})

    def crash(*args: object) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        run.save_checkpoint(small_model(5).state_dict(), None, {"step": 2})
    monkeypatch.undo()
    ckpt = run.load_checkpoint()
    assert ckpt.meta == {"step": 1} and ckpt.optimizer_state is None
    assert torch.equal(ckpt.model_state["0.weight"], model.state_dict()["0.weight"])
    assert sorted(p.name for p in run.path.iterdir()) == [CHECKPOINT_FILE, CONFIG_FILE, "status.json"]


def test_damaged_checkpoints(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, small_config())
    with pytest.raises(RunError, match="checkpoint .* is damaged: .*missing"):
        run.load_checkpoint()
    run.save_checkpoint(small_model(0).state_dict(), None, {})
    ckpt = run.path / CHECKPOINT_FILE
    ckpt.write_bytes(ckpt.read_bytes()[:-10])
    with pytest.raises(RunError, match="checkpoint .* is damaged"):
        run.load_checkpoint()
    bad = small_model(0).state_dict()
    bad["0.weight"][0, 0, 0, 0] = float("nan")
    run.save_checkpoint(bad, None, {})
    with pytest.raises(RunError, match="NaN"):
        run.load_checkpoint()


def test_metrics_tolerate_torn_and_garbage_lines(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, small_config())
    good = steps(3)
    lines = [json.dumps(good[0]), "{garbage", json.dumps(good[1]), "[1, 2]", json.dumps(good[2])]
    (run.path / METRICS_FILE).write_text("\n".join(lines) + '\n{"kind": "st')  # crash mid-write
    assert run.read_metrics_report() == (good, 2)
    assert run.metrics_line_count() == 5
    run.append_metrics(steps(1, start=4))  # the torn fragment is cut, not glued to this record
    assert run.read_metrics_report() == (good + steps(1, start=4), 2)
    run.truncate_metrics(3)  # resume rewinds to the checkpoint's line count
    assert run.read_metrics_report() == (good[:2], 1)
    run.close()


def test_status_and_stale_pid(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, small_config())
    run.set_status("running", "step 3", step=3)
    st = run.status()
    assert (st["status"], st["message"], st["step"], st["pid"]) == ("running", "step 3", 3, os.getpid())
    with pytest.raises(RunError, match="unknown status"):
        run.set_status("bogus")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    payload = json.loads((run.path / "status.json").read_text())
    write_text_atomic(run.path / "status.json", json.dumps({**payload, "pid": dead.pid}))
    st = run.status()
    assert st["status"] == "interrupted" and st["recorded_status"] == "running"
    assert list_runs(tmp_path)[0].status == "interrupted"


def test_list_runs_reports_damage_without_breaking(tmp_path: Path) -> None:
    assert list_runs(tmp_path / "nope") == []
    good = RunDir.create(tmp_path, small_config("good"))
    recs = steps(60) + [{"kind": "eval", "step": 60, "test_loss": 0.8, "test_acc": 0.75, "elapsed": 7.0}]
    good.append_metrics(recs + steps(2, start=61))
    good.save_checkpoint(small_model(0).state_dict(), None, {})
    good.set_status("finished")

    def damaged(name: str) -> RunDir:
        r = RunDir.create(tmp_path, small_config(name))
        r.set_status("finished")
        r.save_checkpoint(small_model(0).state_dict(), None, {})
        return r

    truncated = damaged("truncated")
    ck = truncated.path / CHECKPOINT_FILE
    ck.write_bytes(ck.read_bytes()[:100])
    (damaged("badconfig").path / CONFIG_FILE).write_text("{not json")
    (damaged("wrongtype").path / CONFIG_FILE).write_text('{"model": {"depth": "x"}}')
    (damaged("nockpt").path / CHECKPOINT_FILE).unlink()
    (damaged("garbage").path / METRICS_FILE).write_bytes(b'{"kind":"step"}\n\xff\xfe garbage\n{"kind":"end"}\n')
    (tmp_path / "20200101-000000-empty").mkdir()
    (tmp_path / "notes.txt").write_text("stray file")
    (tmp_path / "Not A Run").mkdir()
    (tmp_path / ".hidden").mkdir()

    infos = {i.id: i for i in list_runs(tmp_path)}
    assert len(infos) == 7
    g = infos[good.id]
    assert g.damaged is None and g.status == "finished" and g.name == "good" and g.label == "ResNet(B)-20"
    assert g.steps == 62 and g.test_accuracy == 0.75 and g.test_loss == 0.8
    assert g.final_train_loss == pytest.approx(sum(1.0 / s for s in range(13, 63)) / 50)
    assert g.final_train_acc == 0.5 and g.images_per_second == 100.0 and g.elapsed_s == 6.2
    reasons = {i.name or i.id: i.damaged for i in infos.values() if i.id != good.id}
    assert "truncated" in reasons["truncated"]
    assert "config.json" in reasons["20200101-000000-empty"] and "missing" in reasons["20200101-000000-empty"]
    assert "not valid JSON" in next(r for k, r in reasons.items() if "badconfig" in k)
    assert "config.json" in next(r for k, r in reasons.items() if "wrongtype" in k)
    assert "missing" in reasons["nockpt"] and "1 unreadable" in reasons["garbage"]
    assert list(infos)[-1] == "20200101-000000-empty"  # newest first


def test_listing_reads_final_figures_from_a_long_tail(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, small_config())
    eval_rec = {"kind": "eval", "step": 100, "test_loss": 0.5, "test_acc": 0.9, "elapsed": 1.0}
    probe = {"kind": "probe", "step": 0, "blocks": {f"b{i}": [0.1] * 20 for i in range(20)}}
    # A crashed run: no end record, and its only eval lies far behind the last 50 steps.
    run.append_metrics(steps(100) + [eval_rec] + [probe] * 300 + steps(3000, start=101))
    info = list_runs(tmp_path)[0]
    assert (info.steps, info.test_accuracy, info.test_loss, info.elapsed_s) == (3100, 0.9, 0.5, 310.0)
    run.append_metrics([{"kind": "end", "status": "finished", "steps": 3100, "elapsed": 311.0,
                         "images_per_second": 321.0, "test_acc": 0.9, "test_loss": 0.5}])
    info = list_runs(tmp_path)[0]
    assert (info.steps, info.test_accuracy, info.elapsed_s, info.images_per_second) == (3100, 0.9, 311.0, 321.0)
    run.close()


def test_tensorboard_event_file_in_run_folder(tmp_path: Path) -> None:
    with RunDir.create(tmp_path, small_config()) as run:
        run.tensorboard().add_scalar("train/loss", 1.0, 0)
        assert run.tensorboard() is run.tensorboard()
    assert any(p.name.startswith("events.out.tfevents") for p in run.path.iterdir())
    assert list_runs(tmp_path)[0].damaged is None


def test_metrics_csv_holds_step_and_eval_rows_only():
    from resnet_viz.store.listing import metrics_csv

    recs = [{"kind": "step", "step": 1, "loss": 2.3, "acc": 0.1, "extra": "x"},
            {"kind": "probe", "step": 1, "blocks": {"stage1.block0": {"grad_norm": 1.0}}},
            {"kind": "eval", "step": 1, "test_loss": 2.2, "test_acc": 0.15}]
    lines = metrics_csv(recs).decode().splitlines()
    assert lines[0].startswith("kind,step,epoch,loss,acc") and len(lines) == 3
    assert lines[1].startswith("step,1,,2.3,0.1") and lines[2].startswith("eval,1,") and "0.15" in lines[2]


def _proc_start(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot."""
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])


def _recorded(run: RunDir, **changes: object) -> str:
    """The status of ``run`` after its status.json was rewritten with ``changes``."""
    payload = json.loads((run.path / "status.json").read_text())
    write_text_atomic(run.path / "status.json", json.dumps({**payload, **changes}))
    return run.status()["status"]


def test_a_live_status_from_an_earlier_process_under_our_pid_reads_interrupted(tmp_path: Path) -> None:
    # A restarted container runs its app under the pid the last one had.
    run = RunDir.create(tmp_path, small_config())
    run.set_status("running", "step 3")
    assert run.status()["status"] == "running"  # ours
    assert _recorded(run, process_token="the process before the restart", pid_start=1) == "interrupted"
    assert run.status()["recorded_status"] == "running"
    assert list_runs(tmp_path)[0].status == "interrupted"


def test_a_live_status_from_another_host_reads_interrupted(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, small_config())
    run.set_status("paused", "paused")
    assert _recorded(run, hostname="an-old-container-name") == "interrupted"
    assert "an-old-container-name" in run.status()["message"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc for process start times")
def test_a_live_status_held_by_another_live_process_stays_until_its_pid_is_reused(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, small_config())
    run.set_status("running", "step 3")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as cli:  # the CLI in a terminal
        try:
            start = _proc_start(cli.pid)
            assert _recorded(run, pid=cli.pid, pid_start=start, process_token="the CLI's") == "running"
            # The same pid started at another time is another process: the CLI that held the run is gone.
            assert _recorded(run, pid=cli.pid, pid_start=start - 1) == "interrupted"
        finally:
            cli.kill()
