"""Figure builders for ResNet Lab: plain data in, plotly figures out.

The only module that imports plotly (and it never imports Streamlit). Every builder
returns a figure for *empty* input, with a note saying why it is empty, rather than
raising: a page waiting for a run's first steps should show a placeholder, not a stack
trace. Wrong *arguments* (an unknown metric, a badly shaped array) raise ValueError.

Colours are fixed per position (``run_color(i)``) so a run keeps its colour across the
figures of one page; the palette is Okabe-Ito, readable by colour-blind viewers.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:  # the summary module pulls in torch; figures only need its data
    from .summary import BlockSummary, ModelSummary

PALETTE: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#7F7F7F")
TEMPLATE = "plotly_white"
MAX_POINTS = 2000  # per line: more is invisible at page width and slows the browser
PROBE_STATS: tuple[str, ...] = ("grad_norm", "act_norm", "ratio", "cos")
_STAT_LABEL = {"grad_norm": "gradient norm", "act_norm": "activation norm", "ratio": "||F(x)|| / ||x||",
               "cos": "cos(F(x), x)"}
_MAX_HEATMAP_COLS = 600  # probe columns kept; a 60k-step run probed every 10 steps has 6000


def run_color(i: int) -> str:
    """The colour of the i-th run on a page (cycles after len(PALETTE))."""
    return PALETTE[i % len(PALETTE)]


def ema(values: Sequence[float] | np.ndarray, alpha: float) -> np.ndarray:
    """Bias-corrected exponential moving average (as TensorBoard smooths).

    The correction keeps the start of the curve at the first values instead of pulling
    it towards 0. Non-finite inputs give NaN (a gap) and leave the average untouched,
    so one diverged step cannot poison every later point.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"EMA alpha must be in (0, 1], got {alpha}")
    v = np.asarray(values, dtype=float).ravel()
    out = np.full(v.shape, np.nan)
    avg = weight = 0.0
    for i, x in enumerate(v.tolist()):
        if math.isfinite(x):
            avg = (1.0 - alpha) * avg + alpha * x
            weight = (1.0 - alpha) * weight + alpha
            out[i] = avg / weight
    return out


def smoothing_alpha(n: int) -> float:
    """EMA weight for a curve of n points: a span of ~1/40 of the curve, 5 to 200 points."""
    span = min(max(n / 40.0, 5.0), 200.0)
    return 2.0 / (span + 1.0)


