"""How signals and gradients travel through an untrained net: why depth hurts plain nets.

Two experiments on nets at initialization, before any training can hide the difference:

- ``signal_propagation``: one forward and one backward pass of random images with random
  labels; per block, the variance of the block's output and the norm of the loss
  gradient with respect to it. A plain net's gradient at the first block drifts away from
  its size at the last block as depth grows; a residual net's identity paths keep them
  closer (He et al. 2016, "Identity mappings", section 3).
- ``shattered_gradients``: the gradient of one logit along a straight line through input
  space. In a deep plain net it looks like white noise, in a ResNet it stays correlated
  over many neighbouring inputs (Balduzzi et al. 2017, "The shattered gradients problem").
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_viz.config import IMAGE_SIZE, ModelConfig
from resnet_viz.experiments.common import ProgressFn, check, eval_mode, report
from resnet_viz.nets.cifar import build_model, iter_blocks
from resnet_viz.training.probes import probe_blocks

__all__ = ["ShatteredResult", "SignalProfile", "shattered_gradients", "signal_propagation", "signal_sweep"]

MODES: tuple[str, ...] = ("train", "eval")
_CHUNK = 64  # line points per forward/backward pass: bounds memory on deep nets
_CALIBRATION_BATCH = 64  # random images whose statistics stand in for a first training batch


@dataclass(frozen=True)
class SignalProfile:
    """Per-block forward variance and gradient norm of one untrained net, in forward order."""

    label: str
    depth: int
    shortcut: str
    blocks: list[str]
    forward_var: list[float]  # variance of all elements of each block's output
    grad_norm: list[float]  # mean over images of ||dL_i / d block output||

    @property
    def grad_ratio(self) -> float:
        """Gradient norm at the first block over that at the last: 1 means no decay or growth."""
        return self.grad_norm[0] / max(self.grad_norm[-1], 1e-30)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "grad_ratio": self.grad_ratio}


@dataclass(frozen=True)
class ShatteredResult:
    """d logit / d t along x(t) = x0 + t v, and its autocorrelation over lags (in points)."""

    label: str
    t: list[float]
    gradient: list[float]
    autocorrelation: list[float]  # at lags 0 .. points // 2; 1 at lag 0
    lags: list[int]
    corr_length: float  # first lag below 1/e; len(lags) when it never drops that far

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _untrained(config: ModelConfig, seed: int) -> nn.Module:
    # A private generator: the weights depend on ``seed`` only, whatever other threads do
    # to the global RNG meanwhile.
    return build_model(config, generator=torch.Generator().manual_seed(seed))


def signal_propagation(
    depth: int,
    shortcut: str,
    *,
    batch: int = 64,
    seed: int = 0,
    mode: str = "train",
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> SignalProfile:
    """Forward variance and backward gradient norm at every block of an untrained net.

    ``mode="train"`` (default) normalizes with the batch's own statistics, as BN does on
    the first training step. ``mode="eval"`` uses the running statistics, which at
    initialization are mean 0 and variance 1: BN is then the identity, so this shows the
    same net without normalization.
    """
    if mode not in MODES:
        raise ValueError(f"unknown BN mode {mode!r}; choose one of {', '.join(MODES)}")
    if not isinstance(batch, int) or isinstance(batch, bool) or not 2 <= batch <= 4096:
        raise ValueError(f"batch must be an integer between 2 and 4096, got {batch!r}")
    config = ModelConfig(depth=depth, shortcut=shortcut)  # validates depth and shortcut
    check(stop)
    report(progress, 0.0, f"{config.label}: building")
    model = _untrained(config, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)  # (B, 3, 32, 32)
    y = torch.randint(0, config.num_classes, (batch,), generator=gen)  # (B,)

    variances, stats = _block_statistics(model, x, y, mode, config.label, progress, stop)
    names = list(stats)
    report(progress, 1.0, f"{config.label}: done")
    return SignalProfile(
        label=config.label if mode == "train" else f"{config.label} (BN eval)",
        depth=depth,
        shortcut=shortcut,
        blocks=names,
        forward_var=[float(variances[n]) for n in names],
        grad_norm=[stats[n]["grad_norm"] for n in names],
    )


def _block_statistics(
    model: nn.Module, x: Tensor, y: Tensor, mode: str, label: str,
    progress: ProgressFn | None, stop: threading.Event | None,
) -> tuple[dict[str, Tensor], dict[str, dict[str, float]]]:
    """(output variance per block, the probe's statistics per block) for one forward and backward pass."""
    # The model is ours, so it may be changed freely. Frozen weights with an input that
    # needs grad: every block output still carries a gradient for the probe, and the
    # backward pass skips the weight gradients nobody reads.
    model.train(mode == "train")
    model.requires_grad_(False)
    x.requires_grad_(True)
    variances: dict[str, Tensor] = {}

    def var_hook(name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            variances[name] = out.detach().float().var()

        return hook

    handles = [blk.register_forward_hook(var_hook(name)) for name, blk in iter_blocks(model)]
    try:
        # max_samples=batch: the probe's statistics then use the whole batch.
        with probe_blocks(model, max_samples=len(x)) as probe:
            loss = F.cross_entropy(model(x), y)
            check(stop)
            report(progress, 0.5, f"{label}: backward")
            loss.backward()
        return variances, probe.results()
    finally:
        for h in handles:
            h.remove()


def signal_sweep(
    depths: Sequence[int] = (20, 32, 44, 56, 110),
    shortcuts: Sequence[str] = ("none", "A"),
    *,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    **kw: Any,
) -> list[SignalProfile]:
    """``signal_propagation`` for every (depth, shortcut), depth-major; ``kw`` is passed on."""
    if not depths or not shortcuts:
        raise ValueError("give at least one depth and one shortcut")
    for d in depths:
        for s in shortcuts:
            ModelConfig(depth=d, shortcut=s)  # fail before any work, not halfway through
    jobs = [(d, s) for d in depths for s in shortcuts]
    out: list[SignalProfile] = []
    for i, (d, s) in enumerate(jobs):

        def sub(f: float, msg: str, i: int = i) -> None:
            report(progress, (i + f) / len(jobs), msg)

        out.append(signal_propagation(d, s, progress=sub if progress else None, stop=stop, **kw))
    return out


@torch.no_grad()
def _calibrate_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Set every BN's running statistics to those of one batch of random images.

    Eval mode then normalizes as train mode would on the first step, without making each
    point's output depend on the other points in its batch.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    device = next(model.parameters()).device
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: after one batch, exactly its statistics
        model.train()
        model(torch.randn(_CALIBRATION_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device))
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        model.eval()


def _autocorrelation(g: Tensor, max_lag: int) -> list[float]:
    """Normalized autocorrelation of a 1-D sequence (mean removed) at lags 0..max_lag."""
    g = g.double() - g.double().mean()  # (P,)
    energy = float((g * g).sum())
    if energy <= 0.0:
        # A constant gradient (a linear stretch of the net) is perfectly correlated.
        return [1.0] * (max_lag + 1)
    n = g.numel()
    return [float((g[: n - k] * g[k:]).sum()) / energy for k in range(max_lag + 1)]


def _subject(
    model_or_config: nn.Module | ModelConfig, gen: torch.Generator, calibrate_bn: bool | None, seed: int,
) -> tuple[str, nn.Module]:
    """(label, the model to differentiate): an untrained net for a config, else the model or a calibrated copy."""
    if isinstance(model_or_config, ModelConfig):
        model: nn.Module = _untrained(model_or_config, seed)
        if calibrate_bn is not False:
            _calibrate_bn(model, gen)
        return f"{model_or_config.label} (untrained)", model
    if isinstance(model_or_config, nn.Module):
        config = getattr(model_or_config, "config", None)
        label = config.label if isinstance(config, ModelConfig) else type(model_or_config).__name__
        model = model_or_config
        if calibrate_bn:
            model = copy.deepcopy(model)
            _calibrate_bn(model, gen)
        return label, model
    raise ValueError(f"expected a model or a ModelConfig, got {type(model_or_config).__name__}")


def _line_gradient(
    model: nn.Module, gen: torch.Generator, points: int, target: int, label: str,
    progress: ProgressFn | None, stop: threading.Event | None,
) -> Tensor:
    """d logit[target] / d t at ``points`` values of t in [-1, 1] along x0 + t v, as a (P,) CPU tensor."""
    device = next(model.parameters()).device
    x0 = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device)  # (1, 3, 32, 32)
    v = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device)
    v = v / v.norm()
    t = torch.linspace(-1.0, 1.0, points, device=device)  # (P,)
    grads: list[Tensor] = []
    # Eval mode: each point's logit depends on its own t only, so the gradient of the sum
    # of logits with respect to t is every point's own derivative, in one backward pass.
    with eval_mode(model), torch.enable_grad():
        for i in range(0, points, _CHUNK):
            check(stop)
            tc = t[i : i + _CHUNK].clone().requires_grad_(True)  # (b,)
            logits = model(x0 + tc.view(-1, 1, 1, 1) * v)  # (b, classes)
            if not 0 <= target < logits.shape[1]:
                raise ValueError(f"target must be a class index in 0..{logits.shape[1] - 1}, got {target}")
            # autograd.grad, not backward(): nothing accumulates in the parameters' .grad.
            (g,) = torch.autograd.grad(logits[:, target].sum(), tc)
            grads.append(g.detach().float().cpu())
            report(progress, (i + len(tc)) / points, f"{label}: {i + len(tc)}/{points} points")
    return torch.cat(grads)


