"""A run that learned nothing says so, with what to change: in the listing, on the Train page
(finished and live) and from the CLI. A plain-20 at learning rate 10 once "finished" at chance
(10% test accuracy) without a word."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from resnet_viz.app.state import Keys
from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.store.listing import list_runs, no_learning, no_learning_so_far
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.loop import fit

ROOT = Path(__file__).resolve().parents[1]


def test_chance_accuracy_or_a_loss_that_never_fell_is_learning_nothing() -> None:
    assert no_learning(0.10, 2.31, 10) is not None and "learning rate" in no_learning(0.10, 2.31, 10)
    assert "chance for 10 classes" in no_learning(0.12, 1.2, 10)  # accuracy alone
    assert "never fell" in no_learning(None, 0.95 * math.log(10), 10)  # loss alone, when there is no accuracy
    assert no_learning(0.223, 2.29, 10) is None  # a short run at twice chance whose loss is still falling
    assert no_learning(0.86, 0.4, 10) is None and no_learning(None, None, 10) is None
    assert no_learning(0.6, 0.5, 2) is None and no_learning(0.5, 0.7, 2) is not None  # 2 classes: 50% is chance
    live = [{"kind": "step", "loss": 2.3}, {"kind": "eval", "test_acc": 0.1}]
    assert no_learning_so_far(live, 10).startswith("So far this run has learned nothing")
    assert no_learning_so_far(live[:1], 10) is None  # no evaluation yet: nothing to judge


def frozen_run(root: Path) -> RunDir:
    """A run whose learning rate moves nothing: it ends where it started, at chance."""
    cfg = RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic"),
                    train=TrainConfig(steps=10, epochs=None, batch_size=32, lr=1e-9, eval_every=0, log_every=5))
    run = RunDir.create(root, cfg, "frozen")
    assert fit(cfg, data=make_synthetic(640, 160, seed=0), run=run).status == "finished"
    return run


def test_the_listing_and_the_train_page_say_a_finished_run_learned_nothing(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlit as st

    from resnet_viz.background.jobs import JobRegistry

    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    run = frozen_run(tmp_path)
    assert "learned nothing" in list_runs(tmp_path)[0].learned_nothing
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state[Keys.DATA_CONFIG] = DataConfig(source="synthetic", synthetic_train=640, synthetic_test=160)
    at.session_state[Keys.WATCHED_RUN] = run.id
    try:
        at.switch_page("app_pages/train.py").run()
        assert not at.exception, at.exception
        assert any("This run learned nothing" in w.value and "learning rate" in w.value for w in at.warning)
        assert any("learned nothing" in o for o in next(s for s in at.selectbox if s.label == "Run").options)
    finally:
        JobRegistry.reset_shared()
        st.cache_resource.clear()


def test_the_cli_warns_when_a_run_learned_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "resnet_viz", "train", "--depth", "8", "--data", "synthetic",
                          "--steps", "10", "--batch-size", "32", "--lr", "1e-9", "--out", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["status"] == "finished"
    assert "warning: This run learned nothing" in out.stderr and "learning rate" in out.stderr
