"""Long computations as background tasks: a Run button, progress with Stop, the result.

Tasks live in one registry per server process (``resources.task_registry``), keyed by
what they compute (``background.tasks.task_key``), so a reload or another tab finds the same task and its
result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from resnet_viz.access import may_control
from resnet_viz.app.resources import job_registry, machine_speed, task_registry
from resnet_viz.app.visitors import visitor
from resnet_viz.app.widgets import clicked, show_error, time_estimate
from resnet_viz.background.progress import clock
from resnet_viz.training.speed import Speed


def run_task(key: str, label: str, fn: Callable[..., Any], help: str = "", title: str = "",
             preview: Callable[[Any], None] | None = None,
             seconds: Callable[[Speed, int | None], float] | None = None, here: bool = False) -> Any:
    """A Run button for a long computation, its progress bar and Stop while it runs, and
    its result (or None) once it is done. ``key`` names what is computed (``background.tasks.task_key``), so
    a reload or another tab finds the same task and its result; ``title`` says it in words
    for the report (the button's label by default). While it runs, ``preview`` (if given)
    draws the latest partial result the task published, e.g. a loss surface on a coarse
    grid. ``label`` is Markdown: pass user text through ``widgets.literal``. ``seconds(speed,
    threads)`` estimates the work's time on this machine, shown under the button. ``here``:
    the work reads or fills this machine's folders, so it never goes to a Ray cluster's worker."""
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
        # task's progress fragment ending in a full rerun).
        # A refusal (the server runs as many tasks as it allows) is a ValueError in the
        # callback: ``clicked`` keeps it and ``show_error`` shows it under the button.
        st.button(label, key=f"start_{key}", help=help, icon=":material/play_arrow:",
                  on_click=clicked(_start, key, fn, title or label, here))
        if seconds is not None:
            measured = machine_speed()
            time_estimate(seconds(measured, _threads()) if measured else None, measured)
        show_error()
        return None
    if not task.snapshot().done:
        _task_progress(key, preview)
        return None
    snap = task.snapshot()
    st.caption(f"Computed in {snap.elapsed:.1f} s.")
    return snap.result


def _threads() -> int | None:
    """A task's torch threads. Beside a training run, one: two workers with two threads each
    on two cores would each wait for the other, and the run is the longer work."""
    return 1 if job_registry().active() is not None else None


def _start(key: str, fn: Callable[..., Any], title: str, here: bool = False) -> None:
    task_registry().start(key, fn, title=title, threads=_threads(), by=visitor(), here=here)


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
    if may_control(visitor(), task.owner):
        c2.button("Stop", key=f"stop_{key}", icon=":material/stop:", on_click=clicked(task.stop, visitor()))
    else:
        c2.caption("Another visitor started this; it is shared with you.")


def published_offer() -> None:
    """The "Published nets" offer beside a model picker: a download button per published net
    not on this server yet (a background task with progress and Stop); once one is here, every
    model picker lists it. Offline, the failed task says it cannot reach the download."""
    from resnet_viz.background.calls import Call
    from resnet_viz.store import published

    missing = [n for n in published.PUBLISHED.values() if published.installed(n.name) is None]
    if not missing:
        return
    with st.expander("Published nets: paper-quality ResNet-20/32/44/56, trained by others, in one click"):
        st.caption("akamaster/pytorch_resnet_cifar10 (BSD-2-Clause): He et al.'s option A nets, 91.7-93.4% on the "
                   "official CIFAR-10 test set (about 81-83% on the JPEG copy). Downloaded from GitHub, sha256 "
                   "checked, never run as code; then they are in every model picker.")
        for n in missing:
            run_task(f"published|{n.name}", f"Download ResNet-{n.depth} ({n.size / 1e6:.1f} MB)",
                     Call(published.download, n.name), title=f"Download of the published {n.config.label}",
                     help=f"{n.url}, {100 - n.error:.1f}% reported on the official test set",
                     here=True)  # into this machine's models folder
