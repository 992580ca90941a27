"""The HTML report: self-contained, escaped, with every run's config and figures, and the
experiments that were run drawn as the app draws them (small models throughout)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.batches import normalize
from resnet_viz.data.sources import make_synthetic
from resnet_viz.experiments import landscape, lesion, sanity, signal
from resnet_viz.nets.cifar import build_model
from resnet_viz.report.html import build_report, experiment_kind
from resnet_viz.store.rundir import RunDir, RunError
from resnet_viz.training.loop import fit

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def self_contained(page: str) -> None:
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"<script[^>]*\bsrc=", page)  # no script loaded from anywhere else
    assert not re.search(r"<(link|img|iframe)[^>]*\b(href|src)=['\"]?https?:", page)
    assert page.count("Plotly.newPlot") >= 1 and "plotly.js" in page.lower()  # embedded, no CDN needed
    assert page.count("window.PlotlyConfig") == 1  # plotly.js once


@pytest.mark.slow
def test_report_has_curves_table_configs_and_escapes_names(tmp_path: Path) -> None:
    data = make_synthetic(320, 64, 0)
    ids = []
    for shortcut, name in (("A", HOSTILE), ("none", "plain")):
        cfg = RunConfig(model=ModelConfig(depth=8, shortcut=shortcut), data=DataConfig(),
                        train=TrainConfig(steps=10, epochs=None, batch_size=32, lr=0.05, probe_every=5, seed=7),
                        name=name)
        run = RunDir.create(tmp_path, cfg, name)
        fit(cfg, data=data, run=run)
        ids.append(run.id)
    page = build_report(tmp_path, ids, experiments={"lesion": {"baseline_acc": 0.5}})
    self_contained(page)
    assert HOSTILE not in page and ESCAPED in page
    assert page.count("Plotly.newPlot") >= 2
    assert '"seed": 7' in page and "ResNet(A)-8" in page and "plain-8" in page
    assert "baseline_acc" in page and "torch" in page
    with pytest.raises(RunError):
        build_report(tmp_path, ["../etc"])
    with pytest.raises(ValueError, match="at least one run or one experiment"):
        build_report(tmp_path, [])


@pytest.fixture(scope="module")
def results(one_thread) -> dict[str, Any]:
    """One result of each experiment the app runs, on depth-8 nets and a few synthetic images,
    labelled with a hostile name where the experiment carries a label."""
    data = make_synthetic(200, 60, 0)
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=8)).eval()
    x, y = normalize(data.test_x, channels_last=False), data.test_y
    xs, ys = landscape.fixed_subset(data.train_x, data.train_y, n=100, seed=0)
    return {
        f"Lesion study: {HOSTILE}": lesion.lesion_study(model, x, y, max_k=2, trials=2, label=HOSTILE).to_dict(),
        "Loss along a random direction": landscape.random_slice(model, xs, ys, steps=5, label=HOSTILE).to_dict(),
        "Loss surface": landscape.surface_2d(model, xs, ys, steps=3, label="ResNet-8").to_dict(),
        "Signal propagation at initialization": [p.to_dict() for p in signal.signal_sweep(depths=(8,), batch=8)],
        "Shattered gradients": [signal.shattered_gradients(ModelConfig(depth=8, shortcut=s), points=32).to_dict()
                                for s in ("none", "A")],
        "Sanity check": sanity.sanity_check(model, x[:1]).to_dict(),
    }


def test_each_kind_of_result_is_recognised(results: dict[str, Any]) -> None:
    assert [experiment_kind(r) for r in results.values()] == [
        "lesion", "slice", "surface", "signal", "shattered", "sanity"]
    cli_signal = {"experiment": "signal", "signal": results["Signal propagation at initialization"][0],
                  "shattered": results["Shattered gradients"][0]}
    assert experiment_kind(cli_signal) == "signal+shattered"
    assert experiment_kind({"anything": 1}) == experiment_kind("text") == experiment_kind([]) == "data"


def test_a_report_of_experiments_alone_draws_each_one(tmp_path: Path, results: dict[str, Any]) -> None:
    page = build_report(tmp_path / "no-runs-here", [], experiments=results)
    self_contained(page)
    assert "<h2>Runs</h2>" not in page and "0 runs, 6 experiments" in page
    for title in results:  # a heading, a figure and the raw numbers (collapsed) for each
        assert f"<h3>{title.replace('<', '&lt;').replace('>', '&gt;')}</h3>" in page
    assert page.count("<details>") == len(results)
    # The figures themselves, by their titles (plotly escapes < > / in its JSON).
    for fig_title in ("Lesion study (Veit et al. 2016)", "Loss along a direction", "directions, seed 0",
                      "Signal propagation at initialization", "Shattered gradients", "Sanity check: saliency"):
        assert fig_title in page, fig_title
    assert page.count("Plotly.newPlot") == 6
    assert HOSTILE not in page and ESCAPED in page  # the hostile label in headings and numbers
    assert "intact" in page and "correlation length" in page and "ρ" in page
    # The sanity check's pixel maps: rounded in the figure, left out of the raw JSON.
    assert "maps of 32 × 32 pixels (drawn in the figure)" in page
    said = sanity.reading(results["Sanity check"]["similarity"], results["Sanity check"]["layers"])
    assert html.escape(said) in page  # the app's words for the same numbers
    section = page.split("Sanity check</h3>", 1)[1].split("</section>", 1)[0]
    maps = [json.loads(z) for z in re.findall(r'"z":(\[\[[-0-9.,\[\]e]*\]\])', section)]
    assert len(maps) == len(results["Sanity check"]["maps"])
    assert all(round(v, 2) == v for m in maps for row in m for v in row)


def test_a_report_keeps_order_and_survives_a_malformed_result(tmp_path: Path, results: dict[str, Any]) -> None:
    pairs = [("Sanity check", results["Sanity check"]), ("Broken lesion", {"single": 3, "random_k": None})]
    page = build_report(tmp_path, [], experiments=pairs)
    assert page.index("Sanity check</h3>") < page.index("Broken lesion</h3>")
    assert "This result cannot be drawn" in page
    sanity_only = build_report(tmp_path, [], experiments=pairs[:1])
    assert len(sanity_only) < 6_000_000  # plotly.js (about 4.7 MB) and a small figure


@pytest.mark.slow
def test_cli_report_takes_experiment_results(tmp_path: Path, results: dict[str, Any]) -> None:
    from test_cli import cli

    (tmp_path / "lesion.json").write_text(json.dumps(
        {"experiment": "lesion", "model": "ResNet(A)-8", **results[f"Lesion study: {HOSTILE}"]}))
    (tmp_path / "slice.json").write_text(json.dumps(results["Loss along a random direction"]))
    html = tmp_path / "r.html"
    out = cli("report", "--experiment", str(tmp_path / "lesion.json"), "--experiment",
              f"My slice={tmp_path / 'slice.json'}", "--out", str(tmp_path / "runs"), "--html", str(html))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["experiments"] == ["lesion: ResNet(A)-8", "My slice"]
    page = html.read_text()
    self_contained(page)
    assert "<h3>lesion: ResNet(A)-8</h3>" in page and "<h3>My slice</h3>" in page
    bad = cli("report", "--experiment", str(tmp_path / "missing.json"), "--html", str(html))
    assert bad.returncode == 2 and "missing.json" in bad.stderr and "Traceback" not in bad.stderr


def test_environment_needs_neither_streamlit_nor_python_311(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's report runs on Python 3.10 (no datetime.UTC) and imports no Streamlit."""
    import datetime
    import sys

    from resnet_viz.report.html import environment

    monkeypatch.delattr(datetime, "UTC", raising=False)
    monkeypatch.setitem(sys.modules, "streamlit", None)  # any `import streamlit` now fails
    env = environment()
    assert env["created"].endswith("UTC") and env["streamlit"] and env["torchvision"]
