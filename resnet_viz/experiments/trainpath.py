"""The path training took, on the loss surface (Li, Xu, Taylor, Studer and Goldstein 2018, section 7, Fig. 9).

Random directions cannot show an optimizer's path: in a space of 270,000 dimensions two random
directions are nearly orthogonal to it, and the path would look like a dot. Li et al. instead
take the weights saved along training, theta_0 .. theta_n (here: the run's snapshots, the last
being the final weights), form the matrix M = [theta_0 - theta_n; ...; theta_{n-1} - theta_n],
and use its top two principal components as the plane's directions. As in their code (sklearn's
PCA), the rows are centred on their mean before the decomposition; the snapshots are then
projected without centring, so the final weights sit at the origin. Each component's share of
the variance (the squared singular values over their sum) says how much of the path the plane
holds: 40-90% in their paper.

What is done here, and why:

- Every trainable parameter counts, batch-norm weights and biases included (their
  ``dir_type=weights``, no ``--ignore biasbn``); running statistics are not parameters and stay
  those of the final weights when the loss is evaluated.
- No filter normalization for these directions: the paper's section 7 uses the principal
  directions as they are (unit vectors), so a coordinate is a distance in weight space.
- The sign of a principal direction is arbitrary; each is chosen so that the initialization
  (the first snapshot) has a coordinate >= 0: the path starts up and right and ends at 0.
- The contour is ``landscape.surface_along`` (the landscape's loop on a fixed training subset,
  with BN folded) on a square grid covering the path with a margin.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from resnet_viz.experiments.common import ProgressFn, check, report
from resnet_viz.experiments.landscape import EVAL_BATCH, Surface2D, surface_along
from resnet_viz.nets.cifar import build_model
from resnet_viz.store.rundir import RunDir
from resnet_viz.store.snapshots import list_snapshots, load_snapshot

MIN_STEPS, MAX_STEPS = 3, 41  # grid points per axis: each point is a pass over the subset
MARGIN = 0.25  # the grid reaches this share of the path's extent beyond it on every side
_CHUNK = 1 << 18  # columns per float64 block of the Gram matrix: bounded memory for large nets


@dataclass(frozen=True)
class PathPCA:
    directions: Tensor  # (2, P): unit vectors, the top two principal components
    explained: list[float]  # their shares of the variance of the path
    coords: Tensor  # (n, 2): each snapshot's theta_i - theta_n on the two directions; the last is (0, 0)


def path_pca(weights: Tensor) -> PathPCA:
    """The top-2 principal directions of a path, its share of variance and the projections.

    ``weights``: (n, P), one row per snapshot in training order, the last the final weights.
    Computed through the (n-1) x (n-1) Gram matrix of the centred differences, in float64
    blocks: for a ResNet-56 (850,000 weights) a full SVD would hold another n x P matrix.
    """
    if weights.dim() != 2 or len(weights) < 4:
        raise ValueError(f"a path needs at least 4 snapshots (rows) of the weights, got shape {tuple(weights.shape)}; "
                         "train longer or snapshot more often")
    diffs = weights[:-1].float() - weights[-1].float()
    centred = diffs - diffs.mean(0, keepdim=True)
    gram = torch.zeros(len(diffs), len(diffs), dtype=torch.float64)
    for lo in range(0, weights.shape[1], _CHUNK):
        block = centred[:, lo:lo + _CHUNK].double()
        gram += block @ block.T
    values, vectors = torch.linalg.eigh(gram)  # ascending
    values = values.clamp_min(0).flip(0)
    if values[1] <= values.sum() * 1e-12:
        raise ValueError("the snapshots lie on one line: a plane cannot be fitted to the path")
    top = vectors.flip(1)[:, :2]  # (n-1, 2): left singular vectors
    dirs = torch.cat([(top[:, k:k + 1].T.float() @ centred) for k in range(2)])
    dirs = dirs / dirs.norm(dim=1, keepdim=True)  # v_k = C^T u_k / s_k, made exactly unit
    coords = (weights.float() - weights[-1].float()) @ dirs.T
    sign = torch.where(coords[0] < 0, -1.0, 1.0)  # the initialization on the positive side
    explained = (values[:2] / values.sum()).tolist()
    return PathPCA(directions=dirs * sign[:, None], explained=explained, coords=coords * sign)


@dataclass(frozen=True)
class TrainPath:
    steps: list[int]  # the snapshots' training steps
    epochs: list[float]
    x: list[float]  # their coordinates on the first principal direction
    y: list[float]  # and on the second
    explained: list[float]  # the two directions' shares of the path's variance
    surface: Surface2D  # training loss on the plane through the final weights
    label: str
    images: int  # training images the loss is measured on

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "trainpath", "steps": self.steps, "epochs": self.epochs, "x": self.x, "y": self.y,
                "explained": self.explained, "surface": self.surface.to_dict(), "label": self.label,
                "images": self.images}


def run_snapshots(run_path: Path | str) -> list[tuple[int, Path]]:
    """The run's snapshots, or a ValueError saying why there is no path to draw."""
    found = list_snapshots(Path(run_path))
    if len(found) < 4:
        raise ValueError(f"run {Path(run_path).name} has {len(found)} weight snapshots; a path needs at least 4 "
                         "(runs keep one per epoch: train a few epochs, or set snapshot_every)")
    return found


