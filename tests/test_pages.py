"""Every page through streamlit.testing.v1.AppTest, on the synthetic data set.

AppTest runs the real page scripts without a browser; ``run_every`` fragments do not
tick here, so the tests call ``at.run()`` again to poll (Streamlit's documented way).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import pytest
from conftest import wait_until
from PIL import Image
from streamlit.testing.v1 import AppTest

from resnet_viz.app.state import Keys
from resnet_viz.config import DataConfig

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["home", "build", "train", "compare", "inspect", "explain", "experiments", "imagenet"]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Each test gets its own runs folder, caches and registries (the registries are the
    # process's own, which st.cache_resource.clear() leaves alone: reset them here).
    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    import streamlit as st

    from resnet_viz.background.jobs import JobRegistry
    from resnet_viz.background.tasks import TaskRegistry

    st.cache_resource.clear()
    TaskRegistry.reset_shared()
    yield
    with contextlib.suppress(Exception):  # cleanup only
        JobRegistry.reset_shared()
    TaskRegistry.reset_shared()
    st.cache_resource.clear()


class Page:
    """The app with one page selected (pages use st.page_link, which needs st.navigation)."""

    def __init__(self, name: str) -> None:
        self.at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        self.at.session_state[Keys.DATA_CONFIG] = DataConfig(source="synthetic", synthetic_train=640,
                                                             synthetic_test=160)
        self.name = name

    def run(self) -> AppTest:
        return self.at.switch_page(f"app_pages/{self.name}.py").run()


def page(name: str) -> Page:
    return Page(name)


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_without_exception(name: str) -> None:
    at = page(name).run()
    assert not at.exception, at.exception
    assert at.title, f"{name} shows no title"


def test_app_entry_point_runs() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert any("Synthetic" in w.value or "CIFAR" in w.value for w in list(at.sidebar.warning) + list(at.sidebar.info))


def test_build_controls_change_the_summary() -> None:
    at = page("build").run()
    assert [m.value for m in at.metric][:2] == ["20", "269,722"]
    at.slider[0].set_value(9).run()
    assert [m.value for m in at.metric][:2] == ["56", "853,018"]
    shortcut = next(r for r in at.radio if r.label == "Shortcut")
    shortcut.set_value("C").run()
    assert at.metric[1].value == "900,858"
    assert at.session_state[Keys.BUILD_CONFIG].depth == 56


def test_build_sliders_keep_their_identity_when_moved() -> None:
    """A slider whose identity changes with its value is remounted in the browser after each
    step, which drops a key press arriving meanwhile (seen in the browser test)."""
    at = page("build").run()
    ids = [at.slider[0].id, at.select_slider[0].id]
    at.slider[0].set_value(4).run()
    at.select_slider[0].set_value(2).run()
    assert [m.value for m in at.metric][0] == "26"
    assert [at.slider[0].id, at.select_slider[0].id] == ids
    assert at.session_state[Keys.BUILD_CONFIG].width == 2


def test_build_imagenet_family_leaves_the_cifar_build_alone() -> None:
    at = page("build").run()
    at.slider[0].set_value(9).run()  # a CIFAR ResNet-56: what Train will use
    before = at.session_state[Keys.BUILD_CONFIG]
    family = at.segmented_control(key="build_family")
    family.set_value(next(o for o in family.options if o.startswith("ImageNet"))).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Build an ImageNet ResNet"
    for name, layers, params in (("resnet18", "18", "11.7M"), ("resnet34", "34", "21.8M"), ("resnet50", "50", "25.6M")):
        at.segmented_control(key="build_imagenet_net").set_value(name).run()
        assert not at.exception, (name, at.exception)
        assert [m.value for m in at.metric][:2] == [layers, params]
        figures = [c.proto.spec for c in at.get("plotly_chart")]
        assert len(figures) == 2 and f"ResNet-{layers}: {layers} layers" in figures[0]
        assert "Inside a block" in figures[1]
        assert at.session_state[Keys.BUILD_CONFIG] == before  # unchanged: Train still gets the CIFAR net
    # Back to CIFAR: the controls come back as they were left.
    family.set_value(family.options[0]).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Build a CIFAR ResNet"
    assert [m.value for m in at.metric][:2] == ["56", "853,018"] and at.slider[0].value == 9
    assert at.session_state[Keys.BUILD_CONFIG] == before


def test_explain_links_to_the_imagenet_page() -> None:
    at = page("explain").run()
    assert [link.proto.page for link in at.get("page_link")] == ["imagenet"]  # photos at 224 px live there


def _wait(at: AppTest, done, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        if done(at):
            return
        time.sleep(0.5)
    raise AssertionError("timed out waiting for the page")


@pytest.mark.slow
def test_train_starts_and_stops_a_tiny_run() -> None:
    at = page("train").run()
    at.radio[0].set_value("steps")
    at.number_input[0].set_value(100_000)
    next(s for s in at.selectbox if s.label == "Batch size").set_value(32)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    assert any("Started" in t.value for t in at.toast), [t.value for t in at.toast]
    run_id = at.session_state[Keys.WATCHED_RUN]
    # The page reran from the top, so the sidebar already names the run being watched.
    assert any(c.value.startswith("**Watching:**") for c in at.sidebar.caption), [c.value for c in at.sidebar.caption]
    from resnet_viz.app import resources

    job = resources.job_registry().get(run_id)
    deadline = time.monotonic() + 60
    while job.snapshot().step < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    at.run()
    stop = next(b for b in at.button if b.label == "Stop")
    stop.click().run()
    assert job.wait(30)
    assert job.snapshot().state == "stopped"
    at.run()
    assert not at.exception
    resume = next(b for b in at.button if b.label == "Resume training")
    resume.click().run()  # started in the click's callback: the same run already shows it training
    assert not at.exception, at.exception
    assert any("Resumed" in t.value for t in at.toast), [t.value for t in at.toast]
    again = resources.job_registry().get(run_id)
    assert again is not job and not again.snapshot().done
    again.stop()
    assert again.wait(60) and again.snapshot().state == "stopped"


def test_button_callbacks_start_tasks_and_keep_their_errors(threaded_tasks) -> None:
    """tasks.run_task starts its task in the click's callback, and widgets.clicked keeps a
    callback's ValueError for widgets.show_error: the page shows it instead of a traceback."""
    script = """
import streamlit as st
from resnet_viz.app import tasks, widgets

def fail():
    raise ValueError("that setting cannot work")

st.button("Break", on_click=widgets.clicked(fail))
widgets.show_error()
res = tasks.run_task("callback-test", "Run it", lambda p, s: 42)
st.write(f"result {res}")
"""
    at = AppTest.from_string(script, default_timeout=30).run()
    next(b for b in at.button if b.label == "Break").click().run()
    assert not at.exception and [e.value for e in at.error] == ["that setting cannot work"]
    at.run()
    assert not at.error  # shown once
    next(b for b in at.button if b.label == "Run it").click().run()
    from resnet_viz.app import resources

    task = resources.task_registry().get("callback-test")
    assert task is not None and task.wait(10)
    at.run()
    assert any(m.value == "result 42" for m in at.markdown), [m.value for m in at.markdown]


