"""Training curves of one run, overlaid runs (the paper's Fig. 6) and the comparison table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.fsutil import as_number
from resnet_viz.plots._base import (
    _mode,
    _note,
    _series,
    _style,
    downsample,
    ema,
    run_color,
    smoothing_alpha,
)


def training_curves(records: Sequence[dict], title: str = "") -> go.Figure:
    """Live view of one run: loss (left) and error % (right) against iterations."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Error (%)"), horizontal_spacing=0.08)
    _style(fig, title or "Training", 420)
    step, loss, acc = _series(records, "step", "step", "loss", "acc")
    estep, tloss, tacc = _series(records, "eval", "step", "test_loss", "test_acc")
    if not len(step) and not len(estep):
        return _note(fig, "Waiting for the first steps…")
    train_c, test_c = run_color(0), run_color(1)
    a = smoothing_alpha(len(step))
    hover = "step %{x}<br>%{y:.4g}<extra>%{fullData.name}</extra>"
    panels = ((1, loss, tloss, "loss"), (2, 100.0 * (1.0 - acc), 100.0 * (1.0 - tacc), "error (%)"))
    for col, train, test, ytitle in panels:
        first = col == 1  # legend entries once; the second panel shares them by group
        if col == 1 and len(step):
            xr, yr = downsample(step, train)
            fig.add_trace(go.Scatter(x=xr, y=yr, mode=_mode(len(xr)), name="training, per step",
                                     line={"color": train_c, "width": 1}, opacity=0.25,
                                     legendgroup="raw", hovertemplate=hover), row=1, col=col)
        if len(step):
            xs, ys = downsample(step, ema(train, a))
            fig.add_trace(go.Scatter(x=xs, y=ys, mode=_mode(len(xs)), name="training (smoothed)",
                                     line={"color": train_c, "width": 2.4}, legendgroup="train",
                                     showlegend=first, hovertemplate=hover), row=1, col=col)
        if len(estep):
            fig.add_trace(go.Scatter(x=estep, y=test, mode="lines+markers", name="test",
                                     line={"color": test_c, "width": 2}, marker={"size": 7},
                                     legendgroup="test", showlegend=first, hovertemplate=hover), row=1, col=col)
        fig.update_yaxes(title_text=ytitle, rangemode="tozero", row=1, col=col)
        fig.update_xaxes(title_text="iterations", row=1, col=col)
    bad = np.flatnonzero(~np.isfinite(loss))
    if len(bad):
        # A diverged run: the loss line simply stops, so say why where it stops.
        at = float(step[bad[0]])
        for col in (1, 2):
            fig.add_vline(x=at, line={"color": "#C00", "dash": "dash", "width": 1}, row=1, col=col)
        fig.add_annotation(text=f"loss became non-finite at step {at:.0f} (diverged)", x=at, xref="x",
                           y=1.0, yref="y domain", xanchor="right", showarrow=False,
                           font={"color": "#C00", "size": 12}, bgcolor="rgba(255,255,255,0.8)")
    fig.update_layout(hovermode="x unified", legend={"orientation": "h", "y": -0.2, "x": 0.0})
    return fig


def compare_curves(runs: Sequence[tuple[str, Sequence[dict]]], x_axis: str = "iterations",
                   metric: str = "error") -> go.Figure:
    """He et al. Fig. 6 for any runs: one colour per run, training solid (smoothed),
    test dashed. ``x_axis``: "iterations" or "epochs"; ``metric``: "error" or "loss"."""
    if x_axis not in ("iterations", "epochs"):
        raise ValueError(f"x_axis must be 'iterations' or 'epochs', got {x_axis!r}")
    if metric not in ("error", "loss"):
        raise ValueError(f"metric must be 'error' or 'loss', got {metric!r}")
    xkey = "step" if x_axis == "iterations" else "epoch"
    train_key, test_key = ("acc", "test_acc") if metric == "error" else ("loss", "test_loss")
    ytitle = "error (%)" if metric == "error" else "loss"
    fig = _style(go.Figure(), f"{'Error' if metric == 'error' else 'Loss'} vs. {x_axis}", 480,
                 "solid: training (smoothed) · dashed: test")
    shown = 0
    for i, (label, records) in enumerate(runs):
        x, tr = _series(records, "step", xkey, train_key)
        xe, te = _series(records, "eval", xkey, test_key)
        if metric == "error":
            tr, te = 100.0 * (1.0 - tr), 100.0 * (1.0 - te)
        c = run_color(i)
        head = f"<b>{label}</b><br>{x_axis[:-1]} %{{x:.4g}}<br>"
        tail = f" {ytitle}: %{{y:.4g}}<extra></extra>"
        if len(x):
            xs, ys = downsample(x, ema(tr, smoothing_alpha(len(x))))
            fig.add_trace(go.Scatter(x=xs, y=ys, mode=_mode(len(xs)), name=label, legendgroup=label,
                                     line={"color": c, "width": 2.4}, hovertemplate=head + "training" + tail,
                                     meta={"run": label, "split": "train"}))
        if len(xe):
            fig.add_trace(go.Scatter(x=xe, y=te, mode="lines+markers", name=f"{label} test", legendgroup=label,
                                     showlegend=not len(x), line={"color": c, "width": 1.8, "dash": "dash"},
                                     marker={"size": 5}, hovertemplate=head + "test" + tail,
                                     meta={"run": label, "split": "test"}))
        shown += bool(len(x) or len(xe))
    if not shown:
        return _note(fig, "Waiting for the first steps…")
    fig.update_xaxes(title_text=x_axis)
    fig.update_yaxes(title_text=ytitle, rangemode="tozero")
    fig.update_layout(hovermode="closest", legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0.0},
                      margin={"b": 120})
    return fig



def error_table_rows(infos: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows for a run table (st.dataframe) from RunInfo-like objects; unknowns are None.

    Numbers stay numbers (errors in %, time in minutes) so the table sorts correctly.
    """
    params_by_config: dict[Any, int | None] = {}  # per call: runs often share a model
    rows = []
    for info in infos:
        cfg = getattr(info, "config", None)
        model = getattr(cfg, "model", None)
        if model is not None and model not in params_by_config:
            params_by_config[model] = _param_count(model)
        acc = as_number(getattr(info, "final_train_acc", None))
        test_acc = as_number(getattr(info, "test_accuracy", None))
        elapsed = as_number(getattr(info, "elapsed_s", None))
        rows.append({
            "run": getattr(info, "name", "") or getattr(info, "id", ""),
            "label": getattr(info, "label", "") or (model.label if model is not None else ""),
            "depth": getattr(model, "depth", None),
            "shortcut": getattr(model, "shortcut", None),
            "params": params_by_config.get(model) if model is not None else None,
            "train error %": None if acc is None else round(100 * (1 - acc), 2),
            "test error %": None if test_acc is None else round(100 * (1 - test_acc), 2),
            "steps": getattr(info, "steps", None),
            "time (min)": None if elapsed is None else round(elapsed / 60, 1),
            "status": getattr(info, "status", None),
        })
    return rows


def _param_count(model_config: Any) -> int | None:
    try:
        # torch: only when a table is asked for
        from resnet_viz.nets.cifar import build_model
        from resnet_viz.nets.cost import count_params

        return count_params(build_model(model_config))
    except (ValueError, TypeError, AttributeError):
        return None
