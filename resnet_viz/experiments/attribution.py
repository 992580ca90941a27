"""Where a CIFAR ResNet looks: predictions, feature maps, block norms and attribution maps.

The only module that imports Captum, so the rest of the package (and its tests) do not
depend on it. Every public function:

- puts the model in eval mode (train-mode BatchNorm would normalize one image by its own
  statistics and update the running averages) and freezes its parameters (no weight
  gradients are needed, and skipping them makes the backward passes cheaper), then puts
  back every module's ``training`` flag and every parameter's ``requires_grad`` exactly
  as found, in ``finally``;
- registers no hooks itself: Captum's layer methods and Guided Backprop attach theirs for
  one call and remove them in their own ``finally``;
- returns detached CPU tensors that share no memory with the model or the input.

Inputs are normalized float images ``(B, 3, H, W)`` (a single ``(3, H, W)`` image is also
accepted); uint8 images are normalized here with ``augment.normalize``.

The model is used as given, so two threads must not run these functions on the *same*
model object at once (Guided Backprop's hooks would affect the other thread's passes).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from captum.attr import (
    GuidedBackprop,
    IntegratedGradients,
    LayerActivation,
    LayerAttribution,
    LayerGradCam,
    LayerGradientXActivation,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import Tensor, nn

from resnet_viz.data.batches import normalize
from resnet_viz.nets.cifar import BasicBlock, Bottleneck

__all__ = ["AttributionError", "METHODS", "predict", "top_k", "feature_maps", "block_norms", "attribute", "normalize_map"]

METHODS: dict[str, str] = {
    "saliency": "|d class score / d pixel|, summed over colour channels (Simonyan et al. 2013)",
    "integrated_gradients": "gradients averaged along a path from the mean image to this one, times the difference; "
    "the map sums to the change in class score (Sundararajan et al. 2017)",
    "smoothgrad": "saliency averaged over noisy copies of the image, which removes speckle (Smilkov et al. 2017)",
    "guided_backprop": "gradients with negative signals stopped at every ReLU: sharp, edge-like maps (Springenberg et al. 2014)",
    "gradcam": "a block's channels weighted by their mean gradient, positive part, upsampled (Selvaraju et al. 2017)",
    "occlusion": "how much the class score drops when a grey patch hides each region (Zeiler & Fergus 2014)",
}
STEM = "stem"  # the first conv + BN + ReLU, before any block
_MAX_BATCH = 64  # images per forward pass for IG steps / noise samples / occlusion patches


class AttributionError(ValueError):
    """A request for a map or statistic cannot be served; the message says what to change."""


@contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; the exact previous state restored after."""
    modes = [(m, m.training) for m in model.modules()]  # per module: a caller may mix modes
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _prepare(model: nn.Module, x: Tensor, *, single: bool) -> Tensor:
    """A detached float (B, 3, H, W) copy of x on the model's device, normalized if uint8."""
    if not isinstance(x, Tensor):
        raise AttributionError(f"expected an image tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)  # (3, H, W) -> (1, 3, H, W)
    if x.dim() != 4 or x.shape[1] != 3:
        raise AttributionError(f"expected images shaped (B, 3, H, W) or (3, H, W), got {tuple(x.shape)}")
    if single and x.shape[0] != 1:
        raise AttributionError(f"this works on one image at a time; got a batch of {x.shape[0]}: pass x[i:i+1]")
    x = x.detach()
    if x.dtype == torch.uint8:
        x = normalize(x, channels_last=False)
    elif not x.is_floating_point():
        raise AttributionError(f"expected uint8 or float images, got {x.dtype}")
    # A private copy: Captum sets requires_grad on its input, and the caller's tensor stays as it was.
    return x.to(_device(model), torch.float32).contiguous().clone()


def _num_classes(model: nn.Module, logits_dim: int | None = None) -> int:
    fc = getattr(model, "fc", None)
    return fc.out_features if isinstance(fc, nn.Linear) else int(logits_dim or 0)


def _check_target(model: nn.Module, target: int) -> int:
    n = _num_classes(model)
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < n:
        raise AttributionError(f"target must be a class index from 0 to {n - 1}, got {target!r}")
    return target


def _block_types() -> tuple[type[nn.Module], ...]:
    # torchvision's ImageNet ResNets (resnet_viz.nets.imagenet) have blocks of their own classes.
    from torchvision.models.resnet import BasicBlock as TvBasic
    from torchvision.models.resnet import Bottleneck as TvBottleneck

    return (BasicBlock, Bottleneck, TvBasic, TvBottleneck)


def block_names(model: nn.Module) -> list[str]:
    """Residual blocks in forward order, for CIFAR and torchvision ResNets alike."""
    types = _block_types()
    names = [n for n, m in model.named_modules() if isinstance(m, types)]
    if not names:
        raise AttributionError("this model has no residual blocks to attribute to")
    return names


def get_block(model: nn.Module, name: str) -> nn.Module:
    m = model.get_submodule(name)
    if not isinstance(m, _block_types()):
        raise AttributionError(f"{name!r} is not a block")
    return m


def _layer(model: nn.Module, name: str) -> nn.Module:
    """The module whose output is block ``name``'s activation ("stem" = the stem's ReLU)."""
    names = block_names(model)
    if name == STEM:
        return model.get_submodule("relu")
    if name not in names:
        span = f"{names[0]} ... {names[-1]}" if len(names) > 4 else ", ".join(names)
        raise AttributionError(f"unknown block {name!r}; choose {STEM!r} or a block name ({span})")
    return get_block(model, name)


def _out(t: Tensor) -> Tensor:
    return t.detach().float().cpu().clone()


def _logits_probs(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.softmax(model(x).float(), dim=1)  # (B, classes)


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """(B, classes) softmax probabilities, computed in eval mode without gradients."""
    with _frozen_eval(model):
        return _out(_logits_probs(model, _prepare(model, x, single=False)))


def top_k(probs: Tensor, classes: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    """The k most probable (class name, probability) pairs, most probable first, for one image."""
    p = probs.detach().float().cpu()
    if p.dim() == 2 and p.shape[0] == 1:
        p = p[0]
    if p.dim() != 1:
        raise AttributionError(f"expected probabilities for one image, shaped (classes,), got {tuple(probs.shape)}")
    if len(classes) != p.numel():
        raise AttributionError(f"got {p.numel()} probabilities but {len(classes)} class names")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise AttributionError(f"k must be a positive integer, got {k!r}")
    values, idx = p.topk(min(k, p.numel()))  # sorted, largest first
    return [(classes[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]


def feature_maps(model: nn.Module, x: Tensor, block: str) -> Tensor:
    """(C, H, W) activations at the output of ``block`` (a block name or "stem") for one image."""
    with _frozen_eval(model):
        layer = _layer(model, block)
        xb = _prepare(model, x, single=True)
        acts = LayerActivation(model, layer).attribute(xb)  # (1, C, H, W); Captum runs it under no_grad
        return _out(acts[0])


def block_norms(model: nn.Module, x: Tensor, target: int | None = None) -> dict[str, dict[str, float]]:
    """Per block, in forward order: ``act_norm`` = ||activation|| and ``grad_norm`` =
    ||d logit_target / d activation||, per image, averaged over the batch.

    ``target`` defaults to each image's predicted class.
    """
    with _frozen_eval(model):
        xb = _prepare(model, x, single=False)
        names = block_names(model)
        layers = [get_block(model, n) for n in names]
        if target is None:
            targets: int | list[int] = _logits_probs(model, xb).argmax(1).tolist()
        else:
            targets = _check_target(model, target)
        # Captum 0.9 takes a list of layers: one forward for all activations, one
        # forward + backward for all gradients. multiply_by_inputs=False makes
        # LayerGradientXActivation return the plain gradients.
        acts = LayerActivation(model, layers).attribute(xb)  # list of (B, C, h, w)
        xb.requires_grad_(True)  # our private copy; saves Captum a warning per call
        grads = LayerGradientXActivation(model, layers, multiply_by_inputs=False).attribute(xb, target=targets)
        return {
            n: {
                "act_norm": float(a.detach().flatten(1).norm(dim=1).mean()),
                "grad_norm": float(g.detach().flatten(1).norm(dim=1).mean()),
            }
            for n, a, g in zip(names, acts, grads)
        }


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AttributionError(f"{name} must be a positive integer, got {value!r}")


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
) -> Tensor:
    """(H, W) float attribution map of class ``target`` (default: the predicted class) for
    one image x (1, 3, H, W).

    Channel reduction: saliency, smoothgrad and guided_backprop sum |values| over the colour
    channels (their sign is not meaningful per channel); integrated_gradients sums signed
    values (so the map keeps IG's completeness: it adds up to the score change from the
    mean image); occlusion takes the channel mean (the patch hides all channels, so every
    channel holds the same score drop); gradcam has one channel already.

    ``block`` (gradcam only, default the last block), ``steps`` (integrated_gradients),
    ``samples`` and ``noise`` (smoothgrad; noise is the std of the Gaussian in normalized
    input units) and ``window`` (occlusion patch side, stride window // 2) are ignored by the
    other methods.
    """
    if method not in METHODS:
        raise AttributionError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    with _frozen_eval(model):
        xb = _prepare(model, x, single=True)  # (1, 3, H, W)
        h, w = xb.shape[-2:]
        if target is None:
            target = int(_logits_probs(model, xb).argmax(1))
        target = _check_target(model, target)
        # Parameters are frozen, so gradients must start at the input: set it on our
        # private copy here (Captum would do it too, with a warning per call).
        xb.requires_grad_(method != "occlusion")

        if method == "saliency":
            a = Saliency(model).attribute(xb, target=target, abs=True).sum(1)  # (1, H, W)
        elif method == "integrated_gradients":
            _check_positive("steps", steps)
            # Zero in normalized space is the dataset-mean colour: a "no information" image.
            a = IntegratedGradients(model).attribute(
                xb, baselines=torch.zeros_like(xb), target=target, n_steps=steps,
                internal_batch_size=min(steps, _MAX_BATCH),  # all steps in one forward/backward
            ).sum(1)
        elif method == "smoothgrad":
            _check_positive("samples", samples)
            if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
                raise AttributionError(f"noise must be a non-negative number, got {noise!r}")
            a = NoiseTunnel(Saliency(model)).attribute(
                xb, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=min(samples, _MAX_BATCH),
                stdevs=float(noise), target=target, abs=True,
            ).sum(1)
        elif method == "guided_backprop":
            a = GuidedBackprop(model).attribute(xb, target=target).abs().sum(1)
        elif method == "gradcam":
            layer = _layer(model, block if block is not None else block_names(model)[-1])
            cam = LayerGradCam(model, layer).attribute(xb, target=target, relu_attributions=True)  # (1, 1, h', w')
            # Bilinear, not nearest: an 8x8 map blown up to 32x32 would otherwise show blocks.
            a = LayerAttribution.interpolate(cam, (h, w), interpolate_mode="bilinear")[:, 0]
        else:  # occlusion
            _check_positive("window", window)
            if window > min(h, w):
                raise AttributionError(f"the occlusion window ({window}) must fit in the {h}x{w} image")
            stride = max(1, window // 2)
            n_patches = ((h - window) // stride + 1) * ((w - window) // stride + 1)
            a = Occlusion(model).attribute(
                xb, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                baselines=0.0, target=target, perturbations_per_eval=min(n_patches, _MAX_BATCH),
            ).mean(1)
        return _out(a[0])  # (H, W)


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
