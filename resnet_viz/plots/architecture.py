"""The architecture diagram (the paper's Fig. 3 style) and a block's inside (Fig. 5), drawn
from the neutral description in ``archspec`` that CIFAR and ImageNet summaries convert into."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go

from resnet_viz.plots._base import _note, _style
from resnet_viz.plots.archspec import (
    ArchBlock,
    Architecture,
    conv_text,
    count_text,
    shape_text,
    to_architecture,
)

if TYPE_CHECKING:  # the summary module pulls in torch; figures only need its data
    from resnet_viz.nets.summary import ModelSummary

# --- architecture diagram ---------------------------------------------------------------
_BOX_W, _BOX_H, _GAP, _ROW_H = 1.0, 0.62, 0.32, 2.0  # _BOX_H holds three lines of text
_LINE_H = 0.19  # box height per line of text beyond three
_MAX_PER_STAGE = 6  # ResNet-38 (6 blocks per stage) is drawn whole; ResNet-56's 9 become 4 boxes
_CROWDED = 7  # boxes in a row from which a box is too narrow for "stage1.block0": it says "block0"
_ONE_ROW_MAX = 8  # boxes whose labels fit one row of the Build page's right column (ResNet-20, 11, does not)
_STAGE_FILL = ("#E8F1FB", "#E5F4EE", "#FBEDE5", "#F3EAF6")
_STAGE_LINE = ("#0072B2", "#009E73", "#D55E00", "#882255")
_SKIP_STYLE = {  # (shortcut, shape changes) -> (legend label, colour, dash)
    ("identity", False): ("identity shortcut", "#0072B2", "solid"),
    ("pad", True): ("zero-pad shortcut, shape changes (option A)", "#0072B2", "dot"),
    ("projection", True): ("1×1 projection, shape changes", "#D55E00", "dot"),
    ("projection", False): ("1×1 projection", "#D55E00", "solid"),
}


class _Geom:
    """Box and row heights for a diagram whose boxes hold ``lines`` lines of text."""

    def __init__(self, lines: int) -> None:
        self.box_h = max(_BOX_H, _BOX_H + _LINE_H * (lines - 3))
        self.row_h = _ROW_H + self.box_h - _BOX_H
        self.arc_h = self.box_h / 2 + 0.24  # apex of a skip arc above the row's centre line

    def grid(self, row: int, col: int) -> tuple[float, float]:
        """Grid cell to data coordinates (the first row at y = 0, rows going down)."""
        return col * (_BOX_W + _GAP), -row * self.row_h


def _stage_items(blocks: Sequence[ArchBlock]) -> list[Any]:
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


def _arc(fig: go.Figure, g: _Geom, cx: float, cy: float, kind: str, changes: bool, what: str, hover: str,
         seen: set[str]) -> None:
    fallback = (f"{kind} shortcut", "#7F7F7F", "dot" if changes else "solid")
    label, color, dash = _SKIP_STYLE.get((kind, changes), fallback)
    x0, x1 = cx - _BOX_W / 2 - _GAP / 2, cx + _BOX_W / 2 + _GAP / 2
    t = np.linspace(0.0, 1.0, 25)
    y = cy + g.arc_h * (1.0 - np.abs(2 * t - 1) ** 4) ** 0.25  # a rounded bracket that clears the box
    fig.add_trace(go.Scatter(x=x0 + (x1 - x0) * t, y=y, mode="lines", name=label, legendgroup=label,
                             showlegend=label not in seen, line={"color": color, "width": 2.2, "dash": dash},
                             hovertext=hover, hoverinfo="text",
                             meta={"block": what, "shortcut": kind, "shape_changes": changes}))
    seen.add(label)
    if kind == "projection":
        fig.add_annotation(x=cx, y=cy + g.arc_h, text="1×1", showarrow=False, font={"size": 10, "color": color},
                           bgcolor="white", borderpad=1)


def _block_text(b: ArchBlock, short: bool = False) -> tuple[str, str]:
    """A block's box text and hover text; ``short`` drops the stage from the box's name
    (the stage's colour and caption say it), the hover keeps it."""
    convs = "".join(f"{conv_text(c)}<br>" for c in b.convs)
    name = b.name.split(".", 1)[-1] if short else b.name
    text = f"<b>{name}</b><br>{convs}{shape_text(b.out_shape)}<br>{count_text(b.params)} params"
    rf = "" if b.receptive_field is None else f"<br>receptive field {b.receptive_field}px"
    hover = (f"<b>{b.name}</b>{f' ({b.kind} block)' if b.kind else ''}<br>{shape_text(b.in_shape)} → "
             f"{shape_text(b.out_shape)}<br>{convs}params {b.params:,}<br>{b.flops / 1e6:.2f} MFLOPs{rf}<br>"
             f"shortcut: {b.shortcut}")
    return text, hover


def _run_text(group: list[ArchBlock]) -> tuple[str, str]:
    """Box and hover text of a compressed run of blocks."""
    p, f = sum(b.params for b in group), sum(b.flops for b in group)
    text = f"<b>… {len(group)} more blocks</b><br>{count_text(p)} params<br>{f / 1e6:.0f} MFLOPs"
    rf = "" if group[-1].receptive_field is None else f"<br>receptive field up to {group[-1].receptive_field}px"
    hover = (f"{group[0].name} … {group[-1].name}: {len(group)} blocks<br>{shape_text(group[-1].out_shape)}<br>"
             f"params {p:,}<br>{f / 1e6:.1f} MFLOPs{rf}")
    return text, hover


@dataclass(frozen=True)
class _Box:
    """One box of the diagram, on a grid of rows and columns."""

    row: int
    col: int
    kind: str  # "layer" (a stem box or the head), "block", or "more" (a compressed run of blocks)
    item: Any  # ArchBox, ArchBlock or list[ArchBlock]
    stage: int  # index into _Layout.stages; -1 for the stem and the head


@dataclass(frozen=True)
class _Layout:
    stages: list[list[ArchBlock]]  # the blocks of each stage, in order
    boxes: list[_Box]  # in data-path order: stem, blocks, head
    geom: _Geom
    has_convs: bool  # boxes list each block's convs (ImageNet summaries)
    crowded: bool  # a row so full that block boxes drop the stage from their name
    n_rows: int


def _layout(arch: Architecture) -> _Layout:
    """Which boxes, in which rows: the stem, each stage's items (long stages compressed by
    ``_stage_items``), the head. One row for short nets, one row per stage otherwise."""
    n_stem = len(arch.stem)
    stages = [[b for b in arch.blocks if b.stage == s] for s in sorted({b.stage for b in arch.blocks})]
    per_stage = [_stage_items(st) for st in stages]
    # Boxes that list their convs (ImageNet) need a row's width per stage to stay legible.
    has_convs = any(b.convs for b in arch.blocks)
    one_row = n_stem + 1 + sum(len(items) for items in per_stage) <= _ONE_ROW_MAX and not has_convs
    boxes = [_Box(0, c, "layer", box, -1) for c, box in enumerate(arch.stem)]
    row, col = 0, n_stem
    for s, items in enumerate(per_stage):
        if not one_row and s > 0:
            row, col = row + 1, n_stem
        for it in items:
            boxes.append(_Box(row, col, "more" if isinstance(it, list) else "block", it, s))
            col += 1
    boxes.append(_Box(row, col, "layer", arch.head, -1))
    crowded = not has_convs and max(Counter(b.row for b in boxes).values()) >= _CROWDED
    lines = max([3] + [3 + len(b.convs) for b in arch.blocks] + [1 + len(x.lines) for x in (*arch.stem, arch.head)])
    return _Layout(stages, boxes, _Geom(lines), has_convs, crowded, 1 + row)


def _data_path(lay: _Layout) -> tuple[list[float | None], list[float | None]]:
    """The line from each box to the next (None-separated), wrapping below a row to the next."""
    g = lay.geom
    path_x: list[float | None] = []
    path_y: list[float | None] = []
    for box, nxt in itertools.pairwise(lay.boxes):
        (cx, cy), (nx, ny) = g.grid(box.row, box.col), g.grid(nxt.row, nxt.col)
        right, left = cx + _BOX_W / 2, nx - _BOX_W / 2
        if ny == cy:
            path_x += [right, left, None]
            path_y += [cy, cy, None]
        else:
            mid = cy - g.row_h / 2
            path_x += [right, right + _GAP / 2, right + _GAP / 2, left - _GAP / 2, left - _GAP / 2, left, None]
            path_y += [cy, cy, mid, mid, ny, ny, None]
    return path_x, path_y


def _draw_box(fig: go.Figure, lay: _Layout, box: _Box, seen: set[str]) -> tuple[str, str]:
    """The box's rectangle and skip arc; returns its (text, hover text)."""
    g, it, s = lay.geom, box.item, box.stage
    cx, cy = g.grid(box.row, box.col)
    fill, line, dash = "#F2F2F2", "#888", "solid"
    if box.kind == "layer":
        text, hover = "<br>".join((f"<b>{it.title}</b>", *it.lines)), it.hover
    elif box.kind == "block":
        fill, line = _STAGE_FILL[s % 4], _STAGE_LINE[s % 4]
        text, hover = _block_text(it, short=lay.crowded)
        if it.shortcut != "none":
            _arc(fig, g, cx, cy, it.shortcut, it.shape_changes, it.name, f"{it.name} shortcut: {it.shortcut}", seen)
    else:  # a compressed run of blocks: one arc when they all have the same shortcut
        fill, line, dash = "white", _STAGE_LINE[s % 4], "dash"
        text, hover = _run_text(it)
        kinds = {(b.shortcut, b.shape_changes) for b in it}
        if len(kinds) == 1 and it[0].shortcut != "none":
            kd, ch = kinds.pop()
            _arc(fig, g, cx, cy, kd, ch, f"{it[0].name}…{it[-1].name}",
                 f"each of these {len(it)} blocks has a {kd} shortcut", seen)
    fig.add_shape(type="rect", x0=cx - _BOX_W / 2, x1=cx + _BOX_W / 2, y0=cy - g.box_h / 2,
                  y1=cy + g.box_h / 2, fillcolor=fill, line={"color": line, "width": 1.4, "dash": dash},
                  layer="below")
    return text, hover


def _draw_captions(fig: go.Figure, arch: Architecture, lay: _Layout) -> None:
    """A caption under each stage's boxes: blocks, output shape, parameters."""
    for s, st in enumerate(lay.stages):
        mine = [b for b in lay.boxes if b.stage == s]
        cols = [b.col for b in mine]
        cx0, cy = lay.geom.grid(mine[0].row, min(cols))
        cx1, _ = lay.geom.grid(mine[0].row, max(cols))
        kinds = "".join(f"{k} " for k in sorted({b.kind for b in st} - {""}))
        blocks = f"{len(st)} {kinds}block{'s' * (len(st) != 1)}"
        wrap = "<br>" if len(cols) < 3 else ", "  # a caption wider than its stage takes two lines
        fig.add_annotation(x=(cx0 + cx1) / 2, y=cy - lay.geom.box_h / 2 - 0.12, yanchor="top", showarrow=False,
                           text=f"{arch.stage_name(st[0].stage)}: {blocks}{wrap}{shape_text(st[-1].out_shape)}, "
                                f"{count_text(sum(b.params for b in st))} params",
                           font={"size": 11, "color": _STAGE_LINE[s % 4]})


def architecture_diagram(summary: ModelSummary | Mapping[str, Any] | Architecture) -> go.Figure:
    """The model as boxes (stem, blocks by stage, head) with each block's skip path as an
    arc: solid for identity, dotted where the shape changes (He et al. Fig. 3), none for a
    plain net, "1×1" on projections. One row for short nets, one row per stage otherwise.

    Takes a CIFAR ``ModelSummary``, an ``imagenet.imagenet_summary`` dict (its boxes also
    list each block's convs, basic against bottleneck) or an ``Architecture``.
    """
    arch = to_architecture(summary)
    lay = _layout(arch)
    g = lay.geom
    fig = go.Figure()
    seen: set[str] = set()  # legend entries already shown
    texts, hovers = zip(*(_draw_box(fig, lay, box, seen) for box in lay.boxes), strict=True)
    xs, ys = zip(*(g.grid(b.row, b.col) for b in lay.boxes), strict=True)
    path_x, path_y = _data_path(lay)
    fig.add_trace(go.Scatter(x=path_x, y=path_y, mode="lines", line={"color": "#999", "width": 1.4},
                             hoverinfo="skip", showlegend=False, name="data path"))
    fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="markers+text", text=list(texts), hovertext=list(hovers),
                             hoverinfo="text", marker={"size": 30, "opacity": 0},
                             textfont={"size": 11 if lay.has_convs else 10}, showlegend=False, name="layers"))
    _draw_captions(fig, arch, lay)
    if not any(b.shortcut != "none" for b in arch.blocks):
        sub = "plain net: no shortcuts, each block's output is only F(x)"
    else:
        sub = "arcs are shortcuts: solid = identity, dotted = the shape changes (as in He et al. Fig. 3)"
    _style(fig, arch.title, 160 + round(190 * g.row_h / _ROW_H) * lay.n_rows, sub)
    fig.update_xaxes(visible=False, range=[-_BOX_W / 2 - 0.25, max(xs) + _BOX_W / 2 + 0.25])
    fig.update_yaxes(visible=False, range=[-(lay.n_rows - 1) * g.row_h - g.box_h / 2 - 0.55, g.arc_h + 0.3])
    fig.update_layout(hovermode="closest", hoverdistance=60, margin={"l": 10, "r": 10, "b": 40},
                      legend={"orientation": "h", "y": 0.0, "x": 0.0, "yanchor": "top"})
    return fig


