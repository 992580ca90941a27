"""Pages cache their model work by content (``resnet_viz.app.compute``).

A rerun with unchanged inputs does no model work; another input (even one uploaded under
the same file name), block or method does; a second session asking the same thing, under
any file name, gets the first one's result. Model work is counted by wrapping the library's
entry points, which the pages reach through their module.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from resnet_viz.app.state import Keys
from resnet_viz.config import DataConfig, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
WORK = ("feature_maps", "block_norms", "predict", "attribute")
FIGURES = ("feature_map_grid", "depth_profile", "attribution_overlay", "top_k_bar", "architecture_diagram",
           "block_detail", "conv_figure")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    import streamlit as st

    from resnet_viz.background.jobs import JobRegistry

    st.cache_resource.clear()
    st.cache_data.clear()  # every test starts with nothing computed
    yield
    with contextlib.suppress(Exception):  # cleanup only
        JobRegistry.reset_shared()
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture()
def work(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Calls of the library's model work, of model building and (as "figure") of the figure
    builders the pages use, from now on, by name."""
    from resnet_viz import plots
    from resnet_viz.app import resources
    from resnet_viz.experiments import attribution, convolution
    from resnet_viz.nets import summary

    counts: Counter = Counter()

    def count(module: object, name: str, as_name: str = "") -> None:
        real = getattr(module, name)

        @functools.wraps(real)
        def wrapper(*args, **kwargs):
            counts[as_name or name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for name in WORK:
        count(attribution, name)
    count(resources, "build_model")  # a model rebuilt from cached weights costs too
    count(resources, "model_with_weights", "build_model")  # (Weights.model builds through this)
    count(summary, "summarize")
    from resnet_viz.data import uploads

    count(uploads, "open_upload", "decode")  # a 12-megapixel photo takes about 0.3 s to decode
    for name in ("output_size", "convolution_by_hand"):
        count(convolution, name)
    for name in FIGURES:  # Plotly takes 15-250 ms to build one
        count(plots, name, "figure")
    return counts


def session(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[Keys.DATA_CONFIG] = DataConfig(source="synthetic", synthetic_train=640, synthetic_test=160)
    at.switch_page(f"app_pages/{name}.py").run()
    assert not at.exception, at.exception
    return at


def rerun(at: AppTest, work: Counter, label: str = "", value: object = None) -> Counter:
    """The model work of one more run of ``at``, after setting its widget labelled ``label``
    (looked up in the latest run: a widget from an earlier one no longer sets anything)."""
    work.clear()
    if label:
        widget = next(w for kind in ("selectbox", "select_slider", "slider", "number_input", "toggle",
                                     "file_uploader") for w in at.get(kind) if w.label.startswith(label))
        widget.set_value(value)
    at.run()
    assert not at.exception, at.exception
    return +work  # without zero counts


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="PNG")
    return buf.getvalue()


def test_a_repeat_run_of_inspect_does_no_model_work(work: Counter) -> None:
    at = session("inspect")
    assert work["feature_maps"] == 1 and work["block_norms"] == 2, work  # two models
    assert rerun(at, work) == Counter()
    assert rerun(at, work, "Shared colour scale", False) == Counter(figure=1)  # the same maps, drawn anew
    # Another block: its feature maps only (the norms cover every block already).
    assert rerun(at, work, "Block", "stage2.block0") == Counter(feature_maps=1, build_model=1, figure=1)
    # Another image: everything for it.
    assert rerun(at, work, "Index", 1) == Counter(feature_maps=1, block_norms=2, build_model=3, figure=3)
    assert rerun(at, work, "Index", 0) == Counter()  # image 0 at stage2.block0: computed above


def test_a_repeat_run_of_explain_does_no_model_work(work: Counter) -> None:
    at = session("explain")
    assert work["attribute"] == 2, work
    assert rerun(at, work) == Counter()
    first = next(s for s in at.selectbox if s.label == "Method").value
    # Another method: new maps for both models; their top-5 bars show the same numbers, so the
    # figures already built serve.
    another = Counter(predict=2, attribute=2, build_model=2, figure=2)
    assert rerun(at, work, "Method", "integrated_gradients") == another
    assert rerun(at, work, "Method", first) == Counter()  # back to the first method: still cached
    assert rerun(at, work, "Method", "gradcam") == another
    assert rerun(at, work, "Grad-CAM at block", "stage1.block0") == another


def test_an_upload_is_known_by_its_pixels_not_its_name(work: Counter) -> None:
    at = session("explain")
    next(r for r in at.radio if r.label == "Input").set_value("Upload").run()
    assert rerun(at, work, "Images", [("same.png", _png((200, 30, 30)), "image/png")])["attribute"] == 2
    assert rerun(at, work) == Counter()
    # The same name with other pixels is another image.
    assert rerun(at, work, "Images", [("same.png", _png((30, 30, 200)), "image/png")])["attribute"] == 2
    # Another name, pixels seen before: nothing to compute.
    assert rerun(at, work, "Images", [("other.png", _png((200, 30, 30)), "image/png")]) == Counter()
    assert [m.value for m in at.markdown].count("**other.png**") == 1


def test_two_sessions_asking_the_same_thing_compute_it_once(work: Counter) -> None:
    first = session("inspect")
    assert work["block_norms"] == 2, work
    work.clear()
    second = session("inspect")
    assert +work == Counter() and second.get("plotly_chart")
    # Explain, with the same pixels uploaded under two names.
    red = _png((200, 30, 30))
    ats = [session("explain"), session("explain")]
    for at, name in zip(ats, ("mine.png", "yours.png"), strict=True):
        next(r for r in at.radio if r.label == "Input").set_value("Upload").run()
        work.clear()
        at.file_uploader[0].set_value([(name, red, "image/png")]).run()
        assert not at.exception, at.exception
        assert work["attribute"] == (2 if name == "mine.png" else 0), (name, work)
    assert first.get("plotly_chart")


def test_build_measures_each_network_once(work: Counter) -> None:
    at = session("build")
    assert work["summarize"] == 1, work
    assert rerun(at, work) == Counter()
    # (A plain run after each move: the slider's default follows the build, which gives it a new
    # widget id in the run after a move, and AppTest would set the one it no longer draws.)
    new = Counter(summarize=1, figure=1)
    for n, layers, done in ((9, "56", new), (5, "32", new), (9, "56", Counter())):
        assert rerun(at, work, "Blocks per stage", n) == done
        assert rerun(at, work) == Counter() and at.metric[0].value == layers


def test_convolution_by_hand_is_worked_once_per_position(work: Counter) -> None:
    at = session("experiments")
    assert work["convolution_by_hand"] == 1 and work["output_size"] == 1, work
    # (The convolution tab still builds its model on every run, to list its layers: not counted here.)
    assert {k: v for k, v in rerun(at, work).items() if k != "build_model"} == {}
    done = rerun(at, work, "Row", 3)
    assert done["convolution_by_hand"] == 1 and done["output_size"] == 0 and done["figure"] == 1, done
    assert any("the same number" in s.value for s in at.success), [s.value for s in at.success]


def test_the_imagenet_page_explains_an_upload_once(work: Counter) -> None:
    at = session("imagenet")
    assert rerun(at, work, "Photos", [("photo.png", _png((200, 30, 30)), "image/png")])["attribute"] == 1
    assert rerun(at, work) == Counter()
    assert len(at.get("plotly_chart")) == 2


def test_a_fingerprint_is_of_the_values_and_the_architecture() -> None:
    from resnet_viz.store.models import tensors_fingerprint

    state = {"w": torch.ones(2, 3), "n": torch.tensor(7), "h": torch.zeros(4, dtype=torch.bfloat16)}
    plain, a = repr(ModelConfig(shortcut="none")), repr(ModelConfig(shortcut="A"))
    fp = tensors_fingerprint(state, a)
    assert fp == tensors_fingerprint({k: v.clone() for k, v in reversed(state.items())}, a)  # a copy, any order
    assert fp != tensors_fingerprint(state, plain)  # the same parameters fill a plain net
    assert fp != tensors_fingerprint({**state, "w": torch.ones(3, 2)}, a)  # the same values, another shape
    changed = state["w"].clone()
    changed[1, 2] = 1.0001
    assert fp != tensors_fingerprint({**state, "w": changed}, a)


def test_a_chart_is_built_once_per_content_of_its_arguments() -> None:
    import numpy as np

    from resnet_viz.app import compute

    built = []

    def builder(a, title=""):
        built.append(title)
        return object()  # stands for a figure

    big = np.zeros(600_000, dtype=np.float32)  # over the size Streamlit's own hash samples
    other = big.copy()
    other[123_457] = 1.0
    first = compute.chart(builder, big, title="t")
    assert compute.chart(builder, big.copy(), title="t") is first  # equal content: the figure already built
    assert compute.chart(builder, other, title="t") is not first  # one value differs
    assert compute.chart(builder, big, title="u") is not first
    assert built == ["t", "t", "u"]


def test_two_sessions_asking_at_once_wait_for_one_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from resnet_viz.app import compute
    from resnet_viz.app.resources import Weights
    from resnet_viz.experiments import attribution
    from resnet_viz.nets.cifar import build_model
    from resnet_viz.store.models import tensors_fingerprint

    cfg = ModelConfig(depth=8)
    state = build_model(cfg, generator=torch.Generator().manual_seed(0)).state_dict()
    w = Weights(state, cfg, tuple(f"class {i}" for i in range(10)), tensors_fingerprint(state, repr(cfg)))
    x = torch.zeros(1, 3, 32, 32)
    real, models = attribution.block_norms, []

    def slow(model, image):
        models.append(model)
        time.sleep(0.5)  # long enough for the second request to arrive while this one works
        return real(model, image)

    monkeypatch.setattr(attribution, "block_norms", slow)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(compute.block_norms(w, x.clone()))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2 and results[0] == results[1]
    assert len(models) == 1  # computed once, on a module of its own
    assert compute.block_norms(w, x)["stage1.block0"] == results[0]["stage1.block0"] and len(models) == 1
