"""One entry per attribution method, as Captum has one class per method, and ``attribute``.

Each method is a small class with a menu label, a sentence of help and ``map``, which
turns one prepared image into a (1, H, W) map. ``METHODS`` holds one instance of each,
by the name the pages, the CLI and the sanity check use; ``attribute`` validates the
request, sets eval mode and frozen parameters, and calls the method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from captum import attr
from torch import Tensor, nn

from resnet_viz.experiments.attribution.core import (
    MAX_BATCH,
    AttributionError,
    blocks_of,
    check_positive,
    check_target,
    detached,
    layer,
    prepare,
    probabilities,
)
from resnet_viz.nets.cifar import eval_mode


@dataclass(frozen=True)
class Settings:
    """The knobs of ``attribute``; each method reads the ones it has and ignores the rest."""

    block: str | None = None  # the CAMs (uses_block): the block whose activations are weighted (default: the last)
    steps: int = 50  # integrated_gradients: points on the path from the baseline
    samples: int = 20  # smoothgrad: noisy copies averaged
    noise: float = 0.15  # smoothgrad: std of the Gaussian, in normalized input units
    seed: int = 0  # smoothgrad: of its own noise generator (never the process's: that is everyone's)
    window: int = 4  # occlusion: patch side; the stride is window // 2


class AttributionMethod:
    """One method: ``label`` for menus, ``help`` for a caption, ``map`` for the work.

    ``map`` gets x (1, 3, H, W) prepared by ``attribute`` (a private copy on the model's
    device, requiring grad when ``gradients`` is set) and returns a (1, H, W) map.
    """

    label: ClassVar[str]
    help: ClassVar[str]
    gradients: ClassVar[bool] = True  # False: forward passes only, the input needs no grad
    uses_block: ClassVar[bool] = False  # True: a CAM at Settings.block (pages show a block menu)

    def map(self, model: nn.Module, x: Tensor, target: int, s: Settings) -> Tensor:
        raise NotImplementedError

    def __str__(self) -> str:  # pages show ``METHODS[name]`` as its caption
        return self.help


class Saliency(AttributionMethod):
    label = "Saliency"
    help = "|d class score / d pixel|, summed over colour channels (Simonyan et al. 2013)"

    def map(self, model: nn.Module, x: Tensor, target: int, s: Settings) -> Tensor:
        # |values| summed over channels: the sign of one channel's gradient means little.
        return attr.Saliency(model).attribute(x, target=target, abs=True).sum(1)


class IntegratedGradients(AttributionMethod):
    label = "Integrated Gradients"
    help = ("gradients averaged along a path from the mean image to this one, times the difference; "
            "the map sums to the change in class score (Sundararajan et al. 2017)")

    def map(self, model: nn.Module, x: Tensor, target: int, s: Settings) -> Tensor:
        check_positive("steps", s.steps)
        # Zero in normalized space is the dataset-mean colour: a "no information" image.
        # Signed values summed over channels keep IG's completeness in the (H, W) map.
        return attr.IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=s.steps,
            internal_batch_size=min(s.steps, MAX_BATCH),  # all steps in one forward/backward
        ).sum(1)


class SmoothGrad(AttributionMethod):
    label = "SmoothGrad"
    help = "saliency averaged over noisy copies of the image, which removes speckle (Smilkov et al. 2017)"

    def map(self, model: nn.Module, x: Tensor, target: int, s: Settings) -> Tensor:
        check_positive("samples", s.samples)
        noise = s.noise
        if isinstance(noise, bool) or not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
            raise AttributionError(f"noise must be a non-negative number, got {noise!r}")
        # Captum's NoiseTunnel draws from torch's global generator; a private one keeps the map
        # reproducible and leaves the process's random state (every visitor's) alone.
        gen = torch.Generator().manual_seed(int(s.seed))
        eps = torch.randn((s.samples, *x.shape[1:]), generator=gen, dtype=x.dtype).to(x.device)
        noisy = (x.detach() + float(noise) * eps).requires_grad_(True)  # x is one image (1, 3, H, W)
        saliency = attr.Saliency(model)
        maps = [saliency.attribute(chunk, target=target, abs=True) for chunk in noisy.split(MAX_BATCH)]
        return torch.cat(maps).mean(0, keepdim=True).sum(1)


class GuidedBackprop(AttributionMethod):
    label = "Guided Backprop"
    help = "gradients with negative signals stopped at every ReLU: sharp, edge-like maps (Springenberg et al. 2014)"

    def map(self, model: nn.Module, x: Tensor, target: int, s: Settings) -> Tensor:
        return attr.GuidedBackprop(model).attribute(x, target=target).abs().sum(1)


class GradCam(AttributionMethod):
    label = "Grad-CAM"
    help = "a block's channels weighted by their mean gradient, positive part, upsampled (Selvaraju et al. 2017)"
    uses_block = True

    def map(self, model: nn.Module, x: Tensor, target: int, s: Settings) -> Tensor:
        where = layer(model, s.block if s.block is not None else blocks_of(model)[-1])
        cam = attr.LayerGradCam(model, where).attribute(x, target=target, relu_attributions=True)  # (1, 1, h', w')
        # Bilinear, not nearest: an 8x8 map blown up to 32x32 would otherwise show blocks.
        return attr.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]


class Occlusion(AttributionMethod):
    label = "Occlusion"
    help = "how much the class score drops when a grey patch hides each region (Zeiler & Fergus 2014)"
    gradients = False

    def map(self, model: nn.Module, x: Tensor, target: int, s: Settings) -> Tensor:
        h, w = x.shape[-2:]
        check_positive("window", s.window)
        if s.window > min(h, w):
            raise AttributionError(f"the occlusion window ({s.window}) must fit in the {h}x{w} image")
        stride = max(1, s.window // 2)
        n_patches = ((h - s.window) // stride + 1) * ((w - s.window) // stride + 1)
        # The channel mean: the patch hides all channels, so every channel holds the same score drop.
        return attr.Occlusion(model).attribute(
            x, sliding_window_shapes=(3, s.window, s.window), strides=(3, stride, stride),
            baselines=0.0, target=target, perturbations_per_eval=min(n_patches, MAX_BATCH),
        ).mean(1)


METHODS: dict[str, AttributionMethod] = {
    "saliency": Saliency(),
    "integrated_gradients": IntegratedGradients(),
    "smoothgrad": SmoothGrad(),
    "guided_backprop": GuidedBackprop(),
    "gradcam": GradCam(),
    "occlusion": Occlusion(),
}


def attribute(
    model: nn.Module,
    x: Tensor,
    method: str,
    target: int | None = None,
    *,
    block: str | None = None,
    steps: int = 50,
    samples: int = 20,
    noise: float = 0.15,
    window: int = 4,
    seed: int = 0,
) -> Tensor:
    """(H, W) float attribution map of class ``target`` (default: the predicted class) for
    one image x (1, 3, H, W), by ``METHODS[method]``.

    Channel reduction: saliency, smoothgrad and guided_backprop sum |values| over the colour
    channels; integrated_gradients sums signed values (the map adds up to the score change
    from the mean image); occlusion takes the channel mean; gradcam has one channel already,
    and the grad-cam CAMs (``cams``) are one channel scaled to [0, 1].

    ``block`` (gradcam and the grad-cam CAMs: default the last block; checked for every method), ``steps``
    (integrated_gradients), ``samples``, ``noise`` and ``seed`` (smoothgrad) and ``window`` (occlusion)
    are described in ``Settings``; each method ignores the ones it does not have.
    """
    chosen = METHODS.get(method) if isinstance(method, str) else None
    if chosen is None:
        raise AttributionError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    settings = Settings(block=block, steps=steps, samples=samples, noise=noise, window=window, seed=seed)
    with eval_mode(model, frozen=True):
        if block is not None:
            layer(model, block)  # a wrong block name fails for every method, not only gradcam
        xb = prepare(model, x, single=True)  # (1, 3, H, W)
        if target is None:
            target = int(probabilities(model, xb).argmax(1))
        target = check_target(model, target)
        # Parameters are frozen, so gradients must start at the input: set it on our
        # private copy here (Captum would do it too, with a warning per call).
        xb.requires_grad_(chosen.gradients)
        return detached(chosen.map(model, xb, target, settings)[0])  # (H, W)


def normalize_map(a: Tensor) -> Tensor:
    """A map scaled to [0, 1] for display: |a| divided by its 99th percentile, then clipped.

    Signed maps (integrated_gradients, occlusion) are shown by magnitude. Clipping at the
    99th percentile keeps one extreme pixel from turning the rest of the map black. NaN
    counts as 0; an all-zero map stays all zero.
    """
    m = torch.nan_to_num(a.detach().float().cpu(), nan=0.0).abs()  # +-inf -> the largest float
    if m.numel() == 0:
        return m.clone()
    flat = m.flatten()
    k = max(1, math.ceil(0.99 * flat.numel()))
    hi = float(flat.kthvalue(k).values)
    if hi <= 0.0:  # fewer than 1% non-zero pixels: scale by the largest instead
        hi = float(flat.max())
    if hi <= 0.0:
        return torch.zeros_like(m)
    return (m / hi).clamp_(0.0, 1.0)
