"""A model's summary: parameters, forward FLOPs per image, per-block shapes and receptive field.

FLOPs and parameters are counted by ``cost.py`` (2 FLOPs per multiply-add of every conv
and linear layer: ResNet-20 costs about 81 MFLOP).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from resnet_viz.config import ModelConfig
from resnet_viz.nets.cifar import (
    CifarResNet,
    PadShortcut,
    Projection,
    build_model,
    eval_mode,
    iter_blocks,
)
from resnet_viz.nets.cost import count_params, traced


@dataclass(frozen=True)
class BlockSummary:
    name: str  # "stage1.block0"
    stage: int
    index: int
    in_shape: tuple[int, int, int]  # (C, H, W) for one image
    out_shape: tuple[int, int, int]
    params: int
    flops: int
    receptive_field: int  # pixels of the input image one output unit sees (branch path)
    shortcut: str  # "none", "identity", "pad" (option A), "projection"
    shape_changes: bool


@dataclass(frozen=True)
class ModelSummary:
    config: ModelConfig
    label: str
    depth: int
    params: int
    flops: int
    stem_params: int
    head_params: int
    blocks: tuple[BlockSummary, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = asdict(self.config)
        return d


def _shortcut_kind(m: nn.Module | None) -> str:
    if m is None:
        return "none"
    if isinstance(m, Projection):
        return "projection"
    if isinstance(m, PadShortcut):
        return "pad"
    return "identity"


@torch.no_grad()
def summarize(model_or_config: CifarResNet | ModelConfig, image_size: int = 32) -> ModelSummary:
    """Summarize a model (or the model a config builds) with one forward pass of one image."""
    model = build_model(model_or_config) if isinstance(model_or_config, ModelConfig) else model_or_config
    config = model.config
    blocks = iter_blocks(model)
    with traced(model, [name for name, _ in blocks]) as trace, eval_mode(model):
        # eval: BN in train mode would reject nothing, but eval leaves running stats alone
        p = next(model.parameters())
        model(torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=p.dtype))

    # Receptive field along the branch path: rf grows by (k-1)*jump per conv, jump by stride.
    rf, jump = 3, 1  # after the stem's 3x3 conv
    summaries = []
    for name, blk in blocks:
        strides = (blk.stride, 1) if len(blk.kernel_sizes) == 2 else (1, blk.stride, 1)
        for k, s in zip(blk.kernel_sizes, strides, strict=True):
            rf += (k - 1) * jump
            jump *= s
        stage, index = int(name[5]), int(name.split("block")[1])
        in_shape, out_shape = trace.shapes[name]
        summaries.append(
            BlockSummary(
                name=name,
                stage=stage,
                index=index,
                in_shape=tuple(in_shape[1:]),  # type: ignore[arg-type]
                out_shape=tuple(out_shape[1:]),  # type: ignore[arg-type]
                params=count_params(blk),
                flops=trace.flops_in(name),
                receptive_field=rf,
                shortcut=_shortcut_kind(blk.shortcut),
                shape_changes=tuple(in_shape) != tuple(out_shape),
            )
        )
    stem = count_params(model.conv1) + count_params(model.bn1)
    return ModelSummary(
        config=config,
        label=config.label,
        depth=config.depth,
        params=count_params(model),
        flops=trace.total_flops,
        stem_params=stem,
        head_params=count_params(model.fc),
        blocks=tuple(summaries),
    )


def format_summary(s: ModelSummary) -> str:
    """A plain-text table for the CLI."""
    lines = [
        f"{s.label}: depth {s.depth}, {s.params:,} parameters ({s.params / 1e6:.2f}M), "
        f"{s.flops / 1e6:.1f} MFLOPs per 32x32 image",
        f"{'block':<16}{'in':>14}{'out':>14}{'params':>10}{'MFLOPs':>9}{'RF':>5}  shortcut",
    ]
    for b in s.blocks:
        shape = lambda t: "x".join(map(str, t))  # noqa: E731 - local formatting only
        lines.append(
            f"{b.name:<16}{shape(b.in_shape):>14}{shape(b.out_shape):>14}{b.params:>10,}"
            f"{b.flops / 1e6:>9.2f}{b.receptive_field:>5}  {b.shortcut}{' (shape changes)' if b.shape_changes else ''}"
        )
    return "\n".join(lines)
