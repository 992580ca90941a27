"""The HTML report: self-contained, escaped, with every run's config and figures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data import make_synthetic
from resnet_viz.report import build_report
from resnet_viz.runs import RunDir, RunError
from resnet_viz.train import fit


def test_report_has_curves_table_configs_and_escapes_names(tmp_path: Path) -> None:
    data = make_synthetic(320, 64, 0)
    ids = []
    for shortcut, name in (("A", "<script>alert(1)</script>"), ("none", "plain")):
        cfg = RunConfig(model=ModelConfig(depth=8, shortcut=shortcut), data=DataConfig(),
                        train=TrainConfig(steps=10, epochs=None, batch_size=32, lr=0.05, probe_every=5, seed=7),
                        name=name)
        run = RunDir.create(tmp_path, cfg, name)
        fit(cfg, data=data, run=run)
        ids.append(run.id)
    page = build_report(tmp_path, ids, experiments={"lesion": {"baseline_acc": 0.5}})
    assert page.startswith("<!doctype html>") and "</html>" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("Plotly.newPlot") >= 2 and "plotly.js" in page.lower()  # embedded, no CDN needed
    assert not re.search(r"<script[^>]*\bsrc=", page)  # no script loaded from anywhere else
    assert '"seed": 7' in page and "ResNet(A)-8" in page and "plain-8" in page
    assert "baseline_acc" in page and "torch" in page
    with pytest.raises(RunError):
        build_report(tmp_path, ["../etc"])
    with pytest.raises(ValueError):
        build_report(tmp_path, [])
