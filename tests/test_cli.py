"""``python -m resnet_viz`` as a person runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from resnet_viz.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "resnet_viz", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_summary_json_has_params_and_flops() -> None:
    out = cli("summary", "--depth", "20", "--shortcut", "A", "--json")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["params"] == 269_722 and 80e6 < s["flops"] < 82e6
    assert len(s["blocks"]) == 9
    text = cli("summary", "--depth", "29", "--block", "bottleneck", "--shortcut", "B")
    assert text.returncode == 0 and "stage3.block2" in text.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["summary", "--depth", "21"], "nearest valid: 20 or 26"),
        (["summary", "--shortcut", "D"], "invalid choice"),
        (["train", "--batch-size", "0", "--steps", "1"], "batch size"),
        (["train", "--lr", "-0.1", "--steps", "1"], "learning rate must be positive"),
        (["train", "--steps", "1", "--epochs", "2"], "not allowed with"),
        (["train", "--depth", "abc"], "invalid int value"),
        (["train", "--data", "/nonexistent/folder", "--steps", "1"], "not cifar10, synthetic, or an existing folder"),
        (["train", "--recipe", "fast"], "invalid choice"),
        (["train", "--recipe", "paper", "--val-split", "-5"], "validation must be a count"),
        (["train", "--momentum", "0", "--nesterov", "--steps", "1"], "Nesterov momentum needs momentum > 0"),
        (["train", "--val-split", "20000", "--steps", "1"], "use a smaller --val-split"),
    ],
)
@pytest.mark.slow
def test_bad_arguments_give_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    out = cli(*args, "--out", str(tmp_path)) if args[0] == "train" else cli(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not any(tmp_path.iterdir())  # nothing half-made on disk


@pytest.mark.slow
def test_bad_data_folders_give_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no class folders here")
    out = cli("train", "--data", str(empty), "--steps", "1", "--out", str(tmp_path / "runs"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "class" in out.stderr

    corrupt = tmp_path / "corrupt"
    for c in ("cat", "dog"):
        (corrupt / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(corrupt / c / f"{i}.png")
    (corrupt / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    out = cli("train", "--data", str(corrupt), "--steps", "1", "--out", str(tmp_path / "runs"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "broken.jpg" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_train_prints_a_json_line_and_runs_lists_it(tmp_path: Path) -> None:
    out = cli("train", "--depth", "8", "--data", "synthetic", "--steps", "30", "--batch-size", "32",
              "--out", str(tmp_path), "--name", "cli-tiny")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished" and result["steps"] == 30
    assert {"run_dir", "test_accuracy", "images_per_second"} <= set(result)
    assert Path(result["run_dir"]).is_dir()
    assert "ETA" in out.stderr and "img/s" in out.stderr and "Synthetic" in out.stderr
    assert "estimated time: about" in out.stderr and "on this machine" in out.stderr
    listing = cli("runs", "--out", str(tmp_path))
    assert listing.returncode == 0 and "finished" in listing.stdout and result["run_id"] in listing.stdout


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_status_interrupted(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "resnet_viz", "train", "--depth", "8", "--data", "synthetic", "--steps", "100000",
         "--batch-size", "32", "--out", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        metrics = None
        while time.monotonic() < deadline:  # wait until it is really training
            found = list(tmp_path.glob("*/metrics.jsonl"))
            if found and found[0].stat().st_size > 0:
                metrics = found[0]
                break
            time.sleep(0.2)
        assert metrics is not None, "training never started"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["status"] == "interrupted" and result["steps"] < 100_000
    assert "Traceback" not in stderr
    run_dir = Path(result["run_dir"])
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert (run_dir / "checkpoint.safetensors").is_file()


def test_recipe_paper_is_the_papers_schedule_and_given_flags_override_it() -> None:
    from resnet_viz.cli.main import build_parser
    from resnet_viz.cli.train import run_config

    def train_config(*args: str):
        return run_config(build_parser().parse_args(["train", *args]), 10).train

    p = train_config("--recipe", "paper")
    assert (p.steps, p.epochs, p.batch_size, p.lr, p.momentum, p.nesterov) == (64_000, None, 128, 0.1, 0.9, False)
    assert (p.weight_decay, p.schedule, p.label_smoothing, p.eval_tta) == (1e-4, "paper", 0.0, False)
    short = train_config("--recipe", "paper", "--steps", "300", "--tta", "--sync-bn", "--compile")
    assert (short.steps, short.lr, short.schedule, short.eval_tta, short.sync_bn, short.compile) == (
        300, 0.1, "paper", True, True, True)
    assert train_config("--recipe", "paper", "--epochs", "2").epochs == 2 and train_config().nesterov
    assert train_config() == TrainConfig(probe_every=10)  # the brief recipe is the library's defaults
    assert not train_config("--no-nesterov").nesterov and not train_config("--momentum", "0").nesterov
    run = run_config(build_parser().parse_args(["train", "--recipe", "paper", "--val-split", "5000"]), 10)
    assert run.data.validation == 5000
