"""Explain page: how faithful each map is. A score under each map (cached, well under a
second) and a comparison of every method on a fixed set of test images (a background task
per model, with progress and Stop)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import streamlit as st
from torch import Tensor

from resnet_viz.app import compute, resources, tasks, widgets
from resnet_viz.app.state import data_config
from resnet_viz.background.calls import Call, Deferred
from resnet_viz.background.tasks import data_tag, experiment_key, model_tag
from resnet_viz.config import DataConfig
from resnet_viz.data.sources import ImageData
from resnet_viz.experiments import estimates
from resnet_viz.experiments.attribution import METHODS
from resnet_viz.experiments.attribution.faithfulness import RANDOM, faithfulness_study, fixed_images
from resnet_viz.plots.faithfulness import faithfulness_curves, faithfulness_figure
from resnet_viz.store.models import ModelRef, model_with_weights

IMAGES = [5, 10, 20, 50, 100]


def score_caption(s: dict[str, float]) -> str:
    """One line under a map: its deletion and insertion AUC on this image (``compute.explain_scored``),
    and a random map's."""
    return (f"Faithfulness on this image (predicted class): deletion AUC **{s['deletion']:.3f}** "
            f"(lower = more faithful), insertion AUC **{s['insertion']:.3f}** (higher = more faithful); "
            f"a random map scores {s['random_deletion']:.3f} / {s['random_insertion']:.3f}.")


# Picked and normalized once per data set and size, shared read-only (as resources.experiment_images).
@st.cache_resource(show_spinner=False, max_entries=4)
def _fixed(cfg: DataConfig, n: int, _data: ImageData) -> tuple[Tensor, Tensor]:
    return fixed_images(_data.test_x, _data.test_y, n)


def method_comparison(refs: Sequence[ModelRef]) -> None:
    """Every method's deletion, insertion and ROAD scores on the first test images of each
    class, for each picked model side by side: one background task per model."""
    st.subheader("How faithful is each method?")
    st.markdown("Take away the pixels a map ranks highest and watch the class probability: a faithful map "
                "makes it fall fast (**deletion**, lower area is better) and, put back into a blurred image, "
                "rise fast (**insertion**, higher is better). ROAD removes pixels by filling them from their "
                "neighbours (no tell-tale hole) most and least relevant first. A random map is the yardstick: "
                "a map that looks sharp but scores like it does not show what the model uses.")
    data = resources.data()
    if data is None:
        return
    n = st.select_slider("Test images (the first of each class, then the second, ...)", IMAGES, value=10,
                         key="faith_n")
    dtag = data_tag(data_config(), data.name)
    methods = [*METHODS, RANDOM]
    results = []
    for ref in refs:
        w = resources.weights(ref)
        if tuple(w.classes) != tuple(data.classes):
            st.warning(f"{widgets.literal(ref.label)} was trained on other classes than {widgets.literal(data.name)}.")
            continue
        x, y = _fixed(data_config(), n, data)
        res = tasks.run_task(experiment_key("faithfulness", model_tag(ref, w.config), dtag, n),
                             f"Score every method: {widgets.literal(ref.label)}",
                             Call(faithfulness_study, Deferred(model_with_weights, w.config, w.state), x, y,
                                  label=ref.label.split(" · ")[0]),
                             title=f"Faithfulness of every method: {ref.label} ({n} test images of {data.name})",
                             seconds=partial(estimates.faithfulness_seconds, w.config, n, methods))
        if res:
            results.append(res)
    if not results:
        return
    results = widgets.plot_labels(results)
    st.plotly_chart(compute.chart(faithfulness_figure, results), width="stretch", key="faith_fig")
    st.dataframe(_table(results), hide_index=True, width="stretch", key="faith_table")
    for r in results:
        st.info(f"**{widgets.literal(r['label'])}**: {widgets.literal(r.get('reading', ''))}")
    tabs = st.tabs([r["label"] for r in results])
    for i, (tab, r) in enumerate(zip(tabs, results, strict=True)):
        tab.plotly_chart(compute.chart(faithfulness_curves, r), width="stretch", key=f"faith_curves_{i}")


def _table(results: Sequence[dict]) -> list[dict[str, object]]:
    rows = []
    for r in results:
        for m, s in r["methods"].items():
            rows.append({"model": r["label"], "method": "random map" if m == RANDOM else METHODS[m].label,
                         "deletion AUC ↓": round(s["deletion_auc"], 3), "insertion AUC ↑": round(s["insertion_auc"], 3),
                         "ROAD gap ↑": round(s["road_gap"], 3) if "road_gap" in s else None})
    return rows


__all__ = ["method_comparison", "score_caption"]
