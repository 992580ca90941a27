"""The only library module that imports Streamlit: session keys, shared resources, widgets.

Per-user state lives in ``st.session_state`` under the keys of ``Keys``, never in module
globals (Streamlit shares imported modules between every user). The job registry is one
per server process through ``st.cache_resource``, so a reloaded page or a second tab
finds the training that is still going; the run folders on disk are the source of truth.
Models are cached as weights and rebuilt per use, so two users never share a module that
Captum is hooking.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import streamlit as st
import torch

from resnet_viz.background.jobs import JobRegistry, JobSnapshot
from resnet_viz.background.progress import clock
from resnet_viz.config import DataConfig, ModelConfig, RunConfig
from resnet_viz.data.sources import (
    ImageData,
    default_source,
    describe_default_source,
    load_data,
)
from resnet_viz.experiments import degradation
from resnet_viz.nets.cifar import CifarResNet, build_model
from resnet_viz.store import models
from resnet_viz.store.listing import RunInfo, list_runs
from resnet_viz.store.models import (
    DEGRADATION_FILE,
    ModelRef,
    class_names,
    load_model_file,
    load_run_model,
)
from resnet_viz.store.rundir import RunDir, RunError, default_runs_dir
from resnet_viz.training.device import describe_device, pick_device

if TYPE_CHECKING:
    from resnet_viz.background.tasks import TaskRegistry

class Keys:
    """Every st.session_state key the pages use, in one place."""

    WATCHED_RUN = "watched_run_id"
    DATA_CONFIG = "data_config"
    BUILD_CONFIG = "build_config"
    MESSAGE = "flash_message"
    ERROR = "flash_error"  # a button callback's error, shown where the page draws ``show_error``


# ------------------------------------------------------------------ shared resources


@st.cache_resource(show_spinner=False)
def job_registry() -> JobRegistry:
    return JobRegistry(default_runs_dir())


def runs_root() -> Path:
    return job_registry().runs_root


# Two data sets at most stay in memory (CIFAR-10 as uint8 is 184 MB): switching back and forth
# between two is instant, a third evicts the one used least recently (a job training on it
# keeps its own reference), so a long-lived server does not hold every set it ever loaded.
@st.cache_resource(show_spinner="Loading the data set (the first time decodes it; later starts take a second)...",
                   max_entries=2)
def _data(cfg: DataConfig) -> ImageData:
    return load_data(cfg)


def data() -> ImageData | None:
    """The data set in use, or None after showing why it cannot be loaded."""
    try:
        return _data(data_config())
    except ValueError as e:
        st.error(f"The data set cannot be loaded: {e}")
        return None


def data_config() -> DataConfig:
    if Keys.DATA_CONFIG not in st.session_state:
        st.session_state[Keys.DATA_CONFIG] = default_source()
    return st.session_state[Keys.DATA_CONFIG]


def data_label(cfg: DataConfig) -> str:
    if cfg == default_source():
        return describe_default_source()
    return {"synthetic": "Synthetic shapes (not CIFAR-10)", "cifar10": "CIFAR-10"}.get(cfg.source, f"Folder {cfg.path}")


def build_config() -> ModelConfig:
    return st.session_state.get(Keys.BUILD_CONFIG) or ModelConfig()


# ------------------------------------------------------------------ models


@st.cache_resource(show_spinner=False, max_entries=16)
def _weights(kind: str, key: str, stamp: float) -> tuple[dict[str, torch.Tensor], RunConfig]:
    if kind == "file":
        model, cfg, _ = load_model_file(Path(key))
    else:
        model, cfg = load_run_model(RunDir.open(runs_root(), key))
    return {k: v.clone() for k, v in model.state_dict().items()}, cfg


def load_model(ref: ModelRef) -> tuple[CifarResNet, ModelConfig, tuple[str, ...]]:
    """(a fresh model, its config, its class names) for ``ref``; weights are cached, the
    module is this caller's own."""
    if ref.kind == "untrained":
        ds = data()
        classes = ds.classes if ds is not None else tuple(f"class {i}" for i in range(10))
        cfg = replace(build_config(), num_classes=len(classes))
        torch.manual_seed(0)
        return build_model(cfg).eval(), cfg, classes
    path = Path(ref.key) if ref.kind == "file" else runs_root() / ref.key / "checkpoint.safetensors"
    stamp = path.stat().st_mtime if path.exists() else 0.0
    state, cfg = _weights(ref.kind, ref.key, stamp)
    model = build_model(cfg.model)
    model.load_state_dict(state)
    return model.eval(), cfg.model, class_names(cfg)


def model_refs(include_untrained: bool = True) -> list[ModelRef]:
    """Shipped models, then runs with a checkpoint (newest first), then the Build model."""
    return models.model_refs(runs_root(), include_untrained)


