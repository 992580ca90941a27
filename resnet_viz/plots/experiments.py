"""Figures for the experiments: lesion, loss landscape, signal propagation, shattered
gradients, attribution sanity check and convolution by hand. Results come in as the
experiments' ``to_dict()`` output (plain data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.fsutil import as_number
from resnet_viz.plots._base import _note, _style, log_ticks, log_yaxis, run_color


def lesion_figure(results: Sequence[dict[str, Any]]) -> go.Figure:
    """Left: accuracy after deleting each single block; right: accuracy against k random deletions."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Delete one block", "Delete k random blocks"),
                        horizontal_spacing=0.1)
    _style(fig, "Lesion study (Veit et al. 2016)", 440)
    if not results:
        return _note(fig, "Run the lesion study to see how each net copes with missing blocks")
    for i, r in enumerate(results):
        c = run_color(i)
        names = [s["block"] for s in r["single"]]
        fig.add_trace(go.Scatter(x=names, y=[100 * s["acc"] for s in r["single"]], mode="lines+markers",
                                 name=r.get("label", f"model {i + 1}"), line={"color": c}, legendgroup=str(i),
                                 marker={"size": [11 if s["downsampling"] else 6 for s in r["single"]],
                                         "symbol": ["diamond" if s["downsampling"] else "circle" for s in r["single"]]},
                                 hovertemplate="%{x}: %{y:.1f}%<extra></extra>"), row=1, col=1)
        fig.add_hline(y=100 * r["baseline_acc"], line={"color": c, "dash": "dot", "width": 1}, row=1, col=1)
        ks = r["random_k"]
        fig.add_trace(go.Scatter(x=[k["k"] for k in ks], y=[100 * k["mean_acc"] for k in ks], mode="lines+markers",
                                 line={"color": c}, showlegend=False, legendgroup=str(i),
                                 error_y={"type": "data", "array": [100 * k["std_acc"] for k in ks], "visible": True},
                                 hovertemplate="k=%{x}: %{y:.1f}%<extra></extra>"), row=1, col=2)
    fig.update_yaxes(title_text="test accuracy (%)", range=[0, 100])
    fig.update_xaxes(title_text="deleted block (diamond: downsampling; dotted: no deletion)", row=1, col=1)
    fig.update_xaxes(title_text="blocks deleted at random (k)", row=1, col=2)
    fig.update_layout(legend={"orientation": "h", "y": -0.35, "x": 0})
    return fig


def slices_figure(slices: Sequence[dict[str, Any]], title: str = "Loss along a direction") -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "training accuracy (%)"))
    _style(fig, title, 400)
    if not slices:
        return _note(fig, "No slices yet")
    for i, s in enumerate(slices):
        kw = {"line": {"color": run_color(i)}, "legendgroup": str(i), "mode": "lines+markers"}
        fig.add_trace(go.Scatter(x=s["alphas"], y=s["loss"], name=s.get("label") or f"model {i + 1}", **kw),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=s["alphas"], y=[100 * a for a in s["acc"]], showlegend=False, **kw), row=1, col=2)
    xt = "α (0 = initial, 1 = trained)" if slices[0].get("kind") == "interpolation" else "α along the direction"
    fig.update_xaxes(title_text=xt)
    losses = [n for s in slices for v in s["loss"] if (n := as_number(v)) is not None and n > 0]
    if losses and max(losses) > 100 * min(losses):  # an untrained net far out: a linear axis flattens the rest
        log_yaxis(fig, losses, row=1, col=1)
        fig.layout.annotations[0].text = "training loss (log scale)"
    fig.update_layout(legend={"orientation": "h", "y": -0.25, "x": 0})
    return fig


def surface_figure(surface: dict[str, Any], three_d: bool = False, title: str = "") -> go.Figure:
    """The loss over the (α, β) grid, coloured (and in 3-D raised) by log10 loss so that the
    basin and the walls both show; the colour bar and z axis are labelled in loss itself."""
    loss = np.asarray(surface["loss"], dtype=float)
    if loss.ndim != 2 or loss.shape != (len(surface["betas"]), len(surface["alphas"])):
        raise ValueError(f"loss must be (len(betas), len(alphas)) = ({len(surface['betas'])}, "
                         f"{len(surface['alphas'])}), got shape {loss.shape}")
    z = np.log10(np.maximum(loss, 1e-6))  # NaN (a diverged point) stays NaN: a hole, not a colour
    a, b = surface["alphas"], surface["betas"]
    label = surface.get("label") or "model"
    finite = z[np.isfinite(z)]
    tv, tt = log_ticks(float(finite.min()), float(finite.max())) if finite.size else ([], [])
    bar = {"title": {"text": "training loss"}, **({"tickvals": tv, "ticktext": tt} if tv else {})}
    kw = {"x": a, "y": b, "z": z, "colorscale": "Viridis", "colorbar": bar, "customdata": loss,
          "hovertemplate": "α %{x:.2f}, β %{y:.2f}<br>loss %{customdata:.4g}<extra></extra>"}
    if three_d:
        fig = go.Figure(go.Surface(**kw))
        zaxis = {"title": {"text": "loss (log scale)"}, **({"tickvals": tv, "ticktext": tt} if tv else {})}
        fig.update_layout(scene={"xaxis_title": "α", "yaxis_title": "β", "zaxis": zaxis})
    else:
        fig = go.Figure(go.Contour(ncontours=25, **kw))
        fig.update_xaxes(title_text="α (direction 1)", constrain="domain")
        fig.update_yaxes(title_text="β (direction 2)", scaleanchor="x", constrain="domain")
    return _style(fig, title or ("Loss surface (3-D)" if three_d else "Loss surface"), 520,
                  subtitle=f"{label} · filter-normalized directions, seed {surface.get('seed', 0)}")