# --- inside one block (Fig. 5) ------------------------------------------------------------
_COL_W, _CONV_W, _CONV_H, _STEP = 3.0, 1.7, 0.46, 1.0


def block_detail(summaries: Sequence[ModelSummary | Mapping[str, Any] | Architecture]) -> go.Figure:
    """One identity block of each network side by side, top to bottom as in the paper's
    Fig. 5: the branch's convs with a ReLU after each but the last, the shortcut around
    them, the add and the ReLU after it (e.g. ResNet-34's basic block against ResNet-50's
    bottleneck). Needs summaries that list each block's convs (``imagenet_summary``)."""
    fig = go.Figure()
    if not summaries:
        return _note(_style(fig, "Inside a block", 300), "No networks to compare")
    deepest = 0
    for i, summary in enumerate(summaries):
        arch = to_architecture(summary)
        b = next((b for b in arch.blocks if b.convs and b.shortcut == "identity"), None)
        if b is None:
            raise ValueError(f"{arch.name} has no identity block with a list of its convs "
                             "(imagenet_summary gives one; a CIFAR ModelSummary does not)")
        x, fill, line = i * _COL_W, _STAGE_FILL[i % 4], _STAGE_LINE[i % 4]
        plus = -len(b.convs) * _STEP
        deepest = max(deepest, len(b.convs))
        fig.add_trace(go.Scatter(x=[x, x], y=[_STEP / 2, plus - 0.75], mode="lines", hoverinfo="skip",
                                 line={"color": "#999", "width": 1.4}, showlegend=False, name="data path"))
        for j, conv in enumerate(b.convs):
            y = -j * _STEP
            fig.add_shape(type="rect", x0=x - _CONV_W / 2, x1=x + _CONV_W / 2, y0=y - _CONV_H / 2,
                          y1=y + _CONV_H / 2, fillcolor=fill, line={"color": line, "width": 1.4})
            fig.add_annotation(x=x, y=y, text=f"<b>{conv_text(conv)}</b>", showarrow=False, font={"size": 13})
            if j + 1 < len(b.convs):
                fig.add_annotation(x=x + 0.08, y=y - _STEP / 2, text="relu", xanchor="left", showarrow=False,
                                   font={"size": 11, "color": "#666"})
        fig.add_shape(type="circle", x0=x - 0.2, x1=x + 0.2, y0=plus - 0.15, y1=plus + 0.15, fillcolor="white",
                      line={"color": "#555", "width": 1.4})
        fig.add_annotation(x=x, y=plus, text="<b>+</b>", showarrow=False, font={"size": 14})
        fig.add_annotation(x=x + 0.08, y=plus - 0.45, text="relu", xanchor="left", showarrow=False,
                           font={"size": 11, "color": "#666"})
        skip = x + _CONV_W / 2 + 0.35
        fig.add_trace(go.Scatter(x=[x, skip, skip, x + 0.2], y=[_STEP / 2 - 0.1, _STEP / 2 - 0.1, plus, plus],
                                 mode="lines", line={"color": _SKIP_STYLE["identity", False][1], "width": 2.2},
                                 name="identity shortcut", showlegend=i == 0, hoverinfo="text",
                                 hovertext=f"{arch.name} {b.name}: identity shortcut",
                                 meta={"block": b.name, "kind": b.kind, "shortcut": b.shortcut}))
        fig.add_annotation(x=skip + 0.18, y=(plus + _STEP / 2) / 2, text="identity", textangle=-90,
                           showarrow=False, font={"size": 11, "color": _SKIP_STYLE["identity", False][1]})
        fig.add_annotation(x=x, y=_STEP / 2 + 0.1, yanchor="bottom", showarrow=False,
                           text=f"<b>{b.kind or 'residual'} block</b> ({arch.name} {b.name})<br>{b.in_shape[0]}-d in")
        fig.add_annotation(x=x, y=plus - 0.75, yanchor="top", showarrow=False, font={"size": 12, "color": "#555"},
                           text=f"{b.out_shape[0]}-d out<br>{b.params:,} params, {b.flops / 1e6:.0f} MFLOPs")
    _style(fig, "Inside a block (He et al. Fig. 5)", 250 + 95 * deepest,
           "about the same cost: the bottleneck's 1×1 convs shrink and restore the width around its 3×3")
    fig.update_xaxes(visible=False, range=[-_COL_W / 2, (len(summaries) - 0.5) * _COL_W])
    fig.update_yaxes(visible=False, range=[-deepest * _STEP - 1.6, _STEP + 0.6])
    fig.update_layout(showlegend=False, margin={"l": 10, "r": 10, "b": 10}, hovermode="closest")
    return fig
