"""Fig. 7 of He et al. 2015 for the nets at hand: the std of each 3x3 layer's response, by
layer (left) and sorted largest first (right); plain nets dashed, residual nets solid, one
colour per depth. Results come in as ``experiments.responses.ResponseResult.to_dict()``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.plots._base import _note, _style, run_color

# Nets of one depth and kind (a shipped ResNet-20 and a published one) share colour and dash:
# their markers tell them apart.
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")


def responses_figure(results: Sequence[dict[str, Any]]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("by layer (forward order)", "sorted by magnitude"),
                        horizontal_spacing=0.08)
    _style(fig, "Std of layer responses (He et al. 2015, Fig. 7)", 460)
    if not results:
        return _note(fig, "Measure a net to see its layer responses")
    depths = sorted({r["depth"] for r in results})
    seen: dict[tuple[int, bool], int] = {}
    for i, r in enumerate(results):
        kind = (r["depth"], bool(r["plain"]))
        nth = seen[kind] = seen.get(kind, -1) + 1
        kw = {"line": {"color": run_color(depths.index(r["depth"])), "dash": "dash" if r["plain"] else "solid",
                       "width": 1.6},
              "marker": {"size": 4, "symbol": _SYMBOLS[nth % len(_SYMBOLS)]}, "legendgroup": str(i),
              "mode": "lines+markers" if nth else "lines"}
        layers = list(range(1, len(r["std"]) + 1))
        fig.add_trace(go.Scatter(x=layers, y=r["std"], name=f"{r['label']} (mean {r['mean_std']:.2f})",
                                 customdata=r["layers"], hovertemplate="%{customdata}: %{y:.3f}<extra></extra>",
                                 **kw), row=1, col=1)
        fig.add_trace(go.Scatter(x=layers, y=r["sorted_std"], showlegend=False,
                                 hovertemplate="rank %{x}: %{y:.3f}<extra></extra>", **kw), row=1, col=2)
    fig.update_yaxes(title_text="std", rangemode="tozero")
    fig.update_xaxes(title_text="layer index (3x3 convs, stem first)", row=1, col=1)
    fig.update_xaxes(title_text="layer index (sorted by std)", row=1, col=2)
    fig.update_layout(legend={"orientation": "h", "y": -0.25, "x": 0})
    return fig
