"""The Experiments page's "Training path" section, in the Loss landscape tab: a run's weight
snapshots on their top-2 principal plane over the loss contour there (Li et al. 2018, Fig. 9),
computed as a background task (``experiments.trainpath.training_path``)."""

from __future__ import annotations

import streamlit as st

from resnet_viz.app import compute, resources, tasks, widgets
from resnet_viz.background.tasks import Call, task_key
from resnet_viz.experiments import estimates
from resnet_viz.experiments.trainpath import training_path
from resnet_viz.plots.trainpath import trainpath_figure
from resnet_viz.store.snapshots import list_snapshots

MIN_SNAPSHOTS = 4  # the fewest a plane can be fitted to (experiments.trainpath.path_pca)


def section(n: int, dtag: str) -> None:
    """Pick a run with snapshots, compute its path with progress and Stop, draw it."""
    st.subheader("Training path")
    st.markdown("The weights a run saved along training (each epoch by default), on the plane of their two "
                "principal directions, over the training loss there (Li et al. 2018, Fig. 9). The final weights "
                "sit at (0, 0); the axes say how much of the path each direction holds.")
    root = resources.runs_root()
    runs = [r for r in resources.model_refs(include_untrained=False) if r.kind == "run"]
    found = {r.key: list_snapshots(root / r.key) for r in runs}
    data = resources.data()
    runs = [r for r in runs if len(found[r.key]) >= MIN_SNAPSHOTS and data is not None
            and tuple(resources.weights(r).classes) == tuple(data.classes)]  # trained on these classes
    if not runs:
        st.info(f"No run on this data set has {MIN_SNAPSHOTS} or more weight snapshots yet: runs keep one per epoch "
                "(and at the start and the end), so train one for a few epochs on the Train page.")
        return
    c1, c2 = st.columns(2)
    run = c1.selectbox("Run", runs, format_func=lambda r: r.label, key="tp_run")
    steps = c2.select_slider("Contour grid points per axis", [7, 11, 15, 21], value=11, key="tp_steps")
    if run is None:  # the runs changed under the widget
        return
    snaps, cfg = found[run.key], resources.weights(run).config
    x, y = resources.experiment_images("train", n)
    # The snapshots' count and last step are in the key: a run trained on has a new path.
    res = tasks.run_task(task_key("trainpath", run.key, len(snaps), snaps[-1][0], dtag, n, steps),
                         f"Training path: {widgets.literal(run.label)} ({len(snaps)} snapshots)",
                         Call(training_path, str(root / run.key), x, y, steps=steps, label=run.label),
                         title=f"Training path: {run.label} ({len(snaps)} snapshots, {n} training images, "
                               f"{steps}x{steps})",
                         seconds=lambda s, t: estimates.trainpath_seconds(cfg, n, steps, s, t),
                         preview=_preview, here=True)  # it reads the run's snapshots from this machine's disk
    if res:
        res = widgets.plot_labels([res])[0]
        st.plotly_chart(compute.chart(trainpath_figure, res), width="stretch", key="tp_fig")
        a, b = res["explained"]
        st.info(f"The two directions hold {a:.1%} + {b:.1%} = {a + b:.1%} of the path's variance (Li et al. "
                "found 40-90%): the rest of the path leaves this plane, so the contour is the loss where the "
                "path's shadow falls, not the loss the path met.")


def _preview(part: dict) -> None:
    """The coarse contour finished so far, with the path (a task's partial result)."""
    n = len(part["alphas"])
    st.plotly_chart(trainpath_figure(part, title=f"Preview on a {n}x{n} grid"), width="stretch", key="tp_preview")
