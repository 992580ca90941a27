"""The Experiments page's "Training path" section (app/trainpath.py) through AppTest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_pages import _wait, isolated, page  # noqa: F401 - isolated: the runs folder and registries per test

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.loop import fit


def test_the_section_says_how_to_get_snapshots_without_a_run() -> None:
    at = page("experiments").run()
    assert not at.exception, at.exception
    assert any("weight snapshots yet" in i.value for i in at.info), [i.value for i in at.info]


@pytest.mark.slow  # a run, a page and a task: about a minute on 2 busy cores
def test_a_runs_path_is_computed_in_the_background_and_drawn() -> None:
    # The page's data set: synthetic, 640 training images (test_pages.Page).
    cfg = RunConfig(model=ModelConfig(depth=8), data=DataConfig(source="synthetic", synthetic_train=640,
                                                                synthetic_test=160),
                    train=TrainConfig(steps=12, epochs=None, batch_size=32, probe_every=0, eval_every=1000,
                                      threads=1, snapshot_every=3))
    run = RunDir.create(Path(os.environ["RESNET_VIZ_RUNS"]), cfg, "pathy")
    fit(cfg, data=make_synthetic(640, 160, seed=0), run=run)
    at = page("experiments").run()
    assert not at.exception, at.exception
    assert "pathy" in at.selectbox(key="tp_run").value.label
    at.select_slider(key="land_n").set_value(500).run()
    at.select_slider(key="tp_steps").set_value(7).run()
    start = next(b for b in at.button if b.label.startswith("Training path"))
    assert "5 snapshots" in start.label
    start.click().run()
    _wait(at, lambda a: not any(b.label == "Stop" for b in a.button), timeout=120)
    assert not at.exception, at.exception
    assert not any("failed" in e.value for e in at.error), [e.value for e in at.error]
    fig = next(c.proto.spec for c in at.get("plotly_chart") if "The path training took" in c.proto.spec)
    assert "principal direction" in fig
    assert any("of the path's variance" in i.value for i in at.info), [i.value for i in at.info]