def pick_model(label: str, key: str, default_index: int = 0, refs: list[ModelRef] | None = None) -> ModelRef | None:
    refs = refs if refs is not None else model_refs()
    if not refs:
        st.info("No models yet: train one on the Train page.")
        return None
    return st.selectbox(label, refs, index=min(default_index, len(refs) - 1), format_func=lambda r: r.label, key=key)


@contextmanager
def inference() -> Iterator[None]:
    """Run the page's own model work on one thread while a job trains.

    Two torch threads in the page fighting the trainer's two threads for two cores make a
    one-image saliency map 30x slower (0.09 s against 3.4 s measured here); one thread
    keeps the page quick and costs the trainer almost nothing.
    """
    prev = torch.get_num_threads()
    busy = job_registry().active() is not None
    if busy:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if busy:
            torch.set_num_threads(prev)


def pick_two_models(key: str, second_label: str = "Compare with") -> tuple[ModelRef | None, ModelRef | None]:
    """Two model pickers side by side (default: the shipped ResNet-20 and plain-20)."""
    refs = model_refs()
    c1, c2 = st.columns(2)
    with c1:
        a = pick_model("Model", key=f"{key}_model_a", refs=refs)
    with c2:
        b = pick_model(second_label, key=f"{key}_model_b", default_index=1, refs=refs)
    return a, b


# ------------------------------------------------------------------ runs


def runs() -> list[RunInfo]:
    try:
        return list_runs(runs_root())
    except RunError as e:
        st.error(str(e))
        return []


def run_records(run_id: str) -> list[dict[str, Any]]:
    """Live records from the registry when the run trains in this server, else from disk."""
    job = job_registry().get(run_id)
    if job is not None:
        return list(job.snapshot().records)
    try:
        return RunDir.open(runs_root(), run_id).read_metrics()
    except RunError as e:
        st.warning(str(e))
        return []


@st.cache_data(show_spinner=False)
def shipped_degradation() -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]] | None:
    """The degradation experiment the project ran on CIFAR-10 (``assets/degradation.json``):
    (records per run, what/where/how long), or None when the file is absent or unreadable."""
    try:
        return degradation.read_result(json.loads(DEGRADATION_FILE.read_text(encoding="utf-8")))
    except (OSError, ValueError):  # json.JSONDecodeError is a ValueError
        return None


def snapshot(run_id: str) -> JobSnapshot | None:
    job = job_registry().get(run_id)
    return job.snapshot() if job is not None else None


# ------------------------------------------------------------------ chrome


def flash(message: str) -> None:
    """Show ``message`` once on the next rerun (e.g. after a button that reruns)."""
    st.session_state[Keys.MESSAGE] = message


def show_flash() -> None:
    msg = st.session_state.pop(Keys.MESSAGE, None)
    if msg:
        st.toast(msg)


def clicked(fn: Callable[..., Any], *args: Any, done: str = "") -> Callable[[], None]:
    """A button's ``on_click``: ``fn(*args)`` in the run that follows the click (a return
    value read later in the script is lost when that run is cut short by another rerun);
    ``done`` is flashed on success (a callback draws nothing itself: in a fragment's run
    Streamlit would put it at the top of the page), a ValueError is kept for ``show_error``."""
    def callback() -> None:
        try:
            fn(*args)
        except ValueError as e:
            st.session_state[Keys.ERROR] = str(e)
        else:
            if done:
                flash(done)
    return callback


def show_error() -> None:
    """The error the last button callback kept, once."""
    err = st.session_state.pop(Keys.ERROR, None)
    if err:
        st.error(err)


def sidebar() -> None:
    """What every page shows: the data set in use, the device, the run being watched."""
    with st.sidebar:
        cfg = data_config()
        label = data_label(cfg)
        if cfg.source == "synthetic":
            st.warning(f"**Data:** {label}", icon=":material/science:")
        else:
            st.info(f"**Data:** {label}", icon=":material/dataset:")
        st.caption(f"**Device:** {describe_device(pick_device('auto'))}")
        watched = st.session_state.get(Keys.WATCHED_RUN)
        snap = snapshot(watched) if watched else None
        if snap is not None:
            st.caption(f"**Watching:** {snap.label} · {snap.state} · {snap.progress:.0%}")
        elif watched:
            st.caption(f"**Watching:** run {watched}")
        active = job_registry().active()
        if active is not None and active.run_id != watched:
            s = active.snapshot()
            st.caption(f"**Training now:** {s.label} · {s.state} · {s.progress:.0%}")


def guarded(fn: Callable[[], None]) -> None:
    """Run a page body; an unexpected error becomes a message, never a traceback."""
    try:
        fn()
    except ValueError as e:
        st.error(str(e))


