"""Looking inside without a target map: predictions, feature maps and per-block norms."""

from __future__ import annotations

from collections.abc import Sequence

from captum.attr import LayerActivation, LayerGradientXActivation
from torch import Tensor, nn

from resnet_viz.experiments.attribution.core import (
    AttributionError,
    blocks_of,
    check_target,
    detached,
    layer,
    prepare,
    probabilities,
)
from resnet_viz.nets.cifar import eval_mode, get_block


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """(B, classes) softmax probabilities, computed in eval mode without gradients."""
    with eval_mode(model, frozen=True):
        return detached(probabilities(model, prepare(model, x, single=False)))


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
    return [(classes[i], float(v)) for v, i in zip(values.tolist(), idx.tolist(), strict=True)]


def feature_maps(model: nn.Module, x: Tensor, block: str) -> Tensor:
    """(C, H, W) activations at the output of ``block`` (a block name or "stem") for one image."""
    with eval_mode(model, frozen=True):
        where = layer(model, block)
        xb = prepare(model, x, single=True)
        acts = LayerActivation(model, where).attribute(xb)  # (1, C, H, W); Captum runs it under no_grad
        return detached(acts[0])


def block_norms(model: nn.Module, x: Tensor, target: int | None = None) -> dict[str, dict[str, float]]:
    """Per block, in forward order: ``act_norm`` = ||activation|| and ``grad_norm`` =
    ||d logit_target / d activation||, per image, averaged over the batch.

    ``target`` defaults to each image's predicted class.
    """
    with eval_mode(model, frozen=True):
        xb = prepare(model, x, single=False)
        names = blocks_of(model)
        layers = [get_block(model, n) for n in names]
        if target is None:
            targets: int | list[int] = probabilities(model, xb).argmax(1).tolist()
        else:
            targets = check_target(model, target)
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
            for n, a, g in zip(names, acts, grads, strict=True)
        }
