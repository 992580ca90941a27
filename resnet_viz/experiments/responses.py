"""Fig. 7 of He et al. 2015: the standard deviation of every 3x3 layer's response.

The paper (section 4.2, "Analysis of Layer Responses"): "The responses are the outputs of
each 3x3 layer, after BN and before other nonlinearity (ReLU/addition)", measured on the
CIFAR-10 test set; Fig. 7 shows their std per layer in order and sorted by magnitude. It
reads them as evidence that residual functions are "generally closer to zero than the
non-residual functions", and that a deeper ResNet's layers modify the signal less.

What is measured here:

- The layers: the stem's 3x3 conv (the paper counts it) and every 3x3 conv of a block, each
  seen at the output of the BN that follows it: in a residual block the second BN's output
  is F(x) before the addition, in a plain block the same place before the ReLU. Found from
  the model's structure (``response_layers``), not from names typed in here: basic blocks
  give two layers each (depth - 1 in all); a bottleneck block gives one, its middle 3x3
  conv (the paper shows basic blocks only; the 1x1 convs that reduce and expand are not
  3x3 layers, and a projection shortcut's 1x1 conv + BN is no layer of the branch).
- The std: one number per layer over the whole response, every image, channel and
  position together (population std), as "std of layer responses" reads; not a mean of
  per-channel stds, which would ignore how BN's bias spreads the channels apart. It is
  accumulated batch by batch in float64 (Chan et al.'s merge of means and squared
  deviations), so the number does not depend on the batch size.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from resnet_viz.experiments.common import ProgressFn, check, eval_mode, report
from resnet_viz.nets.cifar import iter_blocks

__all__ = ["ResponseResult", "layer_responses", "reading", "recorded_responses", "response_layers"]

MAX_IMAGES = 10_000  # the CIFAR-10 test set: more is never needed, and it bounds the time


@dataclass(frozen=True)
class ResponseResult:
    """The std of each 3x3 layer's response of one net, in forward order."""

    label: str
    depth: int
    shortcut: str  # "none" for a plain net
    block: str
    images: int
    layers: list[str]  # the BN modules measured: "bn1", "stage1.block0.bn1", ...
    std: list[float]

    @property
    def plain(self) -> bool:
        return self.shortcut == "none"

    @property
    def sorted_std(self) -> list[float]:
        """The same stds, largest first: Fig. 7 (bottom)."""
        return sorted(self.std, reverse=True)

    @property
    def mean_std(self) -> float:
        return statistics.fmean(self.std) if self.std else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "plain": self.plain, "sorted_std": self.sorted_std,
                "mean_std": self.mean_std}


def _is_3x3(conv: object) -> bool:
    return isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == (3, 3)


def response_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """(name, BN) for every BN that follows a 3x3 conv, in forward order: the stem's, then each
    block's (its ``conv{i}`` feeds its ``bn{i}``); a block's shortcut is not searched."""
    pairs = [("bn1", getattr(model, "conv1", None), getattr(model, "bn1", None))]
    for name, blk in iter_blocks(model):
        pairs += [(f"{name}.bn{i}", getattr(blk, f"conv{i}", None), getattr(blk, f"bn{i}", None)) for i in (1, 2, 3)]
    found = [(name, bn) for name, conv, bn in pairs if _is_3x3(conv) and isinstance(bn, nn.BatchNorm2d)]
    if len(found) < 2:
        raise ValueError(f"{type(model).__name__} has no CIFAR ResNet blocks with 3x3 conv + BN layers; "
                         "layer responses need a CifarResNet (resnet_viz.nets.cifar)")
    return found


class _Moments:
    """Count, mean and sum of squared deviations of every element seen, merged batch by batch."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, t: Tensor) -> None:
        t = t.detach().to(torch.float64)
        n_b = t.numel()
        mean_b = float(t.mean())
        m2_b = float(((t - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else float("nan")


@contextmanager
def recorded_responses(model: nn.Module) -> Iterator[dict[str, _Moments]]:
    """Forward hooks on ``response_layers(model)`` for the body: each forward pass adds its
    responses to the yielded moments (by layer name). The hooks are removed in ``finally``,
    also when the body raises."""
    layers = response_layers(model)
    moments = {name: _Moments() for name, _ in layers}
    handles = []
    try:
        for name, bn in layers:
            handles.append(bn.register_forward_hook(lambda _m, _i, out, name=name: moments[name].add(out)))
        yield moments
    finally:
        for h in handles:
            h.remove()


def _check_images(x: Tensor, batch_size: int) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        what = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be normalized float images shaped (N, 3, H, W), got {what}; "
                         "use resnet_viz.data.batches.normalize(x, channels_last=False)")
    if not 1 <= len(x) <= MAX_IMAGES:
        raise ValueError(f"x must hold 1 to {MAX_IMAGES} images (the paper uses the 10,000 test images), "
                         f"got {len(x)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


@torch.no_grad()
def layer_responses(model: nn.Module, x: Tensor, *, batch_size: int = 100, label: str = "",
                    progress: ProgressFn | None = None, stop: threading.Event | None = None) -> ResponseResult:
    """The std of each 3x3 layer's response (after BN, before the addition and ReLU) of
    ``model`` over the normalized images ``x`` (N, 3, H, W), in eval mode (BN uses its
    running statistics, as at test time). The model's modes and ``requires_grad`` flags are
    left as found and no hook outlives the call. ``stop`` is checked between batches."""
    _check_images(x, batch_size)
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device)
    with eval_mode(model, frozen=True), recorded_responses(model) as moments:
        for i in range(0, len(x), batch_size):
            check(stop)
            model(x[i:i + batch_size])
            done = min(len(x), i + batch_size)
            report(progress, done / len(x), f"{done}/{len(x)} images")
    config = getattr(model, "config", None)
    return ResponseResult(
        label=label or str(getattr(config, "label", type(model).__name__)),
        depth=int(getattr(config, "depth", 0)), shortcut=str(getattr(config, "shortcut", "")),
        block=str(getattr(config, "block", "basic")), images=len(x),
        layers=list(moments), std=[m.std for m in moments.values()],
    )


def reading(results: Sequence[dict[str, Any]]) -> str:
    """A sentence or two on what ``results`` (``ResponseResult.to_dict()``s) show, from their numbers."""
    if not results:
        return ""
    plain = [r for r in results if r["plain"]]
    res = [r for r in results if not r["plain"]]

    def mean(rs: Sequence[dict[str, Any]]) -> float:
        return statistics.fmean(r["mean_std"] for r in rs)

    parts = ["Mean response std per layer: " + ", ".join(f"{r['label']} {r['mean_std']:.3g}" for r in results) + "."]
    if plain and res:
        smaller = mean(res) < mean(plain)
        parts.append(f"The residual nets' responses average {mean(res):.3g} against the plain nets' {mean(plain):.3g}: "
                     + ("closer to zero, as the paper found (the residual functions are small changes to "
                        "the identity)." if smaller else "not closer to zero here, unlike the paper's Fig. 7."))
    depths = sorted({r["depth"] for r in res})
    if len(depths) > 1:
        shallow = mean([r for r in res if r["depth"] == depths[0]])
        deep = mean([r for r in res if r["depth"] == depths[-1]])
        parts.append(f"ResNet-{depths[-1]} averages {deep:.3g} against ResNet-{depths[0]}'s {shallow:.3g}: "
                     + ("the deeper ResNet's layers change the signal less, as in the paper." if deep < shallow
                        else "here the deeper ResNet's responses are not smaller (the paper found they are)."))
    return " ".join(parts)