def _png_bytes(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="PNG")
    return buf.getvalue()


def test_inspect_and_explain_with_the_untrained_model() -> None:
    for name in ("inspect", "explain"):
        at = page(name).run()
        assert not at.exception, at.exception
        assert at.get("plotly_chart"), f"{name} drew no figure"


def test_explain_methods_all_render() -> None:
    at = page("explain").run()
    method = next(s for s in at.selectbox if s.label == "Method")
    for m in method.options:
        method.set_value(m).run()
        assert not at.exception, (m, at.exception)


def test_explain_handles_uploads_good_and_bad() -> None:
    at = page("explain").run()
    next(r for r in at.radio if r.label == "Input").set_value("Upload").run()
    uploader = at.file_uploader[0]
    uploader.set_value([("good.png", _png_bytes(), "image/png"),
                        ("fake.png", b"this is not an image at all", "image/png"),
                        ("half.png", _png_bytes((10, 200, 10))[:60], "image/png")]).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("fake.png" in e and "not a PNG, JPEG, WebP, GIF or BMP image" in e for e in errors), errors
    assert any("half.png" in e for e in errors), errors
    assert any(m.value == "**good.png**" for m in at.markdown)
    assert at.get("plotly_chart"), "the good image was not explained"


@pytest.mark.slow
def test_experiments_page_runs_tasks_in_the_background() -> None:
    at = page("experiments").run()
    assert not at.exception, at.exception
    model = next(s for s in at.selectbox if s.label == "Model")
    untrained = next(o for o in model.options if "Untrained" in o)
    model.set_value(untrained).run()
    # Signal at init for one small depth, then the lesion study of the untrained model.
    next(m for m in at.multiselect if m.label == "Depths").set_value([20]).run()
    next(b for b in at.button if b.label == "Measure signal propagation").click().run()
    lesion = next(b for b in at.button if b.label.startswith("Lesion study"))
    lesion.click().run()
    _wait(at, lambda a: not any(b.label == "Stop" for b in a.button), timeout=120)
    assert not at.exception, at.exception
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Signal propagation at initialization" in t for t in titles)
    assert any("Lesion study" in t and "stage1.block0" in t for t in titles), [e.value for e in at.error]
    # Convolution by hand on the default test image: the sum equals the layer's output.
    assert any("the same number" in s.value for s in at.success), [s.value for s in at.success]
    # The Report tab offers both finished experiments, named by what they computed.
    report = next(m for m in at.multiselect if m.label == "Experiments in the report")
    assert sorted(report.options) == ["Lesion study: Untrained ResNet(A)-20 (Build page) (160 test images of "
                                      "Synthetic shapes (not CIFAR-10))",
                                      "Signal propagation at initialization: depths 20"], report.options
    assert len(report.value) == 2


