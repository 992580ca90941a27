"""The effective-paths figure (Veit et al. 2016, Fig. 6) from ``experiments.paths`` results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.plots._base import _note, _style, log_yaxis, run_color

__all__ = ["paths_figure"]

TITLES = ("Paths of each length (binomial)", "Gradient magnitude of one path (log)",
          "Total gradient by path length")


def paths_figure(results: Sequence[dict[str, Any]]) -> go.Figure:
    """Left: the share of the 2^n paths that have length k; middle: the mean input-gradient
    norm of a single path of length k; right: that times the number of such paths, as a share
    of all lengths' total, with the range holding ``mass`` of it shaded and the binomial dotted
    beside it. Plain nets (a single
    path) are left out: there is nothing to distribute."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=TITLES, horizontal_spacing=0.08)
    _style(fig, "Effective paths (Veit et al. 2016)", 430)
    residual = [r for r in results if not r.get("plain")]
    if not residual:
        return _note(fig, "Run the study on a residual net: a plain net has a single path")
    mags = []
    for i, r in enumerate(residual):
        c, rows = run_color(i), r["per_length"]
        ks = [row["k"] for row in rows]
        lo, hi = r["effective"]
        name = f"{r.get('label') or f'model {i + 1}'}: {r['mass']:.0%} in {lo}-{hi} of {r['blocks']}"
        kw = {"line": {"color": c}, "legendgroup": str(i), "mode": "lines+markers", "marker": {"size": 5}}
        fig.add_trace(go.Scatter(x=ks, y=[row["binomial"] for row in rows], name=name,
                                 hovertemplate="length %{x}: %{y:.3g} of the paths<extra></extra>", **kw),
                      row=1, col=1)
        ok = [row for row in rows if row["magnitude"] > 0]  # a log axis has no place for 0
        mags += [row["magnitude"] for row in ok]
        fig.add_trace(go.Scatter(x=[row["k"] for row in ok], y=[row["magnitude"] for row in ok], showlegend=False,
                                 customdata=[row["samples"] for row in ok],
                                 hovertemplate="length %{x}: %{y:.3g} (%{customdata} sampled)<extra></extra>",
                                 **kw), row=1, col=2)
        fig.add_trace(go.Scatter(x=ks, y=[row["share"] for row in rows], showlegend=False,
                                 hovertemplate="length %{x}: %{y:.1%} of the gradient<extra></extra>", **kw),
                      row=1, col=3)
        fig.add_trace(go.Scatter(x=ks, y=[row["binomial"] for row in rows], showlegend=False, mode="lines",
                                 line={"color": c, "dash": "dot", "width": 1}, legendgroup=str(i),
                                 hovertemplate="length %{x}: %{y:.1%} of the paths<extra></extra>"), row=1, col=3)
        fig.add_vrect(x0=lo - 0.5, x1=hi + 0.5, fillcolor=c, opacity=0.1, line_width=0, row=1, col=3)
    log_yaxis(fig, mags, row=1, col=2)
    fig.update_xaxes(title_text="path length k (residual branches taken)")
    fig.update_yaxes(title_text="share of paths", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="mean input-gradient norm", row=1, col=2)
    fig.update_yaxes(title_text="share of total gradient (dotted: of paths)", rangemode="tozero", row=1, col=3)
    fig.update_layout(legend={"orientation": "h", "y": -0.3, "x": 0})
    return fig
