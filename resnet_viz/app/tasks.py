"""Long computations as background tasks: a Run button, progress with Stop, the result.

Tasks live in one registry per server process (``resources.task_registry``), keyed by
what they compute (``task_key``), so a reload or another tab finds the same task and its
result.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import streamlit as st
import torch

from resnet_viz.app.resources import task_registry
from resnet_viz.background.progress import clock
from resnet_viz.config import ModelConfig
from resnet_viz.store.models import ModelRef


def model_tag(ref: ModelRef, cfg: ModelConfig) -> str:
    """What a task on model ``ref`` computes on: its run or file, or for the untrained model
    the Build page's config of now (a different build is a different model)."""
    return f"untrained {cfg}" if ref.kind == "untrained" else ref.key


def task_key(experiment: str, *parts: object) -> str:
    """The registry key of ``experiment`` on ``parts`` (a model tag, then its settings):
    two requests for the same computation get the same key, so they share one task."""
    if not experiment or "|" in experiment:
        raise ValueError(f"an experiment name must be non-empty and hold no '|', got {experiment!r}")
    return "|".join([experiment, *map(str, parts)])


def content_tag(x: torch.Tensor) -> str:
    """A short digest of ``x``'s values, for keying a task by an image: two uploads may
    share a file name, and one name may be uploaded again with other pixels."""
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def run_task(key: str, label: str, fn: Callable[..., Any], help: str = "", title: str = "",
             preview: Callable[[Any], None] | None = None) -> Any:
    """A Run button for a long computation, its progress bar and Stop while it runs, and
    its result (or None) once it is done. ``key`` names what is computed (``task_key``), so
    a reload or another tab finds the same task and its result; ``title`` says it in words
    for the report (the button's label by default). While it runs, ``preview`` (if given)
    draws the latest partial result the task published, e.g. a loss surface on a coarse
    grid. ``label`` is Markdown: pass user text through ``widgets.literal``."""
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