def shattered_gradients(
    model_or_config: nn.Module | ModelConfig,
    *,
    points: int = 256,
    seed: int = 0,
    target: int = 0,
    calibrate_bn: bool | None = None,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> ShatteredResult:
    """The gradient of logit ``target`` along a line through input space, and how correlated it is.

    x(t) = x0 + t v for ``points`` values of t in [-1, 1], with x0 and v random images from
    ``seed`` and ||v|| = 1: the line moves each pixel by about 1/50 of its spread, so a
    smooth function would look almost linear on it, and any loss of correlation comes from
    the net's ReLU patterns flipping. Each point's d logit / d t = grad_x logit . v.

    ``calibrate_bn``: set BN running statistics from a batch of random images first (on a
    copy when a model is given, which stays untouched). Default: yes for a config (an
    untrained net, whose initial running statistics would make eval-mode BN the identity),
    no for a model (a trained model's own statistics are the ones to use).
    """
    if not isinstance(points, int) or isinstance(points, bool) or not 8 <= points <= 65_536:
        raise ValueError(f"points must be an integer between 8 and 65536, got {points!r}")
    gen = torch.Generator().manual_seed(seed)
    label, model = _subject(model_or_config, gen, calibrate_bn, seed)
    gradient = _line_gradient(model, gen, points, target, label, progress, stop)  # (P,)
    lags = list(range(points // 2 + 1))
    ac = _autocorrelation(gradient, lags[-1])
    below = [k for k, a in zip(lags, ac, strict=True) if a < 1.0 / math.e]
    return ShatteredResult(
        label=label,
        t=torch.linspace(-1.0, 1.0, points).tolist(),  # the same points _line_gradient used
        gradient=gradient.tolist(),
        autocorrelation=ac,
        lags=lags,
        corr_length=float(below[0]) if below else float(len(lags)),
    )


def shattered_pair(depth: int, *, progress: ProgressFn | None = None,
                   stop: threading.Event | None = None) -> list[ShatteredResult]:
    """``shattered_gradients`` of an untrained plain net and ResNet (option A) of ``depth``."""
    results = []
    for i, shortcut in enumerate(("none", "A")):
        def part(fraction: float, message: str, i: int = i) -> None:
            report(progress, (i + fraction) / 2, message)
        results.append(shattered_gradients(ModelConfig(depth=depth, shortcut=shortcut), progress=part, stop=stop))
    return results
