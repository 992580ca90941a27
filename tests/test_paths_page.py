"""The Experiments page's "Effective paths" tab, through AppTest on the synthetic data set."""

from __future__ import annotations

from test_pages import _untrained, _wait, isolated, page  # noqa: F401 - isolated: the pages' autouse fixture

from resnet_viz.app.state import Keys
from resnet_viz.config import ModelConfig


def test_effective_paths_tab_runs_in_the_background_and_draws_the_figure() -> None:
    p = page("experiments")
    p.at.session_state[Keys.BUILD_CONFIG] = ModelConfig(depth=8)  # 3 blocks: 8 paths, quick
    at = _untrained(p.run())
    at.select_slider(key="paths_n").set_value(16).run()
    at.select_slider(key="paths_samples").set_value(2).run()
    button = next(b for b in at.button if b.label.startswith("Effective paths"))
    assert any("paths" in c.value.lower() for c in at.markdown)
    button.click().run()
    _wait(at, lambda a: not any(b.label == "Stop" for b in a.button), timeout=120)
    assert not at.exception, at.exception
    assert not any("failed" in e.value for e in at.error), [e.value for e in at.error]
    assert any("3 blocks make 2^3 = 8 paths" in i.value for i in at.info), [i.value for i in at.info]
    fig = next(c.proto.spec for c in at.get("plotly_chart") if "Effective paths" in c.proto.spec)
    assert "Gradient magnitude of one path" in fig and "90% in" in fig


def test_a_plain_net_is_one_path_and_gets_no_button() -> None:
    p = page("experiments")
    p.at.session_state[Keys.BUILD_CONFIG] = ModelConfig(depth=8, shortcut="none")
    at = _untrained(p.run())
    assert not at.exception, at.exception
    assert any("plain net" in i.value and "single path" in i.value for i in at.info), [i.value for i in at.info]
    assert not any(b.label.startswith("Effective paths") for b in at.button)