def test_imagenet_page_explains_an_upload_with_random_weights() -> None:
    at = page("imagenet").run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric][:2] == ["8", "11.7M"]  # ResNet-18
    at.file_uploader[0].set_value([("photo.png", _png_bytes(), "image/png")]).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2


def test_imagenet_page_offline_pretrained_gives_a_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from urllib.error import URLError

    import torch.hub

    def offline(*a, **k):
        raise URLError("no network")

    # An empty hub cache, so the weights are fetched (resnet_viz.nets.imagenet downloads them itself).
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    at = page("imagenet").run()
    next(t for t in at.toggle if t.label.startswith("Pretrained")).set_value(True).run()
    assert not at.exception, at.exception
    assert any("download" in e.value for e in at.error), [e.value for e in at.error]


def test_no_pages_folder_next_to_app_py() -> None:
    # Streamlit runs a folder named pages/ beside the main script as an old-style (v1)
    # multipage app until some session has called st.navigation: a fresh server's first
    # visitor on a deep link (/experiments) then got raw file names in the sidebar and no
    # data/device panel (seen in the browser test). The pages live in app_pages/.
    assert not (ROOT / "pages").exists()
    assert "app_pages/" in (ROOT / "app.py").read_text()


def test_experiments_report_tab_offers_the_finished_experiments(threaded_tasks) -> None:
    from resnet_viz.app import resources
    from resnet_viz.experiments import signal

    # Two finished tasks, as the tabs leave them in the registry (a small real result, and
    # one with a hostile title); a failed one is not offered.
    # They are this visitor's: a report holds only the experiments its visitor asked for.
    from resnet_viz.limits import ServerLimits

    reg = resources.task_registry()
    reg.limits = ServerLimits(max_tasks=3, max_tasks_per_visitor=3)  # all three may be running at once
    at = page("experiments").run()
    me = at.session_state[Keys.VISITOR]
    profiles = [p.to_dict() for p in signal.signal_sweep(depths=(8,), batch=8)]
    done = [reg.start("signal|8", lambda p, s: profiles, title="Signal propagation at initialization: depths 8",
                      by=me),
            reg.start("lesion|x", lambda p, s: {"baseline_acc": 0.5}, title="<b>Lesion</b> of x", by=me),
            reg.start("broken", lambda p, s: 1 / 0, title="Broken", by=me)]
    assert all(t.wait(30) for t in done)
    at.run()
    assert not at.exception, at.exception
    exps = next(m for m in at.multiselect if m.label == "Experiments in the report")
    assert exps.options == ["Signal propagation at initialization: depths 8", "<b>Lesion</b> of x"]
    assert exps.value == ["signal|8", "lesion|x"]  # every finished experiment by default
    assert not next(m for m in at.multiselect if m.label == "Runs in the report").value  # no runs here
    next(b for b in at.button if b.label == "Build the report").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.get("download_button"), "no download button after building the report"
    exps.set_value([]).run()  # neither a run nor an experiment: no button, a hint instead
    assert not any(b.label == "Build the report" for b in at.button)
    assert any("a report needs at least one" in i.value for i in at.info)


