"""The small library functions the pages lean on: the learning-rate rule, task keys, and
how user text is shown (literally) and keyed (never by its name alone)."""

from __future__ import annotations

import re

import markdown
import pytest
import torch

from resnet_viz.app import widgets
from resnet_viz.background.tasks import content_tag, model_tag, task_key
from resnet_viz.config import BASE_BATCH, ModelConfig, TrainConfig, base_lr, scaled_lr
from resnet_viz.store.models import ModelRef

HOSTILE = '[x](http://e) ![](http://e/p.png) <a href="http://e">y</a> :red[z] www.e.org'


def links_or_images(md: str) -> list[str]:
    """What Markdown turns into a link or an image in ``md``: Python-Markdown's reading, plus
    the bare URLs that GitHub-flavoured Markdown (Streamlit's) links by itself."""
    rendered = markdown.markdown(md)
    return re.findall(r"<(?:a|img)\b[^>]*>", rendered) + re.findall(r"https?://|\bwww\.", md)


def test_learning_rate_scales_linearly_with_the_batch() -> None:
    assert BASE_BATCH == 128
    assert scaled_lr(0.2, 128) == pytest.approx(0.2)
    assert scaled_lr(0.2, 32) == pytest.approx(0.05)
    assert scaled_lr(0.1, 512) == pytest.approx(0.4)
    default = TrainConfig()
    assert base_lr(default) == pytest.approx(default.lr * 128 / default.batch_size)
    for batch in (32, 64, 256):
        cfg = TrainConfig(batch_size=batch, lr=scaled_lr(0.3, batch))
        assert base_lr(cfg) == pytest.approx(0.3)
    for bad in (0, -32, 1.5):
        with pytest.raises(ValueError, match="batch size"):
            scaled_lr(0.2, bad)


def test_literal_shows_markdown_as_typed() -> None:
    assert links_or_images("[x](http://e) ![](http://e/p.png)")  # the check sees what it should
    shown = widgets.literal(HOSTILE)
    assert not links_or_images(shown), shown
    assert not links_or_images(f"**{shown}**") and not links_or_images(f"Lesion study: {shown}")
    # Streamlit's directives and LaTeX need the bare character: each one is escaped.
    assert not re.search(r"(?<!\\)[:\[$]", shown + widgets.literal("costs $5 and $6"))
    # What the user sees once the escapes are read is what they typed.
    assert re.sub(r"\\(.)", r"\1", shown) == HOSTILE
    assert widgets.literal("good.png") == "good.png" and widgets.literal("ResNet-20") == "ResNet-20"
    for start in ("- a list", "+ a list", "1. a list", "# a heading", "> a quote"):
        assert re.sub(r"\\(.)", r"\1", widgets.literal(start)) == start
        assert not re.match(r"\s*(?:[-+#>]|\d+\.)\s", widgets.literal(start)), widgets.literal(start)
    assert widgets.literal("two\nlines") == "two lines"


def test_plot_text_keeps_plotly_from_reading_html() -> None:
    assert widgets.plot_text('<a href="http://e">y</a> & <b>') == '&lt;a href="http://e"&gt;y&lt;/a&gt; &amp; &lt;b&gt;'
    assert widgets.plot_labels([{"label": "<b>x</b>", "acc": 1}, {"acc": 2}]) == [
        {"label": "&lt;b&gt;x&lt;/b&gt;", "acc": 1}, {"acc": 2}]


def test_items_with_one_name_get_different_keys() -> None:
    keys = {widgets.item_key("overlay", i, "run-1") for i in range(3)}
    assert len(keys) == 3
    assert widgets.item_key("top", 0) != widgets.item_key("top", 1)


def test_task_keys_name_what_is_computed() -> None:
    assert task_key("lesion", "run-1", 500) == "lesion|run-1|500"
    assert task_key("signal", "20,56") == "signal|20,56"
    assert task_key("slice", "t", 1000, 11, 0) != task_key("slice", "t", 1000, 11, 1)
    with pytest.raises(ValueError, match="experiment"):
        task_key("", "x")
    with pytest.raises(ValueError, match="experiment"):
        task_key("a|b", "x")
    run = ModelRef("run", "run-1", "ResNet(A)-20 · mine")
    untrained = ModelRef("untrained", "untrained", "Untrained")
    cfg = ModelConfig(depth=20)
    assert model_tag(run, cfg) == "run-1"
    assert model_tag(untrained, cfg) == f"untrained {cfg}" != model_tag(untrained, ModelConfig(depth=32))


def test_content_tag_tells_images_apart_by_their_pixels() -> None:
    a = torch.zeros(3, 32, 32, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0] = 1
    assert content_tag(a) == content_tag(a.clone()) != content_tag(b)
