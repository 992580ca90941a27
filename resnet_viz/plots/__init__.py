"""Figure builders for ResNet Lab: plain data in, plotly figures out.

The only package that imports plotly (and it never imports Streamlit). Every builder
returns a figure for *empty* input, with a note saying why it is empty, rather than
raising; wrong *arguments* raise ValueError.
"""

from ._base import (
    MAX_POINTS,
    PALETTE,
    PROBE_STATS,
    TEMPLATE,
    downsample,
    ema,
    run_color,
    smoothing_alpha,
)
from .architecture import architecture_diagram
from .curves import compare_curves, error_table_rows, training_curves
from .experiments import (
    conv_figure,
    lesion_figure,
    sanity_figure,
    shattered_figure,
    signal_figure,
    slices_figure,
    surface_figure,
)
from .inside import (
    attribution_overlay,
    depth_profile,
    feature_map_grid,
    probe_heatmap,
    top_k_bar,
)

__all__ = [
    "MAX_POINTS", "PALETTE", "PROBE_STATS", "TEMPLATE", "architecture_diagram", "attribution_overlay",
    "compare_curves", "depth_profile", "downsample", "ema", "error_table_rows", "feature_map_grid",
    "probe_heatmap", "run_color", "smoothing_alpha", "top_k_bar", "training_curves",
    "conv_figure", "lesion_figure", "sanity_figure", "shattered_figure", "signal_figure", "slices_figure",
    "surface_figure",
]
