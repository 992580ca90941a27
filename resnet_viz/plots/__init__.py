"""Figure builders for ResNet Lab: plain data in, plotly figures out.

The only package that imports plotly (and it never imports Streamlit). Every builder
returns a figure for *empty* input, with a note saying why it is empty, rather than
raising; wrong *arguments* raise ValueError.
"""

from resnet_viz.plots._base import (
    MAX_POINTS,
    PALETTE,
    PROBE_STATS,
    TEMPLATE,
    downsample,
    ema,
    run_color,
    smoothing_alpha,
)
from resnet_viz.plots.architecture import architecture_diagram, block_detail
from resnet_viz.plots.archspec import ArchBlock, ArchBox, Architecture, to_architecture
from resnet_viz.plots.curves import compare_curves, error_table_rows, training_curves
from resnet_viz.plots.experiments import (
    conv_figure,
    lesion_figure,
    sanity_figure,
    shattered_figure,
    signal_figure,
    slices_figure,
    surface_figure,
)
from resnet_viz.plots.inside import (
    attribution_overlay,
    depth_profile,
    feature_map_grid,
    probe_heatmap,
    top_k_bar,
)

__all__ = [
    "MAX_POINTS", "PALETTE", "PROBE_STATS", "TEMPLATE", "ArchBlock", "ArchBox", "Architecture",
    "architecture_diagram", "attribution_overlay", "block_detail", "compare_curves", "conv_figure",
    "depth_profile", "downsample", "ema", "error_table_rows", "feature_map_grid", "lesion_figure",
    "probe_heatmap", "run_color", "sanity_figure", "shattered_figure", "signal_figure", "slices_figure",
    "smoothing_alpha", "surface_figure", "to_architecture", "top_k_bar", "training_curves",
]