def test_a_running_task_shows_its_time_left_and_its_partial_result(threaded_tasks) -> None:
    import threading

    from resnet_viz.app import resources

    gate = threading.Event()
    coarse = {"alphas": [-1.0, 0.0, 1.0], "betas": [-1.0, 0.0, 1.0], "loss": [[3.0, 2.0, 3.0], [2.0, 1.0, 2.0],
              [3.0, 2.0, 3.0]], "acc": [[0.1] * 3] * 3, "label": "ResNet-8", "seed": 0}

    def fn(progress, stop):
        progress(0.2, "surface 9/49: the 3x3 preview is ready", partial=coarse)
        gate.wait(30)
        return {"done": True}

    task = resources.task_registry().start("preview-test", fn)
    wait_until(lambda: task.snapshot().partial is not None, "the task's first partial result", timeout=30)
    time.sleep(1.1)  # a pace to estimate from
    script = """
import streamlit as st
from resnet_viz import plots
from resnet_viz.app import tasks
res = tasks.run_task("preview-test", "Run it", lambda p, s: None,
                  preview=lambda part: st.plotly_chart(plots.surface_figure(part, title="Preview grid"), key="pv"))
if res:
    st.success("finished")
"""
    at = AppTest.from_string(script, default_timeout=30).run()
    assert not at.exception, at.exception
    assert any("Preview grid" in c.proto.spec for c in at.get("plotly_chart"))
    text = at.get("progress")[0].proto.text
    assert "the 3x3 preview is ready" in text and "elapsed" in text and "left" in text, text
    gate.set()
    assert task.wait(10)
    at.run()
    assert [s.value for s in at.success] == ["finished"] and not at.get("plotly_chart")


def test_compare_shows_the_shipped_degradation_result_until_the_user_has_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from test_compare import (
        _four,  # tests/ is on sys.path under pytest's default import mode
    )

    from resnet_viz.app import resources
    from resnet_viz.experiments import degradation

    shipped = tmp_path / "degradation.json"
    doc = degradation.export_result(_four(0.35, 0.65, 0.27, 0.274), {"data": "CIFAR-10 (JPEG copy)", "steps": 1000,
                                                                  "machine": "2-core test CPU"})
    shipped.write_text(json.dumps(doc))
    monkeypatch.setattr(resources, "DEGRADATION_FILE", shipped)
    resources.shipped_degradation.clear()
    at = page("compare").run()
    assert not at.exception, at.exception
    assert any("project's own run" in m.value and "2-core test CPU" in m.value for m in at.markdown)
    verdict = " ".join(s.value for s in at.success)
    assert "trained worse by 30 points (degradation)" in verdict and "removed the degradation" in verdict, verdict
    assert any("plain-56" in c.proto.spec for c in at.get("plotly_chart"))
    shipped.write_text("{not json")  # a damaged file: the page goes on without it
    resources.shipped_degradation.clear()
    at = page("compare").run()
    assert not at.exception and not any("project's own run" in m.value for m in at.markdown)
    resources.shipped_degradation.clear()


# ---------------------------------------------------------------- defects found in review

SYNTHETIC = DataConfig(source="synthetic", synthetic_train=640, synthetic_test=160)


def _untrained(at: AppTest) -> AppTest:
    model = next(s for s in at.selectbox if s.label == "Model")
    return model.set_value(next(o for o in model.options if "Untrained" in o)).run()


def test_lesion_study_of_a_small_net_runs() -> None:
    # ResNet-8 has three blocks; the page asked for k up to 9 and the task failed with
    # "max_k must be an integer from 0 to 3".
    from resnet_viz.config import ModelConfig

    p = page("experiments")
    p.at.session_state[Keys.BUILD_CONFIG] = ModelConfig(depth=8)
    at = _untrained(p.run())
    next(b for b in at.button if b.label.startswith("Lesion study")).click().run()
    _wait(at, lambda a: not any(b.label == "Stop" for b in a.button), timeout=120)
    assert not at.exception, at.exception
    assert not any("failed" in e.value for e in at.error), [e.value for e in at.error]
    fig = next(c.proto.spec for c in at.get("plotly_chart") if "Lesion study" in c.proto.spec)
    assert "stage3.block0" in fig


