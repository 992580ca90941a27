"""CIFAR ResNets of He et al. 2015, section 4.2, in torch only.

A 3x3 conv with 16 filters, three stages of n blocks with 16, 32 and 64 filters (times
``width``), stride 2 at the first block of stages 2 and 3, global average pooling and a
linear head. Basic blocks give depth 6n+2; bottleneck blocks (1x1, 3x3, 1x1, expansion 4)
give 9n+2. The shortcut is built in ``_make_stage`` and handed to the block, so the
shortcut option always reaches the block (akamaster's version silently dropped it).

Every block is reachable by a stable dotted name (``stage1.block0`` ...) for hooks and
the UI, and every module is a named class: the model pickles and its state_dict
round-trips. Each use of ReLU is its own module because Captum's DeepLift and Guided
Backprop attach hooks per module and break when one ReLU is reused.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from resnet_viz.config import ModelConfig
from resnet_viz.nets.fixed import InputMap, PadShortcut

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "InputMap",
    "PadShortcut",
    "Projection",
    "build_model",
    "block_names",
    "get_block",
    "eval_mode",
    "MODELS",
]


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class Projection(nn.Sequential):
    """Options B and C: a 1x1 conv (with the block's stride) followed by BN."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__(OrderedDict(conv=conv1x1(in_ch, out_ch, stride), bn=nn.BatchNorm2d(out_ch)))


class BasicBlock(nn.Module):
    """Two 3x3 convs; y = relu(F(x) + shortcut(x)), or relu(F(x)) when shortcut is None."""

    expansion = 1
    kernel_sizes = (3, 3)

    def __init__(self, in_ch: int, planes: int, stride: int, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = shortcut
        self.relu_out = nn.ReLU()

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def branch(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch(x)  # F(x): (B, planes, H/stride, W/stride)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu_out(out)


class Bottleneck(nn.Module):
    """1x1 (reduce), 3x3 (with the stride), 1x1 (expand by 4), as in the paper's deeper nets."""

    expansion = 4
    kernel_sizes = (1, 3, 1)

    def __init__(self, in_ch: int, planes: int, stride: int, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.stride = stride
        out_ch = planes * self.expansion
        self.conv1 = conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = shortcut
        self.relu_out = nn.ReLU()

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def branch(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu_out(out)


Block = BasicBlock | Bottleneck


def make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int, pad: str = "after") -> nn.Module | None:
    """The skip path of one block for shortcut option ``kind`` (option A padding ``pad``)."""
    changes = stride != 1 or in_ch != out_ch
    if kind == "none":
        return None
    if kind == "C" or (kind == "B" and changes):
        return Projection(in_ch, out_ch, stride)
    if kind == "A" and changes:
        return PadShortcut(in_ch, out_ch, stride, pad)
    if kind in ("A", "B"):
        return nn.Identity()
    raise ValueError(f"unknown shortcut {kind!r}")


class CifarResNet(nn.Module):
    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        if generator is None:
            self._make_layers(config)
        else:
            # Made without values, then drawn from the generator: torch's layers draw their
            # default init from the global RNG, which any thread may reseed at any moment.
            with torch.device("meta"):
                self._make_layers(config)
            self.to_empty(device="cpu")
            self._default_init(generator)
        self._init_weights(generator)

    def _make_layers(self, config: ModelConfig) -> None:
        block_cls: type[Block] = BasicBlock if config.block == "basic" else Bottleneck
        w1, w2, w3 = config.stage_widths
        # Weights trained with another input normalization see the pixels they were trained on.
        self.input_map = None if config.input_norm == "cifar10" else InputMap(config.input_norm)
        self.conv1 = conv3x3(3, w1)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU()
        self._in_ch = w1
        n = config.blocks_per_stage
        self.stage1 = self._make_stage(block_cls, w1, n, stride=1)
        self.stage2 = self._make_stage(block_cls, w2, n, stride=2)
        self.stage3 = self._make_stage(block_cls, w3, n, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(self._in_ch, config.num_classes)

    def _make_stage(self, block_cls: type[Block], planes: int, n: int, stride: int) -> nn.Sequential:
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(n):
            s = stride if i == 0 else 1
            out_ch = planes * block_cls.expansion
            shortcut = make_shortcut(self.config.shortcut, self._in_ch, out_ch, s, self.config.pad)
            blocks[f"block{i}"] = block_cls(self._in_ch, planes, s, shortcut)
            self._in_ch = out_ch
        return nn.Sequential(blocks)

    @torch.no_grad()
    def _default_init(self, g: torch.Generator) -> None:
        """Torch's default init of each layer, from ``g`` in the order the layers are made (a block's
        shortcut first): ``g`` seeded with s gives the weights ``torch.manual_seed(s)`` gives."""
        made: list[nn.Module] = [self.conv1]
        for _, b in iter_blocks(self):
            made += [*(b.shortcut.modules() if b.shortcut is not None else ()), *b.children()]
        for m in dict.fromkeys([*made, self.fc]):  # each once, first place kept
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
                if m.bias is not None:
                    bound = 1 / math.sqrt(m.weight[0].numel())
                    nn.init.uniform_(m.bias, -bound, bound, generator=g)

    def _init_weights(self, g: torch.Generator | None) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # weight 1, bias 0, fresh running statistics (after to_empty)
            elif isinstance(m, InputMap):
                m.reset_buffers()
        if self.config.zero_init_residual and self.config.shortcut != "none":
            # Each residual block then starts as its shortcut: the net behaves like a
            # shallower one at step 0 (Goyal et al. 2017). Meaningless for a plain net.
            for _, blk in iter_blocks(self):
                nn.init.zeros_(blk.last_bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_map is not None:
            x = self.input_map(x)
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16w, 32, 32)
        x = self.stage1(x)  # (B, 16w*e, 32, 32)
        x = self.stage2(x)  # (B, 32w*e, 16, 16)
        x = self.stage3(x)  # (B, 64w*e, 8, 8)
        return self.fc(self.flatten(self.pool(x)))  # (B, classes)


def iter_blocks(model: nn.Module) -> list[tuple[str, Block]]:
    """(name, block) for every residual/plain block of a CIFAR ResNet, in forward order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))]


def _block_types() -> tuple[type[nn.Module], ...]:
    """These blocks, and torchvision's (``nets.imagenet``) once its resnet module is loaded:
    a model holding them cannot exist before, and this module need not import torchvision."""
    tv = sys.modules.get("torchvision.models.resnet")
    return (BasicBlock, Bottleneck) if tv is None else (BasicBlock, Bottleneck, tv.BasicBlock, tv.Bottleneck)


def block_names(model_or_config: nn.Module | ModelConfig) -> list[str]:
    """Block names in forward order: ``stage1.block0`` ... ``stage3.block{n-1}`` for a CIFAR
    ResNet (or its config), ``layer1.0`` ... for torchvision's ImageNet ResNets."""
    if isinstance(model_or_config, ModelConfig):
        n = model_or_config.blocks_per_stage
        return [f"stage{s}.block{i}" for s in (1, 2, 3) for i in range(n)]
    types = _block_types()
    return [n for n, m in model_or_config.named_modules() if isinstance(m, types)]


def get_block(model: nn.Module, name: str) -> nn.Module:
    """The block called ``name`` (one of ``block_names(model)``); ValueError for any other name."""
    try:
        m = model.get_submodule(name)
    except AttributeError:
        m = None
    if not isinstance(m, _block_types()):
        names = block_names(model)
        span = f"{names[0]} ... {names[-1]}" if len(names) > 4 else ", ".join(names) or "none"
        raise ValueError(f"the model has no block named {name!r}; its blocks are {span}")
    return m


@contextmanager
def eval_mode(model: nn.Module, *, frozen: bool = False) -> Iterator[nn.Module]:
    """``model`` in eval mode for the body, with ``frozen`` also without parameter gradients.

    Afterwards, also when the body raises, every module's ``training`` flag and every
    parameter's ``requires_grad`` are put back exactly as found: per module, because a caller
    may mix modes (a frozen stage in eval mode while the rest trains). Eval mode keeps
    BatchNorm from normalizing by the batch and updating its running averages; frozen
    parameters make backward passes to the input cheaper.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        if frozen:
            for p, _ in flags:
                p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)


def build_model(config: ModelConfig | str, generator: torch.Generator | None = None) -> CifarResNet:
    """A model from a config or a registry name (``resnet20``, ``plain56`` ...), its initial weights
    drawn from ``generator`` (a CPU one) if given, else from the global RNG that all threads share."""
    if isinstance(config, str):
        if config not in MODELS:
            raise ValueError(f"unknown model {config!r}; known: {', '.join(MODELS)}")
        config = MODELS[config]
    return CifarResNet(config, generator)


# The paper's CIFAR nets (Table 6 and Fig. 6); tests loop over this registry.
MODELS: dict[str, ModelConfig] = {
    **{f"resnet{d}": ModelConfig(depth=d, shortcut="A") for d in (20, 32, 44, 56, 110, 1202)},
    **{f"plain{d}": ModelConfig(depth=d, shortcut="none") for d in (20, 32, 44, 56, 110)},
    "resnet164-bottleneck": ModelConfig(depth=164, shortcut="B", block="bottleneck"),
}


@torch.no_grad()
def param_norms_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