# ------------------------------------------------------------------ inputs


def upload_images(label: str, key: str, multiple: bool = False) -> list[tuple[str, Any]]:
    """Uploaded images as (display name, RGB PIL image); bad files get a message each.

    Files are checked by content (``images.open_upload``); the name is only displayed,
    never used as a path.
    """
    from resnet_viz.data.uploads import ImageError, open_upload

    files = st.file_uploader(label, type=["png", "jpg", "jpeg", "webp", "bmp", "gif"],
                             accept_multiple_files=multiple, key=key)
    files = files if isinstance(files, list) else [files] if files else []
    out = []
    for f in files:
        try:
            out.append((f.name, open_upload(f.getvalue())))
        except ImageError as e:
            st.error(f"{f.name}: {e}")
    return out


def test_image_picker(key: str) -> tuple[str, Any] | None:
    """A test-set image picked by class and index: (caption, (3, 32, 32) uint8 tensor)."""
    ds = data()
    if ds is None:
        return None
    c1, c2 = st.columns(2)
    cls = c1.selectbox("Class", range(len(ds.classes)), format_func=lambda i: ds.classes[i], key=f"{key}_cls")
    idx = (ds.test_y == cls).nonzero().flatten()
    i = c2.number_input(f"Index (0-{len(idx) - 1})", 0, max(0, len(idx) - 1), 0, key=f"{key}_idx")
    if len(idx) == 0:
        st.warning("This class has no test images.")
        return None
    return f"{ds.classes[cls]} #{int(i)} ({ds.name})", ds.test_x[idx[int(i)]]


def input_images(key: str, multiple: bool = False) -> list[tuple[str, Any]]:
    """The inputs the user chose: a test image, or uploads (as (3, 32, 32) uint8 tensors)."""
    from resnet_viz.data.uploads import to_input_tensor

    mode = st.radio("Input", ["A test image", "Upload"], horizontal=True, key=f"{key}_mode")
    if mode == "A test image":
        picked = test_image_picker(key)
        return [picked] if picked else []
    return [(name, to_input_tensor(img)) for name, img in upload_images(
        "Images (PNG, JPEG, WebP, BMP or GIF; up to 10 MB)", key=f"{key}_upload", multiple=multiple)]


# ------------------------------------------------------------------ background tasks


@st.cache_resource(show_spinner=False)
def task_registry() -> TaskRegistry:
    from resnet_viz.background.tasks import TaskRegistry

    return TaskRegistry()


def run_task(key: str, label: str, fn: Callable[..., Any], help: str = "", title: str = "",
             preview: Callable[[Any], None] | None = None) -> Any:
    """A Run button for a long computation, its progress bar and Stop while it runs, and
    its result (or None) once it is done. ``key`` names what is computed, so a reload or
    another tab finds the same task and its result; ``title`` says it in words for the
    report (the button's label by default). While it runs, ``preview`` (if given) draws the
    latest partial result the task published, e.g. a loss surface on a coarse grid."""
    reg = task_registry()
    task = reg.get(key)
    if task is None or task.snapshot().state in ("stopped", "failed"):
        if task is not None:
            snap = task.snapshot()
            (st.error if snap.state == "failed" else st.info)(
                f"The last run {snap.state}" + (f": {snap.error}" if snap.error else "."))
        # Started in the click's callback, not on the button's return value: Streamlit runs
        # callbacks first thing in whatever run follows the click, while a return value is
        # lost when that run is cut short by the next rerun (a second click, or another
        # task's progress fragment ending in a full rerun); seen here as starts that never happened.
        st.button(label, key=f"start_{key}", help=help, icon=":material/play_arrow:",
                  on_click=reg.start, args=(key, fn), kwargs={"title": title or label})
        return None
    if not task.snapshot().done:
        _task_progress(key, preview)
        return None
    snap = task.snapshot()
    st.caption(f"Computed in {snap.elapsed:.1f} s.")
    return snap.result


@st.fragment(run_every=1.0)
def _task_progress(key: str, preview: Callable[[Any], None] | None = None) -> None:
    task = task_registry().get(key)
    if task is None or task.snapshot().done:
        st.rerun()
    snap = task.snapshot()
    c1, c2 = st.columns([5, 1])
    eta = f" · about {clock(snap.eta_s)} left" if snap.eta_s is not None else ""
    c1.progress(snap.fraction, text=f"{snap.message} · {clock(snap.elapsed)} elapsed{eta}")
    if preview is not None and snap.partial is not None:
        preview(snap.partial)
    c2.button("Stop", key=f"stop_{key}", icon=":material/stop:", on_click=task.stop)
