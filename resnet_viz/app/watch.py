"""Watch a net learn, in the app: the running run's latest maps on the Train page, and the
Inspect page's "Watch it learn" view that plays any run back and overlays two runs' histograms.

The frames are read from the run folder (``store.watchfile``), cached by the file's size and
time, so a live view polling every 1.5 s re-reads only when the trainer has added a frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from resnet_viz.app import resources, widgets
from resnet_viz.plots import watch as watch_plots
from resnet_viz.store import watchfile
from resnet_viz.store.listing import RunInfo


@st.cache_data(show_spinner=False, max_entries=8)
def _read(path: str, stamp: tuple[int, int]) -> watchfile.Watch | None:
    return watchfile.read_watch(Path(path))


def read(run_path: Path) -> watchfile.Watch | None:
    """The run's frames (None if it recorded none); a damaged file is reported on the page."""
    f = Path(run_path) / watchfile.WATCH_FILE
    try:
        st_ = f.stat()
        return _read(str(run_path), (st_.st_size, st_.st_mtime_ns))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        st.warning(f"Cannot read the run's frames: {e}")
        return None


def _maps(frame: watchfile.Frame, blocks: list[str]) -> list[tuple[str, list[int], np.ndarray]]:
    return [(b, frame.maps[b].channels, frame.maps[b].values) for b in blocks if b in frame.maps]


def live_maps(run_path: Path, label: str) -> None:
    """The latest frame of a running run: call from the Train page's live fragment."""
    w = read(run_path)
    if w is None or not w.frames:
        return
    f = w.frames[-1]
    with st.expander(f"Watch it learn: step {f.step:,}", expanded=True):
        c1, c2 = st.columns([1, 6])
        c1.image(w.image.transpose(1, 2, 0), caption=f"test image 0: {widgets.literal(w.class_name)}", width=96)
        c2.plotly_chart(watch_plots.watch_maps(_maps(f, w.blocks), title=f"{label} at step {f.step:,}"),
                        width="stretch", key="live_watch_maps")


def _picked(where, runs: list[RunInfo], key: str, label: str, exclude: str | None = None) -> RunInfo | None:
    options = [r for r in runs if r.id != exclude]
    if not options:
        return None
    return where.selectbox(label, options, key=key, format_func=lambda r: f"{r.label} · {r.name or r.id}")


def watch_view() -> None:
    """Inspect's "Watch it learn": a step slider over one run's frames, and a second run's
    histograms overlaid at the same step."""
    st.subheader("Watch it learn")
    runs = [r for r in resources.runs() if (r.path / watchfile.WATCH_FILE).is_file()]
    if not runs:
        st.info("No run has recorded frames yet: runs trained now record one test image's feature maps and "
                "every block's weight and gradient histograms about 64 times (`watch_every`).")
        return
    st.caption("The trainer recorded these while the run trained: one fixed test image's feature maps at the "
               "last block of each stage, and per-block histograms of the weights and of their gradients "
               "(fixed log-spaced bins, so two runs overlay: TensorBoard cannot, tensorboard#6206).")
    c1, c2 = st.columns(2)
    run = _picked(c1, runs, "watch_run", "Run")
    other = _picked(c2, runs, "watch_other", "Overlay histograms of", exclude=run.id if run else None)
    w = read(run.path) if run is not None else None
    if run is None or w is None or not w.frames:
        st.info("This run has recorded no frames yet.")
        return
    steps = w.steps
    step = st.select_slider("Step", steps, value=steps[-1], key="watch_step") if len(steps) > 1 else steps[0]
    f = w.at(step)
    c1, c2 = st.columns([1, 6])
    c1.image(w.image.transpose(1, 2, 0), caption=f"test image 0: {widgets.literal(w.class_name)}", width=96)
    c2.plotly_chart(watch_plots.watch_maps(_maps(f, w.blocks), title=f"{run.label}: step {f.step:,}"),
                    width="stretch", key="watch_maps")
    group = st.selectbox("Parameters of", w.groups, index=min(1, len(w.groups) - 1), key="watch_group") or w.groups[0]
    series: list[tuple[str, np.ndarray | None, np.ndarray | None]] = [
        (widgets.plot_text(f"{run.label} (step {f.step:,})"), f.weights.get(group), f.grads.get(group))]
    wo = read(other.path) if other is not None else None
    if other is not None and wo is not None and wo.frames and group in wo.groups:
        fo = wo.at(step)
        series.append((widgets.plot_text(f"{other.label} (step {fo.step:,})"), fo.weights.get(group),
                       fo.grads.get(group)))
    elif other is not None:
        st.caption(f"{other.label} has no frames for {group}: nothing to overlay.")
    st.plotly_chart(watch_plots.histogram_overlay(series, w.edges, title=f"{group} at step {f.step:,}"),
                    width="stretch", key="watch_hist")
    rows = [fr for fr in w.frames if group in fr.grads]
    st.plotly_chart(watch_plots.histogram_history([fr.step for fr in rows], np.array([fr.grads[group] for fr in rows]),
                                                  w.edges, title=f"{run.label}: gradients of {group} over training"),
                    width="stretch", key="watch_history")
