"""Experiments that show why residual learning works (lesion, landscape, signal, ...)."""

from resnet_viz.experiments.common import (
    Cancelled,
    ProgressFn,
    accuracy,
    check,
    eval_mode,
    report,
)

__all__ = ["Cancelled", "ProgressFn", "accuracy", "check", "eval_mode", "report"]
