"""Faithfulness of every attribution method: deletion, insertion and ROAD on a fixed image set.

A map can look convincing (Guided Backprop's sharp edges) and still say little about what
the *model* uses. Here each method's maps are put to the test the model itself sets: take
away the pixels the map ranks highest and see whether the class probability falls
(``removal`` has the curves and what each one means). A random ranking is the reference a
method must beat: its row is in every result.

One number to read per method: the **deletion AUC** (area under the probability as the top
pixels are deleted; lower = more faithful) and the **insertion AUC** (higher = more
faithful); the ROAD gap (LeRF - MoRF, higher = more faithful) checks the same with pixels
removed without leaving a tell-tale hole.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from resnet_viz.data.batches import normalize
from resnet_viz.experiments.attribution.core import device_of
from resnet_viz.experiments.attribution.methods import METHODS, attribute
from resnet_viz.experiments.attribution.removal import (
    FRACTIONS,
    ROAD_FRACTIONS,
    auc,
    check_fractions,
    curves,
    map_scores,
    road_curves,
)
from resnet_viz.experiments.common import ProgressFn, check, report
from resnet_viz.nets.cifar import eval_mode

__all__ = ["RANDOM", "FaithfulnessResult", "check_methods", "faithfulness_study", "fixed_images", "reading",
           "scores_beside_random"]

RANDOM = "random"  # a map of uniform noise: the ranking every method must beat
# A method within this share of the random map's deletion AUC is "no better than random".
NO_BETTER = 0.9


@dataclass(frozen=True)
class FaithfulnessResult:
    label: str  # the model, for titles
    images: int
    fractions: list[float]  # of the deletion and insertion curves
    road_fractions: list[float]
    start_prob: float  # mean probability of the explained (predicted) class on the intact images
    accuracy: float | None  # share of the images the model gets right (None without labels)
    methods: dict[str, dict[str, Any]]  # per method, "random" last: see faithfulness_study

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reading": reading(self.methods)}


def scores_beside_random(model: nn.Module, x: Tensor, amap: Tensor) -> dict[str, float]:
    """Deletion and insertion areas of ``amap`` (the raw, signed map: its ranking is the claim)
    for one image ``x``, and a seeded random map's beside them: the yardstick."""
    s = map_scores(model, x, amap)
    ref = map_scores(model, x, torch.rand(amap.shape, generator=torch.Generator().manual_seed(0)))
    return {"deletion": float(s["deletion_auc"]), "insertion": float(s["insertion_auc"]),
            "random_deletion": float(ref["deletion_auc"]), "random_insertion": float(ref["insertion_auc"])}


def fixed_images(x_uint8: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``n`` test images as (normalized x, labels): the first of each class in data-set order,
    then the second of each, and so on; the same images on every machine with the data set."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of images, got {n!r}")
    if y.dim() != 1 or len(y) != len(x_uint8):
        raise ValueError(f"{len(x_uint8)} images but labels shaped {tuple(y.shape)}")
    per_class = [torch.nonzero(y == c).flatten().tolist() for c in sorted(set(y.tolist()))]
    picked: list[int] = []
    for rank in range(max(map(len, per_class), default=0)):
        picked += [idx[rank] for idx in per_class if rank < len(idx)]
        if len(picked) >= n:
            break
    idx = torch.tensor(picked[:n], dtype=torch.long)
    return normalize(x_uint8[idx], channels_last=False), y[idx]


def check_methods(methods: Sequence[str] | None) -> list[str]:
    chosen = [m for m in METHODS] if methods is None else list(methods)
    unknown = [m for m in chosen if m not in METHODS and m != RANDOM]
    if isinstance(methods, str) or unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"methods must be a list of distinct names from {', '.join(METHODS)} (and {RANDOM!r}), "
                         f"got {methods!r}")
    return [m for m in chosen if m != RANDOM] + [RANDOM]  # the reference always, last


def _summary(rows: list[dict[str, Any]], fr: list[float], road: bool) -> dict[str, Any]:
    def mean_curve(key: str) -> list[float]:
        return [statistics.fmean(col) for col in zip(*(r[key] for r in rows), strict=True)]

    out: dict[str, Any] = {"fractions": fr}
    for key in ("deletion", "insertion"):
        areas = [auc(fr, r[key]) for r in rows]
        out[f"{key}_auc"] = statistics.fmean(areas)
        out[f"{key}_auc_std"] = statistics.pstdev(areas)
        out[f"{key}_aucs"] = areas
        out[key] = mean_curve(key)
    if road:
        out["road_morf"], out["road_lerf"] = mean_curve("morf"), mean_curve("lerf")
        out["road_gap"] = statistics.fmean(lerf - morf for morf, lerf in zip(out["road_morf"], out["road_lerf"],
                                                                                strict=True))
    return out


