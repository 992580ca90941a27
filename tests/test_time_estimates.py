"""The pages say how long work takes on this machine before it starts (AppTest)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from conftest import fake_speed
from streamlit.testing.v1 import AppTest

from resnet_viz.app.state import Keys
from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.experiments import degradation, estimates
from resnet_viz.training import speed

ROOT = Path(__file__).resolve().parents[1]
DATA = DataConfig(source="synthetic", synthetic_train=640, synthetic_test=160)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path / "runs"))
    import streamlit as st

    from resnet_viz.background.jobs import JobRegistry
    from resnet_viz.background.tasks import TaskRegistry

    st.cache_resource.clear()
    TaskRegistry.reset_shared()
    yield
    with contextlib.suppress(Exception):
        JobRegistry.reset_shared()
    TaskRegistry.reset_shared()
    st.cache_resource.clear()


def run(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state[Keys.DATA_CONFIG] = DATA
    return at.switch_page(f"app_pages/{page}.py").run()


def estimates_shown(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if "on this machine" in c.value]


def synthetic_data():
    return make_synthetic(DATA.synthetic_train, DATA.synthetic_test, DATA.seed)


def test_train_says_how_long_the_run_in_the_form_takes_and_follows_the_budget() -> None:
    at = run("train")
    assert not at.exception, at.exception
    measured, data = speed.cached(), DataConfig(source="synthetic")  # the Train page's choice "synthetic"
    assert measured is not None
    sizes = (data.synthetic_train, data.synthetic_test)
    default = TrainConfig.recipe("quick")
    epochs = min(14, speed.epochs_for(speed.BRIEF_SECONDS, RunConfig(train=default), *sizes, measured))
    assert at.number_input(key="tr_budget").value == epochs  # a brief run of about 5 minutes here

    def expected(n: int) -> str:
        cfg = RunConfig(train=TrainConfig.recipe("quick", epochs=float(n)))
        return speed.about(speed.training_seconds(cfg, *sizes, measured)).capitalize()

    assert [e for e in estimates_shown(at) if expected(epochs) in e], estimates_shown(at)
    at.number_input(key="tr_budget").set_value(400).run()
    assert [e for e in estimates_shown(at) if expected(400) in e], estimates_shown(at)
    assert expected(400) != expected(epochs)


def test_without_figures_the_page_measures_this_machine_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_viz.app.resources import SPEED_TASK
    from resnet_viz.background.tasks import TaskRegistry

    monkeypatch.setenv("RESNET_VIZ_SPEED_FILE", str(tmp_path / "none-yet.json"))
    at = run("train")
    assert not at.exception, at.exception
    assert any("Measuring this machine's speed" in c.value for c in at.caption)
    task = TaskRegistry.shared().get(SPEED_TASK)
    assert task is not None  # started once, for every page and visitor
    at.run()
    assert TaskRegistry.shared().get(SPEED_TASK) is task


def test_compare_offers_a_quick_replay_sized_to_this_machine_beside_the_full_one() -> None:
    at = run("compare")
    assert not at.exception, at.exception
    measured, data = speed.cached(), synthetic_data()
    base = RunConfig(model=ModelConfig(num_classes=10), data=DATA, train=degradation.default_train_config())
    quick = estimates.quick_steps(base, *speed.data_sizes(data), measured)
    labels = [b.label for b in at.button]
    assert f"Quick replay ({quick:,} steps per net)" in labels and "Full replay (1,000 steps per net)" in labels
    shown = estimates_shown(at)
    for train in (estimates.quick_config(quick), degradation.default_train_config()):
        words = speed.about(estimates.replay_seconds(base, *speed.data_sizes(data), measured, train))
        assert [e for e in shown if words.capitalize() in e], (words, shown)


def test_every_experiment_button_says_how_long_it_takes() -> None:
    at = run("experiments")
    assert not at.exception, at.exception
    runs = [b for b in at.button if b.label in ("Measure signal propagation", "Measure shattered gradients")]
    assert len(runs) == 2
    measured = speed.cached()
    words = speed.about(estimates.signal_seconds([20, 56, 110], measured)).capitalize()
    assert [e for e in estimates_shown(at) if words in e], estimates_shown(at)
    assert len(estimates_shown(at)) >= 3  # signal, shattered, sanity check (the shipped model on a test image)


def test_fake_figures_are_this_machines() -> None:
    """The session's figures are keyed like a measurement here, so pages find them."""
    assert speed.cached() == fake_speed() or speed.cached() is not None


def test_a_server_measures_again_once_and_keeps_the_fastest_figures(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures from before this server started are used at once and measured again, once: a
    first measurement slowed by other work is made good by a later one."""
    import time

    from resnet_viz.app import resources
    from resnet_viz.background.tasks import TaskRegistry

    file = tmp_path / "speed.json"
    monkeypatch.setenv("RESNET_VIZ_SPEED_FILE", str(file))
    old = speed.save(replace_time(fake_speed(train=(50.0, 20.0)), time.time() - 3600), file)
    assert speed.cached() == old
    at = run("train")
    assert not at.exception, at.exception
    assert [e for e in estimates_shown(at) if "ResNet-20 trains at 50 images/s" in e]  # the old figures, at once
    task = TaskRegistry.shared().get(resources.SPEED_TASK)
    assert task is not None
    at.run()
    assert TaskRegistry.shared().get(resources.SPEED_TASK) is task  # once per server
    slower = speed.save(fake_speed(train=(10.0, 900.0)), file)
    assert slower.train_ips == (50.0, 900.0)  # each figure the fastest seen


def replace_time(s: speed.Speed, when: float) -> speed.Speed:
    from dataclasses import replace

    return replace(s, measured_at=when)


def test_every_attribution_method_has_a_faithfulness_price() -> None:
    """A method added to METHODS (the CAM family came later) must be priced, not guessed at a default."""
    from resnet_viz.experiments import estimates
    from resnet_viz.experiments.attribution import METHODS

    assert set(METHODS) <= set(estimates._FAITH_MAP_PASSES), set(METHODS) - set(estimates._FAITH_MAP_PASSES)
    speed = fake_speed()
    cfg = ModelConfig()
    one = estimates.faithfulness_seconds(cfg, 1, ["saliency"], speed)
    assert estimates.faithfulness_seconds(cfg, 1, ["scorecam"], speed) > 1.2 * one  # 65 masked images more

