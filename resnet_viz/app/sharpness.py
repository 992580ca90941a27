"""The Experiments page's Sharpness tab: top Hessian eigenvalues and trace of two models, side by side."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import streamlit as st

from resnet_viz.app import compute, resources, tasks, widgets
from resnet_viz.background.tasks import Call, experiment_key
from resnet_viz.config import ModelConfig
from resnet_viz.experiments import estimates
from resnet_viz.experiments.sharpness import sharpness
from resnet_viz.plots.sharpness import sharpness_figure
from resnet_viz.training.speed import Speed

__all__ = ["reading", "sharpness_tab"]


def reading(results: Sequence[dict[str, Any]]) -> str:
    """One or two sentences reading the numbers: which model is sharper, and by how much."""
    rows = [r for r in results if r.get("eigenvalues") and r["eigenvalues"][0] is not None]
    if not rows:
        return ""
    parts = [f"{r['label']}: top eigenvalue {r['eigenvalues'][0]:.3g}"
             + (f", trace {r['trace']:.3g} ± {r['trace_se']:.2g}" if r.get("trace") is not None else "")
             for r in rows]
    text = "; ".join(parts) + "."
    if len(rows) == 2:
        a, b = sorted(rows, key=lambda r: abs(r["eigenvalues"][0]))
        ratio = abs(b["eigenvalues"][0]) / max(abs(a["eigenvalues"][0]), 1e-12)
        text += (f" {b['label']} curves {ratio:.2g}x as steeply along its sharpest direction: "
                 "a larger top eigenvalue means a sharper minimum (a step along that direction raises the "
                 "loss faster), and it caps the stable learning rate of gradient descent at 2/λ.")
    if not all(all(r.get("converged", [])) for r in rows):
        text += " Hatched bars did not converge within the products allowed: raise them for firmer numbers."
    return text


def _estimate(cfg: ModelConfig, n: int, top: int, iters: int, samples: int, speed: Speed,
              threads: int | None) -> float:
    return estimates.sharpness_seconds(cfg, n, speed, threads, top=top, max_iter=iters, trace_samples=samples)


def sharpness_tab(refs: Sequence[Any], fits: Callable[[Any], bool], model: Callable[[Any], Any],
                  tags: Mapping[str, str], dtag: str, names: Mapping[str, str],
                  cfgs: Mapping[str, ModelConfig], data_name: str) -> None:
    """One Run per picked model (with its time estimate), then both results in one bar chart."""
    st.markdown("How sharp is the minimum? The top eigenvalues of the Hessian of the training loss "
                "(power iteration on Hessian-vector products) and its trace (Hutchinson's estimator), on a "
                "fixed batch of training images, BN in eval mode (PyHessian, Yao et al. 2020).")
    c1, c2, c3, c4 = st.columns(4)
    n = c1.select_slider("Training images", [32, 64, 128, 256], value=128, key="sharp_n",
                         help="PyHessian uses one batch of 128; at most 512 are allowed")
    top = c2.select_slider("Eigenvalues", [1, 2, 3, 5], value=3, key="sharp_top")
    iters = c3.select_slider("Products per eigenvalue (max)", [10, 20, 50, 100], value=20, key="sharp_iter")
    samples = c4.select_slider("Trace samples", [0, 10, 20, 50], value=20, key="sharp_trace")
    results = []
    for ref in refs:
        if not fits(ref):
            continue
        x, y = resources.experiment_images("train", n)
        cfg: ModelConfig = cfgs[ref.key]
        res = tasks.run_task(
            experiment_key("sharpness", tags[ref.key], dtag, n, top, iters, samples),
            f"Sharpness: {widgets.literal(ref.label)}",
            # An untrained net's BN statistics are placeholders: set from the images (recalibrate_bn).
            Call(sharpness, model(ref), x, y, top=top, max_iter=iters, trace_samples=samples,
                 recalibrate=ref.kind == "untrained", label=names[ref.key]),
            title=f"Sharpness: {names[ref.key]} ({n} training images of {data_name}, top {top}, "
                  f"{samples} trace samples)",
            seconds=partial(_estimate, cfg, n, top, iters, samples))
        if res:
            results.append(res)
    st.plotly_chart(compute.chart(sharpness_figure, widgets.plot_labels(results)), width="stretch",
                    key="sharp_fig")
    if text := reading([{**r, "label": widgets.literal(r["label"])} for r in results]):
        st.info(text)