def faithfulness_study(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    methods: Sequence[str] | None = None,
    fractions: Sequence[float] = FRACTIONS,
    road_fractions: Sequence[float] | None = ROAD_FRACTIONS,
    seed: int = 0,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    label: str = "",
) -> FaithfulnessResult:
    """Deletion and insertion curves (and ROAD at ``road_fractions``; None skips it) of each
    method's map of each normalized image in x (N, 3, H, W), for the class the model predicts.

    ``methods``: names from ``METHODS`` (default all); the random map is added last as the
    reference. Per method the result holds the mean curves, the mean and population std of
    the areas (``deletion_auc``, ``insertion_auc``) and each image's area, and ROAD's mean
    MoRF and LeRF curves with ``road_gap``. ``seed`` draws the random maps, the tie order
    and ROAD's noise. ``progress`` is called after every map; ``stop`` is checked before each.
    """
    names = check_methods(methods)
    fr = check_fractions(fractions)
    road = None if road_fractions is None else check_fractions(road_fractions, below_one=True)
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point() or len(x) == 0:
        raise ValueError("x must be normalized float images shaped (N, 3, H, W), N >= 1; "
                         "use fixed_images(data.test_x, data.test_y, n)")
    with eval_mode(model, frozen=True):
        with torch.no_grad():
            probs = torch.softmax(model(x.to(device_of(model))).float(), 1).cpu()
        targets = probs.argmax(1).tolist()
        rows: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
        total = len(x) * len(names)
        for i in range(len(x)):
            xi = x[i:i + 1]
            for j, m in enumerate(names):
                check(stop)
                if m == RANDOM:
                    amap = torch.rand(x.shape[-2:], generator=torch.Generator().manual_seed(seed * 100_003 + i))
                else:
                    amap = attribute(model, xi, m, targets[i])
                row: dict[str, Any] = {}
                row["deletion"], row["insertion"] = curves(model, xi, amap, targets[i], fractions=fr, seed=seed + i)
                if road is not None:
                    row["morf"], row["lerf"] = road_curves(model, xi, amap, targets[i], fractions=road, seed=seed + i)
                rows[m].append(row)
                report(progress, (i * len(names) + j + 1) / total, f"image {i + 1}/{len(x)}: {m}")
    config = getattr(model, "config", None)
    acc = None if y is None else float((probs.argmax(1) == y.cpu()).float().mean())
    return FaithfulnessResult(
        label=label or str(getattr(config, "label", type(model).__name__)), images=len(x), fractions=fr,
        road_fractions=road or [], start_prob=float(probs.max(1).values.mean()), accuracy=acc,
        methods={m: _summary(r, fr, road is not None) for m, r in rows.items()},
    )


def _name(m: str) -> str:
    return "a random map" if m == RANDOM else METHODS[m].label


def reading(methods: dict[str, dict[str, Any]]) -> str:
    """What the scores say, in words: which maps the model agrees with, which no better than noise."""
    if RANDOM not in methods or len(methods) < 2:
        return ""
    rand = methods[RANDOM]["deletion_auc"]
    real = {m: s for m, s in methods.items() if m != RANDOM}
    by_del = sorted(real, key=lambda m: real[m]["deletion_auc"])
    best_ins = max(real, key=lambda m: real[m]["insertion_auc"])
    best = by_del[0]
    text = (f"Deletion AUC (lower = more faithful): {_name(best)} is best at {real[best]['deletion_auc']:.3f}, "
            f"{_name(RANDOM)} scores {rand:.3f}. Insertion AUC (higher = more faithful): {_name(best_ins)} is best at "
            f"{real[best_ins]['insertion_auc']:.3f} ({_name(RANDOM)}: {methods[RANDOM]['insertion_auc']:.3f}).")
    weak = [m for m in by_del if real[m]["deletion_auc"] >= NO_BETTER * rand]
    if weak:
        text += (f" {', '.join(_name(m) for m in weak)}: hardly better than {_name(RANDOM)} at deletion; "
                 "a map can look convincing and still miss what the model uses.")
    if all("road_gap" in s for s in methods.values()):
        best_road = max(real, key=lambda m: real[m]["road_gap"])
        text += (f" ROAD (noisy imputation, LeRF - MoRF, higher = more faithful): {_name(best_road)} best at "
                 f"{real[best_road]['road_gap']:.3f}, {_name(RANDOM)} {methods[RANDOM]['road_gap']:.3f}.")
    return text
