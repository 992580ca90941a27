"""What a network costs: its parameters, and the forward FLOPs and shapes of one pass.

FLOPs count 2 per multiply-add of every conv and linear layer (the convention that gives
CIFAR ResNet-20 about 81 MFLOP and ImageNet ResNet-50 about 8 GFLOP, twice the paper's
"multiply-adds"); batch norm, ReLU, pooling and the residual add are a rounding error
next to that and are left out, as in the paper's FLOP figures. The CIFAR summary
(``summary.py``) and the ImageNet one (``imagenet.py``) both measure with :func:`traced`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from torch import Tensor, nn

Shapes = tuple[tuple[int, ...], tuple[int, ...]]  # (input, output), batch dimension included


def count_params(module: nn.Module) -> int:
    """All parameters of ``module`` and its children, trainable or not."""
    return sum(p.numel() for p in module.parameters())


def layer_flops(m: nn.Module, out: Tensor) -> int:
    """Forward FLOPs of one conv or linear layer for the first image of ``out``; 0 for others."""
    if isinstance(m, nn.Conv2d):
        return 2 * out[0].numel() * m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
    if isinstance(m, nn.Linear):
        return 2 * m.in_features * m.out_features
    return 0


@dataclass
class Trace:
    """What :func:`traced` saw during the forward passes inside its block."""

    flops: dict[str, int] = field(default_factory=dict)  # per conv/linear layer, by module name
    shapes: dict[str, Shapes] = field(default_factory=dict)  # per module asked for, by name

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())

    def flops_in(self, name: str) -> int:
        """FLOPs of the layers inside the module called ``name`` (e.g. a block)."""
        return sum(f for n, f in self.flops.items() if n.startswith(name + "."))


@contextlib.contextmanager
def traced(model: nn.Module, shapes_of: Collection[str] = ()) -> Iterator[Trace]:
    """Record per-layer FLOPs, and the shapes of the modules named in ``shapes_of``, of the
    forward passes run inside the block. The hooks are removed on the way out, whatever happens;
    the caller chooses the mode and the input."""
    trace = Trace()

    def flop_hook(name: str):
        def hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            trace.flops[name] = layer_flops(m, out)
        return hook

    def shape_hook(name: str):
        def hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            trace.shapes[name] = (tuple(inputs[0].shape), tuple(out.shape))
        return hook

    wanted = set(shapes_of)
    handles = []
    try:
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                handles.append(m.register_forward_hook(flop_hook(name)))
            if name in wanted:
                handles.append(m.register_forward_hook(shape_hook(name)))
        yield trace
    finally:
        for h in handles:
            h.remove()
