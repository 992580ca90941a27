"""The Inspect page's "Watch it learn" view (AppTest), on two tiny synthetic runs."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_pages import isolated, page  # noqa: F401  (isolated: each test its own runs folder)

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.plots.watch import histogram_history, histogram_overlay, watch_maps
from resnet_viz.store import watchfile
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.loop import fit


def _train(shortcut: str, name: str) -> RunDir:
    data = make_synthetic(640, 160, seed=0)  # the pages' data set: the same first test image
    cfg = RunConfig(model=ModelConfig(depth=8, shortcut=shortcut), data=DataConfig(source="synthetic"),
                    train=TrainConfig(steps=6, epochs=None, batch_size=16, lr=0.05, watch_every=2, eval_every=1000,
                                      precision="fp32"))
    run = RunDir.create(Path(os.environ["RESNET_VIZ_RUNS"]), cfg, name)
    fit(cfg, data=data, run=run)
    return run


def _values(y) -> np.ndarray:
    """A trace's numbers: plotly's JSON sends arrays as base64 (``bdata``)."""
    return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]) if isinstance(y, dict) else np.array(y)


def _figures(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_inspect_plays_a_run_back_and_overlays_another_runs_histograms() -> None:
    plain, res = _train("none", "plain-w"), _train("A", "res-w")
    at = page("inspect").run()
    assert not at.exception, at.exception
    assert any(h.value == "Watch it learn" for h in at.subheader)
    slider = next(s for s in at.select_slider if s.label == "Step")
    assert list(slider.options) == ["0", "2", "4", "5"] and slider.value == 5
    slider.set_value(2).run()
    assert not at.exception, at.exception
    titles = [f["layout"]["title"]["text"] for f in _figures(at)]
    assert any(t.endswith(": step 2") for t in titles), titles
    hist = next(f for f in _figures(at) if " at step 2" in f["layout"]["title"]["text"])
    names = {tr["name"] for tr in hist["data"]}
    assert len(names) == 2 and all("(step 2)" in n for n in names), names  # both runs, at the same step
    assert {"plain-8 (step 2)", "ResNet(A)-8 (step 2)"} == names
    assert all(abs(_values(tr["y"]).sum() - 1) < 1e-6 for tr in hist["data"])  # shares of each group's parameters
    assert plain.id != res.id


def test_inspect_says_when_no_run_has_frames() -> None:
    at = page("inspect").run()
    assert not at.exception, at.exception
    assert any("No run has recorded frames yet" in i.value for i in at.info)


def test_the_figures_check_their_input_and_handle_empty_input() -> None:
    e = watchfile.EDGES
    assert "No histograms" in json.dumps(histogram_overlay([], e).to_dict())
    assert "No frames" in json.dumps(watch_maps([]).to_dict())
    with pytest.raises(ValueError, match="edges"):
        histogram_overlay([("a", np.ones(10), None)], e)
    with pytest.raises(ValueError, match="one row per step"):
        histogram_history([0, 1], np.ones((3, 55)), e)
    with pytest.raises(ValueError, match="one per channel"):
        watch_maps([("stage1.block0", [-1, 3], np.zeros((3, 4, 4)))])
    fig = histogram_history([0, 5], np.array([[0] * 27 + [3] + [0] * 27, [0] * 26 + [1, 1, 1] + [0] * 26]), e)
    assert fig.data[0].z.shape == (3, 2)  # only the bins in use: 26..28


def test_the_train_pages_live_maps_show_the_latest_frame() -> None:
    """What the Train page's live fragment draws for a running run (here a finished one: the same files)."""
    from streamlit.testing.v1 import AppTest

    run = _train("A", "live-w")

    # from_string, not from_function with args: the latter leaves a script calling
    # ``script(*__args)`` as the process's __main__, which every later worker process re-runs
    # on start (multiprocessing's main-module fixup) and fails on (test_workers, after this).
    script = ("from pathlib import Path\nfrom resnet_viz.app import watch\n"
              f"watch.live_maps(Path({str(run.path)!r}), 'ResNet(A)-8')\n")
    at = AppTest.from_string(script, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.expander[0].label == "Watch it learn: step 5"
    assert any(f["layout"]["title"]["text"] == "ResNet(A)-8 at step 5" for f in _figures(at))
