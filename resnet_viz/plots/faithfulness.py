"""Figures of how faithful each attribution method is (``experiments.attribution.faithfulness``):
the three scores per method, models side by side, and the mean deletion and insertion curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.plots._base import _note, _style, run_color

# Short titles: three subplots side by side leave about a third of the page's width each.
SCORES = (("deletion_auc", "Deletion AUC (lower = better)"),
          ("insertion_auc", "Insertion AUC (higher = better)"),
          ("road_gap", "ROAD gap, LeRF - MoRF (higher = better)"))


def _method_name(m: str) -> str:
    return "random map" if m == "random" else m.replace("_", " ")


def faithfulness_figure(results: Sequence[dict[str, Any]]) -> go.Figure:
    """Grouped bars: each score per method (the random map last, dashed line at its score),
    one colour per model."""
    scores = [s for s in SCORES if all(s[0] in m for r in results for m in r.get("methods", {}).values())]
    fig = make_subplots(rows=1, cols=max(1, len(scores)), subplot_titles=[t for _, t in scores] or [""],
                        horizontal_spacing=0.07)
    _style(fig, "How faithful is each map? Pixels removed in the map's order", 430)
    if not results or not scores:
        return _note(fig, "Run the comparison to score each method's maps")
    for i, r in enumerate(results):
        methods = list(r["methods"])
        for j, (key, _) in enumerate(scores):
            err = [r["methods"][m].get(f"{key}_std") for m in methods]
            fig.add_trace(go.Bar(x=[_method_name(m) for m in methods], y=[r["methods"][m][key] for m in methods],
                                 name=r.get("label", f"model {i + 1}"), marker_color=run_color(i),
                                 legendgroup=str(i), showlegend=j == 0,
                                 error_y={"type": "data", "array": err, "visible": None not in err},
                                 hovertemplate="%{x}: %{y:.3f}<extra>" + str(r.get("label", "")) + "</extra>"),
                          row=1, col=j + 1)
            if "random" in r["methods"]:
                fig.add_hline(y=r["methods"]["random"][key], line={"color": run_color(i), "dash": "dot", "width": 1},
                              row=1, col=j + 1)
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": -0.3, "x": 0})
    fig.update_xaxes(tickangle=-35)
    return fig


def faithfulness_curves(result: dict[str, Any]) -> go.Figure:
    """One model's mean deletion and insertion curves, one line per method."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Deletion: top pixels set to the mean colour",
                                                        "Insertion: top pixels put back into a blurred image"))
    _style(fig, f"Class probability as pixels are removed or restored: {result.get('label', '')}", 400)
    if not result.get("methods") or "deletion" not in next(iter(result["methods"].values())):
        return _note(fig, "No curves in this result")
    fr = [100 * f for f in result["fractions"]]
    for i, (m, s) in enumerate(result["methods"].items()):
        line = {"color": "#888", "dash": "dash"} if m == "random" else {"color": run_color(i)}
        for col, key in ((1, "deletion"), (2, "insertion")):
            fig.add_trace(go.Scatter(x=fr, y=s[key], name=_method_name(m), line=line, legendgroup=m,
                                     showlegend=col == 1, hovertemplate="%{x:.0f}%: %{y:.3f}<extra>" + m + "</extra>"),
                          row=1, col=col)
    fig.update_xaxes(title_text="pixels, most relevant first (%)")
    fig.update_yaxes(title_text="probability of the explained class", range=[0, 1], row=1, col=1)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(legend={"orientation": "h", "y": -0.3, "x": 0})
    return fig
