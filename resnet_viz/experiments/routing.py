"""Gates on the two inputs of each block's addition, for routing the backward pass through
chosen paths of a ResNet (``experiments.paths`` explains the method and what it measures).

Each gate is the identity going forward; going backward it passes or blocks the gradient as
a flag says at backward time, so one forward pass (graph kept) serves many paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from resnet_viz.experiments.common import eval_mode
from resnet_viz.nets.cifar import iter_blocks

__all__ = ["forward_loss", "path_gradient_norms", "path_gradients", "routed"]


class _Gate(torch.autograd.Function):
    """Identity forward; backward passes the gradient only while ``routes.open[kind][index]``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, routes: _Routes, kind: str, index: int) -> Tensor:
        ctx.routes, ctx.kind, ctx.index = routes, kind, index
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        # None (not zeros) for a closed gate: autograd then skips the part of the graph
        # that feeds only this gate (the whole branch F of a block a path does not take).
        return (grad if ctx.routes.open[ctx.kind][ctx.index] else None), None, None, None


class _Routes:
    """Which gates are open, read by each gate during the backward pass."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.open: dict[str, list[bool]] = {"branch": [True] * n, "skip": [True] * n}

    def set(self, branch: Sequence[int] | None, skip: Sequence[int] | None = None) -> None:
        """Open F's gate at the blocks in ``branch`` (all when None) and s's gate at the blocks in
        ``skip`` (default: every block not in ``branch``, which makes a single path)."""
        branch_set = set(range(self.n)) if branch is None else set(branch)
        skip_set = set(range(self.n)) - branch_set if skip is None else set(skip)
        for i in branch_set | skip_set:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.n:
                raise ValueError(f"block indices run from 0 to {self.n - 1}, got {i!r}")
        self.open = {"branch": [i in branch_set for i in range(self.n)],
                     "skip": [i in skip_set for i in range(self.n)]}


@contextmanager
def routed(model: nn.Module) -> Iterator[_Routes]:
    """Gates on every block's branch output and shortcut output for the body (see the module
    docstring); ``routes.set(branch, skip)`` picks the path(s) later backward passes take.
    All gates start open (the ordinary gradient). The hooks are removed in ``finally``."""
    blocks = [b for _, b in iter_blocks(model)]
    if not blocks:
        raise ValueError("the model has no residual or plain blocks; effective paths need a CifarResNet")
    routes = _Routes(len(blocks))
    handles = []

    def gate(kind: str, index: int):  # one closure per gate: the hook knows its block and side
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
            return _Gate.apply(output, routes, kind, index)
        return hook

    try:
        for i, block in enumerate(blocks):
            handles.append(block.last_bn.register_forward_hook(gate("branch", i)))
            if block.shortcut is not None:
                handles.append(block.shortcut.register_forward_hook(gate("skip", i)))
        yield routes
    finally:
        for h in handles:
            h.remove()


def forward_loss(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(x as a leaf that requires grad, the summed cross-entropy of model(x) against y)."""
    x = x.detach().clone().requires_grad_(True)
    loss = nnf.cross_entropy(model(x), y, reduction="sum")  # sum: each image gets its own loss's gradient
    return x, loss


def path_gradients(model: nn.Module, x: Tensor, y: Tensor, subsets: Sequence[Sequence[int]], *,
                   skip_too: bool = False) -> list[Tensor]:
    """The input gradient (N, 3, H, W) of each image's cross-entropy through the path that
    takes the branches of the blocks in each subset (block indices in forward order) and the
    skips of all others; with ``skip_too`` every skip stays open as well (the sum over all
    paths that take no branch outside the subset: ``range(n)`` gives the ordinary gradient).
    One forward, one backward per subset. The model is used in eval mode with frozen
    parameters and left as found. Small inputs only: for studies use ``paths_study``."""
    with eval_mode(model, frozen=True), routed(model) as routes:
        xg, loss = forward_loss(model, x, y)
        out = []
        for subset in subsets:
            routes.set(subset, range(routes.n) if skip_too else None)
            (g,) = torch.autograd.grad(loss, xg, retain_graph=True, allow_unused=True)
            out.append(torch.zeros_like(xg) if g is None else g.detach().clone())
        return out


def path_gradient_norms(grads: Tensor) -> Tensor:
    """The L2 norm of each image's gradient: (N, ...) -> (N,)."""
    return grads.flatten(1).norm(dim=1)