def signal_figure(profiles: Sequence[dict[str, Any]]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("forward activation variance", "gradient norm"))
    _style(fig, "Signal propagation at initialization", 440)
    if not profiles:
        return _note(fig, "No profiles yet")
    for i, p in enumerate(profiles):
        dash = "dot" if p["shortcut"] == "none" else "solid"
        kw = {"line": {"color": run_color(i), "dash": dash}, "legendgroup": str(i), "mode": "lines"}
        x = np.arange(1, len(p["blocks"]) + 1) / max(1, len(p["blocks"]))
        fig.add_trace(go.Scatter(x=x, y=p["forward_var"], name=p["label"], **kw), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=p["grad_norm"], showlegend=False, **kw), row=1, col=2)
    for col in (1, 2):
        log_yaxis(fig, [t.y for t in fig.select_traces(col=col)], row=1, col=col)
    fig.update_xaxes(title_text="relative depth of the block (0 = input, 1 = output)")
    fig.update_layout(legend={"orientation": "h", "y": -0.25, "x": 0})
    return fig


def shattered_figure(results: Sequence[dict[str, Any]]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("input gradient along a line", "autocorrelation"))
    _style(fig, "Shattered gradients (Balduzzi et al. 2017)", 420)
    for i, r in enumerate(results):
        kw = {"line": {"color": run_color(i)}, "legendgroup": str(i), "mode": "lines"}
        g = np.asarray(r["gradient"], dtype=float)
        g = g / (np.abs(g).max() or 1.0)
        fig.add_trace(go.Scatter(x=r["t"], y=g, name=f"{r['label']} (corr. length {r['corr_length']:.0f})", **kw),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=r["lags"], y=r["autocorrelation"], showlegend=False, **kw), row=1, col=2)
    fig.update_xaxes(title_text="t", row=1, col=1)
    fig.update_xaxes(title_text="lag", row=1, col=2)
    fig.update_layout(legend={"orientation": "h", "y": -0.25, "x": 0})
    return fig


def sanity_figure(result: dict[str, Any]) -> go.Figure:
    maps, names, sims = result["maps"], ["trained"] + list(result["layers"]), result["similarity"]
    n = len(maps)
    cols = min(n, 7)
    rows = (n + cols - 1) // cols
    titles = [f"{names[i] if i < len(names) else ''}<br>ρ={sims[i]:.2f}" for i in range(n)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.12)
    _style(fig, f"Sanity check: {result['method']} under cascading randomization (Adebayo et al. 2018)",
           200 * rows + 70)
    for i, m in enumerate(maps):
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(go.Heatmap(z=m, colorscale="Inferno", zmin=0, zmax=1, showscale=False), row=r, col=c)
        x_name = fig.get_subplot(r, c).xaxis.plotly_name  # "xaxis3": square pixels, anchored to "x3"
        fig.update_yaxes(scaleanchor=x_name.replace("axis", ""), constrain="domain", constraintoward="top",
                         row=r, col=c)
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_annotations(font_size=10)
    return fig


def conv_figure(c: dict[str, Any]) -> go.Figure:
    """Patch, kernel and their product per input channel (up to 8 channels shown)."""
    patch, kernel, prod = (np.asarray(c[k], dtype=float) for k in ("patch", "kernel", "product"))
    ch = min(patch.shape[0], 8)
    fig = make_subplots(rows=3, cols=ch, row_titles=["input patch", "kernel", "product"],
                        column_titles=[f"in ch {i}" for i in range(ch)], horizontal_spacing=0.01,
                        vertical_spacing=0.04)
    _style(fig, f"{c['layer']}, output channel {c['out_channel']} at ({c['row']}, {c['col']}): "
                f"sum {c['total']:.4f} = layer output {c['layer_output']:.4f}", 420)
    for r, arr in enumerate((patch, kernel, prod), start=1):
        lim = float(np.abs(arr[:ch]).max() or 1.0)
        for i in range(ch):
            fig.add_trace(go.Heatmap(z=arr[i], colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim, showscale=False,
                                     texttemplate="%{z:.2f}" if arr.shape[-1] <= 3 else None,
                                     hovertemplate="%{z:.4f}<extra></extra>"), row=r, col=i + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    return fig
