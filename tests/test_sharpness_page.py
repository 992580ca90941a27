"""The Experiments page's Sharpness tab through AppTest (synthetic data, an untrained ResNet-8)."""

from __future__ import annotations

import json

from test_pages import _untrained, _wait, isolated, page  # noqa: F401 - isolated: each test's own folders

from resnet_viz.app.sharpness import reading
from resnet_viz.app.state import Keys
from resnet_viz.config import ModelConfig


def test_sharpness_tab_runs_and_reads_the_numbers() -> None:
    p = page("experiments")
    p.at.session_state[Keys.BUILD_CONFIG] = ModelConfig(depth=8)
    at = _untrained(p.run())
    assert not at.exception, at.exception
    at.select_slider(key="sharp_n").set_value(32)
    at.select_slider(key="sharp_top").set_value(2)
    at.select_slider(key="sharp_iter").set_value(10)
    at.select_slider(key="sharp_trace").set_value(10).run()
    button = next(b for b in at.button if b.label.startswith("Sharpness:"))
    assert any("on this machine" in c.value for c in at.caption), [c.value for c in at.caption]  # the estimate
    button.click().run()
    _wait(at, lambda a: not any(b.label == "Stop" for b in a.button), timeout=120)
    assert not at.exception, at.exception
    assert not any("failed" in e.value for e in at.error), [e.value for e in at.error]
    fig = json.loads(next(c.proto.spec for c in at.get("plotly_chart")
                          if "Sharpness of the training loss" in c.proto.spec))
    assert fig["data"][0]["x"] == ["λ1", "λ2"] and len(fig["data"][0]["y"]) == 2
    assert "loss on 32 training images" in fig["layout"]["title"]["subtitle"]["text"]
    assert any("top eigenvalue" in i.value for i in at.info), [i.value for i in at.info]


def test_reading_compares_two_models() -> None:
    a = {"label": "plain-20", "eigenvalues": [40.0, 20.0], "converged": [True, True], "trace": 300.0, "trace_se": 9.0}
    b = {"label": "ResNet(A)-20", "eigenvalues": [10.0, 5.0], "converged": [True, False], "trace": 90.0,
         "trace_se": 4.0}
    text = reading([a, b])
    assert "plain-20 curves 4x as steeply" in text and "2/λ" in text
    assert "did not converge" in text
    assert "did not converge" not in reading([a]) and reading([]) == ""
