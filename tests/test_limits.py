"""Server limits: read from the environment, and applied before anything is created (a run
folder, a task's thread, a decoded upload), with a message that says what to change."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from PIL import Image

from resnet_viz.background.jobs import JobRegistry
from resnet_viz.background.tasks import TaskRegistry
from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.uploads import ImageError, check_upload_batch, header_pixels
from resnet_viz.limits import ENV, GB, ServerLimits, physical_memory
from resnet_viz.nets.cifar import build_model
from resnet_viz.nets.cost import count_params
from resnet_viz.training.memory import architecture, training_memory

# -------------------------------------------------------------------- settings


def test_limits_default_without_environment_and_read_each_variable() -> None:
    d = ServerLimits.from_env({})
    assert (d.max_runs, d.max_tasks, d.max_uploads, d.max_upload_megapixels) == (8, 2, 8, 64.0)
    assert (d.max_runs_per_visitor, d.max_tasks_per_visitor) == (4, 2)
    assert d.max_params == 30_000_000 and d.max_steps == 100_000
    assert d.max_train_gb == pytest.approx(physical_memory() / 2 / GB, abs=0.1)  # half the machine
    env = {ENV["max_runs"]: "7", ENV["max_tasks"]: " 3 ", ENV["max_uploads"]: "2",
           ENV["max_upload_megapixels"]: "1.5", ENV["max_train_gb"]: "6", ENV["max_params_millions"]: "2.5",
           ENV["max_steps"]: "500", ENV["max_runs"] + "_UNRELATED": "x", ENV["max_runs_per_visitor"]: "2",
           ENV["max_tasks_per_visitor"]: "3"}
    s = ServerLimits.from_env(env)
    assert (s.max_runs, s.max_tasks, s.max_uploads, s.max_upload_pixels) == (7, 3, 2, 1_500_000)
    assert (s.max_train_bytes, s.max_params, s.max_steps) == (6 * GB, 2_500_000, 500)
    assert (s.max_runs_per_visitor, s.max_tasks_per_visitor) == (2, 3)
    assert ServerLimits.from_env({ENV["max_runs"]: ""}).max_runs == 8  # empty: the default


@pytest.mark.parametrize(("var", "raw"), [
    ("RESNET_VIZ_MAX_RUNS", "four"), ("RESNET_VIZ_MAX_TASKS", "0"), ("RESNET_VIZ_MAX_UPLOADS", "2.5"),
    ("RESNET_VIZ_MAX_TRAIN_GB", "-1"), ("RESNET_VIZ_MAX_TRAIN_GB", "nan"), ("RESNET_VIZ_MAX_STEPS", "1e9x"),
    ("RESNET_VIZ_MAX_PARAMS_MILLIONS", "inf"), ("RESNET_VIZ_MAX_UPLOAD_MEGAPIXELS", "0"),
    ("RESNET_VIZ_MAX_RUNS_PER_VISITOR", "0"), ("RESNET_VIZ_MAX_TASKS_PER_VISITOR", "one"),
])
def test_a_bad_environment_value_names_its_variable(var: str, raw: str) -> None:
    with pytest.raises(ValueError, match=var):
        ServerLimits.from_env({var: raw})


# -------------------------------------------------------------------- the memory estimate


@pytest.mark.parametrize("cfg", [
    ModelConfig(depth=20), ModelConfig(depth=20, shortcut="B", width=2), ModelConfig(depth=20, shortcut="C"),
    ModelConfig(depth=11, block="bottleneck", shortcut="B"), ModelConfig(depth=11, block="bottleneck", shortcut="C"),
    ModelConfig(depth=8, shortcut="none", num_classes=100),
])
def test_parameters_are_counted_without_building_the_model(cfg: ModelConfig) -> None:
    assert architecture(cfg).params == count_params(build_model(cfg))


def test_the_training_memory_estimate_grows_with_depth_width_and_batch() -> None:
    r20, r110 = ModelConfig(depth=20), ModelConfig(depth=110)
    assert training_memory(r110, 128).total_bytes > 3 * training_memory(r20, 128).total_bytes
    assert training_memory(r20, 512).activation_bytes == 4 * training_memory(r20, 128).activation_bytes
    assert training_memory(ModelConfig(depth=20, width=2), 128).activation_bytes == pytest.approx(
        2 * training_memory(r20, 128).activation_bytes)
    # The scale measured on a CPU (peak RSS growth, two SGD steps, training/memory.py's table):
    # ResNet-20 at batch 128 took 350 MB and ResNet-110 at batch 512 took 4.8 GB.
    assert 350e6 < training_memory(r20, 128).total_bytes < 2 * 350 * 2**20
    assert 4772 * 2**20 < training_memory(r110, 512).total_bytes < 2 * 4772 * 2**20
    with pytest.raises(ValueError, match="batch size"):
        training_memory(r20, 0)


# -------------------------------------------------------------------- training runs


def run_config(model: ModelConfig | None = None, **train) -> RunConfig:
    t = {"steps": 100, "epochs": None, **train}
    return RunConfig(model=model or ModelConfig(depth=8), data=DataConfig(source="synthetic"), train=TrainConfig(**t))


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A registry whose worker trains nothing: submitted runs stay queued."""
    monkeypatch.setattr(JobRegistry, "_work", lambda self: None)
    reg = JobRegistry(tmp_path)
    reg.limits = ServerLimits(max_train_gb=12.0)  # a 24 GB machine's default
    yield reg
    reg.shutdown()