def _load_path(found: list[tuple[int, Path]], model: nn.Module, stop: threading.Event | None,
               progress: ProgressFn | None) -> tuple[Tensor, list[float], dict[str, Tensor]]:
    """(n, P) weights of the snapshots, their epochs, and the final snapshot's whole state."""
    names = [n for n, _ in model.named_parameters()]
    rows: list[Tensor] = []
    epochs: list[float] = []
    state: dict[str, Tensor] = {}
    for k, (step, path) in enumerate(found):
        check(stop)
        state, meta = load_snapshot(path)
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"snapshot {path.name} does not fit the run's model (no {missing[0]!r})")
        rows.append(torch.cat([state[n].detach().float().flatten() for n in names]))
        epochs.append(float(meta.get("epoch", step)))
        report(progress, 0.05 * (k + 1) / len(found), f"read snapshot {k + 1}/{len(found)} (step {step})")
    return torch.stack(rows), epochs, state


def _grid(values: Tensor, steps: int) -> list[float]:
    lo, hi = float(values.min()), float(values.max())
    pad = MARGIN * max(hi - lo, 1e-6)
    return [lo - pad + (hi - lo + 2 * pad) * i / (steps - 1) for i in range(steps)]


def _split(direction: Tensor, model: nn.Module) -> list[Tensor]:
    """A flat direction as one tensor per parameter, in ``parameters()`` order."""
    return [t.view_as(p) for t, p in zip(direction.split([p.numel() for p in model.parameters()]),
                                         model.parameters(), strict=True)]


def training_path(run_path: Path | str, x: Tensor, y: Tensor, *, steps: int = 15, batch_size: int = EVAL_BATCH,
                  precision: str = "auto", progress: ProgressFn | None = None,
                  stop: threading.Event | None = None, label: str = "") -> TrainPath:
    """The run's snapshots projected on their top-2 principal plane, and the training loss on
    that plane (``steps`` x ``steps`` points around the path) on the fixed subset ``x``, ``y``
    (``landscape.fixed_subset``). ``progress`` gets coarse surfaces as ``partial=`` with the path."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not MIN_STEPS <= steps <= MAX_STEPS:
        raise ValueError(f"grid points per axis must be a whole number from {MIN_STEPS} to {MAX_STEPS}, got {steps!r}")
    run = RunDir(Path(run_path))
    found = run_snapshots(run.path)
    model = build_model(run.config().model, generator=torch.Generator())  # its init is overwritten: no global RNG
    weights, epochs, final = _load_path(found, model, stop, progress)
    model.load_state_dict(final)  # the plane passes through the final weights, BN statistics included
    pca = path_pca(weights)
    del weights
    steps_at, xs, ys = [s for s, _ in found], pca.coords[:, 0].tolist(), pca.coords[:, 1].tolist()
    path = {"steps": steps_at, "epochs": epochs, "x": xs, "y": ys, "explained": pca.explained}

    def on_surface(fraction: float, message: str, partial: Any = None) -> None:
        report(progress, 0.05 + 0.95 * fraction, message, None if partial is None else {**partial, "path": path})

    dirs = (_split(pca.directions[0], model), _split(pca.directions[1], model))
    surface = surface_along(model, x, y, dirs, _grid(pca.coords[:, 0], steps), _grid(pca.coords[:, 1], steps),
                            batch_size=batch_size, precision=precision, progress=on_surface, stop=stop,
                            label=label)
    return TrainPath(steps=steps_at, epochs=epochs, x=xs, y=ys, explained=pca.explained, surface=surface,
                     label=label or run.id, images=len(y))
