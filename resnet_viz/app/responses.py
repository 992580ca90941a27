"""The Experiments page's "Layer responses (Fig. 7)" tab: the std of every 3x3 layer's response
of each chosen net, one background task per net, all on one figure like the paper's."""

from __future__ import annotations

from typing import Any

import streamlit as st

from resnet_viz.app import compute, resources, tasks, widgets
from resnet_viz.app.state import data_config
from resnet_viz.background.calls import Call, Deferred
from resnet_viz.background.tasks import data_tag, experiment_key, model_tag
from resnet_viz.experiments import estimates, responses
from resnet_viz.plots.responses import responses_figure
from resnet_viz.store.models import ModelRef, model_with_weights

IMAGE_CHOICES = [100, 500, 1000, 2000]
MAX_DEFAULT = 8  # nets measured by default: the shipped and published ones and the latest runs


def _name(ref: ModelRef, cfg_label: str) -> str:
    """A short legend entry: the architecture and where the net comes from (its run's name)."""
    if ref.kind == "untrained":
        return f"Untrained {cfg_label} (Build page)"
    parts = ref.label.split(" · ")
    return " · ".join(parts[:2]) if len(parts) > 1 else ref.label


def _offer(picked: list[ModelRef]) -> list[ModelRef]:
    """The two picked models, then the shipped and published nets and every run this visitor sees."""
    return list(dict.fromkeys([*picked, *resources.model_refs(include_untrained=False)]))


def _measure(ref: ModelRef, n: int, dtag: str, data_name: str) -> dict[str, Any] | None:
    w = resources.weights(ref)
    name = _name(ref, w.config.label)
    x, _ = resources.experiment_images("test", n)  # the lesion study's test images
    left, right = st.columns([2, 3], vertical_alignment="center")
    left.markdown(widgets.literal(name))  # which net each button, progress bar or "Computed in" is for
    with right:
        return _task(ref, w, name, x, n, dtag, data_name)


def _task(ref: ModelRef, w: resources.Weights, name: str, x: Any, n: int, dtag: str,
          data_name: str) -> dict[str, Any] | None:
    return tasks.run_task(experiment_key("responses", model_tag(ref, w.config), dtag, n),
                          "Measure layer responses",
                          Call(responses.layer_responses, Deferred(model_with_weights, w.config, w.state), x,
                               label=name),
                          help=f"{n} test images through {name}",
                          title=f"Layer responses (Fig. 7): {name} ({n} test images of {data_name})",
                          seconds=lambda s, t: estimates.responses_seconds(w.config, n, s, t))


def responses_view(picked: list[ModelRef]) -> None:
    st.markdown("He et al. 2015, Fig. 7: the standard deviation of each 3x3 layer's response (after batch norm, "
                "before the addition and the ReLU) on test images, by layer and sorted. Residual functions should "
                "be closer to zero than plain layers, and a deeper ResNet's layers smaller still. Plain nets "
                "dashed, residual solid, one colour per depth.")
    data = resources.data()
    if data is None:
        return
    offer = _offer(picked)
    c1, c2 = st.columns([3, 1])
    chosen = c1.multiselect("Nets", offer, default=offer[:MAX_DEFAULT], format_func=lambda r: r.label,
                            key="resp_nets", placeholder="Pick trained nets: a plain one and a residual one")
    n = c2.select_slider("Test images", IMAGE_CHOICES, value=500, key="resp_n")
    n = min(n, len(data.test_y))
    dtag = data_tag(data_config(), data.name)
    results = [r for ref in chosen if (r := _measure(ref, n, dtag, data.name))]
    st.plotly_chart(compute.chart(responses_figure, widgets.plot_labels(results)), width="stretch", key="resp_fig")
    if results:
        st.info(responses.reading(results))
