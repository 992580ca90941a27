"""A comparison of runs as one self-contained HTML file (plotly.js embedded once).

Curves (the paper's Fig. 6 style), a table of final figures, every run's whole config
(seeds included), the machine and library versions, the skip/branch reading of each
residual run, and the results of any experiments that were run, as JSON. Every piece of
user text (run names) is escaped: a report is safe to open whatever the runs were called.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from . import plots
from .device import describe_device, pick_device
from .experiments.skipbranch import skip_branch
from .runlist import RunInfo, list_runs
from .runs import RunDir, RunError

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:1em;
overflow:auto;font-size:12px}h2{margin-top:2em;border-bottom:1px solid #eee}.note{color:#555}"""


def environment() -> dict[str, str]:
    import streamlit  # only its version; nothing of it runs here
    import torchvision

    return {
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "streamlit": streamlit.__version__,
        "device": describe_device(pick_device("auto")),
    }


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p class='note'>No runs.</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def build_report(runs_root: Path, run_ids: Sequence[str], experiments: Mapping[str, Any] | None = None,
                 title: str = "ResNet Lab report") -> str:
    """The HTML text of a report on ``run_ids`` (a RunError names any run that is missing)."""
    if not run_ids:
        raise ValueError("a report needs at least one run")
    infos = {i.id: i for i in list_runs(runs_root)}
    chosen: list[RunInfo] = []
    for rid in run_ids:
        RunDir.open(runs_root, rid)  # validates the id and that the folder exists
        if rid not in infos:
            raise RunError(f"run {rid} is not a readable run")
        chosen.append(infos[rid])
    series = [(f"{i.label} · {i.name or i.id}", RunDir(i.path).read_metrics()) for i in chosen]
    figs = [plots.compare_curves(series, x_axis="iterations", metric="error"),
            plots.compare_curves(series, x_axis="iterations", metric="loss")]
    parts = [f"<h1>{html.escape(title)}</h1>",
             "<h2>Runs</h2>", _table(plots.error_table_rows(chosen)),
             "<h2>Curves</h2><p class='note'>Training error solid, test error dashed (He et al. Fig. 6).</p>"]
    for k, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(k == 0)))  # plotly.js once, embedded
    parts.append("<h2>Skip and branch per block</h2>")
    for label, records in series:
        parts.append(f"<p><b>{html.escape(label)}</b>: {html.escape(skip_branch(records).reading)}</p>")
    if experiments:
        parts.append("<h2>Experiments</h2>")
        for name, result in experiments.items():
            data = result.to_dict() if hasattr(result, "to_dict") else result
            parts.append(f"<h3>{html.escape(name)}</h3><pre>{html.escape(json.dumps(data, indent=1)[:20000], quote=False)}</pre>")
    parts.append("<h2>Configurations (seeds included)</h2>")
    for i in chosen:
        cfg = i.config.to_dict() if i.config else {}
        parts.append(f"<h3>{html.escape(i.id)}</h3><pre>{html.escape(json.dumps(cfg, indent=1), quote=False)}</pre>")
    parts.append("<h2>Environment</h2>" + _table([environment()]))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