def test_convolution_by_hand_reaches_every_output_of_a_bottleneck() -> None:
    # A bottleneck strides its 3x3 conv2: conv1 of stage 2 still outputs 32x32, of which
    # the page let the user pick only the first 16 rows and columns.
    from resnet_viz.config import ModelConfig

    p = page("experiments")
    p.at.session_state[Keys.BUILD_CONFIG] = ModelConfig(depth=11, block="bottleneck", shortcut="B")
    at = _untrained(p.run())
    at.selectbox(key="conv_layer").set_value("stage2.block0.conv1").run()
    assert at.number_input(key="conv_row").max == 31 and at.number_input(key="conv_col").max == 31
    at.number_input(key="conv_row").set_value(31).run()
    at.number_input(key="conv_col").set_value(31).run()
    assert not at.exception, at.exception
    assert any("the same number" in s.value for s in at.success), [s.value for s in at.success]
    at.selectbox(key="conv_layer").set_value("stage2.block0.conv2").run()
    assert at.number_input(key="conv_row").max == 15


def test_two_uploads_with_one_file_name_are_both_explained() -> None:
    two = [("same.png", _png_bytes((200, 30, 30)), "image/png"), ("same.png", _png_bytes((30, 30, 200)), "image/png")]
    at = page("explain").run()
    next(r for r in at.radio if r.label == "Input").set_value("Upload").run()
    at.file_uploader[0].set_value(two).run()
    assert not at.exception, at.exception  # was: duplicate element key "overlay_same.png_..."
    assert [m.value for m in at.markdown].count("**same.png**") == 2
    charts = len(at.get("plotly_chart"))
    at = page("imagenet").run()
    at.file_uploader[0].set_value(two).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 4 and charts >= 4


def _hostile_run(name: str) -> str:
    """A run with a checkpoint (an untrained ResNet-8 on the synthetic set) named ``name``."""
    from resnet_viz.config import ModelConfig, RunConfig
    from resnet_viz.data.synthetic import SYNTHETIC_CLASSES
    from resnet_viz.nets.cifar import build_model
    from resnet_viz.store.rundir import RunDir, default_runs_dir

    cfg = RunConfig(model=ModelConfig(depth=8, num_classes=len(SYNTHETIC_CLASSES)), data=SYNTHETIC, name=name)
    run = RunDir.create(default_runs_dir(), cfg)
    run.save_checkpoint(build_model(cfg.model).state_dict(), None, {"step": 1})
    run.append_metrics([{"kind": "step", "step": s, "epoch": s / 20, "loss": 2.3 - s / 100, "acc": 0.1 + s / 100}
                        for s in range(1, 11)])
    run.set_status("stopped")
    return run.id


def _shown_as_markdown(at: AppTest) -> list[str]:
    """Every text the page hands to Streamlit's Markdown renderer."""
    texts = [e.value for kind in (at.markdown, at.caption, at.info, at.warning, at.error, at.success, at.toast)
             for e in kind]
    return texts + [b.label for b in at.button] + [p.proto.text for p in at.get("progress")]


def test_run_names_are_shown_as_typed_not_as_markdown() -> None:
    import json

    from test_app_helpers import HOSTILE, links_or_images

    _hostile_run(HOSTILE)
    at = page("experiments").run()
    model = next(s for s in at.selectbox if s.label == "Model")
    model.set_value(next(o for o in model.options if HOSTILE in o)).run()
    assert not at.exception, at.exception
    shown = _shown_as_markdown(at)
    assert any("Lesion study" in t and "p.png" in t for t in shown), shown  # the name is on the button
    assert not [t for t in shown if links_or_images(t)], [t for t in shown if links_or_images(t)]
    at = page("explain").run()
    model = next(s for s in at.selectbox if s.label == "Model")
    model.set_value(next(o for o in model.options if HOSTILE in o)).run()
    assert not at.exception, at.exception
    shown = _shown_as_markdown(at)
    assert any("p.png" in c.value for c in at.caption), shown
    assert not [t for t in shown if links_or_images(t)], [t for t in shown if links_or_images(t)]
    at = page("compare").run()
    assert not at.exception, at.exception
    names = [tr.get("name", "") for c in at.get("plotly_chart") for tr in json.loads(c.proto.spec)["data"]]
    assert any("p.png" in n for n in names), names
    assert not [n for n in names if "<a" in n], names  # Plotly would draw <a href> as a link


