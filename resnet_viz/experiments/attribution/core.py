"""What every attribution entry point shares: input checks, block lookup, detached outputs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from resnet_viz.data.batches import normalize
from resnet_viz.nets.cifar import block_names, get_block

STEM = "stem"  # the first conv + BN + ReLU, before any block
MAX_BATCH = 64  # images per forward pass for IG steps / noise samples / occlusion patches


class AttributionError(ValueError):
    """A request for a map or statistic cannot be served; the message says what to change."""


def device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def prepare(model: nn.Module, x: Tensor, *, single: bool) -> Tensor:
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
    return x.to(device_of(model), torch.float32).contiguous().clone()


def check_target(model: nn.Module, target: int) -> int:
    fc = getattr(model, "fc", None)
    n = fc.out_features if isinstance(fc, nn.Linear) else 0
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < n:
        raise AttributionError(f"target must be a class index from 0 to {n - 1}, got {target!r}")
    return target


def check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AttributionError(f"{name} must be a positive integer, got {value!r}")


def blocks_of(model: nn.Module) -> list[str]:
    """``block_names(model)``, refusing a model without residual blocks."""
    names = block_names(model)
    if not names:
        raise AttributionError("this model has no residual blocks to attribute to")
    return names


def layer(model: nn.Module, name: str) -> nn.Module:
    """The module whose output is block ``name``'s activation ("stem" = the stem's ReLU)."""
    blocks_of(model)
    if name == STEM:
        return model.get_submodule("relu")
    try:
        return get_block(model, name)
    except ValueError as e:
        raise AttributionError(f"{e}, or {STEM!r} for the stem") from None


def probabilities(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.softmax(model(x).float(), dim=1)  # (B, classes)


def detached(t: Tensor) -> Tensor:
    """A float CPU copy that shares no memory (or autograd graph) with the model or input."""
    return t.detach().float().cpu().clone()
