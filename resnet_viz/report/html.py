"""A comparison of runs and experiments as one self-contained HTML file (plotly.js embedded once).

Curves (the paper's Fig. 6 style), a table of final figures, every run's whole config
(seeds included), the machine and library versions, the skip/branch reading of each
residual run, and the results of the experiments that were run: each as the figure the
app shows, a line of numbers and the raw result in a collapsed <details>. A report needs
at least one run or one experiment. Every piece of user text (run names, experiment
titles, labels) is escaped: a report is safe to open whatever things were called.
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import json
import math
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from resnet_viz import plots
from resnet_viz.experiments.skipbranch import skip_branch
from resnet_viz.fsutil import as_number
from resnet_viz.store.listing import RunInfo, list_runs
from resnet_viz.store.rundir import RunDir, RunError
from resnet_viz.training.device import describe_device, pick_device

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}details pre{max-height:30em}
h2{margin-top:2em;border-bottom:1px solid #eee}.note{color:#555}
section.exp{margin:1.5em 0 2.5em}details{margin:.5em 0}summary{cursor:pointer;color:#555}
ul.nums{margin:.3em 0;padding-left:1.3em}"""
_RAW_LIMIT = 20_000  # characters of raw JSON per experiment; the figure holds the rest
KINDS = ("lesion", "slice", "surface", "signal", "shattered", "sanity", "signal+shattered", "data")

Experiments = Mapping[str, Any] | Sequence[tuple[str, Any]]  # title -> result (to_dict() output, or a list)


def _version(package: str) -> str:
    # Read from the installed metadata: importing Streamlit in the CLI would start its
    # machinery for a version string, and a server without it still writes a report.
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    return {
        # timezone.utc, not datetime.UTC: the README promises Python 3.10, which lacks the latter.
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torchvision": _version("torchvision"), "streamlit": _version("streamlit"),
        "device": describe_device(pick_device("auto")),
    }


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p class='note'>No runs.</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td{_num_class(r.get(c))}>{html.escape(_cell(r.get(c)))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def _num_class(v: Any) -> str:
    """The table cell's class: numbers align right."""
    return " class='num'" if as_number(v) is not None else ""


def _kv_table(d: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_cell(v))}</td></tr>" for k, v in d.items())
    return f"<table class='kv'>{rows}</table>"


def experiment_kind(result: Any) -> str:
    """What an experiment result is, from its fields (a list holds results of one kind):
    one of ``KINDS``; "data" for anything else (shown as JSON only)."""
    first = result[0] if isinstance(result, list) and result and isinstance(result[0], dict) else result
    if not isinstance(first, dict):
        return "data"
    if first is result and isinstance(result.get("signal"), dict) and isinstance(result.get("shattered"), dict):
        return "signal+shattered"  # what ``python -m resnet_viz signal`` prints
    for kind, fields in (("lesion", ("single", "random_k")), ("sanity", ("maps", "similarity")),
                         ("surface", ("alphas", "betas", "loss")), ("slice", ("alphas", "loss", "acc")),
                         ("signal", ("forward_var", "grad_norm")), ("shattered", ("autocorrelation", "lags"))):
        if all(f in first for f in fields):
            return kind
    return "data"


def _fmt(v: Any, pct: bool = False) -> str:
    if as_number(v, finite=True) is None:
        return "n/a"
    return f"{v:.1%}" if pct else f"{v:.3g}"


def _items(result: Any) -> list[dict[str, Any]]:
    return [r for r in (result if isinstance(result, list) else [result]) if isinstance(r, dict)]


def _small_sanity(r: dict[str, Any]) -> dict[str, Any]:
    """Maps rounded to 2 decimals: a ResNet-110 check is 57 maps of 32 x 32 pixels."""
    return {**r, "maps": [[[round(float(v), 2) for v in row] for row in m] for m in r["maps"]]}


