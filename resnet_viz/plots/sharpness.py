"""Sharpness figure: top Hessian eigenvalues and the Hessian trace, one colour per model.

Results come in as ``experiments.sharpness.SharpnessResult.to_dict()`` (plain data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.fsutil import as_number
from resnet_viz.plots._base import _note, _style, run_color

__all__ = ["sharpness_figure"]


def sharpness_figure(results: Sequence[dict[str, Any]]) -> go.Figure:
    """Left: the top eigenvalues (λ1, λ2, ...) side by side per model; right: the trace with
    its standard error. A value that did not converge is drawn hatched."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.12,
                        subplot_titles=("Top Hessian eigenvalues", "Hessian trace (Hutchinson, ± s.e.)"))
    images = sorted({int(r["images"]) for r in results if r.get("images")})
    _style(fig, "Sharpness of the training loss", 440,
           subtitle=f"loss on {', '.join(map(str, images))} training images; hatched: not converged" if images else "")
    fig.update_layout(margin={"t": 115})  # room between the subtitle and the subplots' titles
    if not results:
        return _note(fig, "Run the sharpness measurement to compare the curvature of two nets")
    for i, r in enumerate(results):
        c = run_color(i)
        name = r.get("label") or f"model {i + 1}"
        eig = [as_number(v, finite=True) for v in r.get("eigenvalues", [])]
        conv = list(r.get("converged", [True] * len(eig)))
        fig.add_trace(go.Bar(x=[f"λ{k + 1}" for k in range(len(eig))], y=eig, name=name, marker_color=c,
                             legendgroup=str(i), offsetgroup=str(i),
                             marker_pattern_shape=["" if ok else "/" for ok in conv],
                             customdata=[["converged" if ok else "not converged"] for ok in conv],
                             hovertemplate="%{x}: %{y:.4g} (%{customdata[0]})<extra>" + name + "</extra>"),
                      row=1, col=1)
        trace = as_number(r.get("trace"), finite=True)
        if trace is not None:
            se = as_number(r.get("trace_se"), finite=True) or 0.0
            fig.add_trace(go.Bar(x=[name], y=[trace], marker_color=c, showlegend=False, legendgroup=str(i),
                                 error_y={"type": "data", "array": [se], "visible": True},
                                 hovertemplate=f"trace %{{y:.4g}} ± {se:.2g} ({r.get('trace_samples')} samples)"
                                               "<extra></extra>"), row=1, col=2)
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": -0.2, "x": 0})
    fig.update_yaxes(title_text="eigenvalue", row=1, col=1)
    fig.update_yaxes(title_text="trace", row=1, col=2)
    fig.update_xaxes(showticklabels=False, row=1, col=2)
    return fig
