"""Widgets the pages share: model and image pickers, uploads, the sidebar, button callbacks,
and ``literal`` for showing what a user typed or named exactly as typed."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from resnet_viz.access import Visitor, access_settings, may_see
from resnet_viz.app import links, resources, visitors
from resnet_viz.app.state import Keys, data_config, flash
from resnet_viz.background.job import JobSnapshot
from resnet_viz.config import DataConfig
from resnet_viz.data.sources import default_source, describe_default_source
from resnet_viz.limits import server_limits
from resnet_viz.store.models import ModelRef
from resnet_viz.training.device import describe_device, pick_device
from resnet_viz.training.speed import Speed, about

# ------------------------------------------------------------------ user text

# Characters that start Markdown or one of Streamlit's directives (:red[...], :material/x:,
# $LaTeX$) anywhere in a line; a backslash makes each a plain character (CommonMark escapes).
# "." and "-" are left alone inside a line, so "plain-20.png" reads as typed.
_INLINE = re.compile(r"([\\`*_{}\[\]()<>#!|~$:&@^=])")
_LIST_START = re.compile(r"^(\s*)([-+]|\d+\.)")  # "- x", "+ x" and "1. x" would start a list
_WWW = re.compile(r"(www)\.", re.IGNORECASE)  # GFM links "www.x.org" without any other markup


def literal(text: object) -> str:
    """``text`` escaped for Streamlit Markdown (markdown, captions, labels, toasts): a run
    name like ``[x](http://e) ![](http://e/p.png)`` shows those characters, not a link and a
    remote image. Line breaks become spaces: a name is one line."""
    s = _INLINE.sub(r"\\\1", " ".join(str(text).splitlines()))
    s = _LIST_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], s)
    return _WWW.sub(r"\1\\.", s)


def plot_text(text: object) -> str:
    """``text`` for a Plotly label (legend, title, hover): Plotly reads a few HTML tags,
    ``<a href>`` among them, so ``<`` and ``&`` are written as entities it shows as typed."""
    return html.escape(str(text), quote=False)


def plot_labels(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Experiment results with their "label" (a model's name, maybe a user's run name)
    made ``plot_text``, for the figures; the results themselves stay as computed."""
    return [{**r, "label": plot_text(r["label"])} if "label" in r else r for r in results]


def item_key(prefix: str, index: int, *parts: object) -> str:
    """A widget key for the ``index``-th item of a list: two uploads may share a file
    name, so the name alone cannot tell their elements apart."""
    return "_".join([prefix, str(index), *map(str, parts)])


def data_label(cfg: DataConfig) -> str:
    if cfg == default_source():
        return describe_default_source()
    return {"synthetic": "Synthetic shapes (not CIFAR-10)", "cifar10": "CIFAR-10"}.get(cfg.source, f"Folder {cfg.path}")


# ------------------------------------------------------------------ models


def pick_model(label: str, key: str, default_index: int = 0, refs: list[ModelRef] | None = None,
               link: str | None = None) -> ModelRef | None:
    """A model picker; ``link`` names its query parameter (``app.links``), if it has one."""
    refs = refs if refs is not None else resources.model_refs()
    if not refs:
        st.info("No models yet: train one on the Train page.")
        return None
    index = min(default_index, len(refs) - 1)
    # Selectbox options are plain text in Streamlit (only its label is Markdown): no escaping.
    ref = st.selectbox(label, refs, index=index, format_func=lambda r: r.label, key=links.seeded(link, key, refs))
    links.keep(link, ref, default=refs[index])
    return ref


def pick_two_models(key: str, second_label: str = "Compare with") -> tuple[ModelRef | None, ModelRef | None]:
    """Two model pickers side by side (default: the shipped ResNet-20 and plain-20), linked
    as ``model`` and ``vs``."""
    refs = resources.model_refs()
    c1, c2 = st.columns(2)
    with c1:
        a = pick_model("Model", key=f"{key}_model_a", refs=refs, link="model")
    with c2:
        b = pick_model(second_label, key=f"{key}_model_b", default_index=1, refs=refs, link="vs")
    return a, b


# ------------------------------------------------------------------ inputs


def upload_limit_mb() -> int:
    """The largest upload in MB: the server's ``server.maxUploadSize`` or the decoder's own
    limit (``uploads.MAX_UPLOAD_BYTES``), whichever is smaller."""
    from resnet_viz.data.uploads import MAX_UPLOAD_BYTES

    return max(1, min(int(st.get_option("server.maxUploadSize")), MAX_UPLOAD_BYTES // 2**20))


def upload_images(label: str, key: str, multiple: bool = False) -> list[tuple[str, Any]]:
    """Uploaded images as (display name, RGB PIL image); bad files get a message each.

    Files are checked by content (``uploads.open_upload``); the name is only displayed,
    never used as a path, and two files may have the same name.
    """
    from resnet_viz.app.compute import decoded_upload
    from resnet_viz.data.uploads import ImageError, check_upload_batch

    # Every type is let through and judged by content below, with a message per file: a type
    # refused by the widget itself only turns red in the browser, and Python never hears of it.
    # The size limit is the one refusal left to the browser, so the caption says it in words.
    limit_mb = upload_limit_mb()
    files = st.file_uploader(label, accept_multiple_files=multiple, key=key, max_upload_size=limit_mb)
    st.caption(f"PNG, JPEG, WebP, BMP or GIF images, up to {limit_mb} MB each; other files are refused with "
               f"a message here. A file over {limit_mb} MB never reaches this page: your browser marks it red "
               "in the list above (hover it for why) and it is left out.")
    files = files if isinstance(files, list) else [files] if files else []
    named = [(f.name, f.getvalue()) for f in files]
    limits = server_limits()
    try:  # the whole request first: many large images decode to gigabytes on every rerun
        check_upload_batch(named, max_files=limits.max_uploads, max_pixels=limits.max_upload_pixels)
    except ImageError as e:
        st.error(str(e))
        return []
    out = []
    for name, data in named:
        try:
            out.append((name, decoded_upload(data)))  # decoded once per content, not per rerun
        except ImageError as e:
            st.error(f"{literal(name)}: {e}")
    return out


def test_image_picker(key: str, link: bool = False) -> tuple[str, Any] | None:
    """A test-set image picked by class and index: (caption, (3, 32, 32) uint8 tensor);
    ``link``: the choice is the page's ``class`` and ``index`` query parameters."""
    ds = resources.data()
    if ds is None:
        return None
    by_class, by_index = ("class", "index") if link else (None, None)
    c1, c2 = st.columns(2)
    cls = c1.selectbox("Class", range(len(ds.classes)), format_func=lambda i: ds.classes[i],
                       key=links.seeded(by_class, f"{key}_cls", ds.classes))
    if cls is None:
        return None
    links.keep(by_class, ds.classes[cls], default=ds.classes[0])
    idx = ds.test_y.eq(cls).nonzero().flatten()
    i = c2.number_input(f"Index (0-{len(idx) - 1})", 0, max(0, len(idx) - 1), 0,
                        key=links.seeded(by_index, f"{key}_idx", range(len(idx))))
    links.keep(by_index, int(i), default=0)
    if len(idx) == 0:
        st.warning("This class has no test images.")
        return None
    return f"{ds.classes[cls]} #{int(i)} ({ds.name})", ds.test_x[idx[int(i)]]


def input_images(key: str, multiple: bool = False, link: bool = False) -> list[tuple[str, Any]]:
    """The inputs the user chose: a test image, or uploads (as (3, 32, 32) uint8 tensors);
    ``link``: a test image's class and index are in the URL (``test_image_picker``)."""
    from resnet_viz.data.uploads import to_input_tensor

    mode = st.radio("Input", ["A test image", "Upload"], horizontal=True, key=f"{key}_mode")
    if mode == "A test image":
        picked = test_image_picker(key, link)
        return [picked] if picked else []
    return [(name, to_input_tensor(img)) for name, img in upload_images(
        "Images", key=f"{key}_upload", multiple=multiple)]


# ------------------------------------------------------------------ buttons and chrome


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


def guarded(fn: Callable[[], None]) -> None:
    """Run a page body; an unexpected error becomes a message, never a traceback."""
    try:
        fn()
    except ValueError as e:
        st.error(str(e))


def sidebar() -> None:
    """What every page shows: the data set in use, the device, the run being watched."""
    with st.sidebar:
        cfg = data_config()
        label = literal(data_label(cfg))
        if cfg.source == "synthetic":
            st.warning(f"**Data:** {label}", icon=":material/science:")
        else:
            st.info(f"**Data:** {label}", icon=":material/dataset:")
        from resnet_viz.app import cifar_download  # it builds on this module's widgets

        cifar_download.offer("sidebar")
        st.caption(f"**Device:** {describe_device(pick_device('auto'))}")
        measured = resources.machine_speed()  # the first visit starts measuring: times are known by Train
        st.caption(f"**Speed:** ResNet-20 trains at {measured.train_ips[0]:,.0f} images/s here" if measured
                   else "**Speed:** measuring this machine...")
        me = visitors.visitor()
        st.caption(f"**You:** {literal(me.name)}" + (" · admin: you may steer every run" if me.admin else ""))
        watched = st.session_state.get(Keys.WATCHED_RUN)
        # While a run shown here trains, its lines poll (drawn once, they said "loading 0%" to the
        # run's end); when the runs end, one full rerun draws them without polling.
        live = any(s is not None and not s.done for s in _shown_runs(watched, me))
        (st.fragment(run_every=2.0)(_live_run_lines) if live else _run_lines)(watched, me)


def _shown_runs(watched: str | None, me: Visitor) -> tuple[JobSnapshot | None, JobSnapshot | None]:
    """The watched run's state, and the training run's when it is another this visitor may see."""
    active = resources.job_registry().active()
    other = None
    if active is not None and active.run_id != watched and may_see(me, active.owner, access_settings()):
        other = active.snapshot()
    return (resources.snapshot(watched) if watched else None), other


def _run_lines(watched: str | None, me: Visitor) -> bool:
    """The sidebar's run lines; True while a run they show is not done."""
    snap, other = _shown_runs(watched, me)
    if snap is not None:
        st.caption(f"**Watching:** {snap.label} · {snap.state} · {snap.progress:.0%}")
    elif watched:
        st.caption(f"**Watching:** run {literal(watched)}")
    if other is not None:
        st.caption(f"**Training now:** {other.label} · {other.state} · {other.progress:.0%}")
    return any(s is not None and not s.done for s in (snap, other))


def _live_run_lines(watched: str | None, me: Visitor) -> None:
    if not _run_lines(watched, me):
        st.rerun()  # the runs ended


def time_estimate(seconds: float | None, measured: Speed | None, what: str = "") -> None:
    """How long the work under a Start button takes on this machine, or that the machine is
    being measured (then the page reruns once the figures are in)."""
    if measured is None:
        st.caption(":material/timer: Measuring this machine's speed (a few seconds) to say how long this takes here...")
        _await_speed()
    elif seconds is not None:
        text = f"{what}: {about(seconds)}" if what else about(seconds).capitalize()
        st.caption(f":material/schedule: {text} on this machine ({measured.describe()}).")


@st.fragment(run_every=2.0)
def _await_speed() -> None:
    if resources.machine_speed() is not None:
        st.rerun()