def downsample(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
               max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points: per bucket the min and max (spikes stay visible,
    unlike taking every k-th point); a bucket holding a non-finite value keeps a NaN gap."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if len(ya) <= max_points:
        return xa, ya
    edges = np.linspace(0, len(ya), max_points // 2 + 1).astype(int)
    keep: list[int] = []
    gaps: list[int] = []
    for a, b in itertools.pairwise(edges):
        seg = ya[a:b]
        finite = np.flatnonzero(np.isfinite(seg))
        if len(finite) < len(seg):  # gap first: at most one extreme and the gap
            gaps.append(a + int(np.flatnonzero(~np.isfinite(seg))[0]))
            picks = {a + int(finite[np.argmax(seg[finite])])} if len(finite) else set()
        else:
            picks = {a + int(np.argmin(seg)), a + int(np.argmax(seg))}
        keep.extend(picks)
    idx = np.array(sorted(set(keep) | set(gaps)), dtype=int)
    return xa[idx], ya[idx]


def _num(v: Any) -> float | None:
    """A float from a record field; None for missing or non-numeric (NaN stays NaN)."""
    return float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else None  # numpy scalars too


def _series(records: Sequence[dict], kind: str, x_key: str, *keys: str) -> tuple[np.ndarray, ...]:
    """(x, key1, key2, ...) arrays from records of one kind, sorted by x; records missing
    a field are dropped (a malformed line), while NaN values are kept (a diverged step)."""
    rows = []
    for r in records:
        if isinstance(r, dict) and r.get("kind") == kind:
            vals = [_num(r.get(k)) for k in (x_key, *keys)]
            if all(v is not None for v in vals) and math.isfinite(vals[0]):  # type: ignore[arg-type]
                rows.append(vals)
    rows.sort(key=lambda r: r[0])
    arr = np.array(rows, dtype=float).reshape(len(rows), 1 + len(keys))
    return tuple(arr[:, i] for i in range(arr.shape[1]))


def _style(fig: go.Figure, title: str, height: int, subtitle: str = "") -> go.Figure:
    t: dict[str, Any] = {"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 17}}
    if subtitle:
        t["subtitle"] = {"text": subtitle, "font": {"size": 12, "color": "#555"}}
    fig.update_layout(template=TEMPLATE, title=t, height=height, font={"size": 13},
                      margin={"l": 60, "r": 30, "t": 90 if subtitle else 70, "b": 50})
    return fig


def _note(fig: go.Figure, text: str) -> go.Figure:
    """A centred message in an empty figure (axes hidden, so nothing looks like data)."""
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font={"size": 15, "color": "#777"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _mode(n: int) -> str:
    return "lines" if n > 1 else "markers"  # a line through one point draws nothing


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
    fig.update_layout(hovermode="closest", legend={"title": {"text": "run"}})
    return fig


# --- architecture diagram ---------------------------------------------------------------
_BOX_W, _BOX_H, _GAP, _ROW_H = 1.0, 0.62, 0.32, 2.0
_ARC_H = _BOX_H / 2 + 0.24  # apex of a skip arc above the row's centre line
_MAX_PER_STAGE = 9  # ResNet-56 (9 blocks per stage) is drawn whole; deeper stages are compressed
_ONE_ROW_MAX = 12  # boxes whose labels fit one row of a ~1200 px page (ResNet-20 has 11)
_STAGE_FILL = ("#E8F1FB", "#E5F4EE", "#FBEDE5")
_STAGE_LINE = ("#0072B2", "#009E73", "#D55E00")
_SKIP_STYLE = {  # (shortcut, shape changes) -> (legend label, colour, dash)
    ("identity", False): ("identity shortcut", "#0072B2", "solid"),
    ("pad", True): ("zero-pad shortcut, shape changes (option A)", "#0072B2", "dot"),
    ("projection", True): ("1×1 projection, shape changes", "#D55E00", "dot"),
    ("projection", False): ("1×1 projection", "#D55E00", "solid"),
}


def _shape(t: Sequence[int]) -> str:
    return "×".join(map(str, t))


def _count(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def _stage_items(blocks: Sequence[BlockSummary]) -> list[Any]:
    """A stage's boxes: every block, or for long stages the first two, the last, any block
    whose shape changes, and a list (one "… k more" box) for each run of blocks between."""
    if len(blocks) <= _MAX_PER_STAGE:
        return list(blocks)
    keep = {0, 1, len(blocks) - 1} | {i for i, b in enumerate(blocks) if b.shape_changes}
    items: list[Any] = []
    for i, b in enumerate(blocks):
        if i in keep:
            items.append(b)
        elif items and isinstance(items[-1], list):
            items[-1].append(b)
        else:
            items.append([b])
    # "… 1 more block" would take a box to hide one: show that block instead.
    return [it[0] if isinstance(it, list) and len(it) == 1 else it for it in items]


def _arc(fig: go.Figure, cx: float, cy: float, kind: str, changes: bool, what: str, hover: str,
         seen: set[str]) -> None:
    fallback = (f"{kind} shortcut", "#7F7F7F", "dot" if changes else "solid")
    label, color, dash = _SKIP_STYLE.get((kind, changes), fallback)
    x0, x1 = cx - _BOX_W / 2 - _GAP / 2, cx + _BOX_W / 2 + _GAP / 2
    t = np.linspace(0.0, 1.0, 25)
    y = cy + _ARC_H * (1.0 - np.abs(2 * t - 1) ** 4) ** 0.25  # a rounded bracket that clears the box
    fig.add_trace(go.Scatter(x=x0 + (x1 - x0) * t, y=y, mode="lines", name=label, legendgroup=label,
                             showlegend=label not in seen, line={"color": color, "width": 2.2, "dash": dash},
                             hovertext=hover, hoverinfo="text",
                             meta={"block": what, "shortcut": kind, "shape_changes": changes}))
    seen.add(label)
    if kind == "projection":
        fig.add_annotation(x=cx, y=cy + _ARC_H, text="1×1", showarrow=False, font={"size": 10, "color": color},
                           bgcolor="white", borderpad=1)


def _grid(row: int, col: int) -> tuple[float, float]:
    """Grid cell to data coordinates (the first row at y = 0, rows going down)."""
    return col * (_BOX_W + _GAP), -row * _ROW_H


def architecture_diagram(summary: ModelSummary) -> go.Figure:
    """The model as boxes (stem, blocks by stage, head) with each block's skip path as an
    arc: solid for identity, dotted where the shape changes (He et al. Fig. 3), none for a
    plain net, "1×1" on projections. One row for short nets, one row per stage otherwise."""
    stages = [[b for b in summary.blocks if b.stage == s] for s in sorted({b.stage for b in summary.blocks})]
    per_stage = [_stage_items(st) for st in stages]
    one_row = 2 + sum(len(items) for items in per_stage) <= _ONE_ROW_MAX
    first_in = summary.blocks[0].in_shape if summary.blocks else None
    last_out = summary.blocks[-1].out_shape if summary.blocks else None
    head_flops = 2 * (last_out[0] if last_out else 0) * summary.config.num_classes
    stem_flops = summary.flops - sum(b.flops for b in summary.blocks) - head_flops

    # Place every box: (row, col, kind, payload, stage index or -1).
    placed: list[tuple[int, int, str, Any, int]] = [(0, 0, "stem", None, -1)]
    row, col = 0, 1
    for s, items in enumerate(per_stage):
        if not one_row and s > 0:
            row, col = row + 1, 1
        for it in items:
            placed.append((row, col, "more" if isinstance(it, list) else "block", it, s))
            col += 1
    placed.append((row, col, "head", None, -1))

    fig = go.Figure()
    xs, ys, texts, hovers = [], [], [], []
    path_x: list[float | None] = []
    path_y: list[float | None] = []
    seen: set[str] = set()
    for k, (r, c, kind, it, s) in enumerate(placed):
        cx, cy = _grid(r, c)
        fill, line, dash = "#F2F2F2", "#888", "solid"
        if kind == "stem":
            text = f"<b>stem</b><br>conv 3×3<br>{_shape(first_in) if first_in else ''}"
            hover = (f"stem: 3×3 conv + BN + ReLU<br>out {_shape(first_in) if first_in else '?'}<br>"
                     f"params {summary.stem_params:,}<br>{stem_flops / 1e6:.2f} MFLOPs")
        elif kind == "head":
            text = f"<b>head</b><br>avg pool + fc<br>{summary.config.num_classes} classes"
            hover = (f"head: global average pool + fully connected<br>{_shape(last_out) if last_out else ''} → "
                     f"{summary.config.num_classes}<br>params {summary.head_params:,}<br>{head_flops / 1e6:.3f} MFLOPs")
        elif kind == "block":
            b = it
            fill, line = _STAGE_FILL[s % 3], _STAGE_LINE[s % 3]
            text = f"<b>{b.name}</b><br>{_shape(b.out_shape)}<br>{_count(b.params)} params"
            hover = (f"<b>{b.name}</b><br>{_shape(b.in_shape)} → {_shape(b.out_shape)}<br>params {b.params:,}<br>"
                     f"{b.flops / 1e6:.2f} MFLOPs<br>receptive field {b.receptive_field}px<br>shortcut: {b.shortcut}")
            if b.shortcut != "none":
                _arc(fig, cx, cy, b.shortcut, b.shape_changes, b.name, f"{b.name} shortcut: {b.shortcut}", seen)
        else:  # a compressed run of blocks
            group = it
            fill, line, dash = "white", _STAGE_LINE[s % 3], "dash"
            p, f = sum(b.params for b in group), sum(b.flops for b in group)
            text = f"<b>… {len(group)} more blocks</b><br>{_count(p)} params<br>{f / 1e6:.0f} MFLOPs"
            hover = (f"{group[0].name} … {group[-1].name}: {len(group)} blocks<br>{_shape(group[-1].out_shape)}<br>"
                     f"params {p:,}<br>{f / 1e6:.1f} MFLOPs<br>receptive field up to {group[-1].receptive_field}px")
            kinds = {(b.shortcut, b.shape_changes) for b in group}
            if len(kinds) == 1 and group[0].shortcut != "none":
                kd, ch = kinds.pop()
                _arc(fig, cx, cy, kd, ch, f"{group[0].name}…{group[-1].name}",
                     f"each of these {len(group)} blocks has a {kd} shortcut", seen)
        fig.add_shape(type="rect", x0=cx - _BOX_W / 2, x1=cx + _BOX_W / 2, y0=cy - _BOX_H / 2, y1=cy + _BOX_H / 2,
                      fillcolor=fill, line={"color": line, "width": 1.4, "dash": dash}, layer="below")
        xs.append(cx), ys.append(cy), texts.append(text), hovers.append(hover)
        if k + 1 < len(placed):  # the data path to the next box, wrapping to the next row
            nx, ny = _grid(placed[k + 1][0], placed[k + 1][1])
            right, left = cx + _BOX_W / 2, nx - _BOX_W / 2
            if ny == cy:
                path_x += [right, left, None]
                path_y += [cy, cy, None]
            else:
                mid = cy - _ROW_H / 2
                path_x += [right, right + _GAP / 2, right + _GAP / 2, left - _GAP / 2, left - _GAP / 2, left, None]
                path_y += [cy, cy, mid, mid, ny, ny, None]
    fig.add_trace(go.Scatter(x=path_x, y=path_y, mode="lines", line={"color": "#999", "width": 1.4},
                             hoverinfo="skip", showlegend=False, name="data path"))
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=texts, hovertext=hovers, hoverinfo="text",
                             marker={"size": 30, "opacity": 0}, textfont={"size": 10}, showlegend=False,
                             name="layers"))
    for s, st in enumerate(stages):  # caption under each stage's boxes
        cols = [c for (r, c, kind, _, si) in placed if si == s]
        r = next(r for (r, c, kind, _, si) in placed if si == s)
        cx0, cy = _grid(r, min(cols))
        cx1, _ = _grid(r, max(cols))
        fig.add_annotation(x=(cx0 + cx1) / 2, y=cy - _BOX_H / 2 - 0.12, yanchor="top", showarrow=False,
                           text=f"stage {st[0].stage}: {len(st)} blocks, {_shape(st[-1].out_shape)}, "
                                f"{_count(sum(b.params for b in st))} params",
                           font={"size": 11, "color": _STAGE_LINE[s % 3]})
    if not any(b.shortcut != "none" for b in summary.blocks):
        sub = "plain net: no shortcuts, each block's output is only F(x)"
    else:
        sub = "arcs are shortcuts: solid = identity, dotted = the shape changes (as in He et al. Fig. 3)"
    n_rows = 1 + max(r for r, *_ in placed)
    max_x = max(xs)
    _style(fig, f"{summary.label}: {summary.depth} layers, {summary.params:,} parameters, "
                f"{summary.flops / 1e6:.1f} MFLOPs per image", 160 + 190 * n_rows, sub)
    fig.update_xaxes(visible=False, range=[-_BOX_W / 2 - 0.25, max_x + _BOX_W / 2 + 0.25])
    fig.update_yaxes(visible=False, range=[-(n_rows - 1) * _ROW_H - _BOX_H / 2 - 0.55, _ARC_H + 0.3])
    fig.update_layout(hovermode="closest", hoverdistance=60, margin={"l": 10, "r": 10, "b": 40},
                      legend={"orientation": "h", "y": 0.0, "x": 0.0, "yanchor": "top"})
    return fig


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
        y = np.array([v if (_num(v) is not None) else np.nan for v in values], dtype=float)
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
            if keys[j] and keys[j - 1] and keys[j][0] != keys[j - 1][0]:
                fig.add_vline(x=j + 0.5, line={"color": "#bbb", "dash": "dot", "width": 1},
                              annotation_text=f"stage {keys[j][0]}", annotation_font={"size": 11, "color": "#888"})
    fig.update_xaxes(title_text="block (1 = nearest the input)")
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear")
    fig.update_layout(hovermode="closest")
    return fig


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Colour-bar ticks for log10 values: 1-2-5 steps, or decades when that is too many."""
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    for mults in ((1, 2, 5), (1,)):
        vals = [m * 10.0**d for d in decades for m in mults if lo - 1e-9 <= math.log10(m * 10.0**d) <= hi + 1e-9]
        if len(vals) <= 8:
            break
    return [math.log10(v) for v in vals], [f"{v:g}" for v in vals]


def probe_heatmap(records: Sequence[dict], stat: str = "grad_norm", title: str = "") -> go.Figure:
    """The trainer's per-block probes over training: blocks up the y axis (the input end,
    stage1.block0, at the bottom), training step along x. Norms and the branch/skip ratio
    use a log colour scale (the ratio's diverges at 1); cos diverges at 0 from -1 to 1."""
    if stat not in PROBE_STATS:
        raise ValueError(f"unknown probe statistic {stat!r}; choose one of {', '.join(PROBE_STATS)}")
    label = _STAT_LABEL[stat]
    probes = sorted((r for r in records if isinstance(r, dict) and r.get("kind") == "probe"
                     and isinstance(r.get("blocks"), dict) and _num(r.get("step")) is not None),
                    key=lambda r: r["step"])
    if len(probes) > _MAX_HEATMAP_COLS:  # evenly spaced columns; the figure has no more pixels anyway
        probes = [probes[i] for i in np.linspace(0, len(probes) - 1, _MAX_HEATMAP_COLS).round().astype(int)]
    names: list[str] = list(dict.fromkeys(n for r in probes for n in r["blocks"]))
    if all(_block_key(n) for n in names):
        names.sort(key=_block_key)  # type: ignore[arg-type, return-value]
    raw = np.array([[_num((r["blocks"].get(n) or {}).get(stat)) for r in probes] for n in names], dtype=float)
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
        tv, tt = _log_ticks(lo, hi)
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
    fig = make_subplots(rows=1, cols=2, subplot_titles=("image", "attribution"), horizontal_spacing=0.06)
    _style(fig, title or "Attribution", 400)
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
        acc, test_acc = _num(getattr(info, "final_train_acc", None)), _num(getattr(info, "test_accuracy", None))
        elapsed = _num(getattr(info, "elapsed_s", None))
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
        from .model import (  # torch: only when a table is asked for
            build_model,
            count_params,
        )

        return count_params(build_model(model_config))
    except (ValueError, TypeError, AttributeError):
        return None
