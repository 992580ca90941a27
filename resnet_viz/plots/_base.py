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
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from resnet_viz.fsutil import as_number

PALETTE: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#7F7F7F")
TEMPLATE = "plotly_white"
MAX_POINTS = 2000  # per line: more is invisible at page width and slows the browser
# The per-block statistics the trainer's probes record (training.probes), by key, with the
# label a figure or a page shows for each; the one place that names them for display.
PROBE_STATS: dict[str, str] = {"grad_norm": "gradient norm", "act_norm": "activation norm",
                               "ratio": "||F(x)|| / ||x||", "cos": "cos(F(x), x)"}
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


def _series(records: Sequence[dict], kind: str, x_key: str, *keys: str) -> tuple[np.ndarray, ...]:
    """(x, key1, key2, ...) arrays from records of one kind, sorted by x; records missing
    a field are dropped (a malformed line), while NaN values are kept (a diverged step)."""
    rows: list[list[float]] = []
    for r in records:
        if isinstance(r, dict) and r.get("kind") == kind:
            vals = [as_number(r.get(k)) for k in (x_key, *keys)]
            nums = [v for v in vals if v is not None]
            if len(nums) == len(vals) and math.isfinite(nums[0]):
                rows.append(nums)
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


def _numbers(values: Any) -> Iterator[float]:
    """Every number in nested sequences (lists of traces' y, arrays), in order."""
    if isinstance(values, (list, tuple, np.ndarray)):
        for x in values:
            yield from _numbers(x)
    elif as_number(values) is not None:
        yield float(values)


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Ticks between the log10 values lo and hi: (their log10 positions, full labels).

    1-2-5 steps; decades when those are more than eight; 1-2-3-5, then every digit, while
    they are fewer than three. Plotly's own log ticks over less than a few decades label
    20, 30 ... 80 as "2", "3" ... "8" beside a "10" below them, which reads as if 10 were
    under 2.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ValueError(f"log tick range must be finite with lo <= hi, got {lo}, {hi}")

    def at(mults: Sequence[float]) -> list[float]:
        return [m * 10.0**d for d in range(math.floor(lo), math.ceil(hi) + 1) for m in mults
                if lo - 1e-9 <= math.log10(m * 10.0**d) <= hi + 1e-9]

    vals = at((1, 2, 5))
    if len(vals) > 8:
        vals = at((1,))
        vals = vals[:: math.ceil(len(vals) / 8)]  # every other decade (or sparser) over a huge range
    else:
        for mults in ((1, 2, 3, 5), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):  # finer only while too few
            if len(vals) < 3:
                vals = at(mults)
    return [math.log10(v) for v in vals], [_tick_text(v) for v in vals]


def _tick_text(v: float) -> str:
    """0.001 ... 5000 as written; beyond, 1e4 and 2e-5 (not Python's 1e+04 beside a 1000)."""
    if 1e-3 <= v < 1e4:
        return f"{v:g}"
    m, e = f"{v:.0e}".split("e")
    return f"{m}e{int(e)}"


def log_yaxis(fig: go.Figure, values: Any, **where: Any) -> go.Figure:
    """A log y axis (``where``: row=, col= of a subplot) labelled with ``log_ticks`` of the
    positive finite ``values`` it shows; Plotly's own ticks where there are none."""
    v = np.fromiter(_numbers(values), dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    fig.update_yaxes(type="log", **where)
    if len(v):
        tv, tt = log_ticks(math.log10(v.min()), math.log10(v.max()))
        if tv:
            fig.update_yaxes(tickvals=[10.0**t for t in tv], ticktext=tt, **where)
    return fig


def _mode(n: int) -> str:
    return "lines" if n > 1 else "markers"  # a line through one point draws nothing
