"""The path training took over the loss contour in its principal plane (Li et al. 2018, Fig. 9),
from ``experiments.trainpath.TrainPath.to_dict()`` (or a task's partial result: a coarse surface
with the path under ``"path"``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from resnet_viz.plots._base import _note, _style, log_ticks

MAX_LABELS = 10  # epoch labels on the path: more would cover it


def _labelled(epochs: list[float]) -> set[int]:
    """Indices of the points to label: the first, the last and evenly spaced ones between."""
    n = len(epochs)
    every = max(1, round(n / MAX_LABELS))
    return {0, n - 1, *range(0, n, every)}


def trainpath_figure(result: dict[str, Any] | None, title: str = "") -> go.Figure:
    """Contour of the training loss (log colour scale, labelled in loss) on the plane of the
    path's top-2 principal directions, the snapshots drawn over it from the initialization to
    the final weights at (0, 0), labelled by epoch; the axes say each direction's share of variance."""
    fig = go.Figure()
    if not result:
        return _note(_style(fig, title or "Training path", 520), "Compute the training path of a run")
    path = result.get("path", result)
    surface = result.get("surface", result)
    loss = np.asarray(surface["loss"], dtype=float)
    if loss.shape != (len(surface["betas"]), len(surface["alphas"])):
        raise ValueError(f"loss must be (len(betas), len(alphas)), got shape {loss.shape}")
    z = np.log10(np.maximum(loss, 1e-6))
    finite = z[np.isfinite(z)]
    tv, tt = log_ticks(float(finite.min()), float(finite.max())) if finite.size else ([], [])
    bar = {"title": {"text": "training loss"}, **({"tickvals": tv, "ticktext": tt} if tv else {})}
    fig.add_trace(go.Contour(x=surface["alphas"], y=surface["betas"], z=z, customdata=loss, ncontours=25,
                             colorscale="Viridis", colorbar=bar, name="loss",
                             hovertemplate="(%{x:.3g}, %{y:.3g})<br>loss %{customdata:.4g}<extra></extra>"))
    epochs, keep = path["epochs"], _labelled(path["epochs"])
    text = [f"{e:.3g}" if i in keep else "" for i, e in enumerate(epochs)]
    fig.add_trace(go.Scatter(x=path["x"], y=path["y"], mode="lines+markers+text", text=text,
                             textposition="top center", textfont={"color": "white", "size": 11},
                             line={"color": "#e45756", "width": 2}, marker={"size": 6, "color": "#e45756"},
                             customdata=list(zip(path["steps"], epochs, strict=True)), name="path",
                             hovertemplate="step %{customdata[0]} (epoch %{customdata[1]:.3g})<br>"
                                           "(%{x:.3g}, %{y:.3g})<extra></extra>"))
    fig.add_trace(go.Scatter(x=[path["x"][-1]], y=[path["y"][-1]], mode="markers", name="final weights",
                             marker={"symbol": "star", "size": 15, "color": "white", "line": {"width": 1}},
                             hoverinfo="skip"))
    share = path["explained"]
    fig.update_xaxes(title_text=f"1st principal direction: {100 * share[0]:.1f}% of the variance")
    fig.update_yaxes(title_text=f"2nd principal direction: {100 * share[1]:.1f}%")
    fig.update_layout(showlegend=False)
    label = result.get("label") or surface.get("label") or "run"
    return _style(fig, title or "The path training took", 540,
                  subtitle=f"{label} · weight snapshots on their top-2 principal plane (labels: epochs)")
