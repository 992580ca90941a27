"""Looking inside: feature maps, per-block profiles, the probes heatmap, attribution overlays."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.fsutil import as_number
from resnet_viz.plots._base import (
    _MAX_HEATMAP_COLS,
    PROBE_STATS,
    _note,
    _style,
    log_ticks,
    log_yaxis,
    run_color,
)


# --- activations, probes, attributions ---------------------------------------------------
def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def feature_map_grid(maps: Any, shared_scale: bool = True, max_channels: int = 64, title: str = "") -> go.Figure:
    """Feature maps (C, H, W) as a grid of small heatmaps, channel 0 top left.

    ``shared_scale``: one colour scale for every channel, so strong and weak channels
    compare; otherwise each channel spans its own colours, so each one's pattern shows.
    """
    if not 1 <= max_channels <= 256:
        raise ValueError(f"max_channels must be between 1 and 256, got {max_channels}")
    a = _as_array(maps)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]  # a batch of one
    elif a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"feature maps must be (C, H, W), got shape {a.shape}")
    c_all = a.shape[0]
    a = a[:max_channels]
    c, h, w = a.shape
    note = f"channels 0–{c - 1} of {c_all}" if c < c_all else f"{c} channels"
    note += ", one shared colour scale" if shared_scale else ", each channel on its own colour scale"
    if not (c and h and w):
        return _note(_style(go.Figure(), title or "Feature maps", 300), "No feature maps")
    cols = min(c, math.ceil(math.sqrt(2 * c)))  # about twice as wide as tall, for a wide page
    rows = math.ceil(c / cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.2 / cols, vertical_spacing=0.3 / max(rows, 2))
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    diverging = lo < 0 < hi  # pre-activations have both signs: centre the colours on 0
    scale = "RdBu_r" if diverging else "Viridis"
    for i in range(c):
        tr = go.Heatmap(z=a[i], name=f"channel {i}",
                        hovertemplate=f"channel {i}<br>x %{{x}}, y %{{y}}<br>%{{z:.3g}}<extra></extra>")
        if shared_scale:
            tr.update(coloraxis="coloraxis")
        else:
            tr.update(colorscale=scale, showscale=False, zmid=0.0 if diverging else None)
        fig.add_trace(tr, row=i // cols + 1, col=i % cols + 1)
    for k in range(1, rows * cols + 1):  # square pixels, row 0 at the top as in an image
        sfx = "" if k == 1 else str(k)
        fig.layout[f"yaxis{sfx}"].update(scaleanchor=f"x{sfx}", autorange="reversed", visible=False)
        fig.layout[f"xaxis{sfx}"].update(visible=False, constrain="domain")
    if shared_scale:
        m = max(abs(lo), abs(hi))
        fig.update_layout(coloraxis={"colorscale": scale, "cmin": -m if diverging else lo,
                                     "cmax": m if diverging else hi, "colorbar": {"thickness": 12}})
    _style(fig, title or "Feature maps", max(260, 95 * rows + 110), note)
    return fig


def _block_key(name: str) -> tuple[int, int] | None:
    """(stage, index) of "stageS.blockI", or None for any other name."""
    try:
        s, b = name.split(".")
        return int(s.removeprefix("stage")), int(b.removeprefix("block"))
    except ValueError:
        return None


def depth_profile(series: Sequence[tuple[str, Sequence[str], Sequence[float]]], y_title: str,
                  log_y: bool = True, title: str = "") -> go.Figure:
    """A per-block statistic against block index (1 = nearest the input), one line per run."""
    fig = _style(go.Figure(), title or y_title, 420)
    for i, (label, names, values) in enumerate(series):
        if len(names) != len(values):
            raise ValueError(f"{label}: {len(names)} block names but {len(values)} values")
        y = np.array([v if (as_number(v) is not None) else np.nan for v in values], dtype=float)
        if log_y:
            y[~(y > 0)] = np.nan  # a log axis cannot place 0 or negatives: leave a gap
        y[~np.isfinite(y)] = np.nan
        fig.add_trace(go.Scatter(x=np.arange(1, len(y) + 1), y=y, text=list(names), mode="lines+markers",
                                 name=label, line={"color": run_color(i), "width": 2}, marker={"size": 5},
                                 hovertemplate=f"{label}<br>%{{text}}<br>{y_title}: %{{y:.3g}}<extra></extra>"))
    if not any(len(n) for _, n, _ in series):
        return _note(fig, "No per-block measurements yet")
    names0 = list(series[0][1])
    if all(list(n) == names0 for _, n, _ in series):  # same architecture: mark where stages begin
        keys = [_block_key(n) for n in names0]
        for j in range(1, len(keys)):
            here, before = keys[j], keys[j - 1]
            if here and before and here[0] != before[0]:
                fig.add_vline(x=j + 0.5, line={"color": "#bbb", "dash": "dot", "width": 1},
                              annotation_text=f"stage {here[0]}", annotation_font={"size": 11, "color": "#888"})
    fig.update_xaxes(title_text="block (1 = nearest the input)")
    fig.update_yaxes(title_text=y_title)
    if log_y:
        log_yaxis(fig, [t.y for t in fig.data])
    # Legend below the plot: run labels are long and a side legend would squeeze a half-width plot.
    fig.update_layout(hovermode="closest", height=460,
                      legend={"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0},
                      margin={"b": 110})
    return fig


def probe_heatmap(records: Sequence[dict], stat: str = "grad_norm", title: str = "") -> go.Figure:
    """The trainer's per-block probes over training: blocks up the y axis (the input end,
    stage1.block0, at the bottom), training step along x. Norms and the branch/skip ratio
    use a log colour scale (the ratio's diverges at 1); cos diverges at 0 from -1 to 1."""
    if stat not in PROBE_STATS:
        raise ValueError(f"unknown probe statistic {stat!r}; choose one of {', '.join(PROBE_STATS)}")
    label = PROBE_STATS[stat]
    probes = sorted((r for r in records if isinstance(r, dict) and r.get("kind") == "probe"
                     and isinstance(r.get("blocks"), dict) and as_number(r.get("step")) is not None),
                    key=lambda r: r["step"])
    if len(probes) > _MAX_HEATMAP_COLS:  # evenly spaced columns; the figure has no more pixels anyway
        probes = [probes[i] for i in np.linspace(0, len(probes) - 1, _MAX_HEATMAP_COLS).round().astype(int)]
    names: list[str] = list(dict.fromkeys(n for r in probes for n in r["blocks"]))
    if all(_block_key(n) for n in names):
        names.sort(key=lambda n: _block_key(n) or (0, 0))  # every key is a tuple here
    raw = np.array([[as_number((r["blocks"].get(n) or {}).get(stat)) for r in probes] for n in names], dtype=float)
    fig = _style(go.Figure(), title or f"{label[0].upper()}{label[1:]} per block over training",
                 int(min(max(14 * len(names) + 150, 320), 720)), "y: blocks, input end at the bottom")
    if not probes:
        return _note(fig, "No probes yet (the trainer measures every block every probe_every steps)")
    if not np.isfinite(raw).any():
        why = " (a plain net has no shortcut to compare with)" if stat in ("ratio", "cos") else ""
        return _note(fig, f"No {label} values in these probes{why}")
    steps = [r["step"] for r in probes]
    hover = f"step %{{x}}<br>%{{y}}<br>{label}: %{{customdata:.3g}}<extra></extra>"
    if stat == "cos":
        tr = go.Heatmap(z=raw, colorscale="RdBu", zmid=0.0, zmin=-1.0, zmax=1.0, colorbar={"title": {"text": "cos"}})
    else:
        z = np.full(raw.shape, np.nan)
        pos = np.isfinite(raw) & (raw > 0)
        z[pos] = np.log10(raw[pos])
        if not pos.any():
            return _note(fig, f"No positive {label} values to place on a log scale")
        lo, hi = float(z[pos].min()), float(z[pos].max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        tv, tt = log_ticks(lo, hi)
        cb = {"title": {"text": label}, "tickvals": tv, "ticktext": tt}
        if stat == "ratio":  # below 1 the skip dominates, above 1 the branch: diverge at 1
            m = max(abs(lo), abs(hi))
            tr = go.Heatmap(z=z, colorscale="RdBu_r", zmid=0.0, zmin=-m, zmax=m, colorbar=cb)
        else:
            tr = go.Heatmap(z=z, colorscale="Viridis", zmin=lo, zmax=hi, colorbar=cb)
    tr.update(x=steps, y=names, customdata=raw, hovertemplate=hover, name=stat, hoverongaps=False)
    fig.add_trace(tr)
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="block", type="category")
    return fig


_OVERLAY_SCALE = [[0.0, "rgba(0,0,0,0)"], [0.2, "rgba(120,0,60,0.25)"], [0.5, "rgba(220,40,30,0.7)"],
                  [0.8, "rgba(255,150,0,0.9)"], [1.0, "rgba(255,240,80,1)"]]  # low attribution: see-through


def attribution_overlay(image: np.ndarray, attribution: np.ndarray, title: str = "",
                        opacity: float = 0.55) -> go.Figure:
    """The image alone (left) and with the attribution as a heat overlay (right).

    ``image``: (H, W, 3) uint8, or floats in [0, 1]; grey (H, W) is accepted.
    ``attribution``: (H, W) in [0, 1]; NaN counts as 0, values outside are clipped.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W, 3), got shape {img.shape}")
    img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]
    if img.dtype.kind == "f":
        img = np.nan_to_num(img) * (255.0 if img.size and np.nanmax(img) <= 1.0 else 1.0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    att = np.asarray(attribution, dtype=float)
    if att.shape != img.shape[:2]:
        raise ValueError(f"attribution shape {att.shape} does not match the image's {img.shape[:2]}")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("image", "attribution"), horizontal_spacing=0.04)
    _style(fig, title or "Attribution", 330)
    fig.update_layout(margin={"l": 10, "r": 10, "t": 70, "b": 10}, title={"font": {"size": 14}})
    if not img.size:
        return _note(fig, "No image")
    att = np.clip(np.nan_to_num(att, nan=0.0), 0.0, 1.0)
    for col in (1, 2):
        fig.add_trace(go.Image(z=img, hovertemplate="x %{x}, y %{y}<br>rgb %{z}<extra></extra>"), row=1, col=col)
    fig.add_trace(go.Heatmap(z=att, zmin=0.0, zmax=1.0, colorscale=_OVERLAY_SCALE, opacity=opacity,
                             colorbar={"title": {"text": "attribution"}, "thickness": 12},
                             hovertemplate="x %{x}, y %{y}<br>attribution %{z:.2f}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_yaxes(scaleanchor="x", row=1, col=1)
    fig.update_yaxes(scaleanchor="x2", row=1, col=2)
    return fig


def top_k_bar(top: Sequence[tuple[str, float]], title: str = "") -> go.Figure:
    """Class probabilities as horizontal bars, most likely on top."""
    items = sorted(((str(k), float(p)) for k, p in top), key=lambda kp: -kp[1])
    for k, p in items:
        if not (math.isfinite(p) and -1e-6 <= p <= 1 + 1e-6):
            raise ValueError(f"probability of {k!r} must be in [0, 1], got {p}")
    fig = _style(go.Figure(), title or "Top predictions", max(220, 90 + 34 * len(items)))
    if not items:
        return _note(fig, "No prediction yet")
    items.reverse()  # plotly stacks horizontal bars bottom-up
    fig.add_trace(go.Bar(x=[100 * p for _, p in items], y=[k for k, _ in items], orientation="h",
                         marker={"color": ["#BBB"] * (len(items) - 1) + [run_color(0)]},
                         text=[f"{p:.1%}" for _, p in items], textposition="outside", cliponaxis=False,
                         hovertemplate="%{y}: %{x:.2f}%<extra></extra>", name="probability"))
    fig.update_xaxes(title_text="probability (%)", range=[0, 112], showgrid=False)
    fig.update_yaxes(type="category")
    fig.update_layout(showlegend=False, margin={"l": 110})
    return fig
