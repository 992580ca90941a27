"""The architecture diagram, drawn from the model's own summary (the paper's Fig. 3 style)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go

if TYPE_CHECKING:  # the summary module pulls in torch; figures only need its data
    from ..summary import BlockSummary, ModelSummary
from ._base import _style

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
