"""The experiment subcommands print one JSON object each; bad input is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from test_cli import cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("runs")
    out = cli("train", "--depth", "8", "--data", "synthetic", "--steps", "20", "--batch-size", "32",
              "--out", str(root), "--name", "tiny")
    assert out.returncode == 0, out.stderr
    return root, json.loads(out.stdout.strip().splitlines()[-1])["run_id"]


def _json(out) -> dict:
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout[:500]
    return json.loads(lines[0])


def test_signal_prints_profiles_and_shattered_gradients() -> None:
    r = _json(cli("signal", "--depth", "20", "--shortcut", "none"))
    assert r["signal"]["depth"] == 20 and len(r["signal"]["grad_norm"]) == 9
    assert r["shattered"]["corr_length"] >= 1


@pytest.mark.slow
def test_lesion_landscape_sanity_report_on_a_run(tiny_run: tuple[Path, str], tmp_path: Path) -> None:
    root, run_id = tiny_run
    lesion = _json(cli("lesion", run_id, "--out", str(root), "--images", "200", "--trials", "2"))
    assert [s["block"] for s in lesion["single"]] == ["stage1.block0", "stage2.block0", "stage3.block0"]
    assert lesion["data"].startswith("Synthetic")
    land = _json(cli("landscape", run_id, "--out", str(root), "--images", "200", "--steps", "5"))
    assert len(land["loss"]) == 5 and land["alphas"][2] == 0.0
    img = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(img)
    sanity = _json(cli("sanity", run_id, str(img), "--out", str(root)))
    assert sanity["similarity"][0] == pytest.approx(1.0) and sanity["layers"][0] == "fc"
    html = tmp_path / "r.html"
    rep = _json(cli("report", run_id, "--out", str(root), "--html", str(html)))
    assert rep["path"] == str(html.resolve()) and html.read_text().startswith("<!doctype html>")


@pytest.mark.slow
def test_experiment_errors_are_one_line(tmp_path: Path) -> None:
    for args in (["lesion", "no-such-run", "--out", str(tmp_path)],
                 ["sanity", "assets/resnet20.safetensors", str(tmp_path / "missing.png")],
                 ["signal", "--depth", "21"]):
        out = cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