def folders(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir()]


def test_a_model_over_the_parameter_cap_is_refused_before_its_folder_exists(registry: JobRegistry) -> None:
    huge = ModelConfig(depth=32, width=16)  # about 118M parameters
    with pytest.raises(ValueError, match=r"118\.0M parameters.*up to 30M: lower the depth or the width"):
        registry.submit(run_config(huge))
    assert folders(registry.runs_root) == [] and registry.jobs() == []


def test_a_run_over_the_memory_limit_is_refused_with_what_to_change(registry: JobRegistry) -> None:
    wide = ModelConfig(depth=110, width=4)
    with pytest.raises(ValueError, match=r"needs about \d+\.\d GB .* at batch 512; this server allows 12\.0 GB: "
                                         r"lower the batch size or the depth/width"):
        registry.submit(run_config(wide, batch_size=512))
    registry.limits = ServerLimits(max_train_gb=4.0)
    with pytest.raises(ValueError, match=r"ResNet\(A\)-110 at batch 512; this server allows 4\.0 GB"):
        registry.submit(run_config(ModelConfig(depth=110), batch_size=512))
    assert folders(registry.runs_root) == []
    registry.submit(run_config(ModelConfig(depth=110), batch_size=128))  # fits: accepted
    assert len(folders(registry.runs_root)) == 1


def test_a_budget_over_the_step_cap_is_refused(registry: JobRegistry) -> None:
    with pytest.raises(ValueError, match="200,000 steps; this server allows 100,000 per run"):
        registry.submit(run_config(steps=200_000))
    # An epoch budget counts on the synthetic set's 10,000 training images: 78 steps an epoch.
    with pytest.raises(ValueError, match="lower the epochs or the steps"):
        registry.submit(run_config(steps=None, epochs=2000.0))
    assert folders(registry.runs_root) == []


def test_a_full_queue_refuses_the_next_run_until_one_ends(registry: JobRegistry) -> None:
    registry.limits = ServerLimits(max_runs=2)
    first, _ = registry.submit(run_config()), registry.submit(run_config())
    with pytest.raises(ValueError, match="already has 2 of the 2 training runs it queues at once: wait"):
        registry.submit(run_config())
    assert len(folders(registry.runs_root)) == 2
    first.stop()  # cancelled while queued: its place is free again
    registry.submit(run_config())
    assert len(folders(registry.runs_root)) == 3


def test_several_runs_are_queued_all_or_none(registry: JobRegistry) -> None:
    """The degradation experiment's four runs: with room for three, none is queued."""
    registry.limits = ServerLimits(max_runs=4)
    registry.submit(run_config())
    with pytest.raises(ValueError, match="already has 1 of the 4 training runs .* start these 4 runs"):
        registry.submit_all([run_config() for _ in range(4)])
    assert len(folders(registry.runs_root)) == 1
    assert len(registry.submit_all([run_config() for _ in range(3)])) == 3


