"""Figures of a net you watch learn (``training.watch`` records them): one test image's feature
maps at a step, and weight/gradient histograms over fixed symmetric log bins, overlaid for
several runs at the same step (what TensorBoard cannot do, tensorboard#6206) or over training.

Inputs are plain arrays: maps as ``(block, channels, (k, H, W) values)``, histograms as counts
over ``edges`` (the same edges for every run, so they overlay)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.plots._base import _note, _style, run_color


def _check_edges(edges: np.ndarray, n_bins: int) -> np.ndarray:
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or len(e) != n_bins + 1 or len(e) % 2:
        raise ValueError(f"histogram edges must be symmetric and one more than the {n_bins} bins, got {e.shape}")
    return e


def bin_labels(edges: np.ndarray) -> list[str]:
    """Each bin by its signed |v| range, e.g. '1e-3..2e-3' for 0.001 <= v < 0.002, '0' for the centre bin."""
    e = np.asarray(edges, dtype=float)
    mid = (len(e) - 1) // 2

    def s(v: float) -> str:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+00", "").replace("e+0", "e")

    return ["0" if i == mid else f"{s(e[i])}..{s(e[i + 1])}" for i in range(len(e) - 1)]


def _ticks(edges: np.ndarray) -> tuple[list[int], list[str]]:
    """Tick positions (bin indices) at the decades on both sides, and 0 in the middle."""
    e = np.asarray(edges, dtype=float)
    mid = (len(e) - 1) // 2
    pos, text = [mid], ["0"]
    for i in range(len(e) - 1):
        if i == mid:
            continue
        d = np.log10(e[i] if i > mid else -e[i + 1])  # the decade of the bin's |v| lower edge
        # Every other decade, and none next to 0: their labels would overlap.
        if abs(d - round(d)) < 1e-6 and round(d) % 2 == 0 and abs(i - mid) > 3:
            pos.append(i)
            text.append(("-" if i < mid else "") + ("1" if round(d) == 0 else f"1e{round(d)}"))
    return pos, text


def histogram_overlay(
    series: Sequence[tuple[str, np.ndarray | None, np.ndarray | None]], edges: np.ndarray, title: str = "",
) -> go.Figure:
    """Weights (left) and gradients (right) as the share of a group's parameters per bin, one line
    per ``(label, weight counts, gradient counts)``: two runs at the same step overlay."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("weights", "gradients"), horizontal_spacing=0.08)
    _style(fig, title or "Weights and gradients", 360)
    if not series:
        return _note(fig, "No histograms recorded yet")
    n_bins = next(len(c) for _, w, g in series for c in (w, g) if c is not None)
    e = _check_edges(edges, n_bins)
    labels = bin_labels(e)
    x = np.arange(n_bins)
    for i, (label, *hists) in enumerate(series):
        for col, counts in enumerate(hists, start=1):
            if counts is None or np.sum(counts) == 0:
                continue
            share = np.asarray(counts, dtype=float) / np.sum(counts)
            fig.add_trace(go.Scatter(x=x, y=share, name=label, legendgroup=label, showlegend=col == 1,
                                     line={"shape": "hvh", "color": run_color(i)}, customdata=labels,
                                     hovertemplate=f"{label}<br>%{{customdata}}: %{{y:.1%}}<extra></extra>"),
                          row=1, col=col)
    pos, text = _ticks(e)
    fig.update_xaxes(tickvals=pos, ticktext=text, title_text="value (signed, log scale of |v|)")
    fig.update_yaxes(tickformat=".0%")
    fig.update_yaxes(title_text="share of parameters", col=1)
    return fig


def histogram_history(steps: Sequence[int], counts: np.ndarray, edges: np.ndarray, title: str = "") -> go.Figure:
    """One group's histogram over training as a heatmap: x the step, y the bin, colour the share."""
    c = np.asarray(counts, dtype=float)
    fig = _style(go.Figure(), title or "Over training", 330)
    if c.size == 0 or not len(steps):
        return _note(fig, "No histograms recorded yet")
    if c.ndim != 2 or c.shape[0] != len(steps):
        raise ValueError(f"counts must be (steps, bins) with one row per step, got {c.shape} for {len(steps)} steps")
    e = _check_edges(edges, c.shape[1])
    share = c / np.maximum(c.sum(1, keepdims=True), 1)
    used = np.nonzero(share.sum(0))[0]
    lo, hi = (int(used.min()), int(used.max()) + 1) if used.size else (0, c.shape[1])
    labels = bin_labels(e)[lo:hi]
    fig.add_trace(go.Heatmap(x=list(steps), y=list(range(lo, hi)), z=share[:, lo:hi].T, colorscale="Viridis",
                             customdata=np.array([labels] * len(steps)).T, colorbar={"title": "share"},
                             hovertemplate="step %{x}<br>%{customdata}: %{z:.1%}<extra></extra>"))
    pos, text = _ticks(e)
    keep = [(p, t) for p, t in zip(pos, text, strict=True) if lo <= p < hi]
    fig.update_yaxes(tickvals=[p for p, _ in keep], ticktext=[t for _, t in keep], title_text="value")
    fig.update_xaxes(title_text="step")
    return fig


def watch_maps(maps: Sequence[tuple[str, Sequence[int], np.ndarray]], title: str = "") -> go.Figure:
    """Feature maps of one image at one step: a row per block, the channel mean first, then the
    strongest channels; each map on its own colour scale, so its pattern shows."""
    rows = len(maps)
    fig_title = title or "Feature maps"
    if not rows:
        return _note(_style(go.Figure(), fig_title, 300), "No frames recorded yet")
    cols = max(len(ch) for _, ch, _ in maps)
    names = [("mean of all channels" if c < 0 else f"{block} ch {c}") if j == 0 or c >= 0 else ""
             for block, ch, _ in maps for j, c in enumerate(list(ch) + [0] * (cols - len(ch)))]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.02,
                        vertical_spacing=0.08 / max(rows - 1, 1))
    for r, (block, ch, values) in enumerate(maps, start=1):
        v = np.asarray(values, dtype=float)
        if v.ndim != 3 or v.shape[0] != len(ch):
            raise ValueError(f"maps of {block} must be (channels, H, W) with one per channel, got {v.shape}")
        for j, c in enumerate(ch):
            fig.add_trace(go.Heatmap(z=v[j], colorscale="Viridis", showscale=False,
                                     hovertemplate=f"{block} {'mean' if c < 0 else f'ch {c}'}<br>%{{z:.3g}}"
                                                   "<extra></extra>"), row=r, col=j + 1)
    for k in range(1, rows * cols + 1):  # square pixels, row 0 at the top as in an image
        sfx = "" if k == 1 else str(k)
        fig.layout[f"yaxis{sfx}"].update(scaleanchor=f"x{sfx}", autorange="reversed", visible=False)
        fig.layout[f"xaxis{sfx}"].update(visible=False, constrain="domain")
    fig.update_annotations(font_size=11)
    return _style(fig, fig_title, 150 + 150 * rows)
