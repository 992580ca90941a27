"""The CAM family on the Explain and ImageNet pages (AppTest, synthetic data set)."""

from __future__ import annotations

import pytest
from test_pages import _png_bytes, _wait, isolated, page  # noqa: F401 - isolated: test_pages' autouse fixture

from resnet_viz.experiments.attribution import METHODS
from resnet_viz.experiments.attribution.cams import CAMS


def test_explain_shows_a_block_menu_for_every_cam() -> None:
    at = page("explain").run()
    method = next(s for s in at.selectbox if s.label == "Method")
    assert {m.label for m in CAMS.values()} <= set(method.options)  # the menu shows labels
    method.set_value("saliency").run()
    assert not any(s.label.endswith(" at block") for s in at.selectbox)  # not for a pixel method
    for name in ("gradcam", *CAMS):
        next(s for s in at.selectbox if s.label == "Method").set_value(name).run()
        assert not at.exception, (name, at.exception)
        menu = next(s for s in at.selectbox if s.label == f"{METHODS[name].label} at block")
        menu.set_value("stage1.block0").run()
        assert not at.exception, (name, at.exception)
        assert at.get("plotly_chart"), f"{name} drew no figure"
        assert any(METHODS[name].help in c.value for c in at.caption)


def test_imagenet_page_draws_a_cam_at_a_chosen_block() -> None:
    at = page("imagenet").run()
    next(s for s in at.selectbox if s.label == "Method").set_value("layercam").run()
    next(s for s in at.selectbox if s.label == "Layer-CAM at block").set_value("layer2.0").run()
    at.file_uploader[0].set_value([("photo.png", _png_bytes(), "image/png")]).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2  # the map and the top 5


@pytest.mark.slow
def test_imagenet_scorecam_runs_as_a_task_with_stop() -> None:
    at = page("imagenet").run()
    next(s for s in at.selectbox if s.label == "Method").set_value("scorecam").run()
    next(s for s in at.selectbox if s.label == "Score-CAM at block").set_value("layer1.0").run()  # 64 channels
    at.file_uploader[0].set_value([("photo.png", _png_bytes(), "image/png")]).run()
    assert not at.exception, at.exception
    assert not at.get("plotly_chart")  # nothing computed before the click
    next(b for b in at.button if b.label.startswith("Score-CAM of photo.png at layer1.0")).click().run()
    _wait(at, lambda a: not any(b.label == "Stop" for b in a.button) and len(a.get("plotly_chart")) == 2,
          timeout=240)
    assert not at.exception, at.exception