def test_the_registry_reads_its_limits_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(JobRegistry, "_work", lambda self: None)
    monkeypatch.setenv("RESNET_VIZ_MAX_RUNS", "1")
    reg = JobRegistry(tmp_path)
    try:
        reg.submit(run_config())
        with pytest.raises(ValueError, match="1 of the 1 training runs"):
            reg.submit(run_config())
    finally:
        reg.shutdown()


# -------------------------------------------------------------------- experiment tasks


def test_a_task_past_the_limit_is_refused_and_a_running_one_is_still_found() -> None:
    gate = threading.Event()

    def blocked(progress, stop):
        gate.wait(10)
        return "ok"

    reg = TaskRegistry(isolate=False)  # the limit is the registry's, wherever tasks run; a closure needs a thread
    reg.limits = ServerLimits(max_tasks=2)
    a, b = reg.start("a", blocked), reg.start("b", blocked)
    try:
        with pytest.raises(ValueError, match="already running 2 of the 2 experiments it runs at once: wait for one"):
            reg.start("c", blocked)
        assert reg.get("c") is None
        assert reg.start("a", blocked) is a  # asking again for a running task is no new task
    finally:
        gate.set()
    assert a.wait(10) and b.wait(10)
    assert reg.start("c", blocked).wait(10)


# -------------------------------------------------------------------- uploads


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_beyond_the_count_or_the_total_pixels_are_refused() -> None:
    small = png(8, 8)
    check_upload_batch([(f"{i}.png", small) for i in range(8)], max_files=8, max_pixels=16_000_000)
    with pytest.raises(ImageError, match="9 images were uploaded at once; this server takes up to 8"):
        check_upload_batch([(f"{i}.png", small) for i in range(9)], max_files=8, max_pixels=16_000_000)
    big = png(3000, 3000)  # 9 megapixels: fine alone, not two at once
    assert header_pixels(big) == 9_000_000
    check_upload_batch([("a.png", big)], max_files=8, max_pixels=16_000_000)
    with pytest.raises(ImageError, match=r"more than 16\.0 megapixels together"):
        check_upload_batch([("a.png", big), ("b.png", big)], max_files=8, max_pixels=16_000_000)
    # Bytes that are no image count nothing here: open_upload refuses them, one by one.
    assert header_pixels(b"<svg/>") == 0
    check_upload_batch([("x.png", b"<svg/>")], max_files=8, max_pixels=1)


def test_an_image_over_the_per_image_limit_leaves_the_others_their_place() -> None:
    """A 400-megapixel header beside a good image: open_upload refuses the bomb by itself,
    and the batch check does not refuse the good image with it."""
    from test_images import _png_header_only

    bomb, good = _png_header_only(20_000, 20_000), png(8, 8)
    check_upload_batch([("bomb.png", bomb), ("good.png", good)], max_files=8, max_pixels=64_000_000)
    # One valid 40-megapixel photo fits the default total on its own.
    check_upload_batch([("big.png", _png_header_only(8000, 5000))], max_files=8,
                       max_pixels=ServerLimits().max_upload_pixels)


def test_the_run_button_shows_a_refused_task_as_a_message(monkeypatch: pytest.MonkeyPatch, threaded_tasks) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from resnet_viz.app import resources

    monkeypatch.setenv("RESNET_VIZ_MAX_TASKS", "1")
    st.cache_resource.clear()
    gate = threading.Event()
    busy = resources.task_registry().start("busy", lambda p, s: gate.wait(10))
    script = """
from resnet_viz.app import tasks
tasks.run_task("limits-test", "Run it", lambda p, s: 42)
"""
    try:
        at = AppTest.from_string(script, default_timeout=30).run()
        next(b for b in at.button if b.label == "Run it").click().run()
        assert not at.exception, at.exception
        assert [e.value for e in at.error] == [
            "this server is already running 1 of the 1 experiments it runs at once: wait for one to finish, "
            "or stop one, then press Run again."]
        assert resources.task_registry().get("limits-test") is None
    finally:
        gate.set()
        busy.wait(10)
        st.cache_resource.clear()
