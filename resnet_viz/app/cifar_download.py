"""The offer to download CIFAR-10 when its official files are not on this server (sidebar, Home).

One download at a time for the whole server: it is a task keyed ``download|cifar10`` in a
registry of its own (a download is not an experiment: it belongs in no report and takes no
experiment's place), so a second visitor finds the running one and watches its progress.
Anyone may start it; its owner or an admin stops it. Once the files are there,
``sources.default_source`` picks them and ``state.data_config`` moves every session on the
default to them.
"""

from __future__ import annotations

import threading

import streamlit as st

from resnet_viz.access import may_control
from resnet_viz.app.state import Keys, flash
from resnet_viz.app.visitors import visitor
from resnet_viz.app.widgets import clicked, literal
from resnet_viz.background.tasks import Call, TaskRegistry, task_key
from resnet_viz.data import download
from resnet_viz.data.sources import default_data_dir, default_source, describe_default_source

KEY = task_key("download", "cifar10")
_registry: TaskRegistry | None = None
_lock = threading.Lock()


def registry() -> TaskRegistry:
    """This server process's download registry (module state: Streamlit shares modules between sessions)."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = TaskRegistry(keep=4, here=True)  # the app's data folder: never on a Ray worker
        return _registry


def offer(where: str) -> None:
    """The offer (``where``: "sidebar" or "home", which keys its widgets): a Download button
    with the archive's size, the running download's progress and Stop, or, offline, a line
    saying the download cannot be reached and what the app uses meanwhile."""
    task = registry().get(KEY)
    snap = task.snapshot() if task is not None else None
    if snap is not None and not snap.done:
        _progress(where)
        return
    root = default_data_dir()
    if download.cifar10_present(root):
        return
    if snap is not None and snap.state in ("failed", "stopped"):
        st.caption(f"The last CIFAR-10 download {snap.state}" + (f": {literal(snap.error)}" if snap.error else "."))
    reach = download.reachability()
    kind = default_source().source
    using = ("the embedded synthetic set" if kind == "synthetic" else "the JPEG copy" if where == "sidebar"
             and kind == "folder" else literal(describe_default_source()))
    if reach.ok is False:
        host = literal(download.host(download.cifar_url()))
        st.caption(":material/cloud_off: CIFAR-10 is not on this server, and its download "
                   + (f"({host}) " if where == "home" else "")
                   + f"cannot be reached ({literal(reach.why)}): the app carries on with {using}.")
        return
    size = reach.size or (download.CIFAR_BYTES if download.cifar_url() == download.CIFAR_URL else None)
    label = "Download CIFAR-10" + (f" ({size / 1e6:.{0 if size >= 10e6 else 1}f} MB)" if size else "")
    what = (f"torchvision's archive of the official CIFAR-10 ({size:,} bytes, {size / 2**20:.0f} MiB)" if size
            else "torchvision's archive of the official CIFAR-10")
    what += f", md5-checked and unpacked into {literal(root)}; then it is the default data set for everyone here."
    st.button(label, key=f"{where}_download_cifar", icon=":material/download:", on_click=_start, help=what)
    if where == "sidebar" and Keys.DOWNLOAD_ERROR in st.session_state:  # why a start was refused, once
        st.error(st.session_state.pop(Keys.DOWNLOAD_ERROR))
    if where == "home" or reach.ok is None:
        st.caption(f"The official CIFAR-10 is not on this server, so the app uses {using}. The download is {what}"
                   + (" Checking whether it can be reached..." if reach.ok is None else ""))


def _start() -> None:
    """The button's callback. Its refusal is kept under a key of its own: the page's
    ``show_error`` runs after the sidebar and must still find its own buttons' errors."""
    global _registry
    call = Call(download.download_cifar10, default_data_dir(), download.cifar_url(), download.cifar_md5())
    with _lock:
        old = _registry.get(KEY) if _registry is not None else None
        if old is not None and old.snapshot().state == "done":
            _registry = None  # its files were deleted since: the registry would hand back the finished task
    try:
        registry().start(KEY, call, title="Download CIFAR-10", by=visitor())
    except ValueError as e:
        st.session_state[Keys.DOWNLOAD_ERROR] = str(e)


@st.fragment(run_every=1.0)
def _progress(where: str) -> None:
    task = registry().get(KEY)
    if task is None or task.snapshot().done:
        snap = task.snapshot() if task is not None else None
        if snap is not None and snap.state == "done":
            flash("CIFAR-10 downloaded: it is now the data set everyone on this server starts with."
                  if default_source().source == "cifar10" else  # RESNET_VIZ_DEFAULT_DATA keeps another default
                  "CIFAR-10 downloaded: pick it on the Train page (this server's default is set to stay).")
            download.forget_reachability()
        st.rerun()  # the whole app: the sidebar's data set changes with it
    snap = task.snapshot()
    st.progress(snap.fraction, text=snap.message if snap.message != "starting" else "Starting the download...")
    if may_control(visitor(), task.owner):
        st.button("Stop", key=f"{where}_stop_download", icon=":material/stop:", on_click=clicked(task.stop, visitor()))
    else:
        st.caption("Another visitor started this download; it is shared with you.")