def test_train_form_starts_at_the_library_defaults() -> None:
    from resnet_viz.config import TrainConfig, base_lr

    default = TrainConfig.recipe("quick")
    assert default.epochs == 5  # the page's budget before the defaults moved into the library
    at = page("train").run()
    values = {w.label: w.value for w in list(at.number_input) + list(at.selectbox) + list(at.slider) + list(at.toggle)}
    # the budget: as many epochs as make a brief run of about 5 minutes on this machine (tests/test_time_estimates.py)
    assert 1 <= values["Budget"] <= TrainConfig().epochs
    assert values["Batch size"] == default.batch_size and values["LR schedule"] == default.schedule
    assert values["Peak learning rate at batch 128"] == pytest.approx(base_lr(default))
    assert values["Weight decay"] == pytest.approx(default.weight_decay)
    assert values["Label smoothing"] == pytest.approx(default.label_smoothing)
    assert values["Augment (crop + flip)"] == default.augment and values["Seed"] == default.seed


def test_the_app_and_the_cli_run_the_lesion_study_on_the_same_images(monkeypatch: pytest.MonkeyPatch,
                                                                     threaded_tasks) -> None:
    import torch
    from test_cli_experiments import lesion_images

    from resnet_viz.data.sources import load_data
    from resnet_viz.experiments import lesion
    from resnet_viz.nets.cifar import build_model

    data_cfg = DataConfig(source="synthetic", synthetic_train=100, synthetic_test=1200)
    seen = []
    study = lesion.lesion_study

    def quick(m, x, y, **kw):
        seen.append((x, y))
        return study(m, x[:8], y[:8], **{**kw, "max_k": 0, "trials": 1})

    # Patched before the page runs: the page binds the function into its task (a Call) as it draws the button.
    monkeypatch.setattr(lesion, "lesion_study", quick)
    p = page("experiments")
    p.at.session_state[Keys.DATA_CONFIG] = data_cfg
    at = _untrained(p.run())
    at.select_slider(key="lesion_n").set_value(500).run()
    next(b for b in at.button if b.label.startswith("Lesion study")).click().run()
    _wait(at, lambda a: not any(b.label == "Stop" for b in a.button), timeout=120)
    monkeypatch.setattr(lesion, "lesion_study", study)
    assert not at.exception and len(seen) == 1, at.exception
    app_x, app_y = seen[0]
    cli_x, cli_y = lesion_images(monkeypatch, build_model("resnet20"), load_data(data_cfg), 500)
    assert len(app_y) == 500 and torch.equal(app_y, cli_y) and torch.equal(app_x, cli_x)


def test_layer_responses_tab_measures_nets_in_the_background() -> None:
    at = _untrained(page("experiments").run())
    nets = next(m for m in at.multiselect if m.label == "Nets")
    assert any("shipped" in o for o in nets.options) and len(nets.value) >= 2, nets.options
    nets.set_value([o for o in nets.options if "Untrained" in o or "plain" in o.lower()][:2]).run()
    next(s for s in at.select_slider if s.label == "Test images" and s.key == "resp_n").set_value(100).run()
    assert [b.label for b in at.button].count("Measure layer responses") == 2, [b.label for b in at.button]
    assert any("on this machine" in c.value for c in at.caption)
    for left in (1, 0):  # one after another: a visitor runs one task at a time
        next(b for b in at.button if b.label == "Measure layer responses").click().run()
        _wait(at, lambda a: not any(b.label == "Stop" for b in a.button), timeout=120)
        assert [b.label for b in at.button].count("Measure layer responses") == left
    assert not at.exception, at.exception
    fig = next(c.proto.spec for c in at.get("plotly_chart") if "Fig. 7" in c.proto.spec)
    names = [t.get("name", "") for t in json.loads(fig)["data"]]
    assert any("Untrained ResNet(A)-20" in t for t in names) and any("plain-20" in t for t in names), names
    assert any("Mean response std per layer" in i.value for i in at.info), [i.value for i in at.info]
