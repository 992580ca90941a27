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


class _Captured(Exception):
    """Stops a lesion study once the images it was given are seen."""


def lesion_images(monkeypatch: pytest.MonkeyPatch, model, data, n: int):
    """(x, y) that ``python -m resnet_viz lesion RUN --images n`` evaluates ``model`` on, with
    ``data`` as the run's data set: the CLI's own code path, in this process."""
    import argparse

    from resnet_viz.cli import experiments as cli_experiments
    from resnet_viz.config import RunConfig
    from resnet_viz.experiments import lesion

    def study(m, x, y, **kw):
        raise _Captured(x, y)

    monkeypatch.setattr(cli_experiments, "load_model_ref", lambda ref, out: (model, RunConfig(), "model"))
    monkeypatch.setattr(cli_experiments, "data_for", lambda cfg: data)
    with monkeypatch.context() as m:
        m.setattr(lesion, "lesion_study", study)
        args = argparse.Namespace(command="lesion", run="r", out=None, images=n, trials=1, max_k=None)
        with pytest.raises(_Captured) as seen:
            cli_experiments.run(args)
    return seen.value.args


def test_evaluation_subset_is_seeded_and_used_by_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from resnet_viz.config import DataConfig
    from resnet_viz.data.sources import load_data
    from resnet_viz.experiments.common import evaluation_subset
    from resnet_viz.nets.cifar import build_model

    data = load_data(DataConfig(source="synthetic", synthetic_train=100, synthetic_test=300))
    x, y = evaluation_subset(data.test_x, data.test_y, 120)
    again = evaluation_subset(data.test_x, data.test_y, 120)
    assert x.shape == (120, 3, 32, 32) and x.dtype == torch.float32 and torch.equal(x, again[0])
    assert torch.equal(y, again[1]) and len(set(y.tolist())) > 1
    assert len(evaluation_subset(data.test_x, data.test_y, 10_000)[1]) == 300  # all of them, no more
    with pytest.raises(ValueError, match="positive"):
        evaluation_subset(data.test_x, data.test_y, 0)
    cli_x, cli_y = lesion_images(monkeypatch, build_model("resnet20"), data, 120)
    assert torch.equal(cli_x, x) and torch.equal(cli_y, y)