def _figures_and_numbers(kind: str, result: Any) -> tuple[list[Any], list[str]]:
    """(plotly figures, lines of numbers) for one experiment result of ``kind``."""
    items = _items(result)
    if kind == "lesion":
        lines = []
        for r in items:
            worst = min(r["single"], key=lambda s: s["acc"], default=None)
            last = r["random_k"][-1] if r["random_k"] else None
            lines.append(f"{r.get('label', 'model')}: intact {_fmt(r['baseline_acc'], True)}"
                         + (f"; worst single deletion {worst['block']} → {_fmt(worst['acc'], True)}" if worst else "")
                         + (f"; {last['k']} random deletions → {_fmt(last['mean_acc'], True)}" if last else "")
                         + (f". {r['note']}" if r.get("note") else ""))
        return [plots.lesion_figure(items)], lines
    if kind == "slice":
        lines = []
        for s in items:
            mid = len(s["loss"]) // 2
            finite = [v for v in s["loss"] if as_number(v, finite=True) is not None]
            lines.append(f"{s.get('label') or 'model'}: loss {_fmt(s['loss'][mid])} at α = {_fmt(s['alphas'][mid])}, "
                         f"{_fmt(max(finite, default=None))} at most over {len(s['alphas'])} points")
        return [plots.slices_figure(items)], lines
    if kind == "surface":
        figs, lines = [], []
        for s in items:
            flat = [v for row in s["loss"] for v in row if as_number(v, finite=True) is not None]
            centre = s["loss"][len(s["betas"]) // 2][len(s["alphas"]) // 2] if s["loss"] else None
            lines.append(f"{s.get('label') or 'model'}: {len(s['alphas'])} × {len(s['betas'])} grid, loss "
                         f"{_fmt(centre)} at the centre, from {_fmt(min(flat, default=None))} "
                         f"to {_fmt(max(flat, default=None))}")
            figs.append(plots.surface_figure(s).update_layout(width=760))  # square plot, colour bar beside it
        return figs, lines
    if kind == "signal":
        return [plots.signal_figure(items)], [
            f"{p['label']}: gradient norm at the first block / at the last "
            f"{_fmt(p['grad_norm'][0] / p['grad_norm'][-1]) if p['grad_norm'] and p['grad_norm'][-1] else 'n/a'}"
            for p in items]
    if kind == "shattered":
        return [plots.shattered_figure(items)], [
            f"{r['label']}: correlation length {_fmt(r['corr_length'])} points" for r in items]
    if kind == "sanity":
        figs, lines = [], []
        from resnet_viz.experiments.sanity import (
            reading,  # the same words as the app's Sanity check tab
        )

        for r in items:
            said = reading(list(r["similarity"]), list(r["layers"]), r["method"])
            lines.append(f"class {r.get('target')}, {said or 'no reading: the result is incomplete'}")
            figs.append(plots.sanity_figure(_small_sanity(r)))
        return figs, lines
    if kind == "signal+shattered":
        f1, l1 = _figures_and_numbers("signal", [result["signal"]])
        f2, l2 = _figures_and_numbers("shattered", [result["shattered"]])
        return f1 + f2, l1 + l2
    return [], []


def _compact(data: Any) -> Any:
    """The raw result for reading: floats to 4 significant digits, pixel maps left out (drawn above)."""
    if isinstance(data, float):
        return float(f"{data:.4g}") if math.isfinite(data) else None
    if isinstance(data, list):
        return [_compact(v) for v in data]
    if isinstance(data, dict):
        out = {k: _compact(v) for k, v in data.items() if k != "maps"}
        if isinstance(data.get("maps"), list):
            m = data["maps"]
            size = f"{len(m[0])} × {len(m[0][0])} " if m and m[0] and isinstance(m[0], list) else ""
            out["maps"] = f"{len(m)} maps of {size}pixels (drawn in the figure)"
        return out
    return data


def _experiment(title: str, result: Any, figure_html: Callable[[Any], str]) -> str:
    data = result.to_dict() if hasattr(result, "to_dict") else result
    kind = experiment_kind(data)
    try:
        figs, lines = _figures_and_numbers(kind, data)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as e:  # a malformed result
        figs, lines = [], [f"This result cannot be drawn ({type(e).__name__}: {e}); the raw data is below."]
    raw = json.dumps(_compact(data), indent=1, ensure_ascii=False)
    if len(raw) > _RAW_LIMIT:
        raw = raw[:_RAW_LIMIT] + f"\n... ({len(raw) - _RAW_LIMIT:,} more characters left out)"
    nums = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return (f"<section class='exp'><h3>{html.escape(title)}</h3>"
            + (f"<ul class='nums'>{nums}</ul>" if nums else "")
            + "".join(figure_html(f) for f in figs)
            + f"<details><summary>Raw result (JSON)</summary><pre>{html.escape(raw, quote=False)}</pre></details>"
            "</section>")


def build_report(runs_root: Path, run_ids: Sequence[str], experiments: Experiments | None = None,
                 title: str = "ResNet Lab report") -> str:
    """The HTML text of a report on ``run_ids`` and ``experiments`` (title -> result, as a
    mapping or (title, result) pairs). A RunError names any run that is missing; a
    ValueError says that a report needs at least one run or one experiment."""
    exps = list(experiments.items() if isinstance(experiments, Mapping) else experiments or [])
    if not run_ids and not exps:
        raise ValueError("a report needs at least one run or one experiment")
    chosen: list[RunInfo] = []
    if run_ids:
        infos = {i.id: i for i in list_runs(runs_root)}
        for rid in run_ids:
            RunDir.open(runs_root, rid)  # validates the id and that the folder exists
            if rid not in infos:
                raise RunError(f"run {rid} is not a readable run")
            chosen.append(infos[rid])
    drawn = [0]

    def figure_html(fig: Any) -> str:
        drawn[0] += 1  # plotly.js once, embedded, before the first figure
        return fig.to_html(full_html=False, include_plotlyjs=drawn[0] == 1, config={"displaylogo": False})

    n_runs, n_exps = len(chosen), len(exps)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>{n_runs} run{'s' * (n_runs != 1)}, {n_exps} experiment{'s' * (n_exps != 1)}.</p>"]
    if chosen:
        series = [(f"{i.label} · {i.name or i.id}", RunDir(i.path).read_metrics()) for i in chosen]
        parts += ["<h2>Runs</h2>", _table(plots.error_table_rows(chosen)),
                  "<h2>Curves</h2><p class='note'>Training error solid, test error dashed (He et al. Fig. 6).</p>"]
        parts += [figure_html(plots.compare_curves(series, x_axis="iterations", metric=m)) for m in ("error", "loss")]
        parts.append("<h2>Skip and branch per block</h2>")
        for label, records in series:
            parts.append(f"<p><b>{html.escape(label)}</b>: {html.escape(skip_branch(records).reading)}</p>")
    if exps:
        parts.append("<h2>Experiments</h2>")
        parts += [_experiment(str(name), result, figure_html) for name, result in exps]
    if chosen:
        parts.append("<h2>Configurations (seeds included)</h2>")
        for i in chosen:
            cfg = i.config.to_dict() if i.config else {}
            cfg_json = html.escape(json.dumps(cfg, indent=1), quote=False)
            parts.append(f"<h3>{html.escape(i.id)}</h3><pre>{cfg_json}</pre>")
    parts.append("<h2>Environment</h2>" + _kv_table(environment()))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
