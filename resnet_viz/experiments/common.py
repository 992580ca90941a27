"""What every experiment shares: progress reports, cooperative stop, model evaluation.

An experiment is a plain function that takes a model (or a config), its parameters, and
optionally ``progress`` (called with a fraction in [0, 1] and a short message; an experiment
whose partial result is worth showing, such as a loss surface on a coarse grid, also passes
it as ``partial=``, a ``to_dict()``-style dict, so a progress function that takes partials
accepts a third argument) and
``stop`` (a ``threading.Event``; when set, the function raises ``Cancelled`` at its next
check, within one batch). It returns a frozen dataclass whose ``to_dict()`` is
JSON-serializable: the CLI prints it as one JSON object and the app plots it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from resnet_viz.data.batches import normalize

# eval_mode lives in nets (nets.summary uses it too); experiments import it from here.
from resnet_viz.nets.cifar import eval_mode

ProgressFn = Callable[..., None]  # (fraction, message) or (fraction, message, partial=dict)


class Cancelled(Exception):
    """Raised inside an experiment when its stop event is set."""


def check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Cancelled("stopped by the user")


def report(progress: ProgressFn | None, fraction: float, message: str, partial: Any = None) -> None:
    if progress is None:
        return
    fraction = min(1.0, max(0.0, fraction))
    if partial is None:  # two-argument progress functions keep working
        progress(fraction, message)
    else:
        progress(fraction, message, partial=partial)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
             stop: threading.Event | None = None) -> float:
    """Top-1 accuracy of ``model`` on normalized images ``x`` (N, 3, H, W) with labels ``y``."""
    correct = 0
    with eval_mode(model):
        for i in range(0, len(y), batch_size):
            check(stop)
            correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(1, len(y))


def evaluation_subset(x_uint8: torch.Tensor, y: torch.Tensor, n: int,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` test images an experiment evaluates on (all of them when there are fewer),
    normalized (N, 3, H, W) with their labels: a seeded random sample, so that the CLI and
    the app measure the same model on the same images and get the same numbers."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of images, got {n!r}")
    if y.dim() != 1 or len(y) != len(x_uint8):
        raise ValueError(f"{len(x_uint8)} images but labels shaped {tuple(y.shape)}")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[: min(n, len(y))]
    return normalize(x_uint8[idx], channels_last=False), y[idx]
