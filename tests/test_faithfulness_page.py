"""The Explain page's faithfulness: a score under each map, and every method compared in a
background task (AppTest on the synthetic data set, as tests/test_pages.py)."""

from __future__ import annotations

import pytest
from test_pages import _untrained, _wait, isolated, page  # noqa: F401  (isolated: autouse fixture)

from resnet_viz.app.state import Keys
from resnet_viz.config import ModelConfig
from resnet_viz.experiments.attribution import METHODS  # the CAM family included


def _explain_untrained_resnet8():
    p = page("explain")
    p.at.session_state[Keys.BUILD_CONFIG] = ModelConfig(depth=8)
    at = _untrained(p.run())
    assert not at.exception, at.exception
    return at


def test_explain_shows_a_score_under_each_map() -> None:
    at = _explain_untrained_resnet8()
    scores = [c.value for c in at.caption if c.value.startswith("Faithfulness on this image")]
    assert scores and "deletion AUC" in scores[0] and "a random map scores" in scores[0], scores
    assert any(b.label.startswith("Score every method") for b in at.button)


@pytest.mark.slow
def test_explain_compares_every_method_in_the_background() -> None:
    at = _explain_untrained_resnet8()
    next(s for s in at.select_slider if s.label.startswith("Test images")).set_value(5).run()
    start = next(b for b in at.button if b.label.startswith("Score every method"))
    assert any("on this machine" in c.value for c in at.caption)  # the time estimate under the button
    start.click().run()
    _wait(at, lambda a: not any(b.label == "Stop" for b in a.button), timeout=600)
    assert not at.exception, at.exception
    assert not any("failed" in e.value for e in at.error), [e.value for e in at.error]
    figs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("How faithful is each map?" in f for f in figs)
    assert any("Class probability as pixels are removed" in f for f in figs)
    table = at.dataframe[0].value
    assert len(table) == len(METHODS) + 1 and list(table["method"])[-1] == "random map", table
    # The reading goes through widgets.literal, which escapes Markdown (its parentheses and = too).
    assert any("Deletion AUC" in i.value and "more faithful" in i.value for i in at.info), [i.value for i in at.info]
